//! End to end: CGI/1.1 under `--cgidir`. The environment a script sees, the
//! request body on stdin, the header block (Status, Location, custom
//! headers), scripts that misbehave (502), big outputs streamed in bounded
//! memory, --maxforks, --staticdir overlapping --cgidir, no leaked server
//! environment, no zombies, and WebSockets on the same port.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A response read over a raw socket.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        header_values(&self.head, name).into_iter().next()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request (with `Connection: close`) and returns the reader
/// positioned at the start of the response.
fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let chunked = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    let has_length = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if !body.is_empty() && !chunked && !has_length {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    // Written from a thread: a script may answer before reading it all.
    let mut writer = stream.try_clone().unwrap();
    let body = body.to_vec();
    std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    BufReader::new(stream)
}

/// Reads a response head: (status, head text).
fn read_resp_head(r: &mut impl BufRead) -> (u16, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head)
}

/// Reads a response body as the head frames it.
fn read_body(r: &mut impl BufRead, head: &str) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let chunked = header_values(head, "transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "chunked body cut short",
                ));
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("chunk size {line:?}"))
                })?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t)? == 0 || t == "\r\n" {
                        return Ok(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    }
    match header_values(head, "content-length").first() {
        Some(len) => {
            body.resize(len.parse().unwrap(), 0);
            r.read_exact(&mut body)?;
        }
        None => {
            r.read_to_end(&mut body)?;
        }
    }
    Ok(body)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut r = open(addr, method, path, headers, body);
    let (status, head) = read_resp_head(&mut r);
    let body = if method == "HEAD" {
        Vec::new()
    } else {
        read_body(&mut r, &head).expect("complete body")
    };
    Resp { status, head, body }
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"")
}

/// A `--cgidir` in a fresh temporary directory.
fn cgidir() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cgi");
    std::fs::create_dir(&dir).unwrap();
    let s = dir.to_str().unwrap().to_owned();
    (tmp, s)
}

/// Writes an executable sh script.
fn sh(dir: impl AsRef<Path>, name: &str, body: &str) {
    script(dir.as_ref(), name, &format!("#!/bin/sh\n{body}\n"));
}

/// The script prints its whole environment as the body.
const ENV_SCRIPT: &str = "printf 'Content-Type: text/plain\\r\\n\\r\\n'\nenv";

fn env_of(resp: &Resp) -> std::collections::BTreeMap<String, String> {
    let lines: Vec<String> = resp.text().lines().map(str::to_owned).collect();
    parse_env(&lines)
}

fn assert_no_children(server: &Server) {
    assert!(
        wait_until(TIMEOUT, || server.children().is_empty()),
        "children left: {:?}",
        server.children()
    );
}

