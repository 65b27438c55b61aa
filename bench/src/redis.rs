//! A redis-server of the bench's own for scenario 10 (Debian's
//! `redis-server`): loopback only, a port of its own, its configuration on
//! the command line (no config file, no persistence, its files in the run's
//! scratch directory), in its own process group like every server the bench
//! starts, so it dies with the bench and the watchdog can kill it.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::server::{self, Kind, Server};

/// Where Debian puts it (what tests/common/redis.rs uses too).
pub const DEFAULT_BIN: &str = "/usr/bin/redis-server";

/// What redis-server logs once it accepts connections.
const READY: &str = "Ready to accept connections";

/// Starts `redis` on a free loopback port, `dir` its working directory;
/// returns once it accepts connections. Its URL is [`url`] of its port.
pub async fn start(redis: &Path, dir: &Path) -> anyhow::Result<Server> {
    let port = server::free_port()?;
    let mut cmd = Command::new(redis);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        // Pub/sub keeps nothing: no snapshot, no append-only file, so the
        // disk never enters the figures.
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--protected-mode", "yes", "--loglevel", "notice"])
        .arg("--dir")
        .arg(dir);
    let (server, port) = server::launch(Kind::Redis, cmd, Some(port), READY)?;
    tokio::task::spawn_blocking(move || server::wait_ready(server, port))
        .await
        .context("start task")?
}

/// The `--redis` URL of a redis-server on `port`.
pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}
