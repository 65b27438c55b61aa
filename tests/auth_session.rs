//! End to end: a PHP application's cookie sessions decide who may open a
//! WebSocket. The files of examples/auth-session/ are used verbatim,
//! except for the ports and paths substituted at test time: Apache with
//! mod_php serves the app (login.php, logout.php, ws-auth.php) on loopback;
//! the real wspipe asks ws-auth.php before every upgrade (`--auth-url`);
//! nginx in front sends `/ws/` to wspipe and everything else to Apache,
//! as a browser would see the site.
//!
//! Without nginx, apache2 or mod_php installed the test says so on stderr
//! and returns; with `WSPIPE_DEPLOY_TESTS=1` it fails instead
//! (tests/common/proxies.rs).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use common::proxies::*;
use common::*;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/auth-session");
const PAGES: &[&str] = &["session.php", "login.php", "logout.php", "ws-auth.php"];

/// A loopback address other than 127.0.0.1, which apache.conf's
/// `Require ip 127.0.0.1 ::1` keeps away from ws-auth.php: a client that
/// is not wspipe.
const OTHER_LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The child: notes that it started (one line per child in `started`,
/// so that a refused upgrade that started one anyway is seen), then
/// prints its environment, one message per variable, and exits.
fn child_script(started: &Path) -> String {
    format!("#!/bin/sh\necho started >> '{}'\nenv\n", started.display())
}

/// The example app installed in a directory Apache's user can read, and a
/// directory for PHP's sessions it can write (as Debian's
/// /var/lib/php/sessions: 1733, writable, not listable).
struct App {
    pages: PathBuf,
    sessions: PathBuf,
}

impl App {
    fn install(site: &Path) -> App {
        use std::os::unix::fs::PermissionsExt;
        let pages = site.join("app");
        let sessions = site.join("sessions");
        std::fs::create_dir(&pages).unwrap();
        std::fs::create_dir(&sessions).unwrap();
        std::fs::set_permissions(&pages, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&sessions, std::fs::Permissions::from_mode(0o1733)).unwrap();
        for page in PAGES {
            let to = pages.join(page);
            std::fs::copy(Path::new(EXAMPLE).join(page), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        App { pages, sessions }
    }

    /// The session files PHP keeps.
    fn sessions(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.sessions)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// examples/auth-session/apache.conf on `port`, serving `app`, with
/// `/ws/` proxied to wspipe at `wspipe`.
fn apache_site(port: u16, app: &App, wspipe: SocketAddr) -> String {
    let file = format!("{EXAMPLE}/apache.conf");
    substitute(
        &std::fs::read_to_string(&file).unwrap(),
        &file,
        &[
            ("Listen 8081", &format!("Listen 127.0.0.1:{port}")),
            ("*:8081", &format!("*:{port}")),
            ("/var/www/auth-session", app.pages.to_str().unwrap()),
            ("/var/lib/php/sessions", app.sessions.to_str().unwrap()),
            ("127.0.0.1:8080", &wspipe.to_string()),
        ],
    )
}

/// examples/auth-session/nginx.conf on `port`, in front of `apache` and
/// `wspipe`.
fn nginx_site(port: u16, apache: SocketAddr, wspipe: SocketAddr) -> String {
    let file = format!("{EXAMPLE}/nginx.conf");
    substitute(
        &std::fs::read_to_string(&file).unwrap(),
        &file,
        &[
            ("listen 80;", &format!("listen 127.0.0.1:{port};")),
            ("127.0.0.1:8080", &wspipe.to_string()),
            ("127.0.0.1:8081", &apache.to_string()),
        ],
    )
}

/// A request for a page through `proxy`, with `cookie` if any and `form`
/// as a urlencoded body: (status, head, body).
fn page(
    proxy: &Proxy,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &str,
) -> (u16, String, String) {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    headers.extend(cookie.map(|c| ("Cookie", c)));
    http_request_with(LOOPBACK, proxy.addr(), method, path, &headers, form)
}

/// A browser's handshake headers on a page of `origin` with `cookie`.
fn browser<'a>(origin: &'a str, cookie: &'a str) -> [(&'static str, &'a str); 2] {
    [("Origin", origin), ("Cookie", cookie)]
}

/// Logs `user` in through `proxy`: the `PHPSESSID=...` pair of the session
/// cookie login.php set.
fn log_in(proxy: &Proxy, user: &str) -> String {
    let (status, head, body) = page(proxy, "POST", "/login.php", None, &format!("user={user}"));
    assert_eq!(status, 200, "{head}\n{body}\n{}", proxy.log());
    let cookies: Vec<String> = header_values(&head, "set-cookie")
        .into_iter()
        .filter(|c| c.starts_with("PHPSESSID="))
        .collect();
    let [cookie] = &cookies[..] else {
        panic!("one session cookie, not {}: {head}", cookies.len());
    };
    // The flags README.md relies on: no script reads it, no other site's
    // page sends it (plain http here, so not Secure).
    let flags: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(flags.contains(&"HttpOnly"), "{cookie}");
    assert!(flags.contains(&"SameSite=Lax"), "{cookie}");
    flags[0].to_owned()
}

/// The status of a WebSocket handshake through `url` with these headers,
/// and, when admitted (101), the environment the child printed.
async fn open(
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, std::collections::BTreeMap<String, String>) {
    match connect_with(url, headers).await {
        Ok(mut ws) => {
            let (lines, close) = texts_until_close(&mut ws).await;
            assert_eq!(close.0, 1000, "the child exits 0: {close:?}");
            (101, parse_env(&lines))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            (resp.status().as_u16(), Default::default())
        }
        Err(e) => panic!("handshake with {url} failed without an HTTP status: {e}"),
    }
}

/// How many children wspipe started so far.
fn started(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn php_session_cookie_decides_websockets_behind_nginx_and_apache() {
    let test = "php_session_cookie_decides_websockets_behind_nginx_and_apache";
    let Some(nginx_bin) = Kind::Nginx.find(test) else {
        return;
    };
    let Some((apache_bin, mod_php)) = find_mod_php(test, &[]) else {
        return;
    };
    let site = site_dir();
    let app = App::install(site.path());
    let started_file = site.path().join("started");
    let child = script_external(site.path(), "child.sh", &child_script(&started_file));

    // wspipe's socket first, handed to it later as a service manager
    // would: Apache's /ws/ rule names wspipe, and wspipe's --auth-url
    // names Apache, so one of the two must know its port before it runs.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let wspipe_addr = listener.local_addr().unwrap();
    let apache = Proxy::start_with(Kind::Apache, &apache_bin, site.path(), |dir, port| {
        apache_main(
            &apache_bin,
            dir,
            &apache_site(port, &app, wspipe_addr),
            Some(&mod_php),
        )
    });
    let auth_url = format!("http://127.0.0.1:{}/ws-auth.php", apache.port);
    let server = Daemon::spawn_cmd(
        activated(&listener, "web"),
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--sameorigin",
            "--auth-url",
            &auth_url,
            child.to_str().unwrap(),
        ],
    );
    server.wait_log_async("serving on").await;
    drop(listener);
    let nginx = Proxy::start_with(Kind::Nginx, &nginx_bin, site.path(), |dir, port| {
        nginx_main(
            &nginx_bin,
            dir,
            &nginx_site(port, apache.addr(), wspipe_addr),
        )
    });
    let origin = format!("http://127.0.0.1:{}", nginx.port);
    let chat = nginx.url("/ws/chat/1");

    // No cookie: ws-auth.php's 401, passed on; no child, and no session
    // created for the stranger.
    let (status, _) = open(&chat, &[("Origin", &origin)]).await;
    assert_eq!(status, 401, "{:?}", server.log.lines());
    server.wait_log_async("refused by --auth-url").await;
    assert_eq!(started(&started_file), 0);
    assert_eq!(app.sessions(), Vec::<String>::new());

    // ws-auth.php is wspipe's only: not served through nginx (where every
    // request reaches Apache from loopback), and Apache itself answers it
    // to 127.0.0.1 alone. session.php is not a page.
    for path in ["/ws-auth.php", "/ws-auth.php/x"] {
        let (status, head, _) = page(&nginx, "GET", path, None, "");
        assert_eq!(status, 404, "{path}: {head}");
    }
    let (status, head, _) = http_request_with(
        OTHER_LOOPBACK,
        apache.addr(),
        "GET",
        "/ws-auth.php",
        &[],
        "",
    );
    assert_eq!(status, 403, "{head}");
    let (status, head, _) = page(&apache, "GET", "/ws-auth.php", None, "");
    assert_eq!(status, 401, "{head}\n{}", apache.log());
    let (status, head, _) = page(&nginx, "GET", "/session.php", None, "");
    assert_eq!(status, 403, "{head}");

    // alice logs in through nginx; her cookie opens a chat channel.
    let alice = log_in(&nginx, "alice");
    assert_eq!(app.sessions().len(), 1, "one session: {:?}", app.sessions());
    let (status, env) = open(&chat, &browser(&origin, &alice)).await;
    assert_eq!(status, 101, "{:?}", server.log.lines());
    assert_eq!(env["REMOTE_USER"], "alice", "{env:#?}");
    assert_eq!(env["AUTH_TYPE"], "URL");
    assert_eq!(env["WSPIPE_AUTH_ROLE"], "member");
    // nginx strips /ws: wspipe's path, and so the channel ws-auth.php's
    // /chat/* admits, is /chat/1.
    assert_eq!(env["REQUEST_URI"], "/chat/1");
    assert_eq!(started(&started_file), 1);

    // The same cookie from another site's page: wspipe's Origin check.
    let (status, _) = open(&chat, &browser("http://evil.example", &alice)).await;
    assert_eq!(status, 403);
    // A member is not admitted to /admin, a channel outside her list.
    let admin = nginx.url("/ws/admin");
    let (status, _) = open(&admin, &browser(&origin, &alice)).await;
    assert_eq!(status, 403);
    server
        .wait_log_async("channel not permitted for this client")
        .await;
    assert_eq!(started(&started_file), 1, "refused: no child");

    // carol, an admin, is; through Apache's own /ws/ rule too.
    let carol = log_in(&nginx, "carol");
    for proxy in [&nginx, &apache] {
        let origin = format!("http://127.0.0.1:{}", proxy.port);
        let (status, env) = open(&proxy.url("/ws/admin"), &browser(&origin, &carol)).await;
        assert_eq!(status, 101, "{:?}\n{}", server.log.lines(), proxy.log());
        assert_eq!(env["REMOTE_USER"], "carol", "{env:#?}");
        assert_eq!(env["WSPIPE_AUTH_ROLE"], "admin");
        assert_eq!(env["REQUEST_URI"], "/admin");
    }
    assert_eq!(started(&started_file), 3);

    // A cookie naming no session: 401, and PHP keeps no session for it.
    let before = app.sessions();
    let forged = "PHPSESSID=0123456789abcdefghijklmnop";
    let (status, _) = open(&chat, &browser(&origin, forged)).await;
    assert_eq!(status, 401);
    assert_eq!(app.sessions(), before, "no session made for a forged id");

    // After logout the cookie alice still has is worth nothing.
    let (status, head, body) = page(&nginx, "POST", "/logout.php", Some(&alice), "");
    assert_eq!(status, 200, "{head}\n{body}");
    let expired = header_values(&head, "set-cookie");
    assert!(
        expired.iter().any(|c| c.starts_with("PHPSESSID=deleted")),
        "the browser is told to forget it: {head}"
    );
    assert_eq!(app.sessions().len(), 1, "carol's session alone is left");
    let (status, _) = open(&chat, &browser(&origin, &alice)).await;
    assert_eq!(status, 401);
    assert_eq!(app.sessions().len(), 1);

    // Every refusal was wspipe's, before a child: the three admitted
    // sessions are all the children there ever were.
    assert_eq!(started(&started_file), 3);
    assert_eq!(
        server.log.count("refused by --auth-url"),
        3,
        "{:?}",
        server.log.lines()
    );
}
