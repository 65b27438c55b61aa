//! End to end: channels across several wspipe instances through a real
//! Redis (`--redis`). Each test starts its own `redis-server` (Debian's)
//! on a free loopback port, with its configuration on the command line and
//! its files in a temporary directory, and kills it at the end.
//!
//! Without /usr/bin/redis-server the tests say so on stderr and return;
//! with `WSPIPE_REDIS_TESTS=1` (as .ci/run sets) a missing redis-server is
//! a failure instead.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::redis::*;
use common::shared::{ctl, ctl_stats};
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// The next `n` text messages of `ws`.
async fn texts(ws: &mut Ws, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        got.push(next_text(ws).await);
    }
    got
}

/// Nothing more arrives on `ws` for a little while (no duplicate, no
/// stray echo).
async fn quiet(ws: &mut Ws, what: &str) {
    use futures_util::StreamExt;
    let more = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    if let Ok(Some(Ok(m))) = more {
        if m.is_text() || m.is_binary() {
            panic!("{what}: unexpected extra message {m:?}");
        }
    }
}

/// For `test`: its own Redis and `--pubsub` instances `a` and `b` on it,
/// connected; `None` (a skip line) without redis-server.
async fn pubsub_pair(test: &str) -> Option<(Redis, [Instance; 2])> {
    redis_and_instances(test, ["a", "b"], &["--pubsub"]).await
}

/// For `test`: a Redis that is not started yet and instance `a`
/// (`--pubsub`) on it, once `a` has said it cannot connect; `None` (a skip
/// line) without redis-server.
async fn a_before_redis(test: &str) -> Option<(Redis, Instance)> {
    let redis = Redis::not_started_for(test)?;
    let a = Instance::start(&redis.url(), "a", &["--pubsub"]);
    a.server
        .wait_log_async("redis: cannot connect (publish)")
        .await;
    Some((redis, a))
}

/// `text`, sent by the `--pubsub` client `from`, comes back to it (its
/// own instance serves it) and reaches each of `others`.
async fn reaches(from: &mut Ws, others: &mut [&mut Ws], text: &str) {
    send_text(from, text).await;
    assert_eq!(next_text(from).await, text, "back to the sender");
    for ws in others {
        assert_eq!(next_text(ws).await, text);
    }
}

fn seq(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i}")).collect()
}

/// The TCP address in a "publish on http://ADDR/CHANNEL" log line.
fn http_addr(line: &str) -> SocketAddr {
    let rest = line.split("http://").nth(1).expect("address");
    rest.split('/').next().unwrap().parse().unwrap()
}

