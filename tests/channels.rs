//! End to end: channels. Every session is a member of the channel of its
//! URL path; `wspipe ctl publish` reaches every member's client (not its
//! child), in order; `subscribe` / `unsubscribe` move sessions between
//! channels; a client that does not read loses old messages instead of
//! holding up the publisher or the other members.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// Runs `wspipe ctl --socket SOCKET ARGS` with `stdin`.
fn ctl(socket: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin())
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&stdin));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

/// A server with a control socket.
struct Hub {
    server: Server,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

fn start(args: &[&str]) -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let mut all = vec!["--control", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    server.wait_log("control socket at");
    Hub {
        server,
        socket,
        _dir: dir,
    }
}

impl Hub {
    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_with_stdin(args, b"")
    }

    fn ctl_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        ctl(&self.socket, args, stdin)
    }

    /// `ctl publish CHANNEL -` with `lines` on stdin, run off the test's
    /// runtime so that its clients keep reading meanwhile.
    fn publish_lines(&self, channel: &str, lines: String) -> tokio::task::JoinHandle<Output> {
        let (socket, channel) = (self.socket.clone(), channel.to_owned());
        tokio::task::spawn_blocking(move || {
            ctl(&socket, &["publish", &channel, "-"], lines.as_bytes())
        })
    }

    /// ctl, expecting success; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    /// Waits until `n` sessions are listed; their ids, oldest first.
    async fn sessions(&self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        let listed = wait_until_async(TIMEOUT, || {
            let list = self.json(&["list", "--json"]);
            ids = list
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].to_string())
                .collect();
            ids.len() == n
        })
        .await;
        assert!(listed, "expected {n} sessions, have {ids:?}");
        ids
    }
}

#[tokio::test]
async fn a_publish_reaches_every_member_of_the_path_channel_and_no_one_else() {
    let hub = start(&["cat"]);
    let mut a = connect(&hub.server.url("/room")).await;
    let mut b = connect(&hub.server.url("/room?x=1")).await;
    let mut other = connect(&hub.server.url("/other")).await;
    hub.sessions(3).await;
    let said = hub.ok(&["publish", "/room", "hello"]);
    assert_eq!(said.trim(), "delivered to 2 client(s)");
    assert_eq!(next_text(&mut a).await, "hello");
    assert_eq!(next_text(&mut b).await, "hello");
    // Published to the clients, not to the children: cat echoes nothing.
    send_text(&mut other, "ping").await;
    assert_eq!(next_text(&mut other).await, "ping", "nothing came before");
    send_text(&mut a, "mine").await;
    assert_eq!(next_text(&mut a).await, "mine", "cat heard no publish");

    let channels = hub.json(&["channels", "--json"]);
    let room = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "/room")
        .expect("/room listed");
    assert_eq!(
        (room["members"].as_u64(), room["published"].as_u64()),
        (Some(2), Some(1))
    );
    let nobody = hub.ok(&["publish", "/nobody", "x"]);
    assert_eq!(
        nobody.trim(),
        "delivered to 0 client(s)",
        "no members is not an error"
    );
}

#[tokio::test]
async fn subscribe_and_unsubscribe_move_a_session_between_channels() {
    let hub = start(&["cat"]);
    let mut a = connect(&hub.server.url("/a")).await;
    let ids = hub.sessions(1).await;
    let id = &ids[0];
    hub.ok(&["subscribe", id, "/news"]);
    hub.ok(&["subscribe", id, "/news"]); // twice is once
    let list = hub.json(&["list", "--json"]);
    assert_eq!(list[0]["channels"], serde_json::json!(["/a", "/news"]));
    assert_eq!(
        hub.ok(&["publish", "/news", "first"]).trim(),
        "delivered to 1 client(s)"
    );
    assert_eq!(next_text(&mut a).await, "first");
    hub.ok(&["unsubscribe", id, "/news"]);
    assert_eq!(
        hub.ok(&["publish", "/news", "gone"]).trim(),
        "delivered to 0 client(s)"
    );
    assert_eq!(
        hub.ok(&["publish", "/a", "still"]).trim(),
        "delivered to 1 client(s)"
    );
    assert_eq!(next_text(&mut a).await, "still");

    a.close(None).await.unwrap();
    hub.sessions(0).await;
    let out = hub.ctl(&["subscribe", id, "/news"]);
    assert_eq!(out.status.code(), Some(1), "an ended session is not found");
    let channels = hub.json(&["channels", "--json"]);
    assert_eq!(
        channels,
        serde_json::json!([]),
        "channels go with their last member"
    );
}

#[test]
fn bad_channel_names_are_refused_with_one_line() {
    let hub = start(&["cat"]);
    let long = format!("/{}", "x".repeat(1024));
    for name in ["room", "/a?b", long.as_str()] {
        let out = hub.ctl(&["publish", name, "x"]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("bad channel"), "{err}");
    }
}