#[test]
fn get_sees_the_cgi_environment() {
    let (_tmp, dir) = cgidir();
    std::fs::create_dir(Path::new(&dir).join("sub")).unwrap();
    sh(Path::new(&dir).join("sub"), "env.sh", ENV_SCRIPT);
    let server = Server::start(&["--cgidir", &dir]);
    let resp = request(
        server.addr,
        "GET",
        "/sub/env.sh/extra/p%20q?x=1&y=two",
        &[("X-Test", "hello")],
        b"",
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-type").as_deref(), Some("text/plain"));
    let env = env_of(&resp);
    let var = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(var("QUERY_STRING"), Some("x=1&y=two"));
    assert_eq!(var("REQUEST_METHOD"), Some("GET"));
    assert_eq!(var("SCRIPT_NAME"), Some("/sub/env.sh"));
    assert_eq!(var("PATH_INFO"), Some("/extra/p q"));
    assert_eq!(
        var("REQUEST_URI"),
        Some("/sub/env.sh/extra/p%20q?x=1&y=two")
    );
    assert!(
        var("SERVER_SOFTWARE").unwrap().starts_with("wspipe/"),
        "{env:?}"
    );
    assert_eq!(var("GATEWAY_INTERFACE"), Some("CGI/1.1"));
    assert_eq!(var("SERVER_PROTOCOL"), Some("HTTP/1.1"));
    assert_eq!(var("REMOTE_ADDR"), Some("127.0.0.1"));
    assert!(var("REMOTE_PORT").is_some_and(|p| p.parse::<u16>().is_ok()));
    assert_eq!(var("SERVER_NAME"), Some("127.0.0.1"));
    assert_eq!(
        var("SERVER_PORT"),
        Some(server.addr.port().to_string().as_str())
    );
    assert_eq!(var("HTTP_X_TEST"), Some("hello"));
    assert_eq!(var("CONTENT_LENGTH"), Some(""));
    assert!(var("SCRIPT_FILENAME").unwrap().ends_with("/cgi/sub/env.sh"));
    let line = server
        .log
        .wait_for("path=/sub/env.sh/extra/p%20q", TIMEOUT)
        .expect("access log line");
    assert!(line.contains("wspipe::access"), "{line}");
    assert!(
        line.contains("method=GET") && line.contains("status=200"),
        "{line}"
    );
    assert!(
        line.contains(" pid=") && line.contains("duration="),
        "{line}"
    );
    assert_no_children(&server);
}

#[test]
fn scripts_run_in_their_own_directory() {
    let (_tmp, dir) = cgidir();
    let sub = Path::new(&dir).join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("data.txt"), "beside the script\n").unwrap();
    sh(
        &sub,
        "cwd.sh",
        "printf 'Content-Type: text/plain\\r\\n\\r\\n'\npwd -P\ncat data.txt",
    );
    // wspipe itself runs elsewhere: in the temporary directory's root.
    let mut cmd = Command::new(bin());
    cmd.current_dir(_tmp.path());
    let server = Server::start_cmd(cmd, &["--cgidir", &dir]);
    let resp = get(server.addr, "/sub/cwd.sh/more?q=1");
    assert_eq!(resp.status, 200, "{resp:?}");
    let real = sub.canonicalize().unwrap();
    assert_eq!(
        resp.text(),
        format!("{}\nbeside the script\n", real.display())
    );
    assert_no_children(&server);
}

#[test]
fn server_environment_does_not_leak_into_scripts() {
    let (_tmp, dir) = cgidir();
    sh(&dir, "env.sh", ENV_SCRIPT);
    let mut cmd = Command::new(bin());
    cmd.env("WSPIPE_CGI_SECRET", "hunter2-secret-value");
    let server = Server::start_cmd(cmd, &["--cgidir", &dir]);
    let resp = get(server.addr, "/env.sh");
    assert_eq!(resp.status, 200);
    let env = env_of(&resp);
    assert!(!env.contains_key("WSPIPE_CGI_SECRET"), "{env:?}");
    assert!(!resp.text().contains("hunter2"), "{}", resp.text());
    assert!(env.contains_key("PATH"));
    assert_no_children(&server);
}

#[test]
fn post_body_reaches_stdin_with_length_and_type() {
    let (_tmp, dir) = cgidir();
    sh(
        &dir,
        "post.sh",
        "printf 'Content-Type: text/plain\\n\\n'\n\
         echo \"method=$REQUEST_METHOD type=$CONTENT_TYPE length=$CONTENT_LENGTH\"\n\
         head -c \"$CONTENT_LENGTH\"",
    );
    let server = Server::start(&["--cgidir", &dir]);
    let resp = request(
        server.addr,
        "POST",
        "/post.sh",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"name=value&x=1",
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.text(),
        "method=POST type=application/x-www-form-urlencoded length=14\nname=value&x=1"
    );

    // Chunked: collected first, so CONTENT_LENGTH is still right.
    let mut r = open(
        server.addr,
        "PUT",
        "/post.sh",
        &[
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "text/plain"),
        ],
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    let (status, head) = read_resp_head(&mut r);
    assert_eq!(status, 200, "{head}");
    let body = read_body(&mut r, &head).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&body),
        "method=PUT type=text/plain length=11\nhello world"
    );
    assert_no_children(&server);
}

#[test]
fn big_request_body_streams_both_ways() {
    // `cat` answers as it reads: the body must be written while the output
    // is read, or both sides stall on full pipes.
    let (_tmp, dir) = cgidir();
    sh(
        &dir,
        "cat.sh",
        "printf 'Content-Type: application/octet-stream\\n\\n'\nexec cat",
    );
    let server = Server::start(&["--cgidir", &dir]);
    let body: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let resp = request(server.addr, "POST", "/cat.sh", &[], &body);
    assert_eq!(resp.status, 200);
    assert!(
        resp.body == body,
        "echoed body differs ({} bytes)",
        resp.body.len()
    );
    assert_no_children(&server);
}

