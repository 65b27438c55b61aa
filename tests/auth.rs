//! End to end: `--basic-auth`. A client without valid credentials gets
//! 401 with a challenge and starts nothing (the server's children are
//! counted); an admitted one's child gets REMOTE_USER and AUTH_TYPE and
//! never the credentials.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use common::shared::live_children;
use common::*;
use futures_util::future::join_all;

/// An htpasswd file: alice (bcrypt) and bob ({SHA}).
fn users(dir: &Path) -> PathBuf {
    let alice = bcrypt::hash("alice pw", 4).unwrap();
    let bob = {
        use sha1::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(b"bob pw"))
    };
    let path = dir.join("users");
    std::fs::write(
        &path,
        format!("# test users\nalice:{alice}\nbob:{{SHA}}{bob}\n"),
    )
    .unwrap();
    path
}

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// A raw upgrade request with `extra` header lines.
fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /x HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A `--basic-auth` server of a script that prints its environment.
fn env_server(dir: &Path, extra: &[&str]) -> Server {
    let program = script(dir, "env.sh", "#!/bin/sh\nenv\necho end of env\n");
    let file = users(dir);
    let mut args = vec!["--basic-auth", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(program.to_str().unwrap());
    Server::start(&args)
}

#[tokio::test]
async fn without_valid_credentials_an_upgrade_gets_401_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = env_server(dir.path(), &["--realm", "Chat room"]);
    for extra in [
        String::new(),
        format!("Authorization: {}\r\n", basic("alice", "wrong")),
        format!("Authorization: {}\r\n", basic("carol", "alice pw")),
        "Authorization: Basic !!!\r\n".to_owned(),
        "Authorization: Bearer abc\r\n".to_owned(),
        format!("Authorization: Basic {}\r\n", "A".repeat(5000)),
    ] {
        let (status, head) = raw_request(server.addr, &upgrade_request(&extra));
        assert_eq!(status, 401, "{extra:.60}: {head}");
        assert_eq!(
            header_values(&head, "www-authenticate"),
            ["Basic realm=\"Chat room\", charset=\"UTF-8\""]
        );
    }
    assert!(
        server.children().is_empty(),
        "no child for a refused client"
    );
    let line = server
        .wait_log_async("refused: wrong user name or password")
        .await;
    assert!(line.contains("status=401"), "{line}");
}

#[tokio::test]
async fn an_admitted_client_s_child_knows_its_user_and_not_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = env_server(dir.path(), &[]);
    for (user, password) in [("alice", "alice pw"), ("bob", "bob pw")] {
        let auth = basic(user, password);
        let mut ws = connect_with(&server.url("/x"), &[("Authorization", &auth)])
            .await
            .expect("admitted");
        let (lines, _) = texts_until_close(&mut ws).await;
        let env = parse_env(&lines);
        assert_eq!(env.get("REMOTE_USER").map(String::as_str), Some(user));
        assert_eq!(env.get("AUTH_TYPE").map(String::as_str), Some("Basic"));
        assert!(!env.contains_key("HTTP_AUTHORIZATION"), "{env:?}");
        assert!(
            !lines.iter().any(|l| l.contains(password)),
            "the password leaked"
        );
    }
}

#[tokio::test]
async fn a_flood_of_bad_credentials_starts_no_child_and_the_right_ones_still_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let ctl = socket.to_str().unwrap();
    let server = env_server(dir.path(), &["--control", ctl]);
    server.wait_log("control socket at");
    let url = server.url("/x");
    let guesses = (0..200).map(|i| {
        let url = url.clone();
        async move {
            let auth = basic("alice", &format!("guess {i}"));
            handshake_status(&url, &[("Authorization", &auth)]).await
        }
    });
    let statuses = join_all(guesses).await;
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "{statuses:?}"
    );
    assert!(server.children().is_empty());
    let auth = basic("alice", "alice pw");
    let mut ws = connect_with(&url, &[("Authorization", &auth)])
        .await
        .expect("admitted");
    let (lines, _) = texts_until_close(&mut ws).await;
    assert!(lines.contains(&"REMOTE_USER=alice".to_owned()));
    let out = std::process::Command::new(bin())
        .args(["ctl", "--socket", ctl, "stats", "--json"])
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["auth_refused_total"], 200);
    assert_eq!(stats["refused_total"], 200);
}

