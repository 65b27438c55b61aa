//! End to end: the life of a `--shared` child beyond one run. Restarted
//! with backoff (`--shared-restart`) while its clients stay, kept past its
//! last client (`--shared-keep`), listed and killed through `wspipe ctl`;
//! binary and framed shared endpoints; and a stream of 1,000 lines to 100
//! clients (bench/tests/shared_scale.rs takes 10,000 lines to 1,000, in
//! release).

mod common;

use std::time::{Duration, Instant};

use common::shared::*;
use common::*;
use futures_util::future::join_all;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// A `--shared` server of [`ANSWERING`] with a control socket; returns it
/// with the socket's path.
fn controlled(dir: &std::path::Path, extra: &[&str]) -> (Server, String) {
    let socket = dir.join("ctl.sock");
    let ctl = socket.to_str().unwrap().to_owned();
    let mut args = vec!["--control", ctl.as_str()];
    args.extend_from_slice(extra);
    let server = answering_server(dir, &args);
    server.wait_log("control socket at");
    (server, ctl)
}

/// Waits until the server's one live child is not `old`; returns it.
async fn wait_new_child(server: &Server, old: u32) -> u32 {
    let mut now = Vec::new();
    let changed = wait_until_async(TIMEOUT, || {
        now = live_children(server);
        now.len() == 1 && now[0] != old
    })
    .await;
    assert!(changed, "expected one child other than {old}, have {now:?}");
    now[0]
}

#[tokio::test]
async fn with_restart_a_child_that_exits_is_started_again_and_its_clients_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ctl) = controlled(dir.path(), &["--shared-restart"]);
    let mut a = connect(&server.url("/")).await;
    let mut b = connect(&server.url("/")).await;
    let first = wait_children(&server, 1).await[0];
    send_text(&mut a, "exit 3").await;
    assert_eq!(next_text(&mut a).await, "bye");
    assert_eq!(next_text(&mut b).await, "bye");
    let second = wait_new_child(&server, first).await;
    assert!(!alive(first), "the first one is reaped");
    // Both are still connected, to the new child.
    send_text(&mut b, "hello again").await;
    assert_eq!(next_text(&mut a).await, "got: hello again");
    assert_eq!(next_text(&mut b).await, "got: hello again");

    let children = shared_children(&ctl);
    assert_eq!(children.len(), 1, "{children:?}");
    assert_eq!(children[0]["endpoint"], "/");
    assert_eq!(children[0]["pid"], second);
    assert_eq!(children[0]["members"], 2);
    assert_eq!(children[0]["restarts"], 1);
    assert_eq!(ctl_stats(&ctl)["shared_restarts_total"], 1);
    // The sessions' own listing follows the restart too.
    for id in ids(&ctl) {
        let out = ctl_list_json(&ctl);
        let session = out.iter().find(|s| s["id"] == id).unwrap();
        assert_eq!(session["pid"], second);
    }
    let table = String::from_utf8(ctl_run(&ctl, &["list"]).stdout).unwrap();
    assert!(table.contains("ENDPOINT"), "{table}");
    server
        .wait_log_async("shared child stopped: restarting")
        .await;
}

/// Sessions as `ctl list --json` shows them.
fn ctl_list_json(socket: &str) -> Vec<serde_json::Value> {
    let out = ctl_run(socket, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list.as_array().unwrap().clone()
}

fn ctl_run(socket: &str, args: &[&str]) -> std::process::Output {
    common::shared::ctl(socket, args)
}

#[tokio::test]
async fn restarts_back_off_exponentially_while_the_child_keeps_failing() {
    let dir = tempfile::tempdir().unwrap();
    let program = script_external(dir.path(), "fail", "#!/bin/sh\necho \"up $$\"\nexit 1\n");
    let server = Server::start(&["--shared", "--shared-restart", program.to_str().unwrap()]);
    let mut ws = connect(&server.url("/")).await;
    // (The first child's line may have gone out before this client was
    // subscribed: time the ones it gets.)
    let mut seen = Vec::new();
    for _ in 0..5 {
        let line = tokio::time::timeout(Duration::from_secs(15), next_text(&mut ws))
            .await
            .expect("the child keeps coming back");
        assert!(line.starts_with("up "), "{line}");
        seen.push((Instant::now(), line));
    }
    let pids: std::collections::HashSet<&String> = seen.iter().map(|(_, l)| l).collect();
    assert_eq!(pids.len(), 5, "five different children: {seen:?}");
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps[0] >= Duration::from_millis(90), "{gaps:?}");
    for pair in gaps.windows(2) {
        // Doubling, give or take a spawn.
        assert!(
            pair[1] > pair[0].mul_f32(1.5) && pair[1] < pair[0] * 3,
            "{gaps:?}"
        );
    }
    // The client was never closed: it still hears the next one.
    assert!(next_text(&mut ws).await.starts_with("up "));
}

