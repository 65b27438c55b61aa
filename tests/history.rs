//! End to end: `--history`. A client that reconnects with `?since=SEQ`
//! (or `Last-Event-ID`) gets what it missed, then the live stream, with no
//! gap and no duplicate; one whose position history cannot cover is told
//! `reset`, never left to guess.

mod common;

use common::history::{bodies, notice, publish_all, spawn_publish_all, Reader};
use common::*;

#[tokio::test]
async fn a_client_that_comes_back_with_since_gets_what_it_missed_then_the_live_stream() {
    let server = Server::start(&["--pubsub", "--history", "100", "--history-ids"]);
    let room = server.url("/room");
    let mut first = connect(&room).await;
    let epoch = notice(&next_text(&mut first).await, "epoch");
    publish_all(&room, &bodies(1..=3)).await;
    for seq in 1..=3 {
        assert_eq!(next_text(&mut first).await, format!("{seq}\tm{seq}"));
    }
    first.close(None).await.unwrap();

    publish_all(&room, &bodies(4..=6)).await;
    let mut back = connect(&server.url(&format!("/room?since=3&epoch={epoch}"))).await;
    assert_eq!(notice(&next_text(&mut back).await, "epoch"), epoch);
    for seq in 4..=6 {
        assert_eq!(next_text(&mut back).await, format!("{seq}\tm{seq}"));
    }
    publish_all(&room, &bodies(7..=7)).await;
    assert_eq!(next_text(&mut back).await, "7\tm7", "then the live stream");

    // Last-Event-ID, as EventSource-style clients send it; since=0 is
    // everything held.
    let mut by_header = connect_with(&room, &[("Last-Event-ID", "5")])
        .await
        .unwrap();
    notice(&next_text(&mut by_header).await, "epoch");
    assert_eq!(next_text(&mut by_header).await, "6\tm6");
    assert_eq!(next_text(&mut by_header).await, "7\tm7");
    let mut all = connect(&server.url("/room?since=0")).await;
    notice(&next_text(&mut all).await, "epoch");
    for seq in 1..=7 {
        assert_eq!(next_text(&mut all).await, format!("{seq}\tm{seq}"));
    }
}

#[tokio::test]
async fn a_gap_history_cannot_cover_or_another_epoch_is_told_reset() {
    let server = Server::start(&["--pubsub", "--history", "3", "--history-ids"]);
    let room = server.url("/room");
    publish_all(&room, &bodies(1..=6)).await;
    // Held: 4, 5, 6. At 2, message 3 is gone for good.
    let mut late = connect(&server.url("/room?since=2")).await;
    let epoch = notice(&next_text(&mut late).await, "reset");
    for seq in 4..=6 {
        assert_eq!(next_text(&mut late).await, format!("{seq}\tm{seq}"));
    }
    // At 3 nothing is gone.
    let mut fine = connect(&server.url(&format!("/room?since=3&epoch={epoch}"))).await;
    notice(&next_text(&mut fine).await, "epoch");
    assert_eq!(next_text(&mut fine).await, "4\tm4");
    // An epoch of another run (a restarted server, say): everything held,
    // after a reset.
    let mut stranger = connect(&server.url("/room?since=5&epoch=0bsolete")).await;
    assert_eq!(notice(&next_text(&mut stranger).await, "reset"), epoch);
    assert_eq!(next_text(&mut stranger).await, "4\tm4");
}

#[tokio::test]
async fn reconnecting_over_and_over_while_messages_flow_misses_none_and_repeats_none() {
    let server = Server::start(&["--pubsub", "--history", "1000", "--history-ids"]);
    let room = server.url("/room");
    const TOTAL: u32 = 1500;
    let publisher = spawn_publish_all(room.clone(), 1..=TOTAL);
    // A few messages on each connection, then away again.
    let mut reader = Reader::default();
    let reconnects = reader
        .visits(TOTAL, 7, |_, query| server.url(&format!("/room{query}")))
        .await;
    publisher.await.unwrap();
    // Every message once, in order: the first that is not says how.
    common::history::assert_each_once_in_order(&reader.seen, TOTAL);
    assert!(reconnects > 100, "{reconnects} reconnects");
}

