//! End to end behind real reverse proxies: Debian's nginx and apache2 run on
//! loopback with the files in deploy/ and examples/php-push/ used verbatim,
//! except for the ports and paths substituted at test time, in front of the
//! real wspipe binary.
//!
//! Without nginx or apache2 installed (or, for the PHP test, mod_php and
//! php-curl) the tests say so on stderr and return; with
//! `WSPIPE_DEPLOY_TESTS=1` (as .ci/run sets) a missing proxy is a failure
//! instead. The proxies themselves: tests/common/proxies.rs.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::proxies::*;
use common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

const NGINX_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx/wspipe.conf");
const APACHE_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/apache/wspipe.conf");
const PUSH_CGI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/php-push/push.cgi");
const PUBLISH_PHP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/php-push/publish.php");
const DUMP_ENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dump-env.sh");

/// A client address on loopback that is neither the proxy's address nor in
/// any --trusted-proxy list, so the three addresses a test looks at (the
/// real client, the proxy, and a forged header) are all different.
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const FORGED_XFF: &str = "203.0.113.7";
const FORGED_FORWARDED: &str = "for=198.51.100.9";

/// The proxies of deploy/: the site files there, in front of wspipe.
impl Proxy {
    /// Starts `kind` (its binary: `bin`) on a free loopback port in front of
    /// wspipe at `upstream`; `control` is the control socket the push CGI
    /// talks to.
    fn start(kind: Kind, bin: &Path, site: &Path, upstream: SocketAddr, control: &Path) -> Proxy {
        Proxy::start_with(kind, bin, site, |dir, port| match kind {
            Kind::Nginx => nginx_command(bin, dir, port, upstream),
            Kind::Apache => apache_command(bin, dir, port, upstream, control, None),
        })
    }
}

/// nginx with deploy/nginx/wspipe.conf.
fn nginx_command(bin: &Path, dir: &Path, port: u16, upstream: SocketAddr) -> (Command, PathBuf) {
    let site = substitute(
        &std::fs::read_to_string(NGINX_CONF).unwrap(),
        NGINX_CONF,
        &[
            ("127.0.0.1:8080", &upstream.to_string()),
            ("listen 8081;", &format!("listen 127.0.0.1:{port};")),
        ],
    );
    nginx_main(bin, dir, &site)
}

/// mod_php for [`apache_command`], and the settings of publish.php.
struct Php<'a> {
    /// libphp*.so.
    module: &'a Path,
    /// wspipe's --publish socket.
    publish: &'a Path,
    /// wspipe's --publish-token file.
    token: &'a Path,
}

