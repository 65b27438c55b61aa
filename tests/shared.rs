//! End to end: `--shared`, one process per endpoint for all its clients.
//! Each line it writes reaches every client of the endpoint, each client
//! message becomes a line on its stdin; it is started by the first client,
//! ended after the last, and its exit closes every client with the code a
//! per-connection child's exit would give.

mod common;

use std::process::Command;

use common::shared::*;
use common::*;
use futures_util::future::join_all;

#[tokio::test]
async fn two_clients_share_one_child_and_see_every_line_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = answering_server(dir.path(), &[]);
    let mut alice = connect(&server.url("/")).await;
    // Another path: one COMMAND serves every path with the same child.
    let mut bob = connect(&server.url("/elsewhere?x=1")).await;
    let children = wait_children(&server, 1).await;
    send_text(&mut alice, "hello").await;
    assert_eq!(next_text(&mut alice).await, "got: hello");
    assert_eq!(
        next_text(&mut bob).await,
        "got: hello",
        "bob hears alice's answer"
    );
    send_text(&mut bob, "count 300").await;
    let expected: Vec<String> = (1..=300).map(|i| format!("line {i}")).collect();
    assert_eq!(texts(&mut alice, 300).await, expected);
    assert_eq!(texts(&mut bob, 300).await, expected);
    assert_eq!(live_children(&server), children, "still the one child");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_arriving_at_once_start_one_child_and_all_get_everything() {
    let dir = tempfile::tempdir().unwrap();
    let server = answering_server(dir.path(), &[]);
    let url = server.url("/");
    let mut clients = join_all((0..50).map(|_| connect(&url))).await;
    assert_eq!(wait_children(&server, 1).await.len(), 1);
    send_text(&mut clients[17], "count 200").await;
    let expected: Vec<String> = (1..=200).map(|i| format!("line {i}")).collect();
    let got = join_all(clients.iter_mut().map(|ws| texts(ws, 200))).await;
    for (i, lines) in got.iter().enumerate() {
        assert_eq!(lines, &expected, "client {i}");
    }
    assert_eq!(live_children(&server).len(), 1);
}

#[tokio::test]
async fn the_last_client_leaving_ends_the_child_and_the_next_starts_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = answering_server(dir.path(), &["--closems", "100"]);
    let mut a = connect(&server.url("/")).await;
    let mut b = connect(&server.url("/")).await;
    let first = wait_children(&server, 1).await[0];
    a.close(None).await.unwrap();
    finish_close(&mut a).await;
    // One client left: the child stays.
    send_text(&mut b, "still there").await;
    assert_eq!(next_text(&mut b).await, "got: still there");
    assert!(alive(first));
    b.close(None).await.unwrap();
    finish_close(&mut b).await;
    wait_children(&server, 0).await;
    let mut c = connect(&server.url("/")).await;
    let second = wait_children(&server, 1).await[0];
    assert_ne!(first, second, "a fresh child");
    send_text(&mut c, "new").await;
    assert_eq!(next_text(&mut c).await, "got: new");
    let line = server.wait_log_async("shared child ended").await;
    assert!(line.contains(&format!("pid={first}")), "{line}");
}

#[tokio::test]
async fn a_child_that_ignores_its_stdin_is_ended_by_the_escalation() {
    let dir = tempfile::tempdir().unwrap();
    // Ignores stdin and SIGINT: the escalation's SIGTERM ends it.
    let program = script_external(
        dir.path(),
        "stubborn",
        "#!/bin/sh\ntrap '' INT\necho ready\nwhile :; do sleep 0.05; done\n",
    );
    let server = Server::start(&["--closems", "50", "--shared", program.to_str().unwrap()]);
    let mut ws = connect(&server.url("/")).await;
    let pid = wait_children(&server, 1).await[0];
    ws.close(None).await.unwrap();
    finish_close(&mut ws).await;
    assert!(wait_dead_async(pid, TIMEOUT).await, "ended");
    wait_children(&server, 0).await;
}

