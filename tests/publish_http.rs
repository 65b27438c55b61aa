//! End to end: `--publish`, channel publishes over HTTP (a Unix socket or
//! loopback TCP, with or without a bearer token).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use common::*;

/// One HTTP/1.1 request over a Unix socket; (status, head, body).
fn over_unix(path: &std::path::Path, request: &str) -> (u16, String, String) {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn post(channel: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {channel} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_post_on_the_unix_socket_publishes_to_the_channel() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("publish.sock");
    let server = Server::start(&[
        "--pubsub",
        "--publish",
        sock.to_str().unwrap(),
        "--maxframesize",
        "64",
    ]);
    server.wait_log("publish on unix:");
    let mut a = connect(&server.url("/room")).await;
    let mut b = connect(&server.url("/room")).await;
    // Both are members as soon as their upgrade is answered.
    let (status, head, body) = over_unix(&sock, &post("/room", "hello", ""));
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("application/json"), "{head}");
    assert_eq!(body.trim(), r#"{"ok":true,"delivered":2,"dropped":0}"#);
    assert_eq!(next_text(&mut a).await, "hello");
    assert_eq!(next_text(&mut b).await, "hello");

    let (status, _, body) = over_unix(&sock, &post("/nobody", "x", ""));
    assert_eq!(
        (status, body.trim()),
        (200, r#"{"ok":true,"delivered":0,"dropped":0}"#)
    );
    let (status, head, body) = over_unix(
        &sock,
        "GET /room HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405, "{head}");
    assert!(head.to_ascii_lowercase().contains("allow: post"), "{head}");
    assert!(body.contains(r#""ok":false"#), "{body}");
    let (status, _, body) = over_unix(&sock, &post("/a%3Fb?x=1", "x", ""));
    assert_eq!(status, 200, "a query is not part of the channel: {body}");
    let (status, _, body) = over_unix(&sock, &post("/room", &"y".repeat(65), ""));
    assert_eq!(status, 413, "{body}");
    // "é" is two bytes: one of them alone is not UTF-8, in text mode 400.
    let cut =
        "POST /room HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\n\u{e9}";
    let (status, _, body) = over_unix(&sock, cut);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not UTF-8"), "{body}");
    let (status, _, _) = over_unix(&sock, &post("/room", "\u{e9}", ""));
    assert_eq!(status, 200);
    // Nothing else reached /room in between (not the 413, not /a%3Fb).
    assert_eq!(next_text(&mut a).await, "\u{e9}");
}

#[tokio::test]
async fn tcp_with_a_token_refuses_requests_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let server = Server::start(&[
        "--pubsub",
        "--publish",
        "127.0.0.1:0",
        "--publish-token",
        token.to_str().unwrap(),
    ]);
    let line = server.wait_log("publish on http://");
    let addr = http_addr(&line);
    let mut ws = connect(&server.url("/news")).await;
    for auth in [
        "",
        "Authorization: Bearer wrong\r\n",
        "Authorization: s3cret\r\n",
    ] {
        let (status, head, _) = raw_response(addr, &post("/news", "x", auth));
        assert_eq!(status, 401, "{auth:?}: {head}");
        assert!(
            head.contains("WWW-Authenticate: Bearer") || head.contains("www-authenticate: Bearer"),
            "{head}"
        );
    }
    let (status, _, body) = raw_response(
        addr,
        &post("/news", "extra", "Authorization: Bearer s3cret\r\n"),
    );
    assert_eq!(
        (status, body.trim()),
        (200, r#"{"ok":true,"delivered":1,"dropped":0}"#)
    );
    assert_eq!(next_text(&mut ws).await, "extra");
}

#[test]
fn a_network_address_needs_a_token() {
    let out = run_bin(&["--pubsub", "--publish", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--publish-token"), "{err}");
    let out = run_bin(&["--pubsub", "--publish-token", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_unix_socket_gets_the_mode_asked_for() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("publish.sock");
    // No --publish-mode: 600, as for the control socket; then what is asked.
    for (flags, want) in [
        (&[][..], 0o600),
        (&["--publish-mode", "660"][..], 0o660),
        (&["--publish-mode", "600"][..], 0o600),
        (&["--publish-mode=640"][..], 0o640),
    ] {
        let mut args = vec!["--pubsub", "--publish", sock.to_str().unwrap()];
        args.extend_from_slice(flags);
        let server = Server::start(&args);
        server.wait_log("publish on unix:");
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "{flags:?}: {mode:o}");
        // And it still takes publishes.
        let (status, _, body) = over_unix(&sock, &post("/room", "x", ""));
        assert_eq!(status, 200, "{flags:?}: {body}");
        drop(server);
        assert!(
            wait_until(TIMEOUT, || !sock.exists()),
            "socket removed at exit"
        );
    }
}

#[test]
fn a_bad_publish_mode_exits_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("publish.sock");
    let sock = sock.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--publish", sock, "--publish-mode", "999"],
            "--publish-mode 999: expected octal permission bits like 600",
        ),
        (
            vec!["--publish", sock, "--publish-mode", "rw-rw----"],
            "--publish-mode rw-rw----: expected octal permission bits like 600",
        ),
        (
            vec!["--publish", sock, "--publish-mode", "1777"],
            "--publish-mode 1777: expected octal permission bits like 600",
        ),
        // Only a Unix socket has a mode.
        (
            vec!["--publish", "127.0.0.1:0", "--publish-mode", "660"],
            "--publish-mode needs a Unix socket --publish; 127.0.0.1:0 is a TCP address",
        ),
        (
            vec!["--publish-mode", "660"],
            "--publish-mode needs --publish",
        ),
    ] {
        let mut all = vec!["--pubsub"];
        all.extend_from_slice(&args);
        let out = run_bin(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!std::path::Path::new(sock).exists(), "nothing was bound");
}