#[test]
fn oversized_request_body_is_413() {
    let (_tmp, dir) = cgidir();
    sh(
        &dir,
        "post.sh",
        "printf 'Content-Type: text/plain\\n\\n'\ncat",
    );
    let server = Server::start(&["--cgidir", &dir]);
    let (code, head) = raw_request(
        server.addr,
        &format!(
            "POST /post.sh HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            17 * 1024 * 1024
        ),
    );
    assert_eq!(code, 413, "{head}");
    assert!(server.children().is_empty());
}

#[test]
fn status_and_custom_headers_pass_through() {
    let (_tmp, dir) = cgidir();
    sh(
        &dir,
        "missing.sh",
        "printf 'Status: 404 Not Found\\r\\nContent-Type: text/html\\r\\nX-Custom: one\\r\\nX-Custom: two\\r\\nConnection: keep-alive\\r\\n\\r\\n'\n\
         echo '<h1>gone</h1>'\n\
         echo 'to the log' >&2",
    );
    let server = Server::start(&["--cgidir", &dir, "--header-http", "X-Server: wspipe"]);
    let resp = get(server.addr, "/missing.sh");
    assert_eq!(resp.status, 404, "{resp:?}");
    assert_eq!(resp.header("content-type").as_deref(), Some("text/html"));
    assert_eq!(header_values(&resp.head, "x-custom"), ["one", "two"]);
    assert_eq!(resp.header("x-server").as_deref(), Some("wspipe"));
    assert!(resp.header("status").is_none(), "{}", resp.head);
    assert_eq!(resp.text(), "<h1>gone</h1>\n");
    let line = server
        .log
        .wait_for("to the log", TIMEOUT)
        .expect("stderr logged");
    assert!(line.contains("wspipe::stderr"), "{line}");
    let access = server.log.wait_for("path=/missing.sh", TIMEOUT).unwrap();
    assert!(access.contains("status=404"), "{access}");
    assert_no_children(&server);
}

#[test]
fn location_redirects() {
    let (_tmp, dir) = cgidir();
    sh(&dir, "local.sh", "printf 'Location: /elsewhere?a=1\\n\\n'");
    sh(
        &dir,
        "away.sh",
        "printf 'Location: https://example.com/x\\r\\n\\r\\n'",
    );
    sh(
        &dir,
        "moved.sh",
        "printf 'Status: 301 Moved Permanently\\nLocation: /new\\nContent-Type: text/plain\\n\\nmoved\\n'",
    );
    let server = Server::start(&["--cgidir", &dir]);
    let resp = get(server.addr, "/local.sh");
    assert_eq!(resp.status, 302, "{resp:?}");
    assert_eq!(resp.header("location").as_deref(), Some("/elsewhere?a=1"));
    let resp = get(server.addr, "/away.sh");
    assert_eq!(resp.status, 302);
    assert_eq!(
        resp.header("location").as_deref(),
        Some("https://example.com/x")
    );
    let resp = get(server.addr, "/moved.sh");
    assert_eq!(resp.status, 301);
    assert_eq!(resp.header("location").as_deref(), Some("/new"));
    assert_eq!(resp.text(), "moved\n");
    assert_no_children(&server);
}

#[test]
fn misbehaving_scripts_get_502() {
    let (_tmp, dir) = cgidir();
    sh(
        &dir,
        "garbage.sh",
        "echo 'this is not a header block'\necho 'at all'",
    );
    sh(&dir, "html.sh", "echo '<html><body>hi</body></html>'");
    sh(&dir, "fail.sh", "exit 1");
    sh(&dir, "half.sh", "printf 'Content-Type: text/plain\\n'");
    sh(&dir, "nocgi.sh", "printf 'X-Only: 1\\n\\nbody'");
    let server = Server::start(&["--cgidir", &dir]);
    for path in [
        "/garbage.sh",
        "/html.sh",
        "/fail.sh",
        "/half.sh",
        "/nocgi.sh",
    ] {
        let resp = get(server.addr, path);
        assert_eq!(resp.status, 502, "{path}: {resp:?}");
        assert!(
            resp.text().starts_with("Bad Gateway"),
            "{path}: {}",
            resp.text()
        );
        assert!(
            !resp.text().contains("not a header"),
            "script output leaked"
        );
    }
    let line = server.log.wait_for("path=/fail.sh", TIMEOUT).unwrap();
    assert!(
        line.contains("status=502") && line.contains("exit status 1"),
        "{line}"
    );
    assert_no_children(&server);
}