#[tokio::test]
async fn lines_on_stdin_are_published_in_order_over_one_connection() {
    let hub = start(&["cat"]);
    let mut ws = connect(&hub.server.url("/log")).await;
    hub.sessions(1).await;
    let count = 5000;
    let lines: String = (0..count).map(|i| format!("line {i}\n")).collect();
    let publisher = hub.publish_lines("/log", lines.clone());
    for i in 0..count {
        assert_eq!(next_text(&mut ws).await, format!("line {i}"));
    }
    let out = publisher.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("published {count} message(s), delivered {count} time(s)")
    );
    // Past the 2000 requests a second other commands are held to, and
    // nothing was dropped for a client that kept up.
    let channels = hub.json(&["channels", "--json"]);
    assert_eq!(channels[0]["dropped"], 0, "{channels}");
}

/// Two clients on /room, one that never reads (its socket buffers fill,
/// then its queue); 400 messages of 60 KB published to /room must all reach
/// the other, in order. Returns both clients (still connected) and the
/// count.
async fn flood_past_a_stalled_client(hub: &Hub) -> (RawClient, Ws, usize) {
    let stalled = RawClient::connect(hub.server.addr, "/room");
    let mut reader = connect(&hub.server.url("/room")).await;
    hub.sessions(2).await;
    let big = "x".repeat(60_000);
    let count = 400;
    let lines: String = (0..count).map(|i| format!("{i} {big}\n")).collect();
    let publisher = hub.publish_lines("/room", lines);
    for i in 0..count {
        let text = next_text(&mut reader).await;
        assert!(
            text.starts_with(&format!("{i} ")),
            "message {i} out of order"
        );
    }
    let out = publisher.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (stalled, reader, count)
}

#[tokio::test]
async fn a_client_that_does_not_read_loses_old_messages_and_delays_no_one() {
    let hub = start(&["cat"]);
    let (stalled, _reader, count) = flood_past_a_stalled_client(&hub).await;
    let channels = hub.json(&["channels", "--json"]);
    assert!(
        channels[0]["dropped"].as_u64().unwrap() > 0,
        "24 MB for a client that reads nothing: some must go ({channels})"
    );
    // Counted against the stalled session only, and in the totals.
    let list = hub.json(&["list", "--json"]);
    let dropped: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["dropped"].as_u64().unwrap())
        .collect();
    assert_eq!(dropped.iter().filter(|d| **d > 0).count(), 1, "{list}");
    assert_eq!(
        dropped.iter().sum::<u64>(),
        channels[0]["dropped"].as_u64().unwrap()
    );
    let stats = hub.json(&["stats", "--json"]);
    assert_eq!(stats["published_total"], count);
    assert_eq!(stats["channels"], 1);
    assert_eq!(stats["channel_members"], 2);
    assert_eq!(
        stats["delivered_total"].as_u64().unwrap(),
        2 * count as u64,
        "every publish reached both queues"
    );
    drop(stalled);
}

#[tokio::test]
async fn with_channel_overflow_close_a_client_that_does_not_read_is_closed() {
    let hub = start(&["--pubsub", "--channel-overflow", "close"]);
    let (stalled, _reader, _) = flood_past_a_stalled_client(&hub).await;
    // The stalled client is closed (its socket is full, so the close frame
    // may never reach it) and leaves; the reader stays.
    hub.sessions(1).await;
    let line = hub.server.wait_log("disconnect");
    assert!(line.contains("too slow for its channels"), "{line}");
    drop(stalled);
}

/// `ctl watch` streams what happens, one JSON object per line.
#[tokio::test]
async fn watch_streams_opens_joins_publishes_and_closes() {
    use std::io::BufRead;
    let hub = start(&["cat"]);
    let mut watcher = Command::new(bin())
        .args(["ctl", "--socket"])
        .arg(&hub.socket)
        .args(["watch", "--publishes"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || rx.recv_timeout(TIMEOUT).expect("an event");
    // The watch is in place once a first event comes: retry a publish.
    let mut first = None;
    let watching = wait_until_async(TIMEOUT, || {
        hub.ok(&["publish", "/warmup", "x"]);
        first = rx.try_recv().ok();
        first.is_some()
    })
    .await;
    assert!(watching, "no event came");
    assert_eq!(first.unwrap()["event"], "publish");
    while rx
        .recv_timeout(std::time::Duration::from_millis(200))
        .is_ok()
    {}

    let mut ws = connect(&hub.server.url("/room")).await;
    let open = next();
    assert_eq!(
        (open["event"].as_str(), open["path"].as_str()),
        (Some("open"), Some("/room"))
    );
    assert_eq!(open["kind"], "process");
    let id = open["id"].clone();
    let joined = next();
    assert_eq!(
        joined,
        serde_json::json!({"event":"subscribe","id":id,"channel":"/room"})
    );
    hub.ok(&["publish", "/room", "hi"]);
    assert_eq!(next_text(&mut ws).await, "hi");
    let published = next();
    assert_eq!(
        published,
        serde_json::json!({"event":"publish","channel":"/room","delivered":1,"dropped":0})
    );
    let bye = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 1000.into(),
        reason: "".into(),
    };
    ws.close(Some(bye)).await.unwrap();
    let closed = next();
    assert_eq!(
        (closed["event"].as_str(), closed["id"].clone()),
        (Some("close"), id)
    );
    assert_eq!(closed["code"], 1000);
    assert_eq!(closed["cause"], "client closed");
    assert!(closed["duration_ms"].is_u64());
    let _ = watcher.kill();
    let _ = watcher.wait();
}