#[tokio::test]
async fn a_shared_child_s_lines_are_kept_for_clients_that_come_back() {
    let server = Server::start(&["--shared", "--history", "10", "--history-ids", "cat"]);
    let url = server.url("/");
    let mut talker = connect(&url).await;
    let epoch = notice(&next_text(&mut talker).await, "epoch");
    let mut listener = connect(&url).await;
    notice(&next_text(&mut listener).await, "epoch");
    send_text(&mut talker, "one").await;
    assert_eq!(next_text(&mut listener).await, "1\tone");
    listener.close(None).await.unwrap();
    for line in ["two", "three"] {
        send_text(&mut talker, line).await;
    }
    assert_eq!(next_text(&mut talker).await, "1\tone");
    assert_eq!(next_text(&mut talker).await, "2\ttwo");
    assert_eq!(next_text(&mut talker).await, "3\tthree");
    let mut back = connect(&server.url(&format!("/?since=1&epoch={epoch}"))).await;
    notice(&next_text(&mut back).await, "epoch");
    assert_eq!(next_text(&mut back).await, "2\ttwo");
    assert_eq!(next_text(&mut back).await, "3\tthree");
}

#[tokio::test]
async fn without_ids_a_resume_replays_plain_messages_and_a_bad_position_is_400() {
    let server = Server::start(&["--pubsub", "--history", "5"]);
    let room = server.url("/room");
    let mut publisher = connect(&room).await;
    for text in ["a", "b"] {
        send_text(&mut publisher, text).await;
        assert_eq!(next_text(&mut publisher).await, text);
    }
    let mut back = connect(&server.url("/room?since=1")).await;
    assert_eq!(next_text(&mut back).await, "b");
    for bad in ["/room?since=x", "/room?since=1&epoch=a-b", "/room?epoch=ab"] {
        assert_eq!(handshake_status(&server.url(bad), &[]).await, 400, "{bad}");
    }
    assert_eq!(
        handshake_status(&room, &[("Last-Event-ID", "soon")]).await,
        400
    );
    // Without --history, ?since= is the application's business.
    let plain = Server::start(&["--pubsub"]);
    assert_eq!(
        handshake_status(&plain.url("/room?since=x"), &[]).await,
        101
    );
}

#[tokio::test]
async fn ctl_stats_counts_what_history_holds() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let ctl = socket.to_str().unwrap();
    let server = Server::start(&["--pubsub", "--history", "2", "--control", ctl]);
    server.wait_log_async("control socket at").await;
    let stats = common::shared::ctl_stats(ctl);
    assert_eq!(stats["history_messages"], 0, "{stats}");
    let room = server.url("/room");
    let mut publisher = connect(&room).await;
    for text in ["a", "b", "c"] {
        send_text(&mut publisher, text).await;
        assert_eq!(next_text(&mut publisher).await, text);
    }
    let stats = common::shared::ctl_stats(ctl);
    assert_eq!(stats["history_channels"], 1, "{stats}");
    assert_eq!(
        stats["history_messages"], 2,
        "--history 2 keeps two: {stats}"
    );
    assert_eq!(stats["history_bytes"], 2, "{stats}");
    // Without --history, no such fields.
    let plain_socket = dir.path().join("plain.sock");
    let plain_ctl = plain_socket.to_str().unwrap();
    let plain = Server::start(&["--pubsub", "--control", plain_ctl]);
    plain.wait_log_async("control socket at").await;
    assert!(common::shared::ctl_stats(plain_ctl)
        .get("history_messages")
        .is_none());
}

#[test]
fn bad_history_flags_exit_2_with_one_line() {
    for (args, needle) in [
        (vec!["--pubsub", "--history", "0"], "1 to 1000"),
        (vec!["--pubsub", "--history", "1001"], "1 to 1000"),
        (
            vec!["--pubsub", "--history-ids"],
            "--history-ids needs --history",
        ),
        (
            vec!["--pubsub", "--history", "5", "--history-ttl", "0"],
            "at least 1 second",
        ),
        // With --redis the history is kept in Redis: the same checks.
        (
            vec![
                "--pubsub",
                "--history",
                "1001",
                "--redis",
                "redis://127.0.0.1:1/",
            ],
            "1 to 1000",
        ),
    ] {
        assert_usage_error(&args, needle);
    }
}
