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

use super::proxies::{nginx_main, site_dir, substitute, Kind, Proxy};
use super::shared::{ctl, ctl_stats};
use super::{
    bin, connect, next_text, send_text, signal, wait_until, wait_until_async, Server, Ws, TIMEOUT,
};

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

    /// For the test `test`: a started Redis (with `extra` on its command
    /// line), or `None` with a skip line where redis-server is not
    /// installed (see [`redis_installed`]).
    pub fn for_test(test: &str, extra: &[&str]) -> Option<Redis> {
        redis_installed(test).then(|| Redis::start(extra))
    }

    /// For the test `test`: [`Redis::not_started`], or `None` as
    /// [`Redis::for_test`].
    pub fn not_started_for(test: &str) -> Option<Redis> {
        redis_installed(test).then(Redis::not_started)
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

impl Redis {
    /// Runs one command as the default user; its reply's first line.
    pub fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(request.as_bytes()).unwrap();
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
            reply.push(byte[0]);
        }
        String::from_utf8_lossy(&reply).trim_end().to_owned()
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
    pub name: String,
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
            name: name.to_owned(),
            server,
            ctl,
            _dir: dir,
        }
    }

    /// `ws://ADDR/PATH` of this instance.
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// A WebSocket client of this instance, on `path`.
    pub async fn connect(&self, path: &str) -> Ws {
        connect(&self.url(path)).await
    }

    /// SIGKILL, as a crash: no goodbye to Redis or to its clients; reaped.
    pub fn kill(&mut self) {
        let child = &mut self.server.daemon.child;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
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

    /// The names `ctl instances --json` on this instance lists, sorted
    /// (none if it fails).
    pub fn live(&self) -> Vec<String> {
        let out = ctl(&self.ctl, &["instances", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut names: Vec<String> = (list.as_array().into_iter().flatten())
            .filter_map(|i| i["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    /// Waits until `ctl instances` on this instance lists exactly
    /// `expected` (sorted).
    pub async fn wait_live(&self, expected: &[&str]) {
        let ok = wait_until_async(TIMEOUT, || self.live() == expected).await;
        assert!(ok, "instances: {:?}, expected {expected:?}", self.live());
    }

    pub fn publish(&self, channel: &str, message: &str) {
        let out = ctl(&self.ctl, &["publish", channel, message]);
        assert!(out.status.success(), "ctl publish: {out:?}");
    }

    /// `wspipe ctl publish CHANNEL -` on this instance, `lines` fed to it
    /// by a thread: a message a line, pipelined.
    pub fn publish_lines(&self, channel: &str, lines: String) -> LinePublish {
        let mut child = Command::new(bin())
            .args(["ctl", "--socket", &self.ctl, "publish", channel, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start wspipe ctl publish -");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(lines.as_bytes()));
        LinePublish { child, writer }
    }
}

/// A running [`Instance::publish_lines`].
pub struct LinePublish {
    child: Child,
    writer: std::thread::JoinHandle<std::io::Result<()>>,
}

impl LinePublish {
    /// Waits until every line was written and `ctl` exited well.
    pub fn wait(mut self) {
        self.writer.join().unwrap().expect("write the lines");
        assert!(self.child.wait().unwrap().success(), "ctl publish -");
    }
}

/// Waits until every instance has both connections to Redis up.
pub async fn all_connected(instances: &[&Instance]) {
    let ok = wait_until_async(TIMEOUT, || instances.iter().all(|i| i.connected())).await;
    assert!(ok, "not every instance connected to Redis");
}

/// Instances named `names` on the Redis at `url`, each with `args`, once
/// all of them are connected to it.
pub async fn instances_up<const N: usize>(
    url: &str,
    names: [&str; N],
    args: &[&str],
) -> [Instance; N] {
    let instances = names.map(|name| Instance::start(url, name, args));
    all_connected(&instances.iter().collect::<Vec<_>>()).await;
    instances
}

/// For the test `test`: its own Redis and instances named `names` on it,
/// each with `args`, all connected; `None` (a skip line) without
/// redis-server.
pub async fn redis_and_instances<const N: usize>(
    test: &str,
    names: [&str; N],
    args: &[&str],
) -> Option<(Redis, [Instance; N])> {
    let redis = Redis::for_test(test, &[])?;
    let instances = instances_up(&redis.url(), names, args).await;
    Some((redis, instances))
}

/// deploy/nginx/wspipe-cluster.conf, the file people install.
pub const CLUSTER_CONF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/nginx/wspipe-cluster.conf"
);

/// Debian's nginx running deploy/nginx/wspipe-cluster.conf, its three
/// `server` lines made the three `instances`, on a port of its own; with
/// 1024 connections per worker (a client and its upstream take two).
/// Stopped when dropped.
pub struct ClusterProxy {
    pub proxy: Proxy,
    _site: tempfile::TempDir,
}

impl ClusterProxy {
    pub fn start(nginx: &Path, instances: &[Instance; 3]) -> ClusterProxy {
        let site = site_dir();
        let proxy = Proxy::start_with(Kind::Nginx, nginx, site.path(), |dir, port| {
            let upstreams = instances
                .each_ref()
                .map(|i| format!("server {};", i.server.addr));
            let text = substitute(
                &std::fs::read_to_string(CLUSTER_CONF).unwrap(),
                CLUSTER_CONF,
                &[
                    ("server 127.0.0.1:8082;", &upstreams[0]),
                    ("server 127.0.0.1:8083;", &upstreams[1]),
                    ("server 127.0.0.1:8084;", &upstreams[2]),
                    ("listen 8081;", &format!("listen 127.0.0.1:{port};")),
                ],
            );
            let (cmd, log) = nginx_main(nginx, dir, &text);
            let main = dir.join("nginx.conf");
            let conf = substitute(
                &std::fs::read_to_string(&main).unwrap(),
                "nginx.conf",
                &[("worker_connections 256;", "worker_connections 1024;")],
            );
            std::fs::write(&main, conf).unwrap();
            (cmd, log)
        });
        ClusterProxy { proxy, _site: site }
    }

    /// `ws://127.0.0.1:PORT/PATH` of nginx.
    pub fn url(&self, path: &str) -> String {
        self.proxy.url(path)
    }
}

/// Figures: `rounds` messages sent one at a time on `path` by a client of
/// `here`, each timed until a client of `here` then one of `there` had
/// it, and its echo came back; prints the p50 and p99 of both, under
/// `label`. The two receiving clients, for more.
pub async fn one_at_a_time(
    label: &str,
    rounds: usize,
    here: &Instance,
    there: &Instance,
    path: &str,
) -> (Ws, Ws) {
    let mut sender = here.connect(path).await;
    let mut local = here.connect(path).await;
    let mut remote = there.connect(path).await;
    let (mut to_local, mut to_remote) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let m = format!("r{i}");
        let start = std::time::Instant::now();
        send_text(&mut sender, &m).await;
        assert_eq!(next_text(&mut local).await, m);
        to_local.push(start.elapsed());
        assert_eq!(next_text(&mut remote).await, m);
        to_remote.push(start.elapsed());
        assert_eq!(next_text(&mut sender).await, m);
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * p) as usize]
    };
    eprintln!(
        "{label}, one at a time, {rounds} rounds: this instance p50 {:?} p99 {:?}; \
         other instance p50 {:?} p99 {:?}",
        pct(&mut to_local, 0.5),
        pct(&mut to_local, 0.99),
        pct(&mut to_remote, 0.5),
        pct(&mut to_remote, 0.99)
    );
    (local, remote)
}