#[tokio::test]
async fn with_auth_http_static_files_need_credentials_too() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("index.html"), "hello\n").unwrap();
    let get = |auth: Option<String>| {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!("GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\r\n")
    };
    let open = env_server(dir.path(), &["--staticdir", site.to_str().unwrap()]);
    assert_eq!(
        raw_response(open.addr, &get(None)).0,
        200,
        "files stay open by default"
    );
    assert_eq!(
        raw_request(open.addr, &upgrade_request("")).0,
        401,
        "upgrades do not"
    );
    let guarded = env_server(
        dir.path(),
        &["--auth-http", "--staticdir", site.to_str().unwrap()],
    );
    let (status, head, _) = raw_response(guarded.addr, &get(None));
    assert_eq!(status, 401);
    assert_eq!(header_values(&head, "www-authenticate").len(), 1);
    let (status, _, body) = raw_response(guarded.addr, &get(Some(basic("bob", "bob pw"))));
    assert_eq!((status, body.as_str()), (200, "hello\n"));
}

#[test]
fn a_bad_users_file_or_realm_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let weak = dir.path().join("weak");
    std::fs::write(
        &weak,
        "# old\nalice:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\n",
    )
    .unwrap();
    let good = users(dir.path());
    let missing = dir.path().join("missing");
    for (args, needle) in [
        (
            vec!["--basic-auth", weak.to_str().unwrap(), "cat"],
            ":2: user \"alice\": MD5",
        ),
        (
            vec!["--basic-auth", missing.to_str().unwrap(), "cat"],
            "missing: No such file",
        ),
        (
            vec!["--auth-http", "cat"],
            "--auth-http needs one of --basic-auth",
        ),
        (
            vec![
                "--basic-auth",
                good.to_str().unwrap(),
                "--realm",
                "a\"b",
                "cat",
            ],
            "--realm",
        ),
    ] {
        assert_usage_error(&args, needle);
    }
}

/// A `--auth-cmd` server: the command admits the cookie `sid=good` as
/// alice with a role, refuses other cookies, hangs on `sid=slow` and
/// crashes on `sid=crash`.
fn command_server(dir: &Path) -> Server {
    let check = script(
        dir,
        "check.sh",
        "#!/bin/sh\ncase \"$HTTP_COOKIE\" in\n\
         sid=good) echo REMOTE_USER=alice; echo ROLE=admin; echo \"FROM=$REMOTE_ADDR\" ;;\n\
         sid=slow) exec sleep 30 ;;\n\
         sid=crash) kill -SEGV $$ ;;\n\
         *) exit 1 ;;\nesac\n",
    );
    let program = script(dir, "env.sh", "#!/bin/sh\nenv\necho end of env\n");
    Server::start(&[
        "--auth-cmd",
        check.to_str().unwrap(),
        "--auth-timeout",
        "300",
        program.to_str().unwrap(),
    ])
}

