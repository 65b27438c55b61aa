//! Starting and stopping the servers under test.
//!
//! - `wspipe` and `websocketd` run as child processes of the bench, each in
//!   its own process group, with `PR_SET_PDEATHSIG` so they die with the
//!   bench. Their stderr is drained by a thread for the whole run (a server
//!   blocked on a full log pipe would stall) and its tail is kept for errors.
//! - The reference is an in-process tokio-tungstenite echo server on its own
//!   single-threaded runtime and thread, with no child process: the upper
//!   limit of what a bridge could do on this machine.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::sys;

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of a server's stderr kept for error messages.
const LOG_TAIL: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Wspipe,
    Websocketd,
    Reference,
    /// Debian's nginx with libnginx-mod-nchan (the channels scenario).
    Nchan,
    /// Not a server of its own: wspipe's figures when the channels scenario
    /// publishes through the control socket instead of HTTP (same server,
    /// same run), kept apart so the report can show both beside nchan.
    WspipeControl,
    /// Scenario 9's columns: wspipe started three ways (`--shared cat`,
    /// `--pubsub`, `cat` per connection), each on a fresh server.
    Shared,
    Pubsub,
    PerConnection,
    /// Scenario 10: the bench's redis-server, and its columns: one wspipe
    /// without Redis (the local baseline), one with `--redis`, three with
    /// `--redis` on one Redis.
    Redis,
    ScaleLocal,
    ScaleRedis1,
    ScaleRedis3,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Wspipe => "wspipe",
            Kind::Websocketd => "websocketd",
            Kind::Reference => "reference",
            Kind::Nchan => "nchan",
            Kind::WspipeControl => "wspipe (control socket)",
            Kind::Shared => "wspipe --shared cat",
            Kind::Pubsub => "wspipe --pubsub",
            Kind::PerConnection => "wspipe cat (per connection)",
            Kind::Redis => "redis-server",
            Kind::ScaleLocal => "wspipe, 1 instance, no Redis",
            Kind::ScaleRedis1 => "wspipe, 1 instance + Redis",
            Kind::ScaleRedis3 => "wspipe, 3 instances + Redis",
        }
    }
}

/// Where the server binaries are.
#[derive(Debug, Clone)]
pub struct Programs {
    pub wspipe: PathBuf,
    pub websocketd: PathBuf,
    /// nginx, with the nchan module it loads; only when the channels
    /// scenario runs.
    pub nginx: Option<PathBuf>,
    /// redis-server; only when the scale-out scenario runs.
    pub redis: Option<PathBuf>,
}

/// What a server runs for each connection.
#[derive(Debug, Clone)]
pub struct Spec {
    pub binary: bool,
    pub command: Vec<String>,
    /// wspipe only: `--control PATH` (the control socket).
    pub control: Option<PathBuf>,
    /// More arguments, before the command (wspipe: `--pubsub`, ...).
    pub args: Vec<String>,
}

impl Spec {
    pub fn text(command: &[&str]) -> Spec {
        Spec {
            binary: false,
            command: command.iter().map(|s| s.to_string()).collect(),
            control: None,
            args: Vec::new(),
        }
    }

    pub fn binary(command: &[&str]) -> Spec {
        Spec {
            binary: true,
            ..Spec::text(command)
        }
    }
}

/// Process groups of the servers alive now, for the watchdog.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Kills every server still running (the watchdog's last resort).
pub fn kill_all() {
    for pid in LIVE.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        // SAFETY: plain kill(2) on a process group we created.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

/// A running server.
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    process: Option<Child>,
    log: Arc<Log>,
    reference: Option<Reference>,
}

impl Server {
    pub async fn start(kind: Kind, programs: &Programs, spec: &Spec) -> anyhow::Result<Server> {
        match kind {
            Kind::Reference => start_reference().await,
            _ => {
                // Spawned from this (long-lived) runtime thread: the parent
                // death signal fires when the thread that forked exits, so
                // never from a short-lived blocking-pool thread.
                let (server, fixed_port) = spawn_external(kind, programs, spec)?;
                tokio::task::spawn_blocking(move || wait_ready(server, fixed_port))
                    .await
                    .context("start task")?
            }
        }
    }

