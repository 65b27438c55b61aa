//! End to end: `wspipe ctl` against a live server with real clients.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A server with a control socket in a temp dir.
struct Ctl {
    server: Server,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

fn start(args: &[&str]) -> Ctl {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let mut all = vec!["--control", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut cmd = Command::new(bin());
    // Children find `wspipe` on PATH (for scripts that call `wspipe ctl`).
    let bin_dir = Path::new(bin())
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    cmd.env(
        "PATH",
        format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default()),
    );
    let server = Server::start_cmd(cmd, &all);
    server
        .log
        .wait_for("control socket at", TIMEOUT)
        .expect("control socket up");
    Ctl {
        server,
        socket,
        _dir: dir,
    }
}

impl Ctl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs ctl and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn sessions(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["list", "--json"])).unwrap()
    }

    /// Waits until `n` sessions are listed; returns their ids in order.
    fn wait_sessions(&self, n: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        assert!(
            wait_until(TIMEOUT, || {
                ids = self
                    .sessions()
                    .iter()
                    .map(|s| s["id"].as_u64().unwrap())
                    .collect();
                ids.len() == n
            }),
            "expected {n} sessions, have {ids:?}"
        );
        ids
    }

    /// [`Ctl::wait_sessions`] for async tests: sleeps between looks on the
    /// runtime's timer instead of blocking it (each look runs `ctl list`).
    async fn wait_sessions_async(&self, n: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        assert!(
            wait_until_async(TIMEOUT, || {
                ids = self
                    .sessions()
                    .iter()
                    .map(|s| s["id"].as_u64().unwrap())
                    .collect();
                ids.len() == n
            })
            .await,
            "expected {n} sessions, have {ids:?}"
        );
        ids
    }

    /// Waits for the one session there should be; its id and child pid.
    fn only_session(&self) -> (String, u32) {
        self.wait_sessions(1);
        self.the_session()
    }

    /// [`Ctl::only_session`] for async tests.
    async fn only_session_async(&self) -> (String, u32) {
        self.wait_sessions_async(1).await;
        self.the_session()
    }

    fn the_session(&self) -> (String, u32) {
        let session = &self.sessions()[0];
        let pid = session["pid"].as_u64().expect("pid") as u32;
        (session["id"].to_string(), pid)
    }

    /// Sends one raw protocol line and reads the reply.
    fn raw(&self, line: &[u8]) -> serde_json::Value {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(line).unwrap();
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap()
    }
}

