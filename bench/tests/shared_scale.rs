//! Scale, end to end, in release: 1,000 clients of one `--shared` child
//! each get every one of its 10,000 lines, in order, none lost (ten
//! million deliveries), from the release wspipe binary that
//! `scripts/bench.sh` builds.
//!
//! It lives with the bench rather than in tests/ because it needs a
//! release build on both sides (a debug client alone takes minutes), and
//! the bench's release dependencies are built already: `cargo test
//! --release -p wspipe-bench` adds only this file, where `cargo test
//! --release` of wspipe would build every dependency again with the
//! test-only features of wspipe's dev-dependencies. Ignored by a plain
//! `cargo test`; `.ci/run` runs it with `-- --ignored`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// Bound on the whole stream reaching every client.
const LIMIT: Duration = Duration::from_secs(300);

/// Bound on the server saying where it listens, and on one handshake.
const START: Duration = Duration::from_secs(20);

/// The release wspipe beside this test's directory (target/release), or
/// `WSPIPE_BIN`.
fn wspipe() -> PathBuf {
    if let Some(bin) = std::env::var_os("WSPIPE_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // target/release/deps/shared_scale-HASH -> target/release/wspipe
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("wspipe"))
        .expect("a target directory");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release (or scripts/bench.sh) first",
        bin.display()
    );
    bin
}

/// The server, killed and reaped when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// `wspipe --shared paced-stream.sh LINES BATCH CLIENTS` on a free
    /// loopback port, once it says where it serves.
    fn start(lines: u32, batch: u32, clients: u32) -> Server {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/paced-stream.sh");
        let mut child = Command::new(wspipe())
            .args(["--port", "0", "--address", "127.0.0.1", "--shared", script])
            .args([lines, batch, clients].map(|n| n.to_string()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wspipe");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Reads the log to its end, so the server never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = serving_port(&line) {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx.recv_timeout(START).expect("wspipe says where it serves");
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of a `serving on ws://127.0.0.1:PORT/` log line.
fn serving_port(line: &str) -> Option<u16> {
    let rest = line.split("serving on ws://127.0.0.1:").nth(1)?;
    rest.split('/').next()?.parse().ok()
}

/// Raises the open-files limit to `want` (within the hard limit): a
/// client and a server descriptor per connection, and the child's pipes.
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// How many children process `pid` has (/proc/PID/task/*/children).
fn children(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .map(|list| list.split_whitespace().count())
        .sum()
}

/// Polls `done` until it holds or `limit` passes.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn connect(port: u16) -> Ws {
    let handshake = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let url = format!("ws://127.0.0.1:{port}/");
        let (ws, _) = tokio_tungstenite::client_async(url, tcp).await?;
        anyhow::Ok(ws)
    };
    tokio::time::timeout(START, handshake)
        .await
        .expect("handshake in time")
        .expect("handshake")
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Every one of `clients` clients gets the child's `lines` lines in
/// order, acknowledging each `batch`, then its last line.
async fn every_client_gets_every_line(clients: u32, lines: u32, batch: u32) {
    raise_nofile(4 * u64::from(clients) + 64);
    let server = Server::start(lines, batch, clients);
    let mut sockets = Vec::new();
    // A hundred handshakes at a time: within the listen backlog.
    while sockets.len() < clients as usize {
        let n = (clients as usize - sockets.len()).min(100);
        sockets.extend(join_all((0..n).map(|_| connect(server.port))).await);
    }
    let one_child = wait_until(START, || children(server.child.id()) == 1).await;
    assert!(
        one_child,
        "one child for all: {}",
        children(server.child.id())
    );
    // Every client is a member once its handshake is done; the child
    // holds its stream until this line.
    sockets[0]
        .send(Message::text("start"))
        .await
        .expect("send start");
    let started = Instant::now();
    let readers = sockets.into_iter().map(|mut ws| {
        tokio::spawn(async move {
            for n in 1..=lines {
                assert_eq!(
                    next_text(&mut ws).await,
                    format!("line {n}"),
                    "in order, none lost"
                );
                if n % batch == 0 {
                    ws.send(Message::text("ack")).await.expect("send ack");
                }
            }
            assert_eq!(next_text(&mut ws).await, "done");
        })
    });
    let all = tokio::time::timeout(LIMIT, join_all(readers))
        .await
        .expect("every client got every line in time");
    for reader in all {
        reader.expect("a client got every line");
    }
    eprintln!(
        "{clients} clients x {lines} lines in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "10 million deliveries: run in release after cargo build --release, as .ci/run does"]
async fn a_thousand_clients_get_every_line_of_a_ten_thousand_line_stream_in_order() {
    every_client_gets_every_line(1_000, 10_000, 500).await;
}