    /// The server's process id (none for the in-process reference).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// CPU time the server process has used (none for the reference).
    pub fn cpu_time(&self) -> Option<Duration> {
        self.pid().and_then(sys::cpu_time)
    }

    /// Live (or not yet reaped) children of the server process.
    pub fn children(&self) -> usize {
        self.pid().map(sys::children_of).unwrap_or(0)
    }

    /// Waits (bounded) until the server has no children left.
    pub async fn wait_children_gone(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.children() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        self.log.tail()
    }

    /// SIGTERM, a bounded wait, then SIGKILL to the whole process group.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.process.take() {
            tokio::task::spawn_blocking(move || stop_process(&mut child))
                .await
                .ok();
        }
        if let Some(reference) = self.reference.take() {
            reference.stop().await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.process.as_mut() {
            kill_group(child.id(), libc::SIGKILL);
            let _ = child.wait();
            forget_pid(child.id());
        }
    }
}

fn kill_group(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a process group we created.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

fn forget_pid(pid: u32) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
}

fn stop_process(child: &mut Child) {
    let pid = child.id();
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Whatever is left in the group (websocketd's children are in it).
    kill_group(pid, libc::SIGKILL);
    let _ = child.wait();
    forget_pid(pid);
}

/// A server's stderr: the tail, and the line that says it is ready.
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    tail: VecDeque<String>,
    ready: Option<String>,
    /// Log pipes closed so far (a server has two).
    closed: usize,
}

impl Log {
    fn new() -> Log {
        Log {
            state: Mutex::new(LogState::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, line: String, needle: &str) {
        let mut st = self.lock();
        if st.ready.is_none() && line.contains(needle) {
            st.ready = Some(line.clone());
        }
        if st.tail.len() == LOG_TAIL {
            st.tail.pop_front();
        }
        st.tail.push_back(line);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lock().closed += 1;
        self.changed.notify_all();
    }

    /// The ready line, once logged; None on timeout or if stderr closed.
    fn wait_ready(&self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut st = self.lock();
        loop {
            if let Some(line) = &st.ready {
                return Some(line.clone());
            }
            if st.closed >= 2 {
                return None;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn tail(&self) -> String {
        let st = self.lock();
        st.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// A port that was free a moment ago (websocketd cannot report a port it
/// picked itself).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(l.local_addr()?.port())
}

fn spawn_external(
    kind: Kind,
    programs: &Programs,
    spec: &Spec,
) -> anyhow::Result<(Server, Option<u16>)> {
    let (mut cmd, fixed_port, needle) = match kind {
        Kind::Wspipe => {
            let mut cmd = Command::new(&programs.wspipe);
            cmd.args(["--port=0", "--address=127.0.0.1"]);
            (cmd, None, "serving on ws://")
        }
        Kind::Websocketd => {
            let port = free_port()?;
            let mut cmd = Command::new(&programs.websocketd);
            cmd.arg(format!("--port={port}")).arg("--address=127.0.0.1");
            (cmd, Some(port), "Starting WebSocket server")
        }
        Kind::Reference
        | Kind::Nchan
        | Kind::WspipeControl
        | Kind::Shared
        | Kind::Pubsub
        | Kind::PerConnection
        | Kind::Redis
        | Kind::ScaleLocal
        | Kind::ScaleRedis1
        | Kind::ScaleRedis3 => {
            bail!("{} is not started from a Spec", kind.name())
        }
    };
    if spec.binary {
        cmd.arg("--binary");
    }
    if let Some(path) = &spec.control {
        if kind != Kind::Wspipe {
            bail!("only wspipe has a control socket");
        }
        cmd.arg("--control").arg(path);
    }
    cmd.args(&spec.args).args(&spec.command);
    launch(kind, cmd, fixed_port, needle)
}

/// Starts `cmd` as the server `kind` (its own process group, killed with
/// the bench), on `fixed_port` if it was chosen beforehand (else the port
/// is read from the ready line), ready once it logs `needle`.
pub fn launch(
    kind: Kind,
    mut cmd: Command,
    fixed_port: Option<u16>,
    needle: &'static str,
) -> anyhow::Result<(Server, Option<u16>)> {
    cmd.stdin(Stdio::null())
        // websocketd logs on stdout, wspipe on stderr: drain both.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and
    // exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", kind.name()))?;
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(child.id());
    let log = Arc::new(Log::new());
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    drain(stdout, log.clone(), needle);
    drain(stderr, log.clone(), needle);
    let server = Server {
        kind,
        port: 0,
        process: Some(child),
        log,
        reference: None,
    };
    Ok((server, fixed_port))
}

/// Reads a server's log output until it closes, so the server never blocks
/// on it.
fn drain(pipe: impl std::io::Read + Send + 'static, log: Arc<Log>, needle: &'static str) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    log.push(line, needle);
                }
            }
        }
        log.close();
    });
}