#[tokio::test]
async fn list_shows_every_live_connection() {
    let ctl = start(&["cat"]);
    let _a = connect(&ctl.server.url("/one")).await;
    let _b = connect(&ctl.server.url("/two?x=1")).await;
    ctl.wait_sessions_async(2).await;
    let sessions = ctl.sessions();
    assert_eq!(sessions[0]["path"], "/one");
    assert_eq!(sessions[1]["path"], "/two");
    for s in &sessions {
        let pid = s["pid"].as_u64().unwrap() as u32;
        assert!(alive(pid), "pid {pid} listed but not running");
        assert!(s["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    let table = ctl.ok(&["list"]);
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");
    let only_two = ctl.ok(&["list", "--json", "--path", "/two"]);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&only_two)
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn send_reaches_exactly_one_client_and_counts_traffic() {
    let ctl = start(&["cat"]);
    let mut a = connect(&ctl.server.url("/")).await;
    let mut b = connect(&ctl.server.url("/")).await;
    let ids = ctl.wait_sessions_async(2).await;
    ctl.ok(&["send", &ids[1].to_string(), "for b only"]);
    assert_eq!(next_text(&mut b).await, "for b only");
    send_text(&mut a, "echo a").await;
    assert_eq!(
        next_text(&mut a).await,
        "echo a",
        "a got nothing else before its echo"
    );
    let listed = ctl.sessions();
    assert_eq!(listed[0]["messages_in"], 1);
    assert_eq!(listed[0]["messages_out"], 1);
    assert_eq!(listed[1]["messages_out"], 1);
    assert_eq!(listed[1]["bytes_out"], "for b only".len() as u64);
}

#[tokio::test]
async fn send_reads_the_message_from_stdin_with_dash() {
    let ctl = start(&["cat"]);
    let mut a = connect(&ctl.server.url("/")).await;
    let id = ctl.wait_sessions_async(1).await[0].to_string();
    let mut child = Command::new(bin())
        .args([
            "ctl",
            "--socket",
            ctl.socket.to_str().unwrap(),
            "send",
            &id,
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(next_text(&mut a).await, "from stdin");
}

#[tokio::test]
async fn exit_codes_and_one_line_errors() {
    let ctl = start(&["cat"]);
    let out = ctl.run(&["send", "999", "x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("999"), "{err}");
    assert_eq!(ctl.run(&["kill", "999"]).status.code(), Some(1));
    assert_eq!(ctl.run(&["close", "999"]).status.code(), Some(1));
    assert_eq!(
        ctl.run(&["close", "1", "--code", "1005"]).status.code(),
        Some(2),
        "1005 cannot be sent"
    );
    assert_eq!(ctl.run(&["nosuchcommand"]).status.code(), Some(2));
    let none = Command::new(bin())
        .args(["ctl", "--socket", "/nonexistent/ctl.sock", "stats"])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(3));
    assert_eq!(String::from_utf8(none.stderr).unwrap().lines().count(), 1);
    let no_socket = Command::new(bin())
        .args(["ctl", "stats"])
        .env_remove("WSPIPE_CONTROL")
        .output()
        .unwrap();
    assert_eq!(no_socket.status.code(), Some(2));
}

#[tokio::test]
async fn broadcast_reaches_100_clients_exactly_once() {
    let ctl = start(&["cat"]);
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(connect(&ctl.server.url("/room")).await);
    }
    ctl.wait_sessions_async(100).await;
    let out = ctl.ok(&["broadcast", "hello everyone"]);
    assert!(out.contains("delivered to 100"), "{out}");
    for ws in &mut clients {
        assert_eq!(next_text(ws).await, "hello everyone");
        // Nothing else was queued: the next thing is our own echo.
        send_text(ws, "ping").await;
        assert_eq!(next_text(ws).await, "ping");
    }
}

#[tokio::test]
async fn broadcast_can_target_one_path() {
    let ctl = start(&["cat"]);
    let mut lobby = connect(&ctl.server.url("/lobby")).await;
    let mut game = connect(&ctl.server.url("/game")).await;
    ctl.wait_sessions_async(2).await;
    let out = ctl.ok(&["broadcast", "--path", "/game", "game only"]);
    assert!(out.contains("delivered to 1"), "{out}");
    assert_eq!(next_text(&mut game).await, "game only");
    send_text(&mut lobby, "mine").await;
    assert_eq!(next_text(&mut lobby).await, "mine");
}

#[tokio::test]
async fn close_sends_the_code_and_reason_and_ends_the_child() {
    let ctl = start(&["cat"]);
    let mut ws = connect(&ctl.server.url("/")).await;
    let (id, pid) = ctl.only_session_async().await;
    ctl.ok(&["close", &id, "--code", "4001", "--reason", "bye now"]);
    assert_eq!(expect_close(&mut ws).await, (4001, "bye now".to_string()));
    assert!(wait_dead_async(pid, TIMEOUT).await);
    ctl.wait_sessions_async(0).await;
}

#[tokio::test]
async fn kill_ends_the_child_and_the_socket_closes() {
    let ctl = start(&["sleep", "1000"]);
    let mut ws = connect(&ctl.server.url("/")).await;
    let (id, pid) = ctl.only_session_async().await;
    ctl.ok(&["kill", &id]);
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1000, "a child we ended closes normally");
    assert!(wait_dead_async(pid, TIMEOUT).await);
}

/// `ctl kill` ends a session even when its client has stopped reading:
/// the child's last output gets a moment to go out, then the session ends,
/// the child is reaped and its `--maxforks` slot is free again (before,
/// the session waited for the client forever, holding a zombie).
#[test]
fn kill_ends_a_session_whose_client_stopped_reading() {
    // Binary mode: `yes` goes out in 64 KiB messages, so the buffers of a
    // client that never reads fill at once.
    let ctl = start(&["--binary", "--maxforks", "1", "yes"]);
    let _client = RawClient::connect(ctl.server.addr, "/");
    let (id, pid) = ctl.only_session();
    ctl.ok(&["kill", &id]);
    ctl.wait_sessions(0);
    assert!(
        wait_until(TIMEOUT, || !ctl
            .server
            .children()
            .iter()
            .any(|(p, _)| *p == pid)),
        "child {pid} not reaped"
    );
    let again = RawClient::connect(ctl.server.addr, "/");
    drop(again);
}

/// Bytes written to a Unix stream socket that the peer has not read yet
/// (SIOCOUTQ): 0 once the server has taken everything we sent.
fn unread(stream: &UnixStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: ioctl(SIOCOUTQ) on a socket we own, writing one int into `n`.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(rc, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    usize::try_from(n).unwrap()
}

/// A `ctl send` waiting for room in a full session's queue answers
/// not_found as soon as the session ends, instead of waiting out its
/// delivery timeout (2 s) and then calling the gone session busy.
#[test]
fn a_send_waiting_on_a_full_session_fails_at_once_when_the_session_ends() {
    let ctl = start(&["cat"]);
    // A client that never reads: the socket buffers fill up, then the
    // session's queue of injected messages (64).
    let client = RawClient::connect(ctl.server.addr, "/");
    let (id, _) = ctl.only_session();
    let mut fill = UnixStream::connect(&ctl.socket).unwrap();
    fill.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut replies = BufReader::new(fill.try_clone().unwrap());
    let big = serde_json::json!({
        "cmd": "send",
        "id": id.parse::<u64>().unwrap(),
        "message": "x".repeat(64 * 1024),
    });
    let big = format!("{big}\n");
    let mut delivered = 0;
    loop {
        fill.write_all(big.as_bytes()).unwrap();
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
        if reply["ok"] == true {
            delivered += 1;
            assert!(delivered < 10_000, "the session never filled up");
            continue;
        }
        // This one waited the whole delivery timeout for room: the queue
        // is full, and stays so, as nothing drains it.
        assert_eq!(reply["kind"], "busy", "{reply}");
        break;
    }

    // One more, from `wspipe ctl send`, through a relay: the relay can see
    // when the server has read the request, and so is waiting for room.
    let relay_path = ctl._dir.path().join("relay.sock");
    let relay = UnixListener::bind(&relay_path).unwrap();
    relay.set_nonblocking(true).unwrap();
    let sender = Command::new(bin())
        .arg("ctl")
        .arg("--socket")
        .arg(&relay_path)
        .args(["send", &id, "one too many"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut from_ctl = None;
    assert!(
        wait_until(TIMEOUT, || {
            from_ctl = relay.accept().ok().map(|(s, _)| s);
            from_ctl.is_some()
        }),
        "ctl did not connect to the relay"
    );
    let mut from_ctl = from_ctl.unwrap();
    from_ctl.set_nonblocking(false).unwrap();
    from_ctl.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut request = String::new();
    BufReader::new(&from_ctl).read_line(&mut request).unwrap();
    let mut to_server = UnixStream::connect(&ctl.socket).unwrap();
    to_server.set_read_timeout(Some(TIMEOUT)).unwrap();
    to_server.write_all(request.as_bytes()).unwrap();
    assert!(
        wait_until(TIMEOUT, || unread(&to_server) == 0),
        "the server did not read the request"
    );

    // The session ends: its client resets the connection.
    let ended = Instant::now();
    client.reset();
    let mut reply = String::new();
    BufReader::new(&to_server).read_line(&mut reply).unwrap();
    let waited = ended.elapsed();
    from_ctl.write_all(reply.as_bytes()).unwrap();
    drop(from_ctl);
    let out = sender.wait_with_output().unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["kind"], "not_found", "{reply}");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("no session with id {id}")), "{err}");
    assert!(
        waited < Duration::from_secs(1),
        "answered {waited:?} after the session ended"
    );
    ctl.wait_sessions(0);
}

#[tokio::test]
async fn stats_count_connections_and_traffic() {
    let ctl = start(&["cat"]);
    let mut ws = connect(&ctl.server.url("/")).await;
    send_text(&mut ws, "12345").await;
    assert_eq!(next_text(&mut ws).await, "12345");
    let stats: serde_json::Value = serde_json::from_str(&ctl.ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["connections_total"], 1);
    assert_eq!(stats["messages_in"], 1);
    assert_eq!(stats["messages_out"], 1);
    assert_eq!(stats["bytes_in"], 5);
    let text = ctl.ok(&["stats"]);
    assert!(text.contains("connections: 1"), "{text}");
}

#[tokio::test]
async fn children_get_the_socket_and_can_broadcast_themselves() {
    // A two-line chat endpoint: no shared file, no tail -f.
    let dir = tempfile::tempdir().unwrap();
    let chat = script(
        dir.path(),
        "chat.sh",
        "#!/bin/sh\necho \"socket=$WSPIPE_CONTROL\"\nwhile IFS= read -r line; do wspipe ctl broadcast \"$WSPIPE_CONNECTION_ID: $line\" >/dev/null; done\n",
    );
    let ctl = start(&[chat.to_str().unwrap()]);
    let mut alice = connect(&ctl.server.url("/")).await;
    let mut bob = connect(&ctl.server.url("/")).await;
    let expected = format!("socket={}", ctl.socket.display());
    assert_eq!(next_text(&mut alice).await, expected);
    assert_eq!(next_text(&mut bob).await, expected);
    let alice_id = ctl.sessions()[0]["id"].to_string();
    send_text(&mut alice, "hi bob").await;
    let line = format!("{alice_id}: hi bob");
    assert_eq!(next_text(&mut bob).await, line);
    assert_eq!(next_text(&mut alice).await, line);
}

#[tokio::test]
async fn injected_messages_never_split_a_child_line() {
    // The child streams long lines while broadcasts arrive: every message the
    // client sees is either one whole child line or one whole broadcast.
    let line = "x".repeat(5000);
    let ctl = start(&[
        "sh",
        "-c",
        &format!("i=0; while [ $i -lt 400 ]; do echo {line}; i=$((i+1)); done"),
    ]);
    let mut ws = connect(&ctl.server.url("/")).await;
    let id = ctl.wait_sessions_async(1).await.first().copied();
    let socket = ctl.socket.clone();
    let sender = std::thread::spawn(move || {
        let mut delivered = 0;
        for i in 0..50 {
            let out = Command::new(bin())
                .args([
                    "ctl",
                    "--socket",
                    socket.to_str().unwrap(),
                    "broadcast",
                    &format!("news {i}"),
                ])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("delivered to 1") {
                delivered += 1;
            }
        }
        delivered
    });
    let mut lines = 0;
    let mut news = Vec::new();
    loop {
        match next_event(&mut ws).await {
            Event::Text(t) if t == line => lines += 1,
            Event::Text(t) if t.starts_with("news ") => news.push(t),
            Event::Text(t) => panic!("a split or mixed message: {} bytes", t.len()),
            Event::Close(_) | Event::End => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let delivered = sender.join().unwrap();
    assert_eq!(lines, 400);
    assert!(id.is_some());
    assert_eq!(
        news.len(),
        delivered,
        "every delivered broadcast arrived once"
    );
}

#[tokio::test]
async fn bad_requests_get_error_replies_and_the_server_lives_on() {
    let ctl = start(&["cat"]);
    let reply = ctl.raw(b"this is not json\n");
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["kind"], "bad_request");
    let reply = ctl.raw(b"{\"cmd\":\"send\",\"id\":1}\n");
    assert_eq!(reply["ok"], false);
    let mut huge = vec![b'x'; 2 * 1024 * 1024];
    huge.push(b'\n');
    let reply = ctl.raw(&huge);
    assert_eq!(reply["kind"], "bad_request");
    assert!(reply["error"].as_str().unwrap().contains("too long"));
    let reply = ctl.raw(b"{\"cmd\":\"stats\"}\n");
    assert_eq!(reply["ok"], true);
    let mut ws = connect(&ctl.server.url("/")).await;
    send_text(&mut ws, "alive").await;
    assert_eq!(next_text(&mut ws).await, "alive");
}

#[test]
fn socket_permissions_default_to_owner_only_and_can_be_widened() {
    let ctl = start(&["cat"]);
    let mode = std::fs::metadata(&ctl.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let ctl = start(&["--control-mode", "660", "cat"]);
    let mode = std::fs::metadata(&ctl.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
}

#[test]
fn a_live_socket_is_not_stolen_and_a_stale_one_is_replaced() {
    let ctl = start(&["cat"]);
    let second = Command::new(bin())
        .args([
            "--port",
            "0",
            "--address",
            "127.0.0.1",
            "--control",
            ctl.socket.to_str().unwrap(),
            "cat",
        ])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8(second.stderr).unwrap();
    assert!(err.contains("in use"), "{err}");
    assert!(
        ctl.run(&["stats"]).status.success(),
        "first server still answers"
    );

    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let mut cmd = Command::new(bin());
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    let mut server = Server::start_cmd(cmd, &["--control", stale.to_str().unwrap(), "cat"]);
    server
        .log
        .wait_for("control socket at", TIMEOUT)
        .expect("stale socket replaced");
    assert!(server.terminate().success());
    assert!(!stale.exists(), "socket removed at shutdown");
}

#[test]
fn bad_control_mode_is_a_usage_error() {
    let out = Command::new(bin())
        .args(["--control", "/tmp/x.sock", "--control-mode", "999", "cat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn chat_example_serves_its_page_and_relays_between_clients() {
    let root = env!("CARGO_MANIFEST_DIR");
    let public = format!("{root}/examples/chat/public");
    let chat = format!("{root}/examples/chat/chat.sh");
    // No wspipe on PATH: the script finds the binary through WSPIPE_BIN.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("chat.sock");
    let mut cmd = Command::new(bin());
    cmd.env("PATH", "/usr/bin:/bin");
    let server = Server::start_cmd(
        cmd,
        // A generous grace: the "left" notice is sent after stdin closes.
        &[
            "--closems",
            "2000",
            "--control",
            socket.to_str().unwrap(),
            "--staticdir",
            &public,
            &chat,
        ],
    );
    let (status, head) = raw_request(server.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );

    let mut alice = connect(&server.url("/chat")).await;
    let alice_id = next_text(&mut alice)
        .await
        .trim_start_matches("* you are ")
        .to_string();
    assert_eq!(next_text(&mut alice).await, format!("* {alice_id} joined"));
    let mut bob = connect(&server.url("/chat")).await;
    let bob_id = next_text(&mut bob)
        .await
        .trim_start_matches("* you are ")
        .to_string();
    assert_eq!(next_text(&mut bob).await, format!("* {bob_id} joined"));
    assert_eq!(next_text(&mut alice).await, format!("* {bob_id} joined"));

    send_text(&mut alice, "hello bob").await;
    let said = format!("{alice_id}: hello bob");
    assert_eq!(next_text(&mut bob).await, said);
    assert_eq!(next_text(&mut alice).await, said);

    bob.close(None).await.unwrap();
    assert_eq!(next_text(&mut alice).await, format!("* {bob_id} left"));
}

#[tokio::test]
async fn metrics_expose_the_same_counters_for_prometheus() {
    let ctl = start(&["--metrics", "127.0.0.1:0", "cat"]);
    let line = ctl
        .server
        .log
        .wait_for_async("metrics on http://", TIMEOUT)
        .await
        .unwrap();
    let addr = http_addr(&line);
    let mut ws = connect(&ctl.server.url("/")).await;
    send_text(&mut ws, "hello").await;
    assert_eq!(next_text(&mut ws).await, "hello");
    let metrics = |path: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        std::io::Read::read_to_string(&mut s, &mut body).unwrap();
        body
    };
    let text = metrics("/metrics");
    assert!(text.contains("application/openmetrics-text"), "{text}");
    for line in [
        "wspipe_connections 1",
        "wspipe_connections_opened_total 1",
        "wspipe_messages_in_total 1",
        "wspipe_messages_out_total 1",
        "wspipe_bytes_in_total 5",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    // The public port knows nothing of it.
    let (status, _) = raw_request(ctl.server.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 426);
}