#[tokio::test]
async fn the_child_exiting_closes_every_client_with_the_per_connection_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = answering_server(dir.path(), &[]);
    let mut a = connect(&server.url("/")).await;
    let mut b = connect(&server.url("/b")).await;
    let first = wait_children(&server, 1).await[0];
    send_text(&mut a, "exit 3").await;
    for ws in [&mut a, &mut b] {
        let (lines, close) = texts_until_close(ws).await;
        assert_eq!(lines, ["bye"], "the last line first");
        assert_eq!(close, (1011, "exit status 3".to_string()));
    }
    assert!(wait_dead_async(first, TIMEOUT).await);
    wait_children(&server, 0).await;
    // The same code a per-connection child's exit gives.
    let solo = Server::start(&[dir.path().join("answer").to_str().unwrap()]);
    let mut ws = connect(&solo.url("/")).await;
    send_text(&mut ws, "exit 3").await;
    assert_eq!(
        texts_until_close(&mut ws).await,
        (vec!["bye".to_string()], (1011, "exit status 3".to_string()))
    );
    // The next client of the shared endpoint gets a fresh child.
    let mut c = connect(&server.url("/")).await;
    let second = wait_children(&server, 1).await[0];
    assert_ne!(first, second);
    send_text(&mut c, "exit 0").await;
    assert_eq!(
        texts_until_close(&mut c).await,
        (vec!["bye".to_string()], (1000, String::new()))
    );
}

#[tokio::test]
async fn with_dir_each_script_has_its_own_shared_child() {
    let dir = tempfile::tempdir().unwrap();
    script_external(dir.path(), "a.sh", &ANSWERING.replace("${1:-got}", "a"));
    script_external(dir.path(), "b", &ANSWERING.replace("${1:-got}", "b"));
    let server = Server::start(&["--shared", "--dir", dir.path().to_str().unwrap()]);
    let mut a1 = connect(&server.url("/a.sh")).await;
    // Found by extension and with PATH_INFO: the same script, the same child.
    let mut a2 = connect(&server.url("/a.sh/room/1")).await;
    let mut b = connect(&server.url("/b")).await;
    wait_children(&server, 2).await;
    send_text(&mut a2, "hi").await;
    assert_eq!(next_text(&mut a1).await, "a: hi");
    assert_eq!(next_text(&mut a2).await, "a: hi");
    send_text(&mut b, "hi").await;
    assert_eq!(next_text(&mut b).await, "b: hi", "b heard nothing from a");
    assert_eq!(
        handshake_status(&server.url("/missing"), &[]).await,
        404,
        "a missing script is 404 as without --shared"
    );
    assert_eq!(live_children(&server).len(), 2);
}

#[tokio::test]
async fn ctl_lists_shared_sessions_and_publish_reaches_them() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let ctl = socket.to_str().unwrap();
    let server = answering_server(dir.path(), &["--control", ctl]);
    server.wait_log("control socket at");
    let mut a = connect(&server.url("/")).await;
    let mut b = connect(&server.url("/side")).await;
    let pid = wait_children(&server, 1).await[0];
    let out = Command::new(bin())
        .args(["ctl", "--socket", ctl, "list", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for s in list {
        assert_eq!(s["kind"], "shared");
        assert_eq!(s["pid"], pid);
        assert!(s["channels"].as_array().unwrap().contains(&"/".into()));
    }
    let out = Command::new(bin())
        .args(["ctl", "--socket", ctl, "publish", "/", "from outside"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("delivered to 2"));
    assert_eq!(next_text(&mut a).await, "from outside");
    assert_eq!(next_text(&mut b).await, "from outside");
    let out = Command::new(bin())
        .args(["ctl", "--socket", ctl, "stats", "--json"])
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["shared_children"], 1);
    assert_eq!(stats["connections"], 2);
}

#[tokio::test]
async fn the_child_gets_the_endpoint_not_the_first_clients_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = answering_server(dir.path(), &[]);
    let mut ws = connect_with(&server.url("/x?secret=1"), &[("Cookie", "id=alice")])
        .await
        .unwrap();
    send_text(&mut ws, "env").await;
    let mut lines = Vec::new();
    loop {
        match next_text(&mut ws).await {
            end if end == "end of env" => break,
            line => lines.push(line),
        }
    }
    let env = parse_env(&lines);
    assert_eq!(env.get("SCRIPT_NAME").map(String::as_str), Some("/"));
    assert_eq!(env.get("WSPIPE_CHANNEL").map(String::as_str), Some("/"));
    assert!(env.contains_key("PATH"));
    for private in [
        "HTTP_COOKIE",
        "QUERY_STRING",
        "REMOTE_ADDR",
        "WSPIPE_CONNECTION_ID",
    ] {
        assert!(!env.contains_key(private), "{private} in {env:?}");
    }
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001_and_ends_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = answering_server(dir.path(), &[]);
    let mut ws = connect(&server.url("/")).await;
    let pid = wait_children(&server, 1).await[0];
    signal(server.pid(), libc::SIGTERM);
    assert_eq!(expect_close(&mut ws).await.0, 1001);
    assert!(server.wait_exit(TIMEOUT).expect("exits").success());
    assert!(wait_dead_async(pid, TIMEOUT).await);
}