#[tokio::test]
async fn auth_cmd_admits_refuses_and_fails_closed_before_any_child_starts() {
    let dir = tempfile::tempdir().unwrap();
    let server = command_server(dir.path());
    let url = server.url("/x?room=1");
    for (cookie, status) in [("sid=bad", 403), ("sid=slow", 503), ("sid=crash", 503)] {
        let got = handshake_status(&url, &[("Cookie", cookie)]).await;
        assert_eq!(got, status, "{cookie}");
        assert!(
            live_children(&server).is_empty(),
            "{cookie}: no session child (the check's own is gone)"
        );
    }
    assert_eq!(handshake_status(&url, &[]).await, 403, "no cookie");
    let mut ws = connect_with(&url, &[("Cookie", "sid=good")])
        .await
        .expect("admitted");
    let (lines, _) = texts_until_close(&mut ws).await;
    let env = parse_env(&lines);
    assert_eq!(env.get("REMOTE_USER").map(String::as_str), Some("alice"));
    assert_eq!(env.get("AUTH_TYPE").map(String::as_str), Some("Command"));
    assert_eq!(
        env.get("WSPIPE_AUTH_ROLE").map(String::as_str),
        Some("admin")
    );
    assert_eq!(
        env.get("WSPIPE_AUTH_FROM").map(String::as_str),
        Some("127.0.0.1")
    );
    assert!(!env.contains_key("ROLE"), "namespaced, never raw");
    server
        .wait_log_async("--auth-cmd failed: no answer within")
        .await;
}

#[test]
fn a_missing_auth_cmd_or_two_mechanisms_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let users = users(dir.path());
    for (args, needle) in [
        (
            vec!["--auth-cmd", "/nonexistent/check", "cat"],
            "--auth-cmd /nonexistent/check",
        ),
        (
            vec![
                "--auth-cmd",
                "true",
                "--basic-auth",
                users.to_str().unwrap(),
                "cat",
            ],
            "only one of",
        ),
    ] {
        assert_usage_error(&args, needle);
    }
}

/// A little auth service on loopback: answers by the request's cookie and
/// keeps every request head it got.
struct AuthService {
    addr: std::net::SocketAddr,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn auth_service() -> AuthService {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let cookie = head
                    .lines()
                    .find_map(|l| l.strip_prefix("cookie: "))
                    .unwrap_or("")
                    .to_owned();
                kept.lock().unwrap().push(head);
                let answer = match cookie.as_str() {
                    "sid=good" => "HTTP/1.1 204 No Content\r\nWspipe-Env-Role: admin\r\nWspipe-Env-Remote-User: alice\r\n\r\n",
                    "sid=login" => "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"app\"\r\nContent-Length: 0\r\n\r\n",
                    "sid=slow" => {
                        std::thread::sleep(std::time::Duration::from_secs(3));
                        "HTTP/1.1 204 No Content\r\n\r\n"
                    }
                    "sid=garbage" => "nonsense\r\n\r\n",
                    "sid=error" => "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
                    _ => "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
                };
                let _ = stream.write_all(answer.as_bytes());
            });
        }
    });
    AuthService { addr, heads }
}

#[tokio::test]
async fn auth_url_decides_from_the_original_request_and_never_trusts_forged_headers() {
    let dir = tempfile::tempdir().unwrap();
    let service = auth_service();
    let program = script(dir.path(), "env.sh", "#!/bin/sh\nenv\necho end of env\n");
    let url = format!("http://{}/check", service.addr);
    let server = Server::start(&[
        "--auth-url",
        &url,
        "--auth-timeout",
        "300",
        program.to_str().unwrap(),
    ]);
    let ws_url = server.url("/room?x=1");
    for (cookie, status) in [
        ("sid=bad", 403),
        ("sid=login", 401),
        ("sid=slow", 503),
        ("sid=garbage", 503),
        ("sid=error", 503),
    ] {
        assert_eq!(
            handshake_status(&ws_url, &[("Cookie", cookie)]).await,
            status,
            "{cookie}"
        );
    }
    assert!(
        live_children(&server).is_empty(),
        "no child for a refused client"
    );
    let (_, head) = raw_request(server.addr, &upgrade_request("Cookie: sid=login\r\n"));
    assert_eq!(
        header_values(&head, "www-authenticate"),
        ["Bearer realm=\"app\""]
    );

    let forged = [
        ("Cookie", "sid=good"),
        ("X-Original-URI", "/forged"),
        ("Wspipe-Env-Role", "root"),
    ];
    let mut ws = connect_with(&ws_url, &forged).await.expect("admitted");
    let (lines, _) = texts_until_close(&mut ws).await;
    let env = parse_env(&lines);
    assert_eq!(env.get("REMOTE_USER").map(String::as_str), Some("alice"));
    assert_eq!(env.get("AUTH_TYPE").map(String::as_str), Some("URL"));
    assert_eq!(
        env.get("WSPIPE_AUTH_ROLE").map(String::as_str),
        Some("admin")
    );
    let heads = service.heads.lock().unwrap().clone();
    let admitted = heads.iter().rev().find(|h| h.contains("sid=good")).unwrap();
    assert!(
        admitted.starts_with("GET /check HTTP/1.1\r\n"),
        "{admitted}"
    );
    assert!(
        admitted.contains("x-original-uri: /room?x=1\r\n"),
        "{admitted}"
    );
    assert!(
        admitted.contains("x-original-method: GET\r\n"),
        "{admitted}"
    );
    assert!(
        admitted.contains("x-original-remote-addr: 127.0.0.1\r\n"),
        "{admitted}"
    );
    assert!(
        !admitted.contains("/forged") && !admitted.contains("root"),
        "{admitted}"
    );
    assert!(
        !admitted.to_ascii_lowercase().contains("sec-websocket-key"),
        "{admitted}"
    );
}