/// apache2 with deploy/apache/wspipe.conf; push.cgi and publish.php are
/// installed beside it. With `php`, the MPM is prefork and mod_php is
/// loaded, which turns on the file's /publish block.
fn apache_command(
    bin: &Path,
    dir: &Path,
    port: u16,
    upstream: SocketAddr,
    control: &Path,
    php: Option<&Php>,
) -> (Command, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let cgi_dir = dir.join("cgi-bin");
    std::fs::create_dir(&cgi_dir).unwrap();
    std::fs::copy(PUSH_CGI, cgi_dir.join("push.cgi")).unwrap();
    std::fs::set_permissions(
        cgi_dir.join("push.cgi"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::copy(PUBLISH_PHP, cgi_dir.join("publish.php")).unwrap();
    let wspipe = wspipe_for_others(dir);
    let upstream = upstream.to_string();
    let listen = format!("Listen 127.0.0.1:{port}");
    let vhost = format!("*:{port}");
    let mut pairs = vec![
        ("127.0.0.1:8080", upstream.as_str()),
        ("Listen 8081", &listen),
        ("*:8081", &vhost),
        ("/usr/local/lib/wspipe", cgi_dir.to_str().unwrap()),
        ("/usr/local/bin/wspipe", wspipe.to_str().unwrap()),
        ("/run/wspipe/control.sock", control.to_str().unwrap()),
    ];
    let token_line =
        php.map(|php| format!("SetEnv WSPIPE_PUBLISH_TOKEN_FILE {}", php.token.display()));
    if let (Some(php), Some(token_line)) = (php, &token_line) {
        pairs.push(("/run/wspipe/publish.sock", php.publish.to_str().unwrap()));
        pairs.push((
            "# SetEnv WSPIPE_PUBLISH_TOKEN_FILE /etc/wspipe/publish.token",
            token_line,
        ));
    }
    let site = substitute(
        &std::fs::read_to_string(APACHE_CONF).unwrap(),
        APACHE_CONF,
        &pairs,
    );
    apache_main(bin, dir, &site, php.map(|php| php.module))
}

/// The wspipe binary at a path Apache's user can run: the build's own when
/// every directory above it is open to others, else a copy in `dir`.
fn wspipe_for_others(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = Path::new(bin());
    let open = bin
        .ancestors()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if open || !is_root() {
        return bin.to_path_buf();
    }
    let copy = dir.join("wspipe");
    std::fs::copy(bin, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// wspipe on 127.0.0.1 with the given flags, and a control socket in
/// `site` open to Apache's user (in production: --control-mode 660 and
/// Apache's user in wspipe's group; see docs/deploy.md).
fn wspipe(site: &Path, args: &[&str]) -> (Server, PathBuf) {
    let control = site.join("control.sock");
    let mut all = vec![
        "--control",
        control.to_str().unwrap(),
        "--control-mode",
        "666",
    ];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    server
        .log
        .wait_for("control socket at", TIMEOUT)
        .expect("control socket up");
    (server, control)
}

/// A WebSocket client whose connection comes from `source` (any loopback
/// address), with extra request headers.
async fn connect_from(source: IpAddr, url: &str, headers: &[(&str, &str)]) -> Ws {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let uri = req.uri().clone();
    let target = SocketAddr::new(
        uri.host().unwrap().parse().unwrap(),
        uri.port_u16().unwrap(),
    );
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = tokio::time::timeout(TIMEOUT, socket.connect(target))
        .await
        .expect("connect timed out")
        .expect("connect");
    let (ws, _) = tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("handshake timed out")
    .unwrap_or_else(|e| panic!("handshake with {url} failed: {e}"));
    ws
}

/// The CGI environment dump-env.sh sent over a connection through `url`.
async fn env_through(
    source: IpAddr,
    url: &str,
    headers: &[(&str, &str)],
) -> std::collections::BTreeMap<String, String> {
    let mut ws = connect_from(source, url, headers).await;
    let (lines, close) = texts_until_close(&mut ws).await;
    assert_eq!(close.0, 1000, "dump-env.sh exits 0: {close:?}");
    parse_env(&lines)
}

// ---- (a), (b): WebSockets through the proxy ----------------------------

async fn echo_through(kind: Kind, test: &str) {
    let Some(bin) = kind.find(test) else {
        return;
    };
    let site = site_dir();
    let (server, control) = wspipe(site.path(), &["cat"]);
    let proxy = Proxy::start(kind, &bin, site.path(), server.addr, &control);

    let mut ws = connect(&proxy.url("/echo?x=1")).await;
    send_text(&mut ws, "hello through the proxy").await;
    assert_eq!(next_text(&mut ws).await, "hello through the proxy");
    // Several messages in a row, UTF-8, and one much larger than any proxy
    // buffer (nginx's are 4-8 KiB): all arrive whole and in order.
    let big = "x".repeat(300 * 1024);
    for msg in ["één", "two", &big, "last"] {
        send_text(&mut ws, msg).await;
    }
    for msg in ["één", "two", &big, "last"] {
        assert_eq!(next_text(&mut ws).await, msg);
    }
    // A close from the client reaches wspipe (which ends `cat`) and the
    // answer comes back through the proxy.
    tokio::time::timeout(
        TIMEOUT,
        futures_util::SinkExt::send(
            &mut ws,
            Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            })),
        ),
    )
    .await
    .expect("send close timed out")
    .expect("send close");
    assert_eq!(expect_close(&mut ws).await.0, 1000);
    assert!(
        server
            .log
            .wait_for_async("disconnect", TIMEOUT)
            .await
            .is_some(),
        "wspipe saw the session end: {:?}",
        server.log.lines()
    );

    // Plain HTTP goes through too: wspipe's own answer to a non-upgrade GET.
    let (status, head, body) = http_request(proxy.addr(), "GET", "/", "");
    assert_eq!(status, 426, "{head}\n{body}");
    assert!(body.contains("WebSocket"), "{body}");
}

#[tokio::test]
async fn nginx_proxies_websockets() {
    echo_through(Kind::Nginx, "nginx_proxies_websockets").await;
}

#[tokio::test]
async fn apache_proxies_websockets() {
    echo_through(Kind::Apache, "apache_proxies_websockets").await;
}

// ---- (c): REMOTE_ADDR behind the proxy -----------------------------------

/// With `--trusted-proxy 127.0.0.1`, the client's address is what the proxy
/// saw, whatever the client claimed.
///
/// The client connects from 127.0.0.2 with a forged `X-Forwarded-For:
/// 203.0.113.7` and a forged `Forwarded: for=198.51.100.9`. The proxy
/// appends the address it saw: wspipe gets `X-Forwarded-For: 203.0.113.7,
/// 127.0.0.2` from 127.0.0.1. The peer is trusted, so the list is walked
/// from the right: 127.0.0.2 is not a trusted proxy, so it is the client,
/// and the forged entry to its left is never looked at. The forged
/// `Forwarded` header, which wspipe would prefer, is removed by both
/// configurations.
async fn trusted_proxy_names_the_client(kind: Kind, test: &str) {
    let Some(bin) = kind.find(test) else {
        return;
    };
    let site = site_dir();
    let (server, control) = wspipe(site.path(), &["--trusted-proxy", "127.0.0.1", DUMP_ENV]);
    let proxy = Proxy::start(kind, &bin, site.path(), server.addr, &control);
    let forged = [
        ("X-Forwarded-For", FORGED_XFF),
        ("Forwarded", FORGED_FORWARDED),
    ];
    let env = env_through(CLIENT_IP, &proxy.url("/"), &forged).await;
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.2", "{env:#?}");
    assert_eq!(env["REMOTE_HOST"], "127.0.0.2");
    assert_eq!(env["REMOTE_PORT"], "", "the client's port is not known");
    assert_eq!(
        env["HTTP_X_FORWARDED_FOR"],
        format!("{FORGED_XFF}, 127.0.0.2")
    );
    assert_eq!(env["HTTP_X_REAL_IP"], "127.0.0.2");
    assert_eq!(env["HTTP_X_FORWARDED_PROTO"], "http");
    assert!(
        !env.contains_key("HTTP_FORWARDED"),
        "the client's Forwarded header must not reach wspipe: {env:#?}"
    );
    // The public host and port, as the client sent them.
    assert_eq!(env["HTTP_HOST"], format!("127.0.0.1:{}", proxy.port));

    // Trust is per address: a client connecting from an address listed in
    // --trusted-proxy is indistinguishable from a proxy, so its own
    // X-Forwarded-For entry is believed. This is why the list must name
    // only the proxies, never a range that holds clients (docs/deploy.md).
    let env = env_through(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        &proxy.url("/"),
        &[("X-Forwarded-For", FORGED_XFF)],
    )
    .await;
    assert_eq!(env["REMOTE_ADDR"], FORGED_XFF, "{env:#?}");
}

/// Without `--trusted-proxy` the forwarding headers are never believed:
/// REMOTE_ADDR is the proxy itself, and the headers reach the program only
/// as HTTP_* variables.
async fn untrusted_proxy_is_the_client(kind: Kind, test: &str) {
    let Some(bin) = kind.find(test) else {
        return;
    };
    let site = site_dir();
    let (server, control) = wspipe(site.path(), &[DUMP_ENV]);
    let proxy = Proxy::start(kind, &bin, site.path(), server.addr, &control);
    let env = env_through(
        CLIENT_IP,
        &proxy.url("/"),
        &[("X-Forwarded-For", FORGED_XFF)],
    )
    .await;
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1", "{env:#?}");
    assert!(
        env["REMOTE_PORT"].parse::<u16>().is_ok(),
        "the proxy's own port: {env:#?}"
    );
    assert_eq!(
        env["HTTP_X_FORWARDED_FOR"],
        format!("{FORGED_XFF}, 127.0.0.2")
    );
}

#[tokio::test]
async fn nginx_trusted_proxy_names_the_client() {
    trusted_proxy_names_the_client(Kind::Nginx, "nginx_trusted_proxy_names_the_client").await;
}

#[tokio::test]
async fn apache_trusted_proxy_names_the_client() {
    trusted_proxy_names_the_client(Kind::Apache, "apache_trusted_proxy_names_the_client").await;
}

#[tokio::test]
async fn nginx_without_trusted_proxy_headers_are_ignored() {
    untrusted_proxy_is_the_client(
        Kind::Nginx,
        "nginx_without_trusted_proxy_headers_are_ignored",
    )
    .await;
}

#[tokio::test]
async fn apache_without_trusted_proxy_headers_are_ignored() {
    untrusted_proxy_is_the_client(
        Kind::Apache,
        "apache_without_trusted_proxy_headers_are_ignored",
    )
    .await;
}

// ---- Origin checks see the public host -----------------------------------

/// `--sameorigin` behind the proxy: the browser's Origin names the proxy's
/// host and port, and so must the Host header wspipe compares it with
/// (nginx: `Host $http_host`; Apache: `ProxyPreserveHost On`).
async fn same_origin_through(kind: Kind, test: &str) {
    let Some(bin) = kind.find(test) else {
        return;
    };
    let site = site_dir();
    let (server, control) = wspipe(site.path(), &["--sameorigin", "cat"]);
    let proxy = Proxy::start(kind, &bin, site.path(), server.addr, &control);
    let origin = format!("http://127.0.0.1:{}", proxy.port);
    let url = proxy.url("/");
    assert_eq!(handshake_status(&url, &[("Origin", &origin)]).await, 101);
    assert_eq!(
        handshake_status(&url, &[("Origin", "http://evil.example")]).await,
        403
    );
}

#[tokio::test]
async fn nginx_keeps_the_host_for_origin_checks() {
    same_origin_through(Kind::Nginx, "nginx_keeps_the_host_for_origin_checks").await;
}

#[tokio::test]
async fn apache_keeps_the_host_for_origin_checks() {
    same_origin_through(Kind::Apache, "apache_keeps_the_host_for_origin_checks").await;
}

// ---- (d): server-side push through Apache's CGI ---------------------------

/// A POST to Apache's /push runs examples/php-push/push.cgi (as Apache's
/// user), which hands the body to `wspipe ctl broadcast -` on wspipe's
/// control socket: every client, through Apache or direct, gets it.
#[tokio::test]
async fn apache_cgi_push_reaches_every_client() {
    let test = "apache_cgi_push_reaches_every_client";
    let Some(bin) = Kind::Apache.find(test) else {
        return;
    };
    let site = site_dir();
    let (mut server, control) = wspipe(site.path(), &["cat"]);
    let apache = Proxy::start(Kind::Apache, &bin, site.path(), server.addr, &control);
    let mut proxied = connect(&apache.url("/feed")).await;
    let mut direct = connect(&server.url("/feed")).await;
    // An echo each: both sessions are up (and registered) before the push.
    for ws in [&mut proxied, &mut direct] {
        send_text(ws, "ready?").await;
        assert_eq!(next_text(ws).await, "ready?");
    }

    let message = "breaking: \"quotes\", ünïcode & <tags>";
    let (status, head, body) = http_request(apache.addr(), "POST", "/push", message);
    assert_eq!(status, 200, "{head}\n{body}\n{}", apache.log());
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply, serde_json::json!({"ok": true, "delivered": 2}));
    assert!(header_values(&head, "content-type")[0].starts_with("application/json"));
    for ws in [&mut proxied, &mut direct] {
        assert_eq!(next_text(ws).await, message);
    }

    // Only POST pushes.
    let (status, _, body) = http_request(apache.addr(), "GET", "/push", "");
    assert_eq!(status, 405, "{body}");

    // With wspipe gone the script says so, with a status a caller can act on.
    drop(proxied);
    drop(direct);
    server.terminate();
    let (status, _, body) = http_request(apache.addr(), "POST", "/push", "anyone?");
    assert_eq!(status, 503, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"].as_str().unwrap().contains("no server"),
        "{reply}"
    );
}

// ---- (e): channel publish through Apache's mod_php and curl ----------------

/// A POST to Apache's /publish runs examples/php-push/publish.php in mod_php
/// (as Apache's user), which hands the body to `wspipe --publish` on a Unix
/// socket with PHP's curl, no process started: every member of /chat,
/// through Apache or direct, gets it, and wspipe's answer comes back.
#[tokio::test]
async fn apache_php_publish_reaches_every_member() {
    use std::os::unix::fs::PermissionsExt;
    let test = "apache_php_publish_reaches_every_member";
    let Some((bin, module)) = find_mod_php(test, &["curl"]) else {
        return;
    };
    let site = site_dir();
    let publish = site.path().join("publish.sock");
    let token = site.path().join("publish.token");
    let set_token = |text: &str| {
        std::fs::write(&token, text).unwrap();
        // Apache's user reads it (in production: group www-data, 640).
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    set_token("s3cret\n");
    let (mut server, control) = wspipe(
        site.path(),
        &[
            "--pubsub",
            "--publish",
            publish.to_str().unwrap(),
            "--publish-token",
            token.to_str().unwrap(),
            // Open to Apache's user, as the control socket is (in
            // production: --publish-mode 660 and www-data in wspipe's
            // group, docs/deploy.md).
            "--publish-mode",
            "666",
        ],
    );
    server.wait_log("publish on unix:");
    let php = Php {
        module: &module,
        publish: &publish,
        token: &token,
    };
    let apache = Proxy::start_with(Kind::Apache, &bin, site.path(), |dir, port| {
        apache_command(&bin, dir, port, server.addr, &control, Some(&php))
    });
    // Members of /chat from the moment their upgrade is answered.
    let mut proxied = connect(&apache.url("/chat")).await;
    let mut direct = connect(&server.url("/chat")).await;

    let publish_to = |path: &str, body: &str| {
        let (status, head, body) = http_request(apache.addr(), "POST", path, body);
        let reply: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{e}: {head}\n{body}\n{}", apache.log()));
        (status, head, reply)
    };
    // The page's default channel (WSPIPE_CHANNEL /chat in wspipe.conf).
    let message = "breaking: \"quotes\", ünïcode & <tags>";
    let (status, head, reply) = publish_to("/publish", message);
    assert_eq!(status, 200, "{head}\n{reply}\n{}", apache.log());
    assert_eq!(
        reply,
        serde_json::json!({"ok": true, "delivered": 2, "dropped": 0})
    );
    assert!(header_values(&head, "content-type")[0].starts_with("application/json"));
    for ws in [&mut proxied, &mut direct] {
        assert_eq!(next_text(ws).await, message);
    }

    // ?channel= names another one (nobody there); a name that is not a
    // URL path is refused by the page itself.
    let (status, _, reply) = publish_to("/publish?channel=/news", "elsewhere");
    assert_eq!(
        (status, reply),
        (
            200,
            serde_json::json!({"ok": true, "delivered": 0, "dropped": 0})
        )
    );
    let (status, _, reply) = publish_to("/publish?channel=news", "x");
    assert_eq!((status, &reply["ok"]), (400, &serde_json::json!(false)));

    // Only POST publishes.
    let (status, head, body) = http_request(apache.addr(), "GET", "/publish", "");
    assert_eq!(status, 405, "{head}\n{body}");
    assert_eq!(header_values(&head, "allow"), ["POST"]);

    // The token file is read per request: a wrong one gets wspipe's 401,
    // passed on; the right one again publishes.
    set_token("wrong\n");
    let (status, _, reply) = publish_to("/publish", "not with this token");
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"].as_str().unwrap().contains("Bearer"),
        "{reply}"
    );
    set_token("s3cret\n");
    let (status, _, reply) = publish_to("/publish", "last");
    assert_eq!((status, &reply["delivered"]), (200, &serde_json::json!(2)));
    // Nothing else reached /chat in between.
    for ws in [&mut proxied, &mut direct] {
        assert_eq!(next_text(ws).await, "last");
    }

    // With wspipe gone the page says so, with a status a caller can act on.
    drop(proxied);
    drop(direct);
    server.terminate();
    let (status, _, reply) = publish_to("/publish", "anyone?");
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"].as_str().unwrap().contains("not reachable"),
        "{reply}"
    );
}