/// Waits for the ready line and for the port to accept connections.
pub fn wait_ready(mut server: Server, fixed_port: Option<u16>) -> anyhow::Result<Server> {
    let kind = server.kind;
    let log = server.log.clone();
    let Some(ready) = log.wait_ready(START_TIMEOUT) else {
        bail!(
            "{} did not start in {:?}; its log:\n{}",
            kind.name(),
            START_TIMEOUT,
            log.tail()
        );
    };
    server.port = match fixed_port {
        Some(port) => port,
        None => parse_port(&ready).ok_or_else(|| anyhow!("no port in {ready:?}"))?,
    };
    // The ready line may come just before the listener is bound.
    let deadline = Instant::now() + START_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err() {
        if Instant::now() >= deadline {
            bail!("{} is not accepting on port {}", kind.name(), server.port);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(server)
}

/// The port in "... serving on ws://127.0.0.1:PORT/ ...".
fn parse_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("ws://127.0.0.1:")? + "ws://127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The in-process echo server.
struct Reference {
    shutdown: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Reference {
    async fn stop(self) {
        let _ = self.shutdown.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

async fn start_reference() -> anyhow::Result<Server> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind reference")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = oneshot::channel();
    // One thread, no work stealing: the cheapest path from socket to socket
    // (the scenarios that use the reference have one connection).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("reference runtime")?;
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            let mut sessions = tokio::task::JoinSet::new();
            tokio::pin!(rx);
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            sessions.spawn(echo(stream));
                        }
                    }
                    Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                }
            }
            sessions.abort_all();
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
    });
    Ok(Server {
        kind: Kind::Reference,
        port,
        process: None,
        log: Arc::new(Log::new()),
        reference: Some(Reference {
            shutdown: tx,
            thread,
        }),
    })
}

/// Echoes every data message back, batching what is already received into
/// one flush.
async fn echo(stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    // wspipe's read buffer size (src/server.rs): tungstenite zero-fills the
    // whole buffer before each read, so its 128 KiB default would make the
    // reference slower than the bridge it is the limit for.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(64 * 1024);
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    while let Some(msg) = ws.next().await {
        let mut msg = msg?;
        loop {
            if matches!(msg, Message::Text(_) | Message::Binary(_)) {
                ws.feed(msg).await?;
            }
            match ws.next().now_or_never() {
                Some(Some(next)) => msg = next?,
                _ => break,
            }
        }
        ws.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_port_in_the_ready_line() {
        let line = "2026-01-01T00:00:00Z  INFO wspipe::server: serving on ws://127.0.0.1:41234/ (command cat)";
        assert_eq!(parse_port(line), Some(41234));
        assert_eq!(parse_port("nothing"), None);
    }
}
