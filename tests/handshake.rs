//! End to end: what happens before a session starts. The fork limit, origin
//! checks, extra response headers, refused handshakes, --dir routing and
//! confinement, the CGI environment, Unix sockets, and flag handling.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::MaybeTlsStream;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn examples(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A raw HTTP/1.1 request: `first` is the request line, then Host and the
/// given header lines.
fn request(addr: SocketAddr, first: &str, headers: &[&str]) -> String {
    let mut req = format!("{first}\r\nHost: {addr}\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// A valid WebSocket handshake for `path`.
fn handshake(addr: SocketAddr, path: &str) -> String {
    request(
        addr,
        &format!("GET {path} HTTP/1.1"),
        &[
            "Upgrade: websocket",
            "Connection: Upgrade",
            &format!("Sec-WebSocket-Key: {KEY}"),
            "Sec-WebSocket-Version: 13",
        ],
    )
}

/// Closes a client cleanly: sends a close frame and reads until the
/// server's reply (or the end of the stream).
async fn close(mut ws: Ws) {
    ws.close(None).await.expect("send close");
    loop {
        match next_event(&mut ws).await {
            Event::Close(_) | Event::End => return,
            _ => continue,
        }
    }
}

async fn echo_works(ws: &mut Ws, text: &str) {
    send_text(ws, text).await;
    assert_eq!(next_text(ws).await, text);
}

// ---------------------------------------------------------------------------
// 1. --maxforks

#[tokio::test]
async fn maxforks_refuses_with_429_and_frees_the_slot_when_the_child_is_reaped() {
    let server = Server::start(&["--maxforks=1", "cat"]);
    let mut first = connect(&server.url("/")).await;
    echo_works(&mut first, "one").await;

    assert_eq!(handshake_status(&server.url("/"), &[]).await, 429);
    server
        .log
        .wait_for_async("maxforks", TIMEOUT)
        .await
        .expect("a log line about --maxforks");
    assert_eq!(
        server.children().len(),
        1,
        "a refused upgrade must not spawn a child"
    );
    // The first session is unaffected.
    echo_works(&mut first, "still one").await;

    close(first).await;
    assert!(
        wait_until_async(TIMEOUT, || server.children().is_empty()).await,
        "child reaped after the client closed"
    );
    server
        .log
        .wait_for_async("disconnect", TIMEOUT)
        .await
        .expect("session end logged");

    // The slot is released when the session task ends, right after the
    // reap and the disconnect line: no outside event marks the moment, so
    // poll (bounded) for it.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut again = loop {
        match connect_with(&server.url("/"), &[]).await {
            Ok(ws) => break ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 429 => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "slot not freed after the child was reaped"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("reconnect: {e}"),
        }
    };
    echo_works(&mut again, "two").await;
}

#[tokio::test]
async fn maxforks_zero_is_unlimited() {
    let server = Server::start(&["--maxforks=0", "cat"]);
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(connect(&server.url("/")).await);
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        echo_works(ws, &format!("client {i}")).await;
    }
    assert_eq!(server.children().len(), 5);
    assert!(server.log.lines().iter().all(|l| !l.contains("maxforks")));
}

// ---------------------------------------------------------------------------
// 2. --origin and --sameorigin

#[tokio::test]
async fn origin_list_allows_listed_origins_only() {
    let server = Server::start(&[
        "--origin",
        "example.com:8080,localhost,https://secure.org",
        "cat",
    ]);
    let url = server.url("/");
    let status = |origin: &'static str| {
        let url = url.clone();
        async move { handshake_status(&url, &[("Origin", origin)]).await }
    };
    assert_eq!(status("http://example.com:8080").await, 101);
    assert_eq!(status("http://example.com:9090").await, 403, "wrong port");
    assert_eq!(status("http://example.com").await, 403, "default port 80");
    assert_eq!(status("http://evil.com").await, 403);
    assert_eq!(status("http://evil.com:8080").await, 403);
    // A port-less entry matches any port.
    assert_eq!(status("http://localhost").await, 101);
    assert_eq!(status("http://localhost:1234").await, 101);
    assert_eq!(status("https://localhost:443").await, 101);
    // An entry with a scheme must match the scheme.
    assert_eq!(status("https://secure.org").await, 101);
    assert_eq!(status("http://secure.org").await, 403);
    assert_eq!(status("http://secure.org:443").await, 403);
    // No Origin at all.
    assert_eq!(handshake_status(&url, &[]).await, 403);
    assert_eq!(status("null").await, 403);
}