fn http_publish(addr: SocketAddr, channel: &str, body: &str) {
    let request = format!(
        "POST {channel} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, _, answer) = raw_response(addr, &request);
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn every_publish_path_reaches_every_instance_once_and_in_order() {
    const TEST: &str = "every_publish_path_reaches_every_instance_once_and_in_order";
    let Some(redis) = Redis::for_test(TEST, &[]) else {
        return;
    };
    let url = redis.url();
    let a = Instance::start(&url, "a", &["--pubsub"]);
    let b = Instance::start(&url, "b", &["--pubsub", "--publish", "127.0.0.1:0"]);
    let s = Instance::start(&url, "s", &["--shared", "cat"]);
    all_connected(&[&a, &b, &s]).await;
    let publish_addr = http_addr(&b.server.wait_log("publish on http://"));
    // Everyone on channel "/": the --shared endpoint's channel too.
    let mut on_a = a.connect("/").await;
    let mut on_b = b.connect("/").await;
    let mut on_s = s.connect("/").await;
    let mut expected = Vec::new();

    // A --pubsub client's messages, published on a.
    let phase = seq("client", 20);
    for m in &phase {
        send_text(&mut on_a, m).await;
    }
    expected.extend(phase.clone());
    for ws in [&mut on_a, &mut on_b, &mut on_s] {
        assert_eq!(texts(ws, phase.len()).await, phase, "--pubsub client");
    }
    // ctl publish on a.
    let phase = seq("ctl", 5);
    for m in &phase {
        a.publish("/", m);
    }
    expected.extend(phase.clone());
    for ws in [&mut on_a, &mut on_b, &mut on_s] {
        assert_eq!(texts(ws, phase.len()).await, phase, "ctl publish");
    }
    // HTTP publish on b.
    let phase = seq("http", 5);
    for m in &phase {
        http_publish(publish_addr, "/", m);
    }
    expected.extend(phase.clone());
    for ws in [&mut on_a, &mut on_b, &mut on_s] {
        assert_eq!(texts(ws, phase.len()).await, phase, "HTTP publish");
    }
    // A --shared child's output on s (cat echoes what its client sends).
    let phase = seq("shared", 5);
    for m in &phase {
        send_text(&mut on_s, m).await;
    }
    expected.extend(phase.clone());
    for ws in [&mut on_a, &mut on_b, &mut on_s] {
        assert_eq!(texts(ws, phase.len()).await, phase, "--shared output");
    }
    for (ws, name) in [(&mut on_a, "a"), (&mut on_b, "b"), (&mut on_s, "s")] {
        quiet(ws, name).await;
    }
    // Exactly once: each instance took from Redis what the others
    // published, and nothing of its own.
    let (from_a, from_b, from_s) = (25, 5, 5);
    assert_eq!(a.stat("redis_received_total"), from_b + from_s);
    assert_eq!(b.stat("redis_received_total"), from_a + from_s);
    assert_eq!(s.stat("redis_received_total"), from_a + from_b);
    assert_eq!(a.stat("redis_published_total"), from_a);
    for i in [&a, &b, &s] {
        assert_eq!(i.stat("redis_dropped_total"), 0);
    }
    assert_eq!(expected.len(), 35);
}

#[tokio::test]
async fn binary_and_text_messages_keep_their_bytes_and_kind() {
    const TEST: &str = "binary_and_text_messages_keep_their_bytes_and_kind";
    let Some((_redis, [a, b])) =
        redis_and_instances(TEST, ["a", "b"], &["--pubsub", "--binary"]).await
    else {
        return;
    };
    let mut sender = a.connect("/bin").await;
    let mut receiver = b.connect("/bin").await;
    let all_bytes: Vec<u8> = (0..=255u8).chain([0, 10, 13, 0]).collect();
    sender
        .send(Message::binary(all_bytes.clone()))
        .await
        .unwrap();
    sender.send(Message::text("tëxt\n")).await.unwrap();
    sender.send(Message::binary(Vec::new())).await.unwrap();
    match next_event(&mut receiver).await {
        Event::Binary(b) => assert_eq!(b, all_bytes),
        other => panic!("expected binary, got {other:?}"),
    }
    match next_event(&mut receiver).await {
        Event::Text(t) => assert_eq!(t, "tëxt\n"),
        other => panic!("expected text, got {other:?}"),
    }
    match next_event(&mut receiver).await {
        Event::Binary(b) => assert!(b.is_empty()),
        other => panic!("expected an empty binary message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_redis_killed_mid_stream_and_restarted_loses_no_local_delivery_and_no_session() {
    const TEST: &str = "a_redis_killed_mid_stream_and_restarted";
    let Some((mut redis, [a, b])) = pubsub_pair(TEST).await else {
        return;
    };
    let mut on_a = a.connect("/feed").await;
    let mut on_b = b.connect("/feed").await;

    let before = seq("before", 10);
    for m in &before {
        send_text(&mut on_a, m).await;
    }
    assert_eq!(texts(&mut on_a, 10).await, before);
    assert_eq!(texts(&mut on_b, 10).await, before);

    redis.kill();
    let down = wait_until_async(TIMEOUT, || !a.connected() && !b.connected()).await;
    assert!(down, "the loss was noticed");
    a.server.wait_log_async("redis connection lost").await;
    // Local delivery goes on, at once, on both sides.
    let during = seq("during", 50);
    for m in &during {
        send_text(&mut on_a, m).await;
    }
    assert_eq!(texts(&mut on_a, 50).await, during, "local delivery");
    // (On a channel of b's own: what b buffers now may reach a later.)
    let mut side_b = b.connect("/side").await;
    send_text(&mut side_b, "b-alone").await;
    assert_eq!(
        next_text(&mut side_b).await,
        "b-alone",
        "local delivery on b"
    );
    // More than the outbox holds (10,000): the oldest go, counted.
    let lines: String = (1..=10_000).map(|i| format!("bulk-{i}\n")).collect();
    a.publish_lines("/bulk", lines).wait();
    let dropped = a.stat("redis_dropped_total");
    assert!(dropped >= 50, "the outbox overflowed: {}", a.stats());

    redis.spawn();
    all_connected(&[&a, &b]).await;
    a.server.wait_log_async("redis connection recovered").await;
    let after = seq("after", 10);
    for m in &after {
        send_text(&mut on_a, m).await;
    }
    assert_eq!(texts(&mut on_a, 10).await, after);
    // b gets what survived of the outage (buffered messages that Redis
    // passed on once b had subscribed again), in order and once, then
    // everything after.
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("after-10") {
        got.push(next_text(&mut on_b).await);
    }
    let (outage, rest) = got.split_at(got.len() - 10);
    assert_eq!(rest, after.as_slice(), "cross-instance delivery resumed");
    let mut at = during.iter();
    for m in outage {
        assert!(at.any(|d| d == m), "{m} out of order or twice: {outage:?}");
    }
    assert!(
        a.stat("redis_dropped_total") > 0,
        "the send that failed is counted: {}",
        a.stats()
    );
    // No session ended because of it.
    let a_stats = a.stats();
    assert_eq!(a_stats["connections"], 1, "{a_stats}");
    assert_eq!(a_stats["connections_total"], 1, "{a_stats}");
    let b_stats = b.stats();
    assert_eq!(b_stats["connections"], 2, "{b_stats}");
    assert_eq!(b_stats["connections_total"], 2, "{b_stats}");
    reaches(&mut on_b, &mut [&mut on_a], "still here").await;
}

#[tokio::test]
async fn an_instance_started_before_redis_serves_locally_then_joins() {
    const TEST: &str = "an_instance_started_before_redis_serves_locally_then_joins";
    let Some((mut redis, a)) = a_before_redis(TEST).await else {
        return;
    };
    let b = Instance::start(&redis.url(), "b", &["--pubsub"]);
    let mut on_a = a.connect("/room").await;
    let mut on_b = b.connect("/room").await;
    send_text(&mut on_a, "alone").await;
    assert_eq!(next_text(&mut on_a).await, "alone", "served locally");
    assert!(!a.connected());

    redis.spawn();
    all_connected(&[&a, &b]).await;
    a.server.wait_log_async("redis connected (publish)").await;
    reaches(&mut on_a, &mut [], "joined").await;
    // "alone" was published before b could hear it: at most once.
    let first = next_text(&mut on_b).await;
    let first = if first == "alone" {
        next_text(&mut on_b).await
    } else {
        first
    };
    assert_eq!(first, "joined");
}

#[test]
fn a_malformed_redis_url_or_instance_name_exits_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["--redis", "localhost:6379"], "--redis localhost:6379:"),
        (&["--redis", "http://127.0.0.1"], "unknown scheme"),
        (&["--redis", "redis://127.0.0.1:notaport"], "bad port"),
        (&["--redis", "redis://127.0.0.1/x"], "bad database"),
        (
            &["--redis", "redis://:secret@/0"],
            "--redis redis://...: no host",
        ),
        (
            &["--redis", "redis://127.0.0.1", "--instance", "bad name"],
            "--instance \"bad name\"",
        ),
        (&["--instance", "a"], "--instance needs --redis"),
    ];
    for (args, want) in cases {
        let mut all = vec!["--port", "0", "--pubsub"];
        all.extend_from_slice(args);
        let out = run_bin(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("secret"), "no password in errors: {err}");
    }
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_and_local_serving_goes_on() {
    const TEST: &str = "a_wrong_password_is_a_clear_error_and_local_serving_goes_on";
    let Some(redis) = Redis::for_test(TEST, &["--requirepass", "right"]) else {
        return;
    };
    let wrong = format!("redis://:wrong@127.0.0.1:{}", redis.port);
    let a = Instance::start(&wrong, "a", &["--pubsub"]);
    let b = Instance::start(&redis.url(), "b", &["--pubsub"]);
    let line = a.server.wait_log_async("redis: cannot connect").await;
    assert!(
        line.contains("Redis refused the user or password"),
        "{line}"
    );
    assert!(!line.contains("wrong@"), "no password in the log: {line}");
    let line = b.server.wait_log_async("redis: cannot connect").await;
    assert!(
        line.contains("Redis requires a password") && line.contains("NOAUTH"),
        "{line}"
    );
    for i in [&a, &b] {
        let mut ws = i.connect("/room").await;
        reaches(&mut ws, &mut [], "local").await;
        assert!(!i.connected());
    }
}

#[tokio::test]
async fn a_server_that_answers_garbage_is_a_clear_error_and_local_serving_goes_on() {
    // No redis-server needed: a listener that answers like a web server.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n<html>");
        }
    });
    let a = Instance::start(&format!("redis://{addr}"), "a", &["--pubsub"]);
    let line = a.server.wait_log_async("redis: cannot connect").await;
    assert!(line.contains(&addr.to_string()), "{line}");
    assert!(line.contains("is this a Redis port?"), "{line}");
    assert!(line.contains("retrying with backoff"), "one line: {line}");
    let mut ws = a.connect("/room").await;
    reaches(&mut ws, &mut [], "local").await;
    assert!(!a.connected());
}