#[tokio::test]
async fn ctl_kill_of_an_endpoint_ends_its_child_and_closes_its_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ctl) = controlled(dir.path(), &[]);
    let mut a = connect(&server.url("/")).await;
    let mut b = connect(&server.url("/other")).await;
    let pid = wait_children(&server, 1).await[0];
    let out = ctl_run(&ctl, &["kill", "/"]);
    assert!(out.status.success(), "{out:?}");
    // Ended by our signal: a normal close, as `ctl kill ID` gives.
    assert_eq!(expect_close(&mut a).await.0, 1000);
    assert_eq!(expect_close(&mut b).await.0, 1000);
    assert!(wait_dead_async(pid, TIMEOUT).await);
    let out = ctl_run(&ctl, &["kill", "/"]);
    assert_eq!(out.status.code(), Some(1), "nothing serves / now");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no shared child"), "{err}");
    let out = ctl_run(&ctl, &["kill", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[tokio::test]
async fn with_restart_ctl_kill_of_an_endpoint_restarts_its_child() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ctl) = controlled(dir.path(), &["--shared-restart"]);
    let mut ws = connect(&server.url("/")).await;
    let first = wait_children(&server, 1).await[0];
    assert!(ctl_run(&ctl, &["kill", "/"]).status.success());
    wait_new_child(&server, first).await;
    send_text(&mut ws, "still here").await;
    assert_eq!(next_text(&mut ws).await, "got: still here");
    assert_eq!(shared_children(&ctl)[0]["restarts"], 1);
}

#[tokio::test]
async fn with_keep_the_child_outlives_its_last_client() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let ctl = socket.to_str().unwrap();
    // Numbers what it reads: a second client sees the count go on.
    let program = script_external(
        dir.path(),
        "counter",
        "#!/bin/sh\nn=0\nwhile IFS= read -r line; do n=$((n+1)); echo \"$n: $line\"; done\n",
    );
    let server = Server::start(&[
        "--control",
        ctl,
        "--closems",
        "50",
        "--shared",
        "--shared-keep",
        program.to_str().unwrap(),
    ]);
    server.wait_log("control socket at");
    let mut a = connect(&server.url("/")).await;
    let pid = wait_children(&server, 1).await[0];
    send_text(&mut a, "one").await;
    assert_eq!(next_text(&mut a).await, "1: one");
    a.close(None).await.unwrap();
    finish_close(&mut a).await;
    let left = wait_until_async(TIMEOUT, || shared_children(ctl)[0]["members"] == 0).await;
    assert!(left, "the registry saw the last client leave");
    assert_eq!(shared_children(ctl)[0]["pid"], pid);
    let mut b = connect(&server.url("/")).await;
    send_text(&mut b, "two").await;
    assert_eq!(
        next_text(&mut b).await,
        "2: two",
        "the same child, its state kept"
    );
    assert_eq!(live_children(&server), vec![pid]);
    // Shutdown still ends it.
    signal(server.pid(), libc::SIGTERM);
    assert_eq!(expect_close(&mut b).await.0, 1001);
    assert!(wait_dead_async(pid, TIMEOUT).await);
}