async fn check_same_origin(server: &Server) {
    let url = server.url("/");
    let port = server.addr.port();
    let same = format!("http://127.0.0.1:{port}");
    assert_eq!(handshake_status(&url, &[("Origin", &same)]).await, 101);
    let other_host = format!("http://localhost:{port}");
    assert_eq!(
        handshake_status(&url, &[("Origin", &other_host)]).await,
        403
    );
    assert_eq!(
        handshake_status(&url, &[("Origin", "http://127.0.0.1:1")]).await,
        403
    );
    assert_eq!(
        handshake_status(&url, &[("Origin", "http://evil.com")]).await,
        403
    );
    assert_eq!(handshake_status(&url, &[]).await, 403, "no Origin");
}

#[tokio::test]
async fn sameorigin_compares_origin_with_host() {
    let server = Server::start(&["--sameorigin", "cat"]);
    check_same_origin(&server).await;
}

#[tokio::test]
async fn sameorigin_accepts_boolean_values() {
    let server = Server::start(&["--sameorigin=true", "cat"]);
    check_same_origin(&server).await;

    let open = Server::start(&["--sameorigin=false", "cat"]);
    let url = open.url("/");
    assert_eq!(handshake_status(&url, &[]).await, 101);
    assert_eq!(
        handshake_status(&url, &[("Origin", "http://evil.com")]).await,
        101
    );
}

// ---------------------------------------------------------------------------
// 3. Extra response headers

#[test]
fn extra_headers_go_to_the_right_responses() {
    let server = Server::start(&[
        "--header",
        "X-All: 1",
        "--header-ws",
        "X-Ws: 2",
        "--header-http",
        "X-Http: 3",
        "cat",
    ]);
    let addr = server.addr;

    let (code, head) = raw_request(addr, &handshake(addr, "/"));
    assert_eq!(code, 101, "{head}");
    assert_eq!(header_values(&head, "X-All"), ["1"], "{head}");
    assert_eq!(header_values(&head, "X-Ws"), ["2"], "{head}");
    assert!(header_values(&head, "X-Http").is_empty(), "{head}");

    let (code, head) = raw_request(addr, &request(addr, "GET / HTTP/1.1", &[]));
    assert_eq!(code, 426, "{head}");
    assert_eq!(header_values(&head, "X-All"), ["1"], "{head}");
    assert_eq!(header_values(&head, "X-Http"), ["3"], "{head}");
    assert!(header_values(&head, "X-Ws").is_empty(), "{head}");

    // A refused handshake is a plain HTTP response too.
    let (code, head) = raw_request(
        addr,
        &request(
            addr,
            "GET / HTTP/1.1",
            &[
                "Upgrade: websocket",
                "Connection: Upgrade",
                &format!("Sec-WebSocket-Key: {KEY}"),
                "Sec-WebSocket-Version: 8",
            ],
        ),
    );
    assert_eq!(code, 426, "{head}");
    assert_eq!(header_values(&head, "X-All"), ["1"], "{head}");
    assert_eq!(header_values(&head, "X-Http"), ["3"], "{head}");
    assert!(header_values(&head, "X-Ws").is_empty(), "{head}");
}

// ---------------------------------------------------------------------------
// 4. Refused handshakes

