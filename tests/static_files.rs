//! End to end: `--staticdir` on the same port as the WebSockets.

mod common;

use std::os::unix::fs::symlink;

use common::*;

/// A static dir with an index, a stylesheet, a sub dir, a big file, and
/// things that must not be served.
fn site() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("www");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>\n").unwrap();
    std::fs::write(root.join("style.css"), "body { color: red }\n").unwrap();
    std::fs::write(root.join("sub/index.html"), "<p>sub</p>\n").unwrap();
    std::fs::write(root.join("data.bin"), (0..=255u8).collect::<Vec<u8>>()).unwrap();
    std::fs::write(root.join(".secret"), "hidden\n").unwrap();
    std::fs::write(tmp.path().join("outside.txt"), "outside\n").unwrap();
    symlink(tmp.path().join("outside.txt"), root.join("escape.txt")).unwrap();
    let root = root.to_str().unwrap().to_string();
    (tmp, root)
}

fn get(server: &Server, path: &str, extra: &str) -> (u16, String) {
    raw_request(
        server.addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"),
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn files_and_websockets_share_the_port() {
    let (_tmp, root) = site();
    let server = Server::start(&["--staticdir", &root, "cat"]);
    let (status, head) = get(&server, "/", "");
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("text/html"));
    let (status, head) = get(&server, "/style.css", "");
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-type"), Some("text/css"));
    let (status, _) = get(&server, "/sub/", "");
    assert_eq!(status, 200, "index.html for a directory");
    // The same path upgrades to the program.
    let mut ws = connect(&server.url("/style.css")).await;
    send_text(&mut ws, "through the socket").await;
    assert_eq!(next_text(&mut ws).await, "through the socket");
}

#[test]
fn caching_and_ranges_follow_http() {
    let (_tmp, root) = site();
    let server = Server::start(&["--staticdir", &root, "cat"]);
    let (status, head) = get(&server, "/style.css", "");
    assert_eq!(status, 200);
    let modified = header(&head, "last-modified")
        .expect("Last-Modified")
        .to_string();
    let (status, _) = get(
        &server,
        "/style.css",
        &format!("If-Modified-Since: {modified}\r\n"),
    );
    assert_eq!(status, 304);
    let (status, head) = get(&server, "/data.bin", "Range: bytes=10-19\r\n");
    assert_eq!(status, 206, "{head}");
    assert_eq!(header(&head, "content-range"), Some("bytes 10-19/256"));
    assert_eq!(header(&head, "content-length"), Some("10"));
}

#[test]
fn missing_hidden_escaping_and_traversing_paths_are_refused() {
    let (_tmp, root) = site();
    let server = Server::start(&["--staticdir", &root, "cat"]);
    assert_eq!(get(&server, "/nope.html", "").0, 404);
    assert_eq!(get(&server, "/.secret", "").0, 404);
    assert_eq!(
        get(&server, "/escape.txt", "").0,
        403,
        "symlink out of the dir"
    );
    for path in [
        "/../outside.txt",
        "/sub/../../outside.txt",
        "/%2e%2e/outside.txt",
        "/sub%2f..%2f..%2foutside.txt",
    ] {
        let (status, head) = get(&server, path, "");
        assert!((400..500).contains(&status), "{path}: {status}\n{head}");
        assert_ne!(status, 200, "{path}");
    }
    let (status, _) = raw_request(
        server.addr,
        "POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
}

#[test]
fn files_only_server_needs_no_program() {
    let (_tmp, root) = site();
    let server = Server::start(&["--staticdir", &root]);
    assert_eq!(get(&server, "/", "").0, 200);
    let (status, _) = raw_request(
        server.addr,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(status, 404, "no WebSocket endpoint configured");
}

#[test]
fn devconsole_and_staticdir_do_not_combine() {
    let (_tmp, root) = site();
    let out = std::process::Command::new(bin())
        .args(["--devconsole", "--staticdir", &root, "cat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--devconsole"));
}