#[tokio::test]
async fn a_child_that_stops_reading_drops_client_messages_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let ctl = socket.to_str().unwrap();
    // Never reads stdin, answers nothing: the pipe and then the queue fill.
    let program = script_external(dir.path(), "deaf", "#!/bin/sh\nexec sleep 600\n");
    let server = Server::start(&["--control", ctl, "--shared", program.to_str().unwrap()]);
    server.wait_log("control socket at");
    let mut flooder = connect(&server.url("/")).await;
    let mut other = connect(&server.url("/")).await;
    let line = "x".repeat(1000);
    // 64 KiB of pipe plus 1 MiB of queue hold about 1,100 of these.
    for _ in 0..3000 {
        send_text(&mut flooder, &line).await;
    }
    let dropped = wait_until_async(TIMEOUT, || {
        let out = Command::new(bin())
            .args(["ctl", "--socket", ctl, "stats", "--json"])
            .output()
            .unwrap();
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        stats["shared_input_dropped_total"].as_u64().unwrap_or(0) > 1000
    })
    .await;
    assert!(dropped, "messages beyond the queue are dropped and counted");
    // Nobody was held up: the others still get what is published.
    let out = Command::new(bin())
        .args(["ctl", "--socket", ctl, "publish", "/", "news"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("delivered to 2"));
    assert_eq!(next_text(&mut other).await, "news");
    assert_eq!(next_text(&mut flooder).await, "news");
}