#[tokio::test]
async fn bad_handshakes_are_refused_without_spawning() {
    let server = Server::start(&["sh", "-c", "echo \"id=$WSPIPE_CONNECTION_ID\"; exec cat"]);
    let addr = server.addr;
    let upgrade = ["Upgrade: websocket", "Connection: Upgrade"];
    let key = format!("Sec-WebSocket-Key: {KEY}");
    let v13 = "Sec-WebSocket-Version: 13";

    // Wrong version: 426 naming the version we speak.
    let (code, head) = raw_request(
        addr,
        &request(
            addr,
            "GET / HTTP/1.1",
            &[upgrade[0], upgrade[1], &key, "Sec-WebSocket-Version: 8"],
        ),
    );
    assert_eq!(code, 426, "{head}");
    assert_eq!(
        header_values(&head, "Sec-WebSocket-Version"),
        ["13"],
        "{head}"
    );

    // Missing version is refused the same way.
    let (code, head) = raw_request(
        addr,
        &request(addr, "GET / HTTP/1.1", &[upgrade[0], upgrade[1], &key]),
    );
    assert_eq!(code, 426, "{head}");

    // Missing key.
    let (code, head) = raw_request(
        addr,
        &request(addr, "GET / HTTP/1.1", &[upgrade[0], upgrade[1], v13]),
    );
    assert_eq!(code, 400, "{head}");

    // Keys that are not base64 of 16 bytes.
    for bad_key in [
        "c2hvcnQ=",                 // base64 of "short"
        "not base64 at all!!!!!!!", // not base64
        "dGhlIHNhbXBsZSBub25jZQ",   // unpadded
        "dGhlIHNhbXBsZSBub25jZSEh", // 17 bytes
        "",                         // empty
    ] {
        let key = format!("Sec-WebSocket-Key: {bad_key}");
        let (code, head) = raw_request(
            addr,
            &request(addr, "GET / HTTP/1.1", &[upgrade[0], upgrade[1], &key, v13]),
        );
        assert_eq!(code, 400, "key {bad_key:?}: {head}");
    }

    // POST with upgrade headers.
    let (code, head) = raw_request(
        addr,
        &request(
            addr,
            "POST / HTTP/1.1",
            &[upgrade[0], upgrade[1], &key, v13, "Content-Length: 0"],
        ),
    );
    assert_eq!(code, 405, "{head}");

    // HTTP/1.0 cannot upgrade.
    let (code, head) = raw_request(
        addr,
        &request(addr, "GET / HTTP/1.0", &[upgrade[0], upgrade[1], &key, v13]),
    );
    assert_eq!(code, 400, "{head}");

    // A plain GET gets 426 and a body that says what this is.
    let (code, head, body) = raw_response(
        addr,
        &request(addr, "GET / HTTP/1.1", &["Connection: close"]),
    );
    assert_eq!(code, 426, "{head}");
    assert!(body.contains("WebSocket"), "body: {body:?}");
    let content_type = header_values(&head, "Content-Type").join(",");
    assert!(content_type.starts_with("text/plain"), "{head}");
    assert_eq!(header_values(&head, "Upgrade"), ["websocket"], "{head}");

    // A plain POST.
    let (code, head) = raw_request(
        addr,
        &request(addr, "POST / HTTP/1.1", &["Content-Length: 0"]),
    );
    assert_eq!(code, 405, "{head}");
    let allow = header_values(&head, "Allow").join(",");
    assert!(allow.contains("GET"), "{head}");

    // Nothing was spawned: no child now, and the next session is the first
    // one that got a connection id.
    assert!(server.children().is_empty(), "{:?}", server.children());
    assert!(
        !server.log.lines().iter().any(|l| l.contains(": connect ")),
        "{:?}",
        server.log.lines()
    );
    let mut ws = connect(&server.url("/")).await;
    assert_eq!(next_text(&mut ws).await, "id=1");
    echo_works(&mut ws, "alive").await;
}

// ---------------------------------------------------------------------------
// 5. --dir

struct DirFixture {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
}

