//! End to end: the restricted Redis ACL user that docs/scale-out.md
//! ("Redis settings") lists is enough. Real wspipe instances on a real
//! redis-server whose default user is off and whose only user may run
//! just those commands, on just those keys and channels, share channels,
//! control and history; and a user missing one right gets a clear error
//! while the instance goes on serving its own clients.

mod common;

use common::history::notice;
use common::redis::{all_connected, redis_installed, Instance, Redis};
use common::shared::ctl;
use common::*;

/// The rights docs/scale-out.md gives, as a redis-server `user` rule.
const RIGHTS: &[&str] = &[
    "resetchannels",
    "&wspipe:*",
    "&wspipe-ctl:*",
    "&wspipe-ctl-reply:*",
    "~wspipe-instance:*",
    "~wspipe-seq:*",
    "~wspipe-epoch:*",
    "~wspipe-history:*",
    "-@all",
    "+ping",
    "+hello",
    "+publish",
    "+psubscribe",
    "+subscribe",
    "+set",
    "+del",
    "+scan",
    "+mget",
    "+evalsha",
    "+script|load",
    "+get",
    "+incr",
    "+xadd",
    "+expire",
    "+xrange",
];

/// A Redis whose default user is off and whose user `wspipe` (password
/// `pw`) has `rights` (less those in `without`).
fn restricted_redis(without: &[&str]) -> Redis {
    let mut args = vec!["--user", "default", "off", "--user", "wspipe", "on", ">pw"];
    args.extend(RIGHTS.iter().filter(|r| !without.contains(r)));
    Redis::start(&args)
}

fn url(redis: &Redis) -> String {
    format!("redis://wspipe:pw@127.0.0.1:{}", redis.port)
}

const HISTORY: &[&str] = &["--pubsub", "--history", "100", "--history-ids"];

#[tokio::test]
async fn the_documented_acl_is_enough_for_channels_control_and_history() {
    if !redis_installed("the_documented_acl_is_enough") {
        return;
    }
    let redis = restricted_redis(&[]);
    let a = Instance::start(&url(&redis), "a", HISTORY);
    let b = Instance::start(&url(&redis), "b", HISTORY);
    all_connected(&[&a, &b]).await;

    // Channels and history: numbered on a, delivered on b.
    let mut on_b = b.connect("/room").await;

    let epoch = notice(&next_text(&mut on_b).await, "epoch");
    a.publish("/room", "one");
    assert_eq!(next_text(&mut on_b).await, "1\tone");

    // Presence and control: a sees b, and reaches b's client.
    a.wait_live(&["a", "b"]).await;
    let out = ctl(&b.ctl, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = list[0]["id"].as_u64().expect("b's client in b's list");
    let out = ctl(&a.ctl, &["send", &format!("b:{id}"), "direct"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(next_text(&mut on_b).await, "direct");

    // Resume on the other instance: the history keys are readable.
    let mut resumed = a.connect(&format!("/room?since=0&epoch={epoch}")).await;
    assert_eq!(notice(&next_text(&mut resumed).await, "epoch"), epoch);
    assert_eq!(next_text(&mut resumed).await, "1\tone");

    for i in [&a, &b] {
        assert_eq!(i.stat("redis_dropped_total"), 0);
        assert_eq!(i.stat("history_unnumbered_total"), 0);
    }
    // Nothing was refused along the way.
    for i in [&a, &b] {
        let lines = i.server.daemon.log.lines();
        assert!(!lines.iter().any(|l| l.contains("NOPERM")), "{lines:?}");
    }
}

#[tokio::test]
async fn a_user_without_a_right_is_told_what_redis_refused_and_serving_goes_on() {
    if !redis_installed("a_user_without_a_right") {
        return;
    }
    // May publish but not subscribe.
    let redis = restricted_redis(&["+psubscribe"]);
    let a = Instance::start(&url(&redis), "a", &["--pubsub"]);
    let line = a.server.wait_log_async("NoPerm").await;
    assert!(line.contains("subscribe"), "{line}");
    assert!(!a.connected());
    // Local members are served all the same.
    let mut one = a.connect("/room").await;
    let mut two = a.connect("/room").await;
    send_text(&mut one, "hello").await;
    assert_eq!(next_text(&mut two).await, "hello");
}