#[tokio::test]
async fn a_binary_shared_endpoint_fans_out_raw_bytes() {
    let server = Server::start(&["--shared", "--binary", "cat"]);
    let mut a = connect(&server.url("/")).await;
    let mut b = connect(&server.url("/")).await;
    wait_children(&server, 1).await;
    let bytes = vec![0u8, 1, 2, 255, b'\n', 7];
    a.send(Message::binary(bytes.clone())).await.unwrap();
    for ws in [&mut a, &mut b] {
        match next_event(ws).await {
            Event::Binary(got) => assert_eq!(got, bytes),
            other => panic!("expected binary, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_framed_shared_endpoint_keeps_boundaries_and_types() {
    let server = Server::start(&["--shared", "--framed", "cat"]);
    let mut a = connect(&server.url("/")).await;
    let mut b = connect(&server.url("/")).await;
    wait_children(&server, 1).await;
    a.send(Message::text("two\nlines")).await.unwrap();
    a.send(Message::binary(vec![0u8, 10, 13])).await.unwrap();
    for ws in [&mut a, &mut b] {
        assert_eq!(next_text(ws).await, "two\nlines");
        match next_event(ws).await {
            Event::Binary(got) => assert_eq!(got, [0, 10, 13]),
            other => panic!("expected binary, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_framed_shared_child_that_breaks_framing_closes_its_clients_with_1011() {
    let dir = tempfile::tempdir().unwrap();
    let program = script_external(
        dir.path(),
        "garbage",
        // Its first read is the client's frame: header and "go".
        "#!/bin/sh\nhead -c 7 >/dev/null\nprintf 'not a frame'\nexec sleep 600\n",
    );
    let server = Server::start(&["--shared", "--framed", program.to_str().unwrap()]);
    let mut ws = connect(&server.url("/")).await;
    let pid = wait_children(&server, 1).await[0];
    ws.send(Message::text("go")).await.unwrap();
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1011, "{reason}");
    assert!(reason.contains("frame"), "{reason}");
    assert!(
        wait_dead_async(pid, TIMEOUT).await,
        "ended, not left running"
    );
}

/// `clients` clients of one shared tests/data/paced-stream.sh child each
/// get its `lines` lines, in order, none lost, then its last line.
async fn every_client_gets_every_line(clients: u32, lines: u32, batch: u32) {
    raise_nofile(4 * u64::from(clients));
    let program = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/paced-stream.sh");
    let (lines_arg, batch_arg, clients_arg) =
        (lines.to_string(), batch.to_string(), clients.to_string());
    let server = Server::start(&["--shared", program, &lines_arg, &batch_arg, &clients_arg]);
    let url = server.url("/");
    let mut sockets = Vec::new();
    // A hundred handshakes at a time: within the listen backlog.
    while sockets.len() < clients as usize {
        let n = (clients as usize - sockets.len()).min(100);
        sockets.extend(join_all((0..n).map(|_| connect(&url))).await);
    }
    // One child for all of them.
    wait_children(&server, 1).await;
    // Everyone is subscribed once its handshake is done: start.
    send_text(&mut sockets[0], "start").await;
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
                    send_text(&mut ws, "ack").await;
                }
            }
            assert_eq!(next_text(&mut ws).await, "done");
        })
    });
    for reader in join_all(readers).await {
        reader.expect("a client got every line");
    }
    eprintln!(
        "{clients} clients x {lines} lines in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_get_every_line_of_a_thousand_line_stream_in_order() {
    every_client_gets_every_line(100, 1_000, 250).await;
}

/// Whether process `pid` has `file` open.
fn has_open(pid: u32, file: &std::path::Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == file))
}

#[tokio::test]
async fn the_log_feed_example_sends_every_appended_line_to_every_client() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let ctl = socket.to_str().unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(&log, "old line, not sent\n").unwrap();
    let feed = format!("{}/examples/shared/log-feed.sh", env!("CARGO_MANIFEST_DIR"));
    let server = Server::start(&[
        "--control",
        ctl,
        "--shared",
        "--shared-keep",
        "--shared-restart",
        &feed,
        log.to_str().unwrap(),
    ]);
    server.wait_log("control socket at");
    let mut a = connect(&server.url("/")).await;
    let mut b = connect(&server.url("/")).await;
    let tail = wait_children(&server, 1).await[0];
    let log_path = log.canonicalize().unwrap();
    assert!(
        wait_until_async(TIMEOUT, || has_open(tail, &log_path)).await,
        "tail follows the file"
    );
    // Clients talk: nobody listens, nothing is held or counted.
    send_text(&mut a, "ignored").await;
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(file, "first event").unwrap();
    writeln!(file, "second event").unwrap();
    for ws in [&mut a, &mut b] {
        assert_eq!(next_text(ws).await, "first event");
        assert_eq!(next_text(ws).await, "second event");
    }
    assert_eq!(ctl_stats(ctl)["shared_input_dropped_total"], 0);
}