fn dir_fixture() -> DirFixture {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    script_external(&root, "chat", "#!/bin/sh\necho chat\n");
    script_external(
        &root,
        "echo.sh",
        "#!/bin/sh\necho \"echo.sh $SCRIPT_NAME\"\n",
    );
    script_external(
        &root.join("sub"),
        "deep",
        "#!/bin/sh\necho \"$SCRIPT_NAME $PATH_INFO\"\n",
    );
    let plain = root.join("plain");
    std::fs::write(&plain, "#!/bin/sh\necho plain\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let outside = script_external(tmp.path(), "outside", "#!/bin/sh\necho outside\n");
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    script_external(&root, ".secret", "#!/bin/sh\necho secret\n");
    // Something a climbing path would reach: tmp/x.
    script_external(tmp.path(), "x", "#!/bin/sh\necho escaped\n");
    DirFixture { _tmp: tmp, root }
}

async fn texts_at(server: &Server, path: &str) -> Vec<String> {
    let mut ws = connect(&server.url(path)).await;
    let (texts, close) = texts_until_close(&mut ws).await;
    assert_eq!(close.0, 1000, "{path}");
    texts
}

#[tokio::test]
async fn dir_runs_scripts_by_path() {
    let fx = dir_fixture();
    let server = Server::start(&["--dir", fx.root.to_str().unwrap()]);
    assert_eq!(texts_at(&server, "/chat").await, ["chat"]);
    assert_eq!(texts_at(&server, "/echo").await, ["echo.sh /echo"]);
    assert_eq!(texts_at(&server, "/sub/deep/a/b").await, ["/sub/deep /a/b"]);
    assert_eq!(texts_at(&server, "/sub/deep").await, ["/sub/deep "]);
}

#[tokio::test]
async fn dir_refuses_missing_forbidden_and_escaping_paths() {
    let fx = dir_fixture();
    let server = Server::start(&["--dir", fx.root.to_str().unwrap()]);
    assert_eq!(handshake_status(&server.url("/missing"), &[]).await, 404);
    assert_eq!(handshake_status(&server.url("/sub"), &[]).await, 404);
    assert_eq!(handshake_status(&server.url("/sub/nope/x"), &[]).await, 404);
    assert_eq!(handshake_status(&server.url("/plain"), &[]).await, 403);
    assert_eq!(handshake_status(&server.url("/escape"), &[]).await, 403);

    for path in [
        "/../x",
        "/%2e%2e/x",
        "/%2E%2E/x",
        "/sub%2f..%2f..%2fx",
        "/sub/../chat",
        "/.secret",
        "/%2esecret",
    ] {
        let (code, head) = raw_request(server.addr, &handshake(server.addr, path));
        assert_eq!(code, 400, "{path}: {head}");
    }
    assert!(server.children().is_empty(), "{:?}", server.children());
    assert!(
        !server.log.lines().iter().any(|l| l.contains(": connect ")),
        "a refused path spawned something: {:?}",
        server.log.lines()
    );
}

#[tokio::test]
async fn dir_example_splits_script_name_and_path_info() {
    let server = Server::start(&["--dir", &examples("dir")]);
    assert_eq!(
        texts_at(&server, "/path-info/x?y=1").await,
        ["SCRIPT_NAME=/path-info", "PATH_INFO=/x", "QUERY_STRING=y=1"]
    );
}

// ---------------------------------------------------------------------------
// 6. The CGI environment

fn env_server(extra: &[&str]) -> Server {
    let mut cmd = std::process::Command::new(bin());
    cmd.env("WSPIPE_TEST_SECRET", "leak").env("LANG_TEST", "ok");
    let dump = examples("dump-env.sh");
    let mut args: Vec<&str> = extra.to_vec();
    args.push(&dump);
    Server::start_cmd(cmd, &args)
}

async fn env_of(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> (BTreeMap<String, String>, u16) {
    let mut ws = connect_with(&server.url(path), headers)
        .await
        .expect("handshake");
    let local_port = match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s.local_addr().unwrap().port(),
        _ => unreachable!("plain TCP"),
    };
    let (lines, close) = texts_until_close(&mut ws).await;
    assert_eq!(close.0, 1000);
    (parse_env(&lines), local_port)
}

#[tokio::test]
async fn child_sees_the_cgi_environment_and_nothing_else() {
    let server = env_server(&[]);
    let port = server.addr.port().to_string();
    let (env, client_port) = env_of(
        &server,
        "/p/q?a=b",
        &[("X-Custom", "v1"), ("X_Under", "no")],
    )
    .await;
    let get = |k: &str| env.get(k).map(String::as_str);

    assert_eq!(get("GATEWAY_INTERFACE"), Some("CGI/1.1"));
    assert_eq!(
        get("SERVER_SOFTWARE"),
        Some(concat!("wspipe/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(get("SERVER_NAME"), Some("127.0.0.1"));
    assert_eq!(get("SERVER_PORT"), Some(port.as_str()));
    assert_eq!(get("SERVER_PROTOCOL"), Some("HTTP/1.1"));
    assert_eq!(get("REQUEST_METHOD"), Some("GET"));
    assert_eq!(get("REQUEST_URI"), Some("/p/q?a=b"));
    assert_eq!(get("SCRIPT_NAME"), Some("/"));
    assert_eq!(get("PATH_INFO"), Some("/p/q"));
    assert_eq!(get("QUERY_STRING"), Some("a=b"));
    assert_eq!(get("REMOTE_ADDR"), Some("127.0.0.1"));
    assert_eq!(get("REMOTE_HOST"), Some("127.0.0.1"));
    let remote_port = get("REMOTE_PORT").expect("REMOTE_PORT");
    assert_eq!(remote_port.parse::<u16>().ok(), Some(client_port));
    assert_eq!(get("HTTP_X_CUSTOM"), Some("v1"));
    assert_eq!(get("HTTP_HOST"), Some(format!("127.0.0.1:{port}").as_str()));
    let id = get("UNIQUE_ID").expect("UNIQUE_ID");
    assert!(!id.is_empty());
    assert_eq!(get("WSPIPE_CONNECTION_ID"), Some(id));
    assert!(env.contains_key("PATH"), "{env:?}");

    for absent in ["WSPIPE_TEST_SECRET", "LANG_TEST", "HTTPS", "HTTP_X_UNDER"] {
        assert!(!env.contains_key(absent), "{absent} leaked: {env:?}");
    }
    assert!(
        !env.values().any(|v| v == "leak"),
        "the secret leaked under another name: {env:?}"
    );
    assert!(
        !env.keys().any(|k| k.starts_with("CARGO_")),
        "the test runner's environment leaked: {env:?}"
    );

    // Each connection has its own id.
    let (env2, _) = env_of(&server, "/", &[]).await;
    let id2 = env2.get("UNIQUE_ID").expect("UNIQUE_ID");
    assert!(!id2.is_empty());
    assert_ne!(id2, id);
    assert_eq!(env2.get("WSPIPE_CONNECTION_ID"), Some(id2));
}

#[tokio::test]
async fn passenv_passes_only_the_named_variables() {
    let server = env_server(&["--passenv", "LANG_TEST"]);
    let (env, _) = env_of(&server, "/", &[]).await;
    assert_eq!(env.get("LANG_TEST").map(String::as_str), Some("ok"));
    assert!(!env.contains_key("WSPIPE_TEST_SECRET"), "{env:?}");
    assert!(env.contains_key("PATH"), "{env:?}");
}

// ---------------------------------------------------------------------------
// 7. --unixsocket

fn unix_daemon(path: &Path, program: &[&str]) -> Daemon {
    let mut args = vec!["--unixsocket", path.to_str().unwrap()];
    args.extend_from_slice(program);
    let daemon = Daemon::spawn(&args);
    daemon.wait_log("serving on unix:");
    daemon
}

async fn unix_echo(path: &Path, text: &str) {
    let mut ws = connect_unix(path).await;
    ws.send(tokio_tungstenite::tungstenite::Message::text(text))
        .await
        .expect("send");
    assert_eq!(next_event_on(&mut ws).await, Event::Text(text.into()));
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn unix_socket_serves_and_is_removed_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ws.sock");
    let mut daemon = unix_daemon(&path, &["cat"]);
    assert!(
        !daemon.log.lines().iter().any(|l| l.contains("ws://")),
        "--unixsocket alone must not listen on TCP: {:?}",
        daemon.log.lines()
    );
    assert!(path.exists());
    unix_echo(&path, "over unix").await;
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!path.exists(), "socket file left behind");
}

#[tokio::test]
async fn socketmode_sets_the_unix_socket_files_permission_bits() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mode.sock");
    let mut daemon = unix_daemon(&path, &["--socketmode", "0700", "cat"]);
    let mode = std::fs::metadata(&path)
        .expect("socket file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    unix_echo(&path, "still served").await;
    assert!(daemon.terminate().success());
}

#[tokio::test]
async fn unix_socket_peer_has_no_remote_address() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("env.sock");
    let dump = examples("dump-env.sh");
    let _daemon = unix_daemon(&path, &[&dump]);
    let mut ws = connect_unix(&path).await;
    let (lines, close) = texts_until_close_on(&mut ws).await;
    assert_eq!(close.0, 1000);
    let env = parse_env(&lines);
    assert_eq!(
        env.get("REMOTE_ADDR").map(String::as_str),
        Some(""),
        "{env:?}"
    );
    assert_eq!(
        env.get("GATEWAY_INTERFACE").map(String::as_str),
        Some("CGI/1.1")
    );
}

#[tokio::test]
async fn unix_socket_replaces_a_stale_socket_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "the dead listener left its file");
    // A child another test thread is spawning may hold a copy of the
    // listener until its exec: wait until nobody listens any more.
    assert!(
        wait_until_async(TIMEOUT, || {
            std::os::unix::net::UnixStream::connect(&path).is_err()
        })
        .await
    );
    let _daemon = unix_daemon(&path, &["cat"]);
    unix_echo(&path, "fresh").await;
}