#[tokio::test]
async fn an_auth_url_nobody_listens_on_fails_closed_with_503() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/check");
    let server = Server::start(&["--auth-url", &url, "cat"]);
    assert_eq!(handshake_status(&server.url("/"), &[]).await, 503);
    assert!(live_children(&server).is_empty());
    server
        .wait_log_async("--auth-url failed: cannot connect")
        .await;
    let out = run_bin(&["--auth-url", "http://10.1.2.3:80/", "cat"]);
    assert_eq!(out.status.code(), Some(2), "not loopback");
}

/// A service on a Unix socket that admits everyone as alice, to the
/// channels `/lobby` and `/rooms/*`; keeps every request head it got.
fn unix_auth_service(path: &Path) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = heads.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            kept.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\nWspipe-Env-Remote-User: alice\r\n\
                  Wspipe-Channels: /lobby\r\nWspipe-Channels: /rooms/*\r\n\r\n",
            );
        }
    });
    heads
}

#[tokio::test]
async fn auth_url_on_a_unix_socket_admits_and_its_channels_limit_the_paths() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("auth.sock");
    let heads = unix_auth_service(&socket);
    let program = script(dir.path(), "env.sh", "#!/bin/sh\nenv\necho end of env\n");
    let url = format!("unix:{}:/ws-auth", socket.display());
    let server = Server::start(&["--auth-url", &url, program.to_str().unwrap()]);
    let mut ws = connect_with(&server.url("/rooms/7?x=1"), &[("Cookie", "sid=1")])
        .await
        .expect("admitted");
    let (lines, _) = texts_until_close(&mut ws).await;
    let env = parse_env(&lines);
    assert_eq!(env.get("REMOTE_USER").map(String::as_str), Some("alice"));
    assert_eq!(env.get("AUTH_TYPE").map(String::as_str), Some("URL"));
    let head = heads.lock().unwrap().last().cloned().unwrap();
    assert!(head.starts_with("GET /ws-auth HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("x-original-uri: /rooms/7?x=1\r\n"), "{head}");
    assert!(head.contains("cookie: sid=1\r\n"), "{head}");

    let children = live_children(&server).len();
    for path in ["/rooms", "/admin", "/lobby/x"] {
        assert_eq!(
            handshake_status(&server.url(path), &[]).await,
            403,
            "{path}"
        );
    }
    assert_eq!(
        live_children(&server).len(),
        children,
        "no child for a refused path"
    );
    assert_eq!(handshake_status(&server.url("/lobby"), &[]).await, 101);
    server
        .wait_log_async("refused: channel not permitted for this client")
        .await;
}
