//! End to end: how sessions and their children end. Closing stdin, signal
//! escalation to the whole process group, children that linger or leave
//! grandchildren behind, backpressure in both directions, pings, vanished
//! clients, many short sessions, and server shutdown.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Writes an executable bash script.
fn bash(dir: &Path, name: &str, body: &str) -> String {
    script(dir, name, &format!("#!/bin/bash\n{body}\n"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// A child that writes its pid to a file, then sleeps without ever reading
/// stdin: (its temp dir, the script, the pid file).
fn sleeper() -> (tempfile::TempDir, String, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("pid");
    let body = format!("echo $$ > {}\nexec sleep 1000", pid_file.display());
    let script = bash(tmp.path(), "sleeper.sh", &body);
    (tmp, script, pid_file)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

// 1. Client close closes the child's stdin.

#[tokio::test]
async fn client_close_closes_child_stdin_and_child_is_reaped() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("marker");
    let drain = bash(
        tmp.path(),
        "drain.sh",
        "cat > /dev/null\necho done > \"$1\"",
    );
    // A grace far beyond the test's waits: only the end of stdin, never a
    // signal, can let the script reach its last line.
    let server = Server::start(&["--closems", "60000", &drain, path_str(&marker)]);
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "some input").await;
    assert!(wait_until_async(TIMEOUT, || server.children().len() == 1).await);
    assert!(!marker.exists(), "script finished before stdin was closed");

    ws.close(None).await.unwrap();
    assert!(
        wait_until_async(TIMEOUT, || marker.exists()).await,
        "child never saw the end of stdin"
    );
    finish_close(&mut ws).await;
    assert!(
        wait_until_async(TIMEOUT, || server.children().is_empty()).await,
        "child not reaped: {:?}",
        server.children()
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "done\n");
    let line = server
        .log
        .wait_for_async("disconnect", TIMEOUT)
        .await
        .unwrap();
    assert!(line.contains("exit=exit status 0"), "{line}");
}

// 2. Signal escalation.

#[tokio::test]
async fn escalation_ends_children_that_ignore_eof_int_and_term() {
    let tmp = tempfile::tempdir().unwrap();
    let scripts = tmp.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    let no_int_pid = tmp.path().join("no_int.pid");
    let no_term_pid = tmp.path().join("no_term.pid");
    bash(
        &scripts,
        "no_int",
        &format!(
            "trap '' INT\necho $$ > {}\nwhile :; do sleep 0.05; done",
            no_int_pid.display()
        ),
    );
    bash(
        &scripts,
        "no_term",
        &format!(
            "trap '' INT TERM\necho $$ > {}\nwhile :; do sleep 0.05; done",
            no_term_pid.display()
        ),
    );
    let server = Server::start(&["--closems", "50", "--dir", path_str(&scripts)]);
    let mut a = connect(&server.url("/no_int")).await;
    let mut b = connect(&server.url("/no_term")).await;
    let pid_a = read_pid_async(&no_int_pid).await;
    let pid_b = read_pid_async(&no_term_pid).await;
    assert!(alive(pid_a) && alive(pid_b));

    let closed = Instant::now();
    a.close(None).await.unwrap();
    b.close(None).await.unwrap();
    let limit = Duration::from_secs(5);
    assert!(
        wait_dead_async(pid_a, limit).await,
        "INT-ignoring child still alive"
    );
    assert!(
        wait_dead_async(pid_b, limit).await,
        "TERM-ignoring child still alive"
    );
    let took = closed.elapsed();
    finish_close(&mut a).await;
    finish_close(&mut b).await;
    assert!(wait_until_async(TIMEOUT, || server.children().is_empty()).await);
    assert!(group_members(pid_a).is_empty() && group_members(pid_b).is_empty());

    let line_a = disconnect_line_async(&server.log, pid_a, TIMEOUT)
        .await
        .expect("disconnect logged");
    let line_b = disconnect_line_async(&server.log, pid_b, TIMEOUT)
        .await
        .expect("disconnect logged");
    assert!(line_a.contains("exit=killed by SIGTERM"), "{line_a}");
    assert!(line_b.contains("exit=killed by SIGKILL"), "{line_b}");
    assert!(line_a.contains("cause=\"client closed\""), "{line_a}");
    // SIGKILL comes 50 + 75 + 125 ms after the close; allow for a busy host.
    assert!(took < limit, "took {took:?}");
}

// 3. The process group.

#[tokio::test]
async fn client_close_ends_child_and_background_grandchild() {
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("pid");
    let gc_file = tmp.path().join("gcpid");
    let body = format!(
        "echo $$ > {}\nsleep 1000 &\necho $! > {}\nwait",
        pid_file.display(),
        gc_file.display()
    );
    let bg = bash(tmp.path(), "bg.sh", &body);
    let server = Server::start(&[&bg]);
    let mut ws = connect(&server.url("/")).await;
    let pid = read_pid_async(&pid_file).await;
    let gc = read_pid_async(&gc_file).await;
    assert!(alive(pid) && alive(gc));
    assert_eq!(pgrp(gc), Some(pid), "grandchild is in the child's group");

    ws.close(None).await.unwrap();
    assert!(wait_dead_async(pid, TIMEOUT).await, "child still alive");
    assert!(wait_dead_async(gc, TIMEOUT).await, "grandchild still alive");
    finish_close(&mut ws).await;
    assert!(wait_until_async(TIMEOUT, || server.children().is_empty()).await);
    assert!(group_members(pid).is_empty(), "{:?}", group_members(pid));
}

#[tokio::test]
async fn exited_child_with_grandchild_holding_stdout_closes_1000() {
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("pid");
    let gc_file = tmp.path().join("gcpid");
    let body = format!(
        "echo $$ > {}\n(sleep 1000; echo late) &\necho $! > {}\necho hi\nexit 0",
        pid_file.display(),
        gc_file.display()
    );
    let leaver = bash(tmp.path(), "leaver.sh", &body);
    let server = Server::start(&[&leaver]);
    let started = Instant::now();
    let mut ws = connect(&server.url("/")).await;
    let (texts, close) = texts_until_close(&mut ws).await;
    let took = started.elapsed();
    assert_eq!(texts, ["hi"]);
    assert_eq!(close.0, 1000, "{close:?}");
    assert!(took < Duration::from_secs(5), "close took {took:?}");
    let pid = read_pid_async(&pid_file).await;
    let gc = read_pid_async(&gc_file).await;
    finish_close(&mut ws).await;
    assert!(wait_dead_async(gc, TIMEOUT).await, "grandchild still alive");
    assert!(wait_until_async(TIMEOUT, || group_members(pid).is_empty()).await);
    assert!(wait_until_async(TIMEOUT, || server.children().is_empty()).await);
}

// 4. A child that closes stdout but stays alive.

#[tokio::test]
async fn child_closing_stdout_ends_the_session() {
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("pid");
    let body = format!("exec >&-\necho $$ > {}\nsleep 1000", pid_file.display());
    let mute = bash(tmp.path(), "mute.sh", &body);
    let server = Server::start(&[&mute]);
    let started = Instant::now();
    let mut ws = connect(&server.url("/")).await;
    let pid = read_pid_async(&pid_file).await;
    let close = expect_close(&mut ws).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "close took {took:?} ({close:?})"
    );
    finish_close(&mut ws).await;
    assert!(wait_dead_async(pid, TIMEOUT).await, "child still alive");
    assert!(wait_until_async(TIMEOUT, || group_members(pid).is_empty()).await);
    assert!(wait_until_async(TIMEOUT, || server.children().is_empty()).await);
}

// 5. A child that never reads stdin.

const FLOOD_MESSAGE: usize = 64 * 1024;
const FLOOD_TOTAL: usize = 20 * 1024 * 1024;

/// Sends up to [`FLOOD_TOTAL`] bytes in text messages from a task; `sent`
/// counts the bytes whose send completed. Stops at the first send that
/// takes longer than `per_send`.
fn flood(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    sent: Arc<AtomicUsize>,
    per_send: Duration,
) -> tokio::task::JoinHandle<futures_util::stream::SplitSink<Ws, Message>> {
    tokio::spawn(async move {
        let payload: tokio_tungstenite::tungstenite::Utf8Bytes = "x".repeat(FLOOD_MESSAGE).into();
        for _ in 0..FLOOD_TOTAL / FLOOD_MESSAGE {
            let send = sink.send(Message::Text(payload.clone()));
            match tokio::time::timeout(per_send, send).await {
                Ok(Ok(())) => {
                    sent.fetch_add(FLOOD_MESSAGE, Ordering::SeqCst);
                }
                _ => break,
            }
        }
        sink
    })
}

/// Waits (bounded) until `sent` has not moved for `quiet`; returns its value.
async fn wait_stalled(sent: &AtomicUsize, quiet: Duration) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = sent.load(Ordering::SeqCst);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sent.load(Ordering::SeqCst);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "sends never stalled ({now} bytes)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_not_reading_stdin_stalls_client_with_bounded_memory() {
    let (_tmp, deaf, pid_file) = sleeper();
    let mut server = Server::start(&[&deaf]);
    let ws = connect(&server.url("/")).await;
    let pid = read_pid_async(&pid_file).await;
    let (sink, mut stream) = ws.split();
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = flood(sink, sent.clone(), Duration::from_secs(30));

    let stalled_at = wait_stalled(&sent, Duration::from_secs(1)).await;
    let rss = server.rss_kib();
    assert!(
        stalled_at < FLOOD_TOTAL,
        "all {FLOOD_TOTAL} bytes were accepted by a child that reads nothing"
    );
    assert!(rss > 0 && rss < 64 * 1024, "server RSS {rss} KiB");
    assert!(!sender.is_finished(), "sender gave up instead of stalling");
    assert!(alive(pid));
    eprintln!("sends stalled after {stalled_at} bytes; server RSS {rss} KiB");

    // The client cannot get a close frame through the stalled socket; a
    // server shutdown must still end the session and the child.
    let status = tokio::task::spawn_blocking(move || server.terminate());
    let status = tokio::time::timeout(TIMEOUT * 2, status)
        .await
        .expect("server exit")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(wait_dead_async(pid, TIMEOUT).await, "child still alive");
    assert!(group_members(pid).is_empty());
    sender.abort();
    let _ = tokio::time::timeout(TIMEOUT, stream.next()).await;
}

