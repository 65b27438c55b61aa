//! Helpers for the `--shared` tests: the answering script, its server,
//! the server's live children, and `wspipe ctl` as a test calls it.

use std::path::Path;
use std::process::Command;

use super::*;

/// Answers each line: `count N` prints N numbered lines, `exit N` says bye
/// and exits N, `env` prints its environment; anything else is echoed
/// back with a prefix.
pub const ANSWERING: &str = r#"#!/bin/sh
prefix=${1:-got}
while IFS= read -r line; do
  case "$line" in
    count\ *) n=${line#count }; i=1
      while [ "$i" -le "$n" ]; do echo "line $i"; i=$((i+1)); done ;;
    exit\ *) echo "bye"; exit "${line#exit }" ;;
    env) env; echo "end of env" ;;
    *) echo "$prefix: $line" ;;
  esac
done
"#;

/// The server's children that are alive (not zombies).
pub fn live_children(server: &Server) -> Vec<u32> {
    server
        .children()
        .into_iter()
        .filter(|(_, state)| *state != 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

/// Waits until the server has exactly `n` live children; returns them.
pub async fn wait_children(server: &Server, n: usize) -> Vec<u32> {
    let mut now = Vec::new();
    let reached = wait_until_async(TIMEOUT, || {
        now = live_children(server);
        now.len() == n
    })
    .await;
    assert!(reached, "expected {n} children, have {now:?}");
    now
}

/// A server sharing [`ANSWERING`] (at `dir/answer`) for every path.
pub fn answering_server(dir: &Path, extra: &[&str]) -> Server {
    let program = script_external(dir, "answer", ANSWERING);
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["--shared", program.to_str().unwrap()]);
    Server::start(&args)
}

pub async fn texts(ws: &mut Ws, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_text(ws).await);
    }
    out
}

/// Session ids as `ctl list --json` shows them, in order.
pub fn ids(ctl: &str) -> Vec<u64> {
    let out = Command::new(bin())
        .args(["ctl", "--socket", ctl, "list", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// The id of the one session `ctl list` shows and `before` did not.
pub fn new_id(ctl: &str, before: &[u64]) -> u64 {
    let now = ids(ctl);
    let new: Vec<u64> = now.into_iter().filter(|id| !before.contains(id)).collect();
    assert_eq!(new.len(), 1, "one new session: {new:?}");
    new[0]
}

pub fn ctl_stats(ctl: &str) -> serde_json::Value {
    let out = Command::new(bin())
        .args(["ctl", "--socket", ctl, "stats", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A `--shared --shared-ids` server of `program`, with a control socket.
pub fn ids_server(dir: &Path, program: &str) -> (Server, String) {
    let socket = dir.join("ctl.sock");
    let ctl = socket.to_str().unwrap().to_owned();
    let server = Server::start(&["--control", &ctl, "--shared", "--shared-ids", program]);
    server.wait_log("control socket at");
    (server, ctl)
}

/// `wspipe ctl --socket CTL ARGS...`, run to its end.
pub fn ctl(ctl: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(["ctl", "--socket", ctl])
        .args(args)
        .output()
        .unwrap()
}

/// The shared children as `ctl list --shared --json` shows them.
pub fn shared_children(socket: &str) -> Vec<serde_json::Value> {
    let out = ctl(socket, &["list", "--shared", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list.as_array().unwrap().clone()
}