#[tokio::test]
async fn unix_socket_in_use_is_not_stolen() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("live.sock");
    let _first = unix_daemon(&path, &["cat"]);
    let out = run_bin(&["--unixsocket", path.to_str().unwrap(), "cat"]);
    assert!(!out.status.success(), "{:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    // The first server still owns the path.
    assert!(path.exists());
    unix_echo(&path, "still mine").await;
}

// ---------------------------------------------------------------------------
// 8. Flags

fn assert_usage_error(args: &[&str]) {
    let out = run_bin(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("wspipe: "), "{args:?}: {stderr}");
}

#[test]
fn unknown_flag_is_a_one_line_usage_error() {
    assert_usage_error(&["--port=0", "--address=127.0.0.1", "--nosuchflag", "cat"]);
    let out = run_bin(&["--port=0", "--address=127.0.0.1", "--nosuchflag", "cat"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchflag"));
}

#[test]
fn dir_and_command_together_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    assert_usage_error(&[
        "--port=0",
        "--address=127.0.0.1",
        "--dir",
        tmp.path().to_str().unwrap(),
        "cat",
    ]);
}

#[test]
fn no_program_is_a_usage_error() {
    assert_usage_error(&["--port=0", "--address=127.0.0.1"]);
}

#[test]
fn bad_port_is_a_usage_error() {
    assert_usage_error(&["--address=127.0.0.1", "--port=abc", "cat"]);
}

#[test]
fn bad_header_is_a_usage_error() {
    assert_usage_error(&[
        "--port=0",
        "--address=127.0.0.1",
        "--header",
        "BadHeader",
        "cat",
    ]);
}

#[test]
fn version_prints_the_version() {
    let out = run_bin(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
    assert!(stdout.contains("wspipe"), "{stdout}");
}

#[test]
fn help_describes_the_flags() {
    let out = run_bin(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("--port"), "{stdout}");
    assert!(stdout.contains("--dir"), "{stdout}");
}

/// A loopback port nothing listens on now (bound, then let go).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// websocketd refuses a COMMAND it cannot run at start, with exit status 1:
/// so does wspipe, with one line naming it, before it listens anywhere.
#[test]
fn a_command_that_cannot_run_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let plain = plain.to_str().unwrap().to_string();
    let cases: [(&[&str], &str, &str); 5] = [
        (&["/nonexistent/prog"], "/nonexistent/prog", "no such file"),
        (
            &["./no-such-program", "-x"],
            "./no-such-program",
            "no such file",
        ),
        (
            &["no-such-program-on-path"],
            "no-such-program-on-path",
            "not found in PATH",
        ),
        (&[plain.as_str()], plain.as_str(), "not executable"),
        (
            &["--command", "/nonexistent/prog --flag"],
            "/nonexistent/prog",
            "no such file",
        ),
    ];
    for (command, name, why) in cases {
        let port = free_port();
        let socket = tmp.path().join("ws.sock");
        let port_arg = port.to_string();
        let mut args = vec![
            "--port",
            &port_arg,
            "--address=127.0.0.1",
            "--unixsocket",
            socket.to_str().unwrap(),
        ];
        args.extend_from_slice(command);
        let out = run_bin(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {stderr}");
        assert_eq!(
            stderr,
            format!("wspipe: unable to locate specified COMMAND '{name}': {why}\n"),
            "{command:?}"
        );
        assert!(out.stdout.is_empty(), "{command:?}");
        // Nothing was listening: neither the port nor the socket file.
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        assert!(!socket.exists(), "{command:?}");
    }
}

/// The check does not get in the way of a command that can run: a bare
/// name found in PATH, and a path relative to wspipe's working directory.
#[tokio::test]
async fn a_command_that_can_run_still_starts() {
    let server = Server::start(&["cat"]);
    let mut ws = connect(&server.url("/")).await;
    echo_works(&mut ws, "bare name").await;

    let tmp = tempfile::tempdir().unwrap();
    script_external(tmp.path(), "echo.sh", "#!/bin/sh\nexec cat\n");
    let mut cmd = std::process::Command::new(bin());
    cmd.current_dir(tmp.path());
    let server = Server::start_cmd(cmd, &["./echo.sh"]);
    let mut ws = connect(&server.url("/")).await;
    echo_works(&mut ws, "relative path").await;
}

#[tokio::test]
async fn go_style_single_dash_flags_start_a_server() {
    let daemon = Daemon::spawn(&["-port=0", "-address=127.0.0.1", "cat"]);
    let addr = daemon.tcp_addr();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 0);
    let mut ws = connect(&format!("ws://{addr}/")).await;
    echo_works(&mut ws, "go style").await;
    assert_eq!(daemon.children().len(), 1);
}

#[tokio::test]
async fn sameorigin_behind_a_tls_terminating_proxy_trusts_its_forwarded_proto() {
    // TLS ends at the proxy: the browser's Origin is https (port 443) while
    // the hop to wspipe is plain HTTP. Only a trusted proxy may say so.
    let headers = [
        ("Origin", "https://chat.example"),
        ("Host", "chat.example"),
        ("X-Forwarded-Proto", "https"),
    ];
    let trusted = Server::start(&["--sameorigin", "--trusted-proxy", "127.0.0.1", "cat"]);
    assert_eq!(handshake_status(&trusted.url("/"), &headers).await, 101);
    let untrusted = Server::start(&["--sameorigin", "cat"]);
    assert_eq!(handshake_status(&untrusted.url("/"), &headers).await, 403);
}