#[tokio::test]
async fn client_vanishing_while_child_not_reading_stdin_ends_child() {
    // The client sends more than the child's pipe holds (so the server is
    // stuck writing stdin and not reading the socket), but less than fills
    // the socket buffers, then goes away. Its FIN arrives behind the data,
    // and the server, probing the socket while stuck, notices without pings.
    let (_tmp, deaf, pid_file) = sleeper();
    let server = Server::start(&[&deaf]);
    let mut ws = connect(&server.url("/")).await;
    let pid = read_pid_async(&pid_file).await;
    let chunk = "y".repeat(32 * 1024);
    for _ in 0..4 {
        tokio::time::timeout(TIMEOUT, ws.send(Message::text(chunk.clone())))
            .await
            .expect("128 KiB fit in the pipe and socket buffers")
            .unwrap();
    }
    drop(ws);
    assert!(
        wait_dead_async(pid, TIMEOUT).await,
        "child still alive {TIMEOUT:?} after its client vanished"
    );
    assert!(wait_until_async(TIMEOUT, || server.children().is_empty()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_client_that_vanishes_is_dropped_with_pings() {
    // A client that filled every buffer on the way and then died cannot be
    // told from a slow one by the kernel (its FIN waits behind the data):
    // --pingms is what notices, within two intervals.
    let (_tmp, deaf, pid_file) = sleeper();
    let server = Server::start(&["--pingms", "200", &deaf]);
    let ws = connect(&server.url("/")).await;
    let pid = read_pid_async(&pid_file).await;
    let (sink, stream) = ws.split();
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = flood(sink, sent.clone(), Duration::from_secs(30));
    wait_stalled(&sent, Duration::from_secs(1)).await;
    sender.abort();
    let _ = sender.await;
    drop(stream);
    assert!(
        wait_dead_async(pid, TIMEOUT).await,
        "child still alive {TIMEOUT:?} after its client vanished"
    );
    assert!(wait_until_async(TIMEOUT, || server.children().is_empty()).await);
}

// 6. Slow reader, chatty child.

#[tokio::test]
async fn slow_reader_gets_every_line_with_bounded_server_memory() {
    // 300000 lines of 100 bytes: 30 MB, far more than the kernel buffers
    // between child and client (a few MB), so an unbounded queue in the
    // server would show in its RSS, and seq would have finished early.
    const N: u64 = 300_000;
    let server = Server::start(&["seq", "-f", "%0100.0f", "1", &N.to_string()]);
    let baseline = server.rss_kib();
    let mut ws = connect(&server.url("/")).await;
    let seq_pid = wait_for_child_async(&server).await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = server.rss_kib();
    let blocked = alive(seq_pid);

    let mut next = 1u64;
    let close = loop {
        match next_event(&mut ws).await {
            Event::Text(t) => {
                let n: u64 = t.parse().unwrap_or_else(|_| panic!("bad line {t:?}"));
                assert_eq!(n, next, "lines out of order, lost or repeated");
                assert_eq!(t.len(), 100);
                next += 1;
            }
            Event::Close(c) => break c,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(next, N + 1, "lines missing");
    eprintln!("RSS {rss} KiB while not reading (baseline {baseline} KiB)");
    assert_eq!(close.map(|c| c.0), Some(1000));
    finish_close(&mut ws).await;
    assert!(
        rss < baseline + 16 * 1024,
        "server RSS {rss} KiB while the client did not read (baseline {baseline} KiB)"
    );
    assert!(
        blocked,
        "seq finished while the client was not reading: nothing was held back"
    );
    assert!(wait_until_async(TIMEOUT, || server.children().is_empty()).await);
}

/// The pid of the server's only child, once there is one.
fn wait_for_child(server: &Server) -> u32 {
    let mut pid = None;
    assert!(
        wait_until(TIMEOUT, || {
            pid = server.children().first().map(|c| c.0);
            pid.is_some()
        }),
        "no child"
    );
    pid.unwrap()
}

/// [`wait_for_child`] for async tests.
async fn wait_for_child_async(server: &Server) -> u32 {
    let mut pid = None;
    assert!(
        wait_until_async(TIMEOUT, || {
            pid = server.children().first().map(|c| c.0);
            pid.is_some()
        })
        .await,
        "no child"
    );
    pid.unwrap()
}

// 7. Many short sessions.

#[tokio::test]
async fn thousand_sessions_leave_no_children_or_fds_behind() {
    const CYCLES: usize = 1000;
    let server = Server::start(&["--closems", "10", "cat"]);
    let url = server.url("/");
    let started = Instant::now();
    let mut baseline_fds = 0;
    let mut most_children = 0;
    for i in 0..CYCLES {
        let mut ws = connect(&url).await;
        send_text(&mut ws, "x").await;
        assert_eq!(next_text(&mut ws).await, "x", "cycle {i}");
        ws.close(None).await.unwrap();
        finish_close(&mut ws).await;
        if i == 0 {
            assert!(wait_until_async(TIMEOUT, || server.children().is_empty()).await);
            baseline_fds = server.fd_count();
            assert!(baseline_fds > 0);
        }
        if i % 50 == 0 {
            most_children = most_children.max(server.children().len());
        }
    }
    let took = started.elapsed();
    assert!(
        wait_until_async(TIMEOUT, || server.children().is_empty()).await,
        "children left: {:?}",
        server.children()
    );
    let mut fds = 0;
    let settled = wait_until_async(TIMEOUT, || {
        fds = server.fd_count();
        fds <= baseline_fds + 2
    })
    .await;
    assert!(settled, "fds grew from {baseline_fds} to {fds}");
    // Sessions end as they go: children must not pile up (zombies or not).
    assert!(most_children < 20, "{most_children} children at once");
    eprintln!("{CYCLES} sessions in {took:?}");
}

// 8. SIGTERM shutdown.

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_and_ends_every_child() {
    let tmp = tempfile::tempdir().unwrap();
    let scripts = tmp.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    let stubborn_pid = tmp.path().join("stubborn.pid");
    bash(&scripts, "echo", "exec cat");
    bash(
        &scripts,
        "stubborn",
        &format!(
            "trap '' INT TERM\necho $$ > {}\nwhile :; do sleep 0.05; done",
            stubborn_pid.display()
        ),
    );
    let mut server = Server::start(&["--dir", path_str(&scripts)]);
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut ws = connect(&server.url("/echo")).await;
        send_text(&mut ws, &format!("hello {i}")).await;
        assert_eq!(next_text(&mut ws).await, format!("hello {i}"));
        clients.push(ws);
    }
    clients.push(connect(&server.url("/stubborn")).await);
    let stubborn = read_pid_async(&stubborn_pid).await;
    assert!(wait_until_async(TIMEOUT, || server.children().len() == 4).await);
    let pids: Vec<u32> = server.children().iter().map(|c| c.0).collect();
    assert!(pids.contains(&stubborn));

    let signalled = Instant::now();
    signal(server.pid(), libc::SIGTERM);
    for ws in &mut clients {
        assert_eq!(expect_close(ws).await.0, 1001);
    }
    for ws in &mut clients {
        finish_close(ws).await;
    }
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("server did not exit within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    for pid in pids {
        assert!(!alive(pid), "child {pid} outlived the server");
        assert!(
            group_members(pid).is_empty(),
            "group {pid} outlived the server"
        );
    }
    eprintln!("shutdown took {:?}", signalled.elapsed());
}

// 9. Pings.

#[test]
fn client_that_never_answers_pings_is_dropped_and_child_ended() {
    let (_tmp, sleeper, pid_file) = sleeper();
    let server = Server::start(&["--pingms", "200", &sleeper]);
    let raw = RawClient::connect(server.addr, "/");
    let pid = read_pid(&pid_file);
    assert!(
        wait_dead(pid, Duration::from_secs(5)),
        "child of a silent client still alive"
    );
    let line = disconnect_line(&server.log, pid, TIMEOUT).expect("disconnect logged");
    assert!(line.contains("cause=\"client missed a pong\""), "{line}");
    assert!(wait_until(TIMEOUT, || server.children().is_empty()));
    drop(raw);
}

#[tokio::test]
async fn client_that_answers_pings_stays_connected() {
    let server = Server::start(&["--pingms", "200", "cat"]);
    let mut ws = connect(&server.url("/")).await;
    let cat = wait_for_child_async(&server).await;
    let until = Instant::now() + Duration::from_millis(1500);
    let mut pings = 0;
    // Keep reading: tungstenite answers each ping on the next read.
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 3, "only {pings} pings in 1.5 s at --pingms 200");
    assert!(alive(cat));
    send_text(&mut ws, "still here").await;
    assert_eq!(next_text(&mut ws).await, "still here");
    assert!(server
        .log
        .wait_for_async("disconnect", Duration::from_millis(10))
        .await
        .is_none());
    ws.close(None).await.unwrap();
    finish_close(&mut ws).await;
    assert!(wait_dead_async(cat, TIMEOUT).await);
}

// 10. A client that vanishes without a close frame.

#[test]
fn client_dropping_tcp_without_close_ends_cat() {
    let server = Server::start(&["cat"]);
    let mut raw = RawClient::connect(server.addr, "/");
    raw.send_frame(0x81, b"ping me");
    let cat = wait_for_child(&server);
    drop(raw);
    assert!(wait_dead(cat, Duration::from_secs(5)), "cat still alive");
    assert!(wait_until(Duration::from_secs(5), || server
        .children()
        .is_empty()));
    let line = disconnect_line(&server.log, cat, TIMEOUT).expect("disconnect logged");
    assert!(line.contains("cause=\"client disconnected\""), "{line}");
}

#[test]
fn client_resetting_tcp_ends_child_that_ignores_stdin() {
    let (_tmp, sleeper, pid_file) = sleeper();
    let server = Server::start(&[&sleeper]);
    let raw = RawClient::connect(server.addr, "/");
    let pid = read_pid(&pid_file);
    raw.reset();
    assert!(wait_dead(pid, Duration::from_secs(5)), "child still alive");
    assert!(wait_until(Duration::from_secs(5), || server
        .children()
        .is_empty()));
}