#[tokio::test]
async fn a_child_flooding_past_a_stalled_client_is_never_held_and_memory_stays_flat() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let ctl = socket.to_str().unwrap();
    // 400 lines of 60 KB (24 MB) as fast as it can write, then "end".
    let program = script_external(
        dir.path(),
        "flood",
        "#!/bin/sh\nbig=$(head -c 60000 /dev/zero | tr '\\0' x)\nread -r go\n\
         i=0\nwhile [ $i -lt 400 ]; do echo \"$i $big\"; i=$((i+1)); done\necho end\nexec sleep 600\n",
    );
    let server = Server::start(&["--control", ctl, "--shared", program.to_str().unwrap()]);
    server.wait_log("control socket at");
    // Never reads: its socket buffers fill, then its queue.
    let stalled = RawClient::connect(server.addr, "/");
    let mut reader = connect(&server.url("/")).await;
    wait_children(&server, 1).await;
    let baseline = server.rss_kib();
    send_text(&mut reader, "go").await;
    let mut last = None;
    loop {
        let text = next_text(&mut reader).await;
        if text == "end" {
            break;
        }
        let n: u32 = text.split(' ').next().unwrap().parse().unwrap();
        assert!(last < Some(n), "in order: {n} after {last:?}");
        last = Some(n);
    }
    let grown = server.rss_kib().saturating_sub(baseline);
    eprintln!("24 MB through the server: RSS {baseline} KiB + {grown} KiB");
    assert!(grown < 16 * 1024, "memory stays flat: grew {grown} KiB");
    let channels =
        serde_json::from_slice::<serde_json::Value>(&ctl_run(ctl, &["channels", "--json"]).stdout)
            .unwrap();
    assert!(
        channels[0]["dropped"].as_u64().unwrap() > 0,
        "the stalled client lost its oldest lines: {channels}"
    );
    drop(stalled);
}

#[tokio::test]
async fn with_ids_a_restarted_child_first_hears_every_client_still_there() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let ctl = socket.to_str().unwrap();
    // Tells everyone each line it reads (a leading TAB: to all); a client
    // saying "quit" makes it exit.
    let program = script_external(
        dir.path(),
        "raw",
        "#!/bin/bash\nwhile IFS= read -r line; do\n  [[ $line == *$'\\t'quit ]] && exit 1\n  printf '\\t%s\\n' \"$line\"\ndone\n",
    );
    let server = Server::start(&[
        "--control",
        ctl,
        "--shared",
        "--shared-ids",
        "--shared-restart",
        program.to_str().unwrap(),
    ]);
    server.wait_log("control socket at");
    let mut a = connect(&server.url("/")).await;
    let id_a = new_id(ctl, &[]);
    assert_eq!(next_text(&mut a).await, format!("\tjoin\t{id_a}"));
    let mut b = connect(&server.url("/")).await;
    let id_b = new_id(ctl, &[id_a]);
    for ws in [&mut a, &mut b] {
        assert_eq!(next_text(ws).await, format!("\tjoin\t{id_b}"));
    }
    let first = live_children(&server)[0];
    send_text(&mut b, "quit").await;
    wait_new_child(&server, first).await;
    // The new child's first lines: both clients, in id order.
    for ws in [&mut a, &mut b] {
        assert_eq!(next_text(ws).await, format!("\tjoin\t{id_a}"));
        assert_eq!(next_text(ws).await, format!("\tjoin\t{id_b}"));
    }
    send_text(&mut a, "after").await;
    assert_eq!(next_text(&mut b).await, format!("\t{id_a}\tafter"));
}
