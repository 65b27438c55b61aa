//! A redis-server of a test's own (Debian's, on a free loopback port, its
//! files in a temporary directory) and wspipe instances on it; shared by
//! tests/redis.rs, tests/redis_control.rs and tests/redis_history.rs.
//!
//! Without /usr/bin/redis-server the tests say so on stderr and return;
//! with `WSPIPE_REDIS_TESTS=1` (as .ci/run sets) a missing redis-server is
//! a failure instead.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::shared::{ctl, ctl_stats};
use super::{bin, signal, wait_until, wait_until_async, Server, TIMEOUT};

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

/// A redis-server of our own; killed when dropped.
pub struct Redis {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub extra: Vec<String>,
    /// Serves TLS only (on `port`).
    pub tls: bool,
    pub child: Option<Child>,
}

impl Redis {
    pub fn start(extra: &[&str]) -> Redis {
        let mut redis = Redis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls: false,
            child: None,
        };
        redis.spawn();
        redis
    }

    /// A Redis serving TLS only, with `cert`/`key` (PEM).
    pub fn start_tls(cert: &Path, key: &Path) -> Redis {
        let port = free_port();
        let mut redis = Redis {
            port,
            dir: tempfile::tempdir().unwrap(),
            extra: vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                cert.to_str().unwrap().into(),
                "--tls-key-file".into(),
                key.to_str().unwrap().into(),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            tls: true,
            child: None,
        };
        redis.spawn();
        redis
    }

    /// A Redis that is not running yet, on a port of its own.
    pub fn not_started() -> Redis {
        Redis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra: Vec::new(),
            tls: false,
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port) and waits until it answers.
    pub fn spawn(&mut self) {
        let port = self.port.to_string();
        let child = Command::new(REDIS_BIN)
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let tls = self.tls;
        assert!(
            wait_until(TIMEOUT, || if tls {
                TcpStream::connect(addr).is_ok()
            } else {
                answers(addr)
            }),
            "redis-server on {addr} does not answer"
        );
    }

    /// Sends `sig` (SIGSTOP, SIGCONT) to the running server.
    pub fn signal(&self, sig: i32) {
        let child = self.child.as_ref().expect("running");
        signal(child.id(), sig);
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

/// Redis answers a PING (with PONG, or NOAUTH when it wants a password).
pub fn answers(addr: SocketAddr) -> bool {
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

/// One wspipe instance on the test's Redis, with a control socket.
pub struct Instance {
    pub server: Server,
    pub ctl: String,
    pub _dir: tempfile::TempDir,
}

impl Instance {
    /// `wspipe --redis URL --instance NAME --control SOCK ARGS...`, once
    /// it has started.
    pub fn start(redis: &str, name: &str, args: &[&str]) -> Instance {
        Self::start_cmd(Command::new(bin()), redis, name, args)
    }

    /// Same with a prepared command (its environment).
    pub fn start_cmd(cmd: Command, redis: &str, name: &str, args: &[&str]) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let ctl = dir.path().join("ctl.sock").to_str().unwrap().to_owned();
        let mut all = vec!["--redis", redis, "--instance", name, "--control", &ctl];
        all.extend_from_slice(args);
        let server = Server::start_cmd(cmd, &all);
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

    pub fn stat(&self, key: &str) -> u64 {
        self.stats()[key].as_u64().unwrap_or(0)
    }

    pub fn connected(&self) -> bool {
        self.stats()["redis_connected"] == serde_json::Value::Bool(true)
    }

    pub fn publish(&self, channel: &str, message: &str) {
        let out = ctl(&self.ctl, &["publish", channel, message]);
        assert!(out.status.success(), "ctl publish: {out:?}");
    }
}

/// Waits until every instance has both connections to Redis up.
pub async fn all_connected(instances: &[&Instance]) {
    let ok = wait_until_async(TIMEOUT, || instances.iter().all(|i| i.connected())).await;
    assert!(ok, "not every instance connected to Redis");
}