#[tokio::test]
async fn ctl_stats_and_metrics_show_the_redis_counters() {
    const TEST: &str = "ctl_stats_and_metrics_show_the_redis_counters";
    let Some(redis) = Redis::for_test(TEST, &[]) else {
        return;
    };
    let [a] = instances_up(
        &redis.url(),
        ["a"],
        &["--pubsub", "--metrics", "127.0.0.1:0"],
    )
    .await;
    a.publish("/x", "one");
    let ok = wait_until_async(TIMEOUT, || a.stat("redis_published_total") == 1).await;
    assert!(ok, "{}", a.stats());
    let line = a.server.wait_log("metrics on http://");
    let addr = http_addr(&line);
    let (status, _, body) = raw_response(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    for want in [
        "wspipe_redis_up 1",
        "wspipe_redis_published_total 1",
        "wspipe_redis_received_total 0",
        "wspipe_redis_dropped_total 0",
    ] {
        assert!(body.contains(want), "{want} in {body}");
    }
    let text = ctl(&a.ctl, &["stats"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("redis_dropped_total: 0"), "{text}");
    assert!(text.contains("redis_instance: a\n"), "{text}");
    assert_eq!(a.stats()["redis_instance"], "a");
    // Without --instance: the host name and the port given.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("d.sock");
    let url = redis.url();
    let named = Server::start(&[
        "--pubsub",
        "--redis",
        &url,
        "--control",
        sock.to_str().unwrap(),
    ]);
    named.wait_log("control socket at");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let stats = ctl_stats(sock.to_str().unwrap());
    assert_eq!(
        stats["redis_instance"],
        format!("{}:0", host.trim()),
        "{stats}"
    );
    // Without --redis, no redis fields at all.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("c.sock");
    let plain = Server::start(&["--pubsub", "--control", sock.to_str().unwrap()]);
    plain.wait_log("control socket at");
    let stats = ctl_stats(sock.to_str().unwrap());
    assert!(stats.get("redis_dropped_total").is_none(), "{stats}");
}

#[tokio::test]
async fn an_outage_longer_than_the_outbox_drops_the_oldest_and_counts_them() {
    const TEST: &str = "an_outage_longer_than_the_outbox_drops_the_oldest_and_counts_them";
    // Redis is not there yet: every publish waits in the outbox (at most
    // 10,000 messages), the oldest going first.
    let Some((mut redis, a)) = a_before_redis(TEST).await else {
        return;
    };
    let mut on_a = a.connect("/burst").await;
    let lines: String = (1..=10_050).map(|i| format!("m{i}\n")).collect();
    let publishing = a.publish_lines("/burst", lines);
    // The local member is served meanwhile (its own queue of 1024 keeps
    // the newest: read as they come).
    let mut last = String::new();
    while last != "m10050" {
        last = next_text(&mut on_a).await;
    }
    publishing.wait();
    assert_eq!(a.stat("redis_dropped_total"), 50, "{}", a.stats());
    redis.spawn();
    let sent = wait_until_async(TIMEOUT, || a.stat("redis_published_total") == 10_000).await;
    assert!(sent, "the outbox went out once Redis came: {}", a.stats());
    assert_eq!(a.stat("redis_dropped_total"), 50);
}

#[tokio::test]
async fn an_idle_instance_notices_a_restart_and_loses_nothing_after_it() {
    const TEST: &str = "an_idle_instance_notices_a_restart_and_loses_nothing_after_it";
    let Some((mut redis, [a, b])) = pubsub_pair(TEST).await else {
        return;
    };
    let mut on_b = b.connect("/news").await;
    // Redis goes and comes back while a publishes nothing.
    redis.kill();
    a.server
        .wait_log_async("redis connection lost (publish)")
        .await;
    redis.spawn();
    all_connected(&[&a, &b]).await;
    // a's first publish after it goes out on the new connection, not on
    // the dead one.
    a.publish("/news", "first after the restart");
    assert_eq!(next_text(&mut on_b).await, "first after the restart");
    assert_eq!(a.stat("redis_dropped_total"), 0, "{}", a.stats());
}

/// Figures, not a check: `cargo test --release --test redis figures --
/// --ignored --nocapture`. One round trip at a time, publish-to-delivery
/// on the same instance and on another one; then a pipelined burst.
#[tokio::test]
#[ignore]
async fn figures_local_vs_cross_instance() {
    const TEST: &str = "figures_local_vs_cross_instance";
    let Some((_redis, [a, b])) = pubsub_pair(TEST).await else {
        return;
    };
    let (mut local, mut remote) = one_at_a_time("plain", 2000, &a, &b, "/f").await;
    for (name, ws) in [
        ("this instance", &mut local),
        ("the other instance", &mut remote),
    ] {
        let (burst, took) = pipelined_burst(&a, "/f", ws).await;
        eprintln!(
            "pipelined burst of {burst} (ctl publish -): a client on {name} had the last after \
             {took:?}: {:.0} messages/s",
            burst as f64 / took.as_secs_f64()
        );
    }
    eprintln!("{}", b.stats());
}

/// A CA and a certificate for localhost and 127.0.0.1, as PEM files.
fn test_pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wspipe redis test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

#[tokio::test]
async fn rediss_carries_channels_over_tls_and_refuses_an_unknown_ca() {
    if !redis_installed("rediss_carries_channels_over_tls_and_refuses_an_unknown_ca") {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    test_pki(pki.path());
    let redis = Redis::start_tls(
        &pki.path().join("server.pem"),
        &pki.path().join("server.key"),
    );
    let url = format!("rediss://localhost:{}", redis.port);
    // rustls-native-certs reads SSL_CERT_FILE: the test CA is the only root.
    let trusting = || {
        let mut cmd = Command::new(bin());
        cmd.env("SSL_CERT_FILE", pki.path().join("ca.pem"));
        cmd
    };
    let a = Instance::start_cmd(trusting(), &url, "a", &["--pubsub"]);
    let b = Instance::start_cmd(trusting(), &url, "b", &["--pubsub"]);
    all_connected(&[&a, &b]).await;
    let mut on_a = a.connect("/tls").await;
    let mut on_b = b.connect("/tls").await;
    reaches(&mut on_a, &mut [&mut on_b], "over tls").await;
    // Without the CA among its roots, the certificate is refused.
    let mut cmd = Command::new(bin());
    cmd.env("SSL_CERT_FILE", pki.path().join("server.key"));
    let c = Instance::start_cmd(cmd, &url, "c", &["--pubsub"]);
    let line = c.server.wait_log_async("redis: cannot connect").await;
    assert!(line.contains("invalid peer certificate"), "{line}");
    assert!(!c.connected(), "{line}");
}

#[tokio::test]
async fn a_frozen_redis_holds_up_nothing_local_and_is_noticed_by_its_silence() {
    const TEST: &str = "a_frozen_redis_holds_up_nothing_local_and_is_noticed_by_its_silence";
    let Some((redis, [a, b])) = pubsub_pair(TEST).await else {
        return;
    };
    let mut on_a = a.connect("/slow").await;
    let mut on_b = b.connect("/slow").await;
    // Stopped, not killed: its sockets stay open and it answers nothing.
    redis.signal(libc::SIGSTOP);
    for m in seq("frozen", 20) {
        let start = std::time::Instant::now();
        send_text(&mut on_a, &m).await;
        assert_eq!(next_text(&mut on_a).await, m);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "local delivery waited {:?} for Redis",
            start.elapsed()
        );
    }
    // The unanswered publish, then the unanswered PING, count as a loss
    // (3 s each, PINGs every 5 s).
    let line = a
        .server
        .log
        .wait_for_async("redis connection lost (publish)", Duration::from_secs(15))
        .await
        .expect("the silence is noticed");
    assert!(line.contains("timed out"), "{line}");
    b.server
        .log
        .wait_for_async("redis connection lost (subscribe)", Duration::from_secs(15))
        .await
        .expect("a quiet subscription is PINGed");
    redis.signal(libc::SIGCONT);
    all_connected(&[&a, &b]).await;
    // Cross-instance delivery resumes (what Redis had taken before it
    // froze may come first, once at most).
    reaches(&mut on_a, &mut [], "thawed").await;
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("thawed") {
        got.push(next_text(&mut on_b).await);
    }
    let mut seen = std::collections::HashSet::new();
    assert!(got.iter().all(|m| seen.insert(m.clone())), "once: {got:?}");
    assert!(a.stat("redis_dropped_total") > 0, "{}", a.stats());
}

/// Publishes 20,000 lines through one `ctl publish CHANNEL -` on `ctl`;
/// returns the count and how long until `ws` had the last one (its own
/// queue of 1024 may lose older ones on the way).
async fn pipelined_burst(on: &Instance, channel: &str, ws: &mut Ws) -> (usize, Duration) {
    let burst = 20_000;
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let lines: String = (1..=burst).map(|i| format!("{tag}-{i}\n")).collect();
    let start = std::time::Instant::now();
    let publishing = on.publish_lines(channel, lines);
    let last = format!("{tag}-{burst}");
    while next_text(ws).await != last {}
    let took = start.elapsed();
    publishing.wait();
    (burst, took)
}

#[tokio::test]
async fn an_instance_shuts_down_promptly_whatever_redis_does() {
    const TEST: &str = "an_instance_shuts_down_promptly_whatever_redis_does";
    // Redis never came: the tasks are waiting out a backoff.
    let Some((_absent, mut a)) = a_before_redis(TEST).await else {
        return;
    };
    // Redis up: the tasks are connected.
    let redis = Redis::start(&[]);
    let [mut b] = instances_up(&redis.url(), ["b"], &["--pubsub"]).await;
    b.publish("/x", "last words");
    for i in [&mut a, &mut b] {
        let start = std::time::Instant::now();
        assert!(i.server.terminate().success());
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }
}

#[tokio::test]
async fn concurrent_publishers_on_one_instance_are_seen_in_one_order_everywhere() {
    const TEST: &str = "concurrent_publishers_on_one_instance_are_seen_in_one_order_everywhere";
    let Some((_redis, [a, b])) = pubsub_pair(TEST).await else {
        return;
    };
    let mut here = a.connect("/race").await;
    let mut there = b.connect("/race").await;
    // Two clients of a publish at once (their sessions run on different
    // threads): a's members and b's must see one interleaving.
    let n = 300;
    let mut senders = Vec::new();
    for who in ["x", "y"] {
        let mut ws = a.connect("/race").await;
        senders.push(tokio::spawn(async move {
            for i in 0..n {
                ws.send(Message::text(format!("{who}{i}"))).await.unwrap();
            }
            ws
        }));
    }
    let seen_here = texts(&mut here, 2 * n).await;
    let seen_there = texts(&mut there, 2 * n).await;
    for s in senders {
        drop(s.await.unwrap());
    }
    assert_eq!(seen_here, seen_there, "one order on both instances");
    for who in ["x", "y"] {
        let mine: Vec<&String> = seen_here.iter().filter(|m| m.starts_with(who)).collect();
        let want: Vec<String> = (0..n).map(|i| format!("{who}{i}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>(), "{who} in its order");
    }
}

#[tokio::test]
async fn a_message_bigger_than_an_instance_takes_is_dropped_there_and_counted() {
    const TEST: &str = "a_message_bigger_than_an_instance_takes_is_dropped_there_and_counted";
    let Some(redis) = Redis::for_test(TEST, &[]) else {
        return;
    };
    let big = ["--pubsub", "--maxframesize", "3000000"];
    let a = Instance::start(&redis.url(), "a", &big);
    let b = Instance::start(&redis.url(), "b", &["--pubsub"]);
    all_connected(&[&a, &b]).await;
    let mut on_a = a.connect("/big").await;
    let mut on_b = b.connect("/big").await;
    let huge = "x".repeat(2_000_000);
    send_text(&mut on_a, &huge).await;
    assert_eq!(next_text(&mut on_a).await.len(), huge.len(), "a takes it");
    reaches(&mut on_a, &mut [], "small").await;
    assert_eq!(
        next_text(&mut on_b).await,
        "small",
        "b drops only the big one"
    );
    assert_eq!(b.stat("redis_dropped_total"), 1, "{}", b.stats());
    b.server
        .wait_log_async("dropped a message of 2000000 bytes from instance \"a\"")
        .await;
}

#[tokio::test]
async fn a_redis_on_a_unix_socket_carries_channels() {
    if !redis_installed("a_redis_on_a_unix_socket_carries_channels") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("redis.sock");
    let sock_arg = sock.to_str().unwrap();
    // (Its TCP port stays, for the readiness check.)
    let _redis = Redis::start(&["--unixsocket", sock_arg, "--unixsocketperm", "700"]);
    assert!(wait_until(TIMEOUT, || sock.exists()), "no {sock:?}");
    let url = format!("unix://{sock_arg}");
    let [a, b] = instances_up(&url, ["a", "b"], &["--pubsub"]).await;
    let mut on_a = a.connect("/u").await;
    let mut on_b = b.connect("/u").await;
    reaches(&mut on_a, &mut [&mut on_b], "over a unix socket").await;
}

#[tokio::test]
async fn a_new_reason_for_failing_to_connect_is_logged_as_an_error_again() {
    const TEST: &str = "a_new_reason_for_failing_to_connect_is_logged_as_an_error_again";
    let Some((mut redis, a)) = a_before_redis(TEST).await else {
        return;
    };
    // Redis comes, but wants a password: a new reason, a new error line.
    redis.extra = vec!["--requirepass".into(), "sesame".into()];
    redis.spawn();
    // Both links log it; wait for the publishing one, which is counted.
    let needle = format!(
        "cannot connect (publish) to {}: Redis requires a password",
        redis.url()
    );
    let line = a.server.wait_log_async(&needle).await;
    assert!(line.contains("ERROR"), "{line}");
    assert_eq!(
        a.server.log.count("redis: cannot connect (publish)"),
        2,
        "once per reason: {:?}",
        a.server.log.lines()
    );
}
