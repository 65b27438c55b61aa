//! End to end: `wspipe ctl` across several wspipe instances through a real
//! Redis (`--redis`): routing to the instance that has a connection,
//! `--all` gathering, `ctl instances`. Each test starts its own
//! redis-server (tests/common/redis.rs) and real wspipe instances.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::redis::*;
use common::shared::ctl;
use common::*;
use serde_json::Value;

/// A short heartbeat TTL, so a killed instance drops out within a test.
const TTL: &str = "2";

fn start(redis: &Redis, name: &str, args: &[&str]) -> Instance {
    let mut cmd = Command::new(bin());
    cmd.env("WSPIPE_PRESENCE_TTL", TTL);
    Instance::start_cmd(cmd, &redis.url(), name, args)
}

/// For the test `test`: its own Redis and instances named `names` (with
/// the short TTL), each with `args`, once the first lists them all;
/// `None` (a skip line) without redis-server.
async fn cluster<const N: usize>(
    test: &str,
    names: [&str; N],
    args: &[&str],
) -> Option<(Redis, [Instance; N])> {
    let redis = Redis::for_test(test, &[])?;
    let instances = names.map(|name| start(&redis, name, args));
    instances[0].wait_live(&names).await;
    Some((redis, instances))
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "ctl failed: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// The strings of the JSON array `v`, sorted.
fn names(v: &Value) -> Vec<String> {
    sorted(v, |n| n)
}

/// The strings that `pick` finds in each element of the JSON array `v`,
/// sorted.
fn sorted(v: &Value, pick: impl Fn(&Value) -> &Value) -> Vec<String> {
    let mut names: Vec<String> = (v.as_array().into_iter().flatten())
        .filter_map(|e| pick(e).as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// The local ids of the connections of `instance`, once it has `n`.
async fn ids(instance: &Instance, n: usize) -> Vec<u64> {
    let list = || json(&ctl(&instance.ctl, &["list", "--json"]));
    let ok = wait_until_async(TIMEOUT, || list().as_array().map_or(0, Vec::len) == n).await;
    assert!(ok, "expected {n} connections: {}", list());
    let mut ids: Vec<u64> = list()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn send_close_kill_and_subscribe_reach_a_connection_on_another_instance() {
    const TEST: &str = "send_close_kill_and_subscribe_reach_a_connection_on_another_instance";
    let Some((_redis, [a, b])) = cluster(TEST, ["a", "b"], &["cat"]).await else {
        return;
    };
    let mut one = connect(&b.server.url("/")).await;
    let mut two = connect(&b.server.url("/")).await;
    let mut three = connect(&b.server.url("/")).await;
    let on_b = ids(&b, 3).await;

    // A plain id that is not on a goes to b, which has it.
    let out = ctl(&a.ctl, &["send", &on_b[0].to_string(), "plain"]);
    assert!(out.status.success(), "{out:?}");
    // The qualified form goes to b directly.
    let qualified = format!("b:{}", on_b[0]);
    let out = ctl(&a.ctl, &["send", &qualified, "qualified"]);
    assert!(out.status.success(), "{out:?}");
    // Whichever order the three connected in, the first id is one of them.
    let mut got = None;
    for ws in [&mut one, &mut two, &mut three] {
        if let Ok(text) = tokio::time::timeout(Duration::from_millis(500), next_text(ws)).await {
            assert_eq!(text, "plain");
            assert_eq!(next_text(ws).await, "qualified");
            got = Some(());
            break;
        }
    }
    assert!(got.is_some(), "ctl send across instances arrived nowhere");

    // Subscribe across instances: b's list shows the membership.
    let out = ctl(&a.ctl, &["subscribe", &qualified, "/news"]);
    assert!(out.status.success(), "{out:?}");
    let list = json(&ctl(&b.ctl, &["list", "--json"]));
    let member = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"].as_u64() == Some(on_b[0]))
        .unwrap();
    let channels = member["channels"].as_array().unwrap();
    assert!(channels.contains(&Value::from("/news")), "{member}");
    assert_eq!(member["instance"], "b");
    let out = ctl(&a.ctl, &["unsubscribe", &qualified, "/news"]);
    assert!(out.status.success(), "{out:?}");

    // close with a code, and kill, on the other instance: every client of
    // b sees the code its connection was closed with.
    let out = ctl(
        &a.ctl,
        &["close", &format!("b:{}", on_b[1]), "--code", "4001"],
    );
    assert!(out.status.success(), "{out:?}");
    let out = ctl(&a.ctl, &["kill", &on_b[2].to_string()]);
    assert!(out.status.success(), "{out:?}");
    let wait = ids(&b, 1).await;
    assert_eq!(wait, vec![on_b[0]]);
    let mut codes = Vec::new();
    for ws in [&mut one, &mut two, &mut three] {
        if let Ok((code, _)) =
            tokio::time::timeout(Duration::from_millis(2000), expect_close(ws)).await
        {
            codes.push(code);
        }
    }
    codes.sort();
    assert_eq!(codes, vec![1000, 4001], "close and kill across instances");

    // Not found anywhere: exit 1, as for a local unknown id.
    for id in ["999999", "b:999999", "nosuch:1"] {
        let out = ctl(&a.ctl, &["send", id, "x"]);
        assert_eq!(out.status.code(), Some(1), "{id}: {out:?}");
        let out = ctl(&a.ctl, &["kill", id]);
        assert_eq!(out.status.code(), Some(1), "{id}: {out:?}");
    }
    // A bad id is a usage error.
    let out = ctl(&a.ctl, &["send", "b:x", "x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[tokio::test]
async fn list_stats_and_channels_all_gather_every_instance_and_say_who_answered() {
    const TEST: &str = "list_stats_and_channels_all_gather_every_instance_and_say_who_answered";
    let Some((_redis, [a, b, mut c])) = cluster(TEST, ["a", "b", "c"], &["--pubsub"]).await else {
        return;
    };
    let mut clients = Vec::new();
    for (instance, n) in [(&a, 1), (&b, 2), (&c, 3)] {
        for _ in 0..n {
            clients.push(connect(&instance.server.url("/room")).await);
        }
        ids(instance, n).await;
    }

    let all = json(&ctl(&b.ctl, &["list", "--all", "--json"]));
    assert_eq!(names(&all["answered"]), ["a", "b", "c"]);
    assert_eq!(all["unanswered"], serde_json::json!([]));
    let sessions = all["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 6);
    for (name, n) in [("a", 1), ("b", 2), ("c", 3)] {
        let on = sessions.iter().filter(|s| s["instance"] == name).count();
        assert_eq!(on, n, "sessions of {name}");
    }
    // The table shows instance-qualified ids, and who answered.
    let table = ctl(&b.ctl, &["list", "--all"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.lines().any(|l| l.starts_with("c:")), "{text}");
    assert!(text.contains("answered: a, b, c"), "{text}");

    let stats = json(&ctl(&a.ctl, &["stats", "--all", "--json"]));
    let mut per: Vec<(String, u64)> = stats["all_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let connections = s["stats"]["connections"].as_u64().unwrap();
            (s["instance"].as_str().unwrap().to_owned(), connections)
        })
        .collect();
    per.sort();
    assert_eq!(per, [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]);

    let channels = json(&ctl(&a.ctl, &["channels", "--all", "--json"]));
    let mut rooms: Vec<(String, u64)> = channels["channels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ch| ch["name"] == "/room")
        .map(|ch| {
            let members = ch["members"].as_u64().unwrap();
            (ch["instance"].as_str().unwrap().to_owned(), members)
        })
        .collect();
    rooms.sort();
    assert_eq!(rooms, [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]);

    // c dies: while its registration lasts it is named as not answering,
    // then it is no longer listed at all.
    c.kill();
    let all = json(&ctl(&a.ctl, &["list", "--all", "--json"]));
    let answered = names(&all["answered"]);
    assert_eq!(answered, ["a", "b"], "{all}");
    if !names(&all["unanswered"]).is_empty() {
        assert_eq!(names(&all["unanswered"]), ["c"]);
    }
    assert_eq!(all["sessions"].as_array().unwrap().len(), 3);
    a.wait_live(&["a", "b"]).await;
    drop(clients);
}

#[tokio::test]
async fn an_instance_that_shuts_down_leaves_the_list_at_once() {
    const TEST: &str = "an_instance_that_shuts_down_leaves_the_list_at_once";
    let Some(redis) = Redis::for_test(TEST, &[]) else {
        return;
    };
    let a = Instance::start(&redis.url(), "a", &["--pubsub"]);
    let mut b = Instance::start(&redis.url(), "b", &["--pubsub"]);
    // The default TTL (15 s) is longer than this test waits: b leaves
    // because it deletes its registration, not because it expires.
    a.wait_live(&["a", "b"]).await;
    let text = String::from_utf8_lossy(&ctl(&a.ctl, &["instances"]).stdout).into_owned();
    assert!(text.starts_with("INSTANCE"), "{text}");
    assert!(text.contains("127.0.0.1:"), "{text}");
    b.server.terminate();
    a.wait_live(&["a"]).await;
}

#[tokio::test]
async fn with_redis_down_local_ctl_works_all_says_who_answered_and_routing_resumes() {
    const TEST: &str = "with_redis_down_local_ctl_works_all_says_who_answered_and_routing_resumes";
    let Some((mut redis, [a, b])) = cluster(TEST, ["a", "b"], &["cat"]).await else {
        return;
    };
    let mut ws = connect(&a.server.url("/")).await;
    let on_a = ids(&a, 1).await;
    redis.kill();

    let out = ctl(&a.ctl, &["send", &on_a[0].to_string(), "still here"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(next_text(&mut ws).await, "still here");
    let all = json(&ctl(&a.ctl, &["list", "--all", "--json"]));
    assert_eq!(names(&all["answered"]), ["a"]);
    assert!(all["unreachable"].is_string(), "{all}");
    assert_eq!(all["sessions"].as_array().unwrap().len(), 1);
    let text = String::from_utf8_lossy(&ctl(&a.ctl, &["stats", "--all"]).stdout).into_owned();
    assert!(text.contains("other instances not asked"), "{text}");
    // An id that is nowhere here: not found, within the bounded wait.
    let out = ctl(&a.ctl, &["send", "12345", "x"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Listing the instances needs Redis: refused, with the reason.
    let out = ctl(&a.ctl, &["instances"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // Redis back: both register again and answer each other.
    redis.spawn();
    b.wait_live(&["a", "b"]).await;
    let answered = || names(&json(&ctl(&b.ctl, &["list", "--all", "--json"]))["answered"]);
    let ok = wait_until_async(TIMEOUT, || answered() == ["a", "b"]).await;
    assert!(ok, "answered after the restart: {:?}", answered());
    let out = ctl(&b.ctl, &["send", &on_a[0].to_string(), "through again"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(next_text(&mut ws).await, "through again");
}

#[test]
fn without_redis_ids_stay_plain_and_instances_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let sock = sock.to_str().unwrap();
    let server = Server::start(&["--control", sock, "cat"]);
    server.wait_log("control socket at");
    let out = ctl(sock, &["instances"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = ctl(sock, &["send", "other:1", "x"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // --all alone is this instance, and the JSON id is a number.
    let all = json(&ctl(sock, &["list", "--all", "--json"]));
    assert!(all["sessions"].as_array().unwrap().is_empty(), "{all}");
}

/// Clients behind nginx: 300 clients spread by deploy/nginx/wspipe-cluster.conf
/// across three instances; one publish reaches each exactly once, `ctl list
/// --all` sees them all, and `ctl send` reaches one on another instance.
#[tokio::test]
async fn three_instances_behind_nginx_serve_300_clients_as_one() {
    const TEST: &str = "three_instances_behind_nginx_serve_300_clients_as_one";
    let Some(nginx) = common::proxies::Kind::Nginx.find(TEST) else {
        return;
    };
    let Some((_redis, instances)) = cluster(TEST, ["a", "b", "c"], &["--pubsub"]).await else {
        return;
    };
    let proxy = ClusterProxy::start(&nginx, &instances);

    let mut clients = Vec::with_capacity(300);
    for _ in 0..300 {
        clients.push(connect(&proxy.url("/room")).await);
    }
    let a = &instances[0];
    let gathered = || json(&ctl(&a.ctl, &["list", "--all", "--json"]));
    let all_in = wait_until_async(TIMEOUT, || {
        gathered()["sessions"].as_array().map_or(0, Vec::len) == 300
    })
    .await;
    let all = gathered();
    assert!(all_in, "list --all: {all}");
    assert_eq!(names(&all["answered"]), ["a", "b", "c"]);
    let sessions = all["sessions"].as_array().unwrap();
    for name in ["a", "b", "c"] {
        let on = sessions.iter().filter(|s| s["instance"] == name).count();
        assert!(on >= 50, "nginx gave {name} only {on} of 300 clients");
    }
    // Every client is a member of /room on its own instance.
    for (i, name) in instances.iter().zip(["a", "b", "c"]) {
        let channels = json(&ctl(&i.ctl, &["channels", "--json"]));
        let members = channels
            .as_array()
            .and_then(|c| c.iter().find(|ch| ch["name"] == "/room"))
            .and_then(|ch| ch["members"].as_u64());
        let on = sessions.iter().filter(|s| s["instance"] == name).count() as u64;
        assert_eq!(members, Some(on), "members of /room on {name}");
    }

    // One publish, then a marker from the same instance: in order, so a
    // duplicate of the first would show before the marker.
    a.publish("/room", "to everyone");
    a.publish("/room", "marker");
    for (n, ws) in clients.iter_mut().enumerate() {
        assert_eq!(next_text(ws).await, "to everyone", "client {n}");
        assert_eq!(next_text(ws).await, "marker", "client {n}: a duplicate?");
    }

    // ctl send on a to a client on c.
    let on_c = sessions
        .iter()
        .find(|s| s["instance"] == "c")
        .and_then(|s| s["id"].as_u64())
        .unwrap();
    let out = ctl(&a.ctl, &["send", &format!("c:{on_c}"), "just you"]);
    assert!(out.status.success(), "{out:?}");
    let reads = clients.iter_mut().map(|ws| async move {
        tokio::time::timeout(Duration::from_millis(1500), next_text(ws))
            .await
            .ok()
    });
    let got: Vec<String> = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(got, ["just you"], "ctl send across instances through nginx");
}

#[tokio::test]
async fn a_plain_id_on_two_other_instances_is_refused_with_both_names() {
    const TEST: &str = "a_plain_id_on_two_other_instances_is_refused_with_both_names";
    let Some((_redis, [a, b, c])) = cluster(TEST, ["a", "b", "c"], &["cat"]).await else {
        return;
    };
    let mut on_b = connect(&b.server.url("/")).await;
    let _on_c = connect(&c.server.url("/")).await;
    let id = ids(&b, 1).await[0];
    assert_eq!(ids(&c, 1).await, [id], "both count from the same start");
    let out = ctl(&a.ctl, &["send", &id.to_string(), "which?"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("b:{id}")) && err.contains(&format!("c:{id}")),
        "{err}"
    );
    // Qualified, it is one of them.
    let out = ctl(&a.ctl, &["send", &format!("b:{id}"), "you"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(next_text(&mut on_b).await, "you");
}