#[test]
fn bad_flag_combinations_exit_2_with_one_line() {
    for args in [
        &["--shared"][..],
        &["--shared", "--pubsub"],
        &["--shared", "--shared-ids", "--binary", "cat"],
        &["--shared", "--shared-ids", "--framed", "cat"],
        &["--shared", "--staticdir", "/tmp"],
        &["--shared-ids", "cat"],
        &["--shared-restart", "cat"],
        &["--shared-keep", "cat"],
    ] {
        let out = run_bin(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn join_and_leave_cycles_leave_no_zombie_and_no_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let server = answering_server(dir.path(), &["--closems", "50"]);
    let url = server.url("/");
    let cycle = |exit: bool| {
        let url = url.clone();
        async move {
            let mut a = connect(&url).await;
            let mut b = connect(&url).await;
            send_text(&mut a, if exit { "exit 0" } else { "ping" }).await;
            if exit {
                // The child goes first and takes both clients along.
                for ws in [&mut a, &mut b] {
                    assert_eq!(texts_until_close(ws).await.1 .0, 1000);
                    finish_close(ws).await;
                }
            } else {
                assert_eq!(next_text(&mut b).await, "got: ping");
                for ws in [&mut a, &mut b] {
                    ws.close(None).await.unwrap();
                    finish_close(ws).await;
                }
            }
        }
    };
    cycle(false).await;
    wait_children(&server, 0).await;
    let baseline = server.fd_count();
    for i in 0..20 {
        cycle(i % 2 == 0).await;
    }
    wait_children(&server, 0).await;
    let settled = wait_until_async(TIMEOUT, || {
        server.children().is_empty() && server.fd_count() <= baseline
    })
    .await;
    assert!(
        settled,
        "children {:?}, fds {baseline} -> {}",
        server.children(),
        server.fd_count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_joining_and_leaving_leave_one_child_and_no_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let server = answering_server(dir.path(), &[]);
    let url = server.url("/");
    // Keeps the child: the others come and go around it.
    let mut anchor = connect(&url).await;
    let pid = wait_children(&server, 1).await[0];
    send_text(&mut anchor, "ping").await;
    assert_eq!(next_text(&mut anchor).await, "got: ping");
    let baseline = server.fd_count();
    for _ in 0..100 {
        let batch = (0..10).map(|_| async {
            let mut ws = connect(&url).await;
            ws.close(None).await.unwrap();
            finish_close(&mut ws).await;
        });
        join_all(batch).await;
    }
    let settled = wait_until_async(TIMEOUT, || server.fd_count() <= baseline).await;
    assert!(settled, "fds {baseline} -> {}", server.fd_count());
    assert_eq!(
        live_children(&server),
        vec![pid],
        "the one child, no zombie"
    );
    send_text(&mut anchor, "still").await;
    assert_eq!(next_text(&mut anchor).await, "got: still");
}

#[tokio::test]
async fn with_shared_ids_the_child_reads_each_sender_and_every_join_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    // Tells everyone each line it reads, as it read it: a leading TAB (an
    // empty id) makes a line go to every client unchanged.
    let program = script_external(
        dir.path(),
        "raw",
        "#!/bin/sh\nwhile IFS= read -r line; do printf '\\t%s\\n' \"$line\"; done\n",
    );
    let (server, ctl) = ids_server(dir.path(), program.to_str().unwrap());
    let mut a = connect(&server.url("/")).await;
    let id_a = new_id(&ctl, &[]);
    assert_eq!(
        next_text(&mut a).await,
        format!("\tjoin\t{id_a}"),
        "the first client's join"
    );
    let mut b = connect(&server.url("/b")).await;
    let id_b = new_id(&ctl, &[id_a]);
    assert_ne!(id_a, id_b);
    let joined = format!("\tjoin\t{id_b}");
    assert_eq!(next_text(&mut a).await, joined);
    assert_eq!(next_text(&mut b).await, joined);
    send_text(&mut a, "hi there\twith a tab").await;
    let tagged = format!("\t{id_a}\thi there\twith a tab");
    assert_eq!(next_text(&mut a).await, tagged);
    assert_eq!(next_text(&mut b).await, tagged);
    send_text(&mut b, "join\t1").await;
    let tagged = format!("\t{id_b}\tjoin\t1");
    assert_eq!(
        next_text(&mut a).await,
        tagged,
        "a client cannot fake a join"
    );
    assert_eq!(next_text(&mut b).await, tagged);
    // Nor another client's line, nor a leave, with a newline.
    send_text(&mut b, &format!("x\n{id_a}\tme\nleave\t{id_a}")).await;
    for line in [
        "x".to_owned(),
        format!("{id_a}\tme"),
        format!("leave\t{id_a}"),
    ] {
        let tagged = format!("\t{id_b}\t{line}");
        assert_eq!(next_text(&mut a).await, tagged);
        assert_eq!(next_text(&mut b).await, tagged);
    }
    b.close(None).await.unwrap();
    finish_close(&mut b).await;
    assert_eq!(next_text(&mut a).await, format!("\tleave\t{id_b}"));
    assert_eq!(live_children(&server).len(), 1);
}

#[tokio::test]
async fn with_shared_ids_addressed_lines_reach_their_client_alone_and_the_rest_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let bot = format!("{}/examples/shared/bot.sh", env!("CARGO_MANIFEST_DIR"));
    let (server, ctl) = ids_server(dir.path(), &bot);
    let mut a = connect(&server.url("/")).await;
    let id_a = new_id(&ctl, &[]);
    assert_eq!(next_text(&mut a).await, format!("welcome, client {id_a}"));
    assert_eq!(next_text(&mut a).await, format!("* {id_a} joined"));
    let mut b = connect(&server.url("/")).await;
    let id_b = new_id(&ctl, &[id_a]);
    assert_eq!(next_text(&mut b).await, format!("welcome, client {id_b}"));
    assert_eq!(next_text(&mut b).await, format!("* {id_b} joined"));
    // Not b's welcome: the broadcast after it comes first.
    assert_eq!(next_text(&mut a).await, format!("* {id_b} joined"));

    send_text(&mut a, "hello").await;
    assert_eq!(next_text(&mut a).await, format!("you ({id_a}) said: hello"));
    send_text(&mut b, "say hi").await;
    let said = format!("{id_b} says: hi");
    assert_eq!(next_text(&mut b).await, said, "b did not get a's answer");
    assert_eq!(next_text(&mut a).await, said);

    send_text(&mut a, &format!("to {id_b} psst")).await;
    assert_eq!(next_text(&mut b).await, format!("{id_a} whispers: psst"));
    // No such client, and no number: dropped, and counted.
    send_text(&mut a, "to 999999 nobody").await;
    send_text(&mut a, "to x1 nobody").await;
    send_text(&mut a, "say after").await;
    let said = format!("{id_a} says: after");
    assert_eq!(next_text(&mut a).await, said);
    assert_eq!(next_text(&mut b).await, said);
    assert_eq!(ctl_stats(&ctl)["shared_unaddressed_dropped_total"], 2);

    b.close(None).await.unwrap();
    finish_close(&mut b).await;
    assert_eq!(next_text(&mut a).await, format!("* {id_b} left"));
    // An id that left is no client any more.
    send_text(&mut a, &format!("to {id_b} too late")).await;
    send_text(&mut a, "say end").await;
    assert_eq!(next_text(&mut a).await, format!("{id_a} says: end"));
    assert_eq!(ctl_stats(&ctl)["shared_unaddressed_dropped_total"], 3);
}

#[tokio::test]
async fn with_shared_ids_an_id_of_another_endpoint_is_no_client() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    let bot = format!("{}/examples/shared/bot.sh", env!("CARGO_MANIFEST_DIR"));
    // Copies (a link would lead out of --dir), executable as the original.
    std::fs::copy(&bot, scripts.join("one")).unwrap();
    std::fs::copy(&bot, scripts.join("two")).unwrap();
    let socket = dir.path().join("ctl.sock");
    let ctl = socket.to_str().unwrap();
    let server = Server::start(&[
        "--control",
        ctl,
        "--shared",
        "--shared-ids",
        "--metrics",
        "127.0.0.1:0",
        "--dir",
        scripts.to_str().unwrap(),
    ]);
    server.wait_log("control socket at");
    let mut one = connect(&server.url("/one")).await;
    let id_one = new_id(ctl, &[]);
    assert_eq!(
        next_text(&mut one).await,
        format!("welcome, client {id_one}")
    );
    assert_eq!(next_text(&mut one).await, format!("* {id_one} joined"));
    let mut two = connect(&server.url("/two")).await;
    let id_two = new_id(ctl, &[id_one]);
    assert_eq!(
        next_text(&mut two).await,
        format!("welcome, client {id_two}")
    );
    assert_eq!(next_text(&mut two).await, format!("* {id_two} joined"));
    // Another script's child: one's bot does not know two.
    send_text(&mut one, &format!("to {id_two} across")).await;
    send_text(&mut one, "say mine").await;
    assert_eq!(next_text(&mut one).await, format!("{id_one} says: mine"));
    send_text(&mut two, "say only").await;
    assert_eq!(next_text(&mut two).await, format!("{id_two} says: only"));
    assert_eq!(ctl_stats(ctl)["shared_unaddressed_dropped_total"], 1);
    let line = server.wait_log_async("metrics on http://").await;
    let mut http = std::net::TcpStream::connect(http_addr(&line)).unwrap();
    http.set_read_timeout(Some(TIMEOUT)).unwrap();
    std::io::Write::write_all(
        &mut http,
        b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut metrics = String::new();
    std::io::Read::read_to_string(&mut http, &mut metrics).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "wspipe_shared_unaddressed_dropped_total 1"),
        "{metrics}"
    );
}