#[test]
fn a_script_that_never_answers_gets_502_after_the_timeout() {
    let (_tmp, dir) = cgidir();
    sh(&dir, "slow.sh", "sleep 60");
    // Headers sent, then the body never ends: only the total cap ends it,
    // so here the client goes away instead (see the disconnect test).
    let server = Server::start(&["--cgidir", &dir, "--cgitimeout", "400"]);
    let started = Instant::now();
    let resp = get(server.addr, "/slow.sh");
    let took = started.elapsed();
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(resp.text().contains("in time"), "{}", resp.text());
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_no_children(&server);
    let line = server.log.wait_for("path=/slow.sh", TIMEOUT).unwrap();
    assert!(line.contains("header timeout"), "{line}");
}

#[test]
fn a_slow_upload_does_not_count_against_the_header_timeout() {
    let (_tmp, dir) = cgidir();
    sh(
        &dir,
        "slurp.sh",
        "body=$(head -c \"$CONTENT_LENGTH\")\nprintf 'Content-Type: text/plain\\n\\n%s' \"$body\"",
    );
    let server = Server::start(&["--cgidir", &dir, "--cgitimeout", "300"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        stream,
        "POST /slurp.sh HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\nhello"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    stream.write_all(b"world").unwrap();
    let mut r = BufReader::new(stream);
    let (status, head) = read_resp_head(&mut r);
    assert_eq!(status, 200, "{head}");
    assert_eq!(read_body(&mut r, &head).unwrap(), b"helloworld");
    assert_no_children(&server);
}

#[test]
fn a_big_output_streams_in_bounded_memory() {
    const N: u32 = 2_500_000;
    let (_tmp, dir) = cgidir();
    sh(
        &dir,
        "big.sh",
        &format!("printf 'Content-Type: text/plain\\n\\n'\nexec seq 1 {N}"),
    );
    let server = Server::start(&["--cgidir", &dir]);
    let expected: String = (1..=N).map(|i| format!("{i}\n")).collect();
    assert!(expected.len() > 18_000_000);
    // Warm up (allocator, threads), then measure.
    assert_eq!(get(server.addr, "/big.sh").body.len(), expected.len());
    let before = server.rss_kib();

    let mut r = open(server.addr, "GET", "/big.sh", &[], b"");
    let (status, head) = read_resp_head(&mut r);
    assert_eq!(status, 200, "{head}");
    // The client does not read for a while: the script must be held back,
    // not its output buffered by the server.
    std::thread::sleep(Duration::from_millis(700));
    let during = server.rss_kib();
    let body = read_body(&mut r, &head).expect("complete body");
    assert_eq!(body.len(), expected.len());
    assert!(body == expected.as_bytes(), "body differs");
    assert!(
        during < before + 8 * 1024,
        "RSS grew from {before} KiB to {during} KiB while the client was not reading"
    );
    assert_no_children(&server);
}

#[test]
fn a_client_that_leaves_mid_body_ends_the_script() {
    let (_tmp, dir) = cgidir();
    let pidfile = Path::new(&dir).parent().unwrap().join("yes.pid");
    sh(
        &dir,
        "yes.sh",
        &format!(
            "echo $$ > {}\nprintf 'Content-Type: text/plain\\n\\n'\nexec yes",
            pidfile.display()
        ),
    );
    let server = Server::start(&["--cgidir", &dir]);
    let mut r = open(server.addr, "GET", "/yes.sh", &[], b"");
    let (status, _) = read_resp_head(&mut r);
    assert_eq!(status, 200);
    let mut some = [0u8; 4096];
    r.read_exact(&mut some).unwrap();
    let pid = read_pid(&pidfile);
    drop(r);
    assert!(wait_dead(pid, TIMEOUT), "script still running");
    assert_no_children(&server);
    let line = server.log.wait_for("path=/yes.sh", TIMEOUT).unwrap();
    assert!(line.contains("client gone"), "{line}");
}

#[test]
fn head_requests_get_the_headers_only() {
    let (_tmp, dir) = cgidir();
    // Far more output than the pipes hold: it is read and dropped, so the
    // script still ends normally.
    sh(
        &dir,
        "hello.sh",
        "printf 'Content-Type: text/plain\\n\\n'\nseq 1 200000",
    );
    let server = Server::start(&["--cgidir", &dir]);
    let resp = request(server.addr, "HEAD", "/hello.sh", &[], b"");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-type").as_deref(), Some("text/plain"));
    assert_no_children(&server);
    let line = server.log.wait_for("path=/hello.sh", TIMEOUT).unwrap();
    assert!(
        line.contains("method=HEAD") && line.contains("cause=\"ok\""),
        "{line}"
    );
    assert!(line.contains("exit=exit status 0"), "{line}");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let (_tmp, dir) = cgidir();
    sh(
        &dir,
        "echo.sh",
        "printf 'Content-Type: text/plain\\n\\n'\necho \"$REQUEST_METHOD $QUERY_STRING\"\ncat",
    );
    let server = Server::start(&["--cgidir", &dir]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut r = BufReader::new(stream.try_clone().unwrap());
    for i in 0..3 {
        write!(
            stream,
            "POST /echo.sh?n={i} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
        )
        .unwrap();
        let (status, head) = read_resp_head(&mut r);
        assert_eq!(status, 200, "{head}");
        let body = read_body(&mut r, &head).unwrap();
        assert_eq!(String::from_utf8_lossy(&body), format!("POST n={i}\nbody"));
    }
    assert_no_children(&server);
}

#[test]
fn shutdown_ends_running_scripts() {
    let (_tmp, dir) = cgidir();
    sh(&dir, "forever.sh", "sleep 60");
    let mut server = Server::start(&["--cgidir", &dir]);
    let addr = server.addr;
    let pending = std::thread::spawn(move || get(addr, "/forever.sh"));
    assert!(wait_until(TIMEOUT, || !server.children().is_empty()));
    let script = server.children()[0].0;
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(wait_dead(script, TIMEOUT));
    assert_eq!(pending.join().unwrap().status, 503);
}

#[test]
fn cgitimeout_must_be_positive() {
    let (_tmp, dir) = cgidir();
    let out = run_bin(&["--cgidir", &dir, "--cgitimeout", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cgitimeout"));
}

#[test]
fn maxforks_counts_cgi_scripts() {
    let (tmp, dir) = cgidir();
    let go = tmp.path().join("go");
    sh(
        &dir,
        "wait.sh",
        &format!(
            "while [ ! -e {} ]; do sleep 0.02; done\nprintf 'Content-Type: text/plain\\n\\ndone\\n'",
            go.display()
        ),
    );
    sh(
        &dir,
        "quick.sh",
        "printf 'Content-Type: text/plain\\n\\nquick\\n'",
    );
    let server = Server::start(&["--cgidir", &dir, "--maxforks", "1", "cat"]);
    let addr = server.addr;
    let first = std::thread::spawn(move || get(addr, "/wait.sh"));
    assert!(wait_until(TIMEOUT, || !server.children().is_empty()));

    let resp = get(server.addr, "/quick.sh");
    assert_eq!(resp.status, 429, "{resp:?}");
    let line = server.log.wait_for("path=/quick.sh", TIMEOUT).unwrap();
    assert!(line.contains("status=429"), "{line}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(handshake_status(&server.url("/"), &[])),
        429,
        "a WebSocket must wait for the CGI script's permit too"
    );

    std::fs::write(&go, "").unwrap();
    let resp = first.join().unwrap();
    assert_eq!((resp.status, resp.text().as_str()), (200, "done\n"));
    assert_no_children(&server);
    // The permit is back.
    assert!(wait_until(TIMEOUT, || get(server.addr, "/quick.sh").status == 200));
    assert_no_children(&server);
}

#[test]
fn scripts_are_never_served_as_source_when_staticdir_overlaps() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("www");
    let cgi = root.join("cgi-bin");
    std::fs::create_dir_all(&cgi).unwrap();
    std::fs::write(root.join("index.html"), "<p>static</p>\n").unwrap();
    // The output differs from the source: "r""an" prints "ran".
    sh(
        &cgi,
        "run.sh",
        "printf 'Content-Type: text/plain\\n\\n'\necho 'r''an' # SECRET-SOURCE",
    );
    std::fs::write(cgi.join("notes.txt"), "SECRET-SOURCE notes\n").unwrap();
    let server = Server::start(&[
        "--staticdir",
        root.to_str().unwrap(),
        "--cgidir",
        cgi.to_str().unwrap(),
    ]);
    let resp = get(server.addr, "/index.html");
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "<p>static</p>\n")
    );
    // Through the static tree: refused, never the source.
    for path in ["/cgi-bin/run.sh", "/cgi-bin/notes.txt", "/cgi-bin/run.sh/x"] {
        let resp = get(server.addr, path);
        assert!(resp.status >= 400, "{path}: {resp:?}");
        assert!(
            !resp.text().contains("SECRET-SOURCE"),
            "{path} served source"
        );
    }
    // Through CGI: run.
    let resp = get(server.addr, "/run.sh");
    assert_eq!((resp.status, resp.text().as_str()), (200, "ran\n"));
    // A non-executable file in --cgidir is neither run nor served.
    let resp = get(server.addr, "/notes.txt");
    assert!(
        resp.status >= 400 && !resp.text().contains("SECRET-SOURCE"),
        "{resp:?}"
    );
    drop(server);

    // The very same directory for both.
    let same = cgi.to_str().unwrap();
    let server = Server::start(&["--staticdir", same, "--cgidir", same]);
    let resp = get(server.addr, "/run.sh");
    assert_eq!((resp.status, resp.text().as_str()), (200, "ran\n"));
    let resp = get(server.addr, "/notes.txt");
    assert_eq!(resp.status, 403, "{resp:?}");
    assert!(!resp.text().contains("SECRET-SOURCE"));
    assert_no_children(&server);
}

#[test]
fn paths_without_a_script_fall_through() {
    let (_tmp, dir) = cgidir();
    std::fs::write(Path::new(&dir).join("plain.txt"), "source\n").unwrap();
    let server = Server::start(&["--cgidir", &dir]);
    for path in ["/", "/nope.sh", "/plain.txt", "/%2e%2e/etc/passwd"] {
        let resp = get(server.addr, path);
        assert!((400..500).contains(&resp.status), "{path}: {}", resp.head);
        assert!(!resp.text().contains("source"));
    }
    assert!(server.children().is_empty());
}

#[tokio::test]
async fn websockets_work_on_the_same_port() {
    let (_tmp, dir) = cgidir();
    sh(
        &dir,
        "hello.sh",
        "printf 'Content-Type: text/plain\\n\\nhello\\n'",
    );
    let server = Server::start(&["--cgidir", &dir, "cat"]);
    let mut ws = connect(&server.url("/hello.sh")).await;
    send_text(&mut ws, "over the socket").await;
    assert_eq!(next_text(&mut ws).await, "over the socket");
    let addr = server.addr;
    let resp = tokio::task::spawn_blocking(move || get(addr, "/hello.sh"))
        .await
        .unwrap();
    assert_eq!((resp.status, resp.text().as_str()), (200, "hello\n"));
    send_text(&mut ws, "still here").await;
    assert_eq!(next_text(&mut ws).await, "still here");
    drop(ws);
    assert_no_children(&server);
}

/// A script still open for writing somewhere (a deploy in progress, or a
/// process between fork and exec) makes exec fail with ETXTBSY for an
/// instant: CGI retries, as WebSocket sessions do, instead of answering 500.
#[test]
fn a_script_still_open_for_writing_is_retried_not_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, dir) = cgidir();
    let path = Path::new(&dir).join("busy");
    // This process keeps the script open for writing until the server has
    // met ETXTBSY once.
    let mut writer = std::fs::File::create(&path).unwrap();
    writer
        .write_all(b"#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nran\\n'\n")
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(&["--cgidir", &dir, "--loglevel", "debug"]);
    let addr = server.addr;
    let response = std::thread::spawn(move || get(addr, "/busy"));
    server.wait_log("is busy (open for writing): retrying");
    drop(writer);
    let response = response.join().unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "ran\n");
}
