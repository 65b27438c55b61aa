//! A redis-server of a test's own on a free loopback port, and wspipe
//! instances on it (for the `--redis` tests that share them).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::shared::{ctl, ctl_stats};
use super::{bin, wait_until, wait_until_async, Server, TIMEOUT};

pub const REDIS_BIN: &str = "/usr/bin/redis-server";

/// Whether redis-server is here: a skip line (or, with
/// WSPIPE_REDIS_TESTS=1, a panic) when it is not.
pub fn redis_installed(test: &str) -> bool {
    if Path::new(REDIS_BIN).exists() {
        return true;
    }
    if std::env::var("WSPIPE_REDIS_TESTS").as_deref() == Ok("1") {
        panic!("{test}: {REDIS_BIN} is missing and WSPIPE_REDIS_TESTS=1 (apt-get install redis-server)");
    }
    eprintln!("skipping {test}: {REDIS_BIN} is not installed (apt-get install redis-server)");
    false
}

/// A free loopback port (bound, then let go).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A redis-server without persistence; killed when dropped.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.spawn();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port, with no data) and waits until
    /// it answers.
    pub fn spawn(&mut self) {
        let port = self.port.to_string();
        let child = Command::new(REDIS_BIN)
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        assert!(
            wait_until(TIMEOUT, || answers(addr)),
            "redis-server on {addr} does not answer"
        );
    }

    /// SIGKILL, and reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Redis answers a PING.
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf[0] == b'+' || buf[0] == b'-'))
}

/// One wspipe instance on a test's Redis, with a control socket.
pub struct Instance {
    pub server: Server,
    pub ctl: String,
    _dir: tempfile::TempDir,
}

impl Instance {
    /// `wspipe --redis URL --instance NAME --control SOCK ARGS...`, once
    /// it has started.
    pub fn start(redis: &str, name: &str, args: &[&str]) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let ctl = dir.path().join("ctl.sock").to_str().unwrap().to_owned();
        let mut all = vec!["--redis", redis, "--instance", name, "--control", &ctl];
        all.extend_from_slice(args);
        let server = Server::start_cmd(Command::new(bin()), &all);
        server.wait_log("control socket at");
        Instance {
            server,
            ctl,
            _dir: dir,
        }
    }

    pub fn stats(&self) -> serde_json::Value {
        ctl_stats(&self.ctl)
    }

    pub fn connected(&self) -> bool {
        self.stats()["redis_connected"] == serde_json::Value::Bool(true)
    }

    pub fn publish(&self, channel: &str, message: &str) {
        let out = ctl(&self.ctl, &["publish", channel, message]);
        assert!(out.status.success(), "ctl publish: {out:?}");
    }
}

/// Waits until every instance has its connections to Redis up.
pub async fn all_connected(instances: &[&Instance]) {
    let ok = wait_until_async(TIMEOUT, || instances.iter().all(|i| i.connected())).await;
    assert!(ok, "not every instance connected to Redis");
}
