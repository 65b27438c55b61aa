//! Shared helpers for the end-to-end tests: start the real `wspipe` binary on
//! loopback, talk to it with a real WebSocket client, and look at the
//! processes and file descriptors it owns through /proc.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub mod history;
pub mod proxies;
pub mod redis;
pub mod shared;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream as TokioTcp;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Generous bound for anything that should happen "at once".
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TokioTcp>>;

/// The server's stderr, collected line by line by a thread.
pub struct Log {
    lines: Mutex<Vec<String>>,
    /// For plain tests, which block.
    changed: Condvar,
    /// For async tests, which must not block their runtime's only thread
    /// (their own WebSocket clients and spawned tasks run on it): the
    /// number of lines so far.
    added: tokio::sync::watch::Sender<usize>,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            lines: Mutex::default(),
            changed: Condvar::new(),
            added: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Log {
    /// Waits until a line contains `needle`; returns it. Blocks the thread:
    /// for plain `#[test]`s (async tests use [`Log::wait_for_async`]).
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_line(|l| l.contains(needle), timeout)
    }

    /// Waits until a line satisfies `pred`; returns it. Blocks the thread.
    pub fn wait_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = self.changed.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// [`Log::wait_for`] for async tests: waits without blocking the thread.
    pub async fn wait_for_async(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_line_async(|l| l.contains(needle), timeout).await
    }

    /// Waits (without blocking the thread) until a line satisfies `pred`;
    /// returns it.
    pub async fn wait_line_async(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let wait = async {
            // Subscribed before looking, so a line added in between is not
            // missed: it marks the count changed.
            let mut added = self.added.subscribe();
            loop {
                if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                    return l.clone();
                }
                // The sender lives in `self`: this cannot fail.
                added.changed().await.unwrap();
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// How many lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// A running `wspipe` listening on 127.0.0.1 (a [`Daemon`] with the
/// address it reported).
pub struct Server {
    pub daemon: Daemon,
    pub addr: SocketAddr,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wspipe")
}

impl Server {
    /// Starts `wspipe --port 0 --address 127.0.0.1 ARGS...`.
    pub fn start(args: &[&str]) -> Server {
        Self::start_cmd(Command::new(bin()), args)
    }

    /// Same with a prepared command (environment, limits...).
    pub fn start_cmd(cmd: Command, args: &[&str]) -> Server {
        let mut all = vec!["--port", "0", "--address", "127.0.0.1"];
        all.extend_from_slice(args);
        let daemon = Daemon::spawn_cmd(cmd, &all);
        let addr = daemon.tcp_addr();
        Server { daemon, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

impl std::ops::Deref for Server {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

/// Direct children of `parent`: (pid, state letter, e.g. 'Z' for zombie).
pub fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((state, ppid)) = stat(pid) {
            if ppid == parent {
                out.push((pid, state));
            }
        }
    }
    out
}

/// (state, ppid) of a process from /proc/PID/stat.
pub fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z')
}

/// Waits until `pid` is gone (or a zombie), polling /proc.
pub fn wait_dead(pid: u32, timeout: Duration) -> bool {
    wait_until(timeout, || !alive(pid))
}

/// [`wait_dead`] for async tests.
pub async fn wait_dead_async(pid: u32, timeout: Duration) -> bool {
    wait_until_async(timeout, || !alive(pid)).await
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes. Blocks the
/// thread: for plain `#[test]`s (async tests use [`wait_until_async`]).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`wait_until`] for async tests: sleeps between polls on the runtime's
/// timer, so the test's own clients and tasks keep running meanwhile.
/// `cond` itself must be quick (it runs on the runtime's thread).
pub async fn wait_until_async(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2).
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Writes an executable script into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Connects a WebSocket client.
pub async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect");
    ws
}

/// Connects with extra request headers.
pub async fn connect_with(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect timed out")
        .map(|(ws, _)| ws)
}

/// The HTTP status a handshake attempt got (101 on success).
pub async fn handshake_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    match connect_with(url, headers).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("handshake failed without an HTTP status: {e}"),
    }
}

/// What the client saw next.
#[derive(Debug, PartialEq)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    Close(Option<(u16, String)>),
    /// The stream ended without a close frame.
    End,
}

/// The next data or close event (pings and pongs are skipped).
pub async fn next_event(ws: &mut Ws) -> Event {
    next_event_on(ws).await
}

/// The next text message; panics on anything else.
pub async fn next_text(ws: &mut Ws) -> String {
    match next_event(ws).await {
        Event::Text(t) => t,
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Reads until the close frame and returns its code and reason.
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match next_event(ws).await {
            Event::Close(Some(c)) => return c,
            Event::Close(None) => return (1005, String::new()),
            Event::End => panic!("stream ended without a close frame"),
            Event::Text(_) | Event::Binary(_) => continue,
        }
    }
}

/// Collects text messages until the close frame.
pub async fn texts_until_close(ws: &mut Ws) -> (Vec<String>, (u16, String)) {
    texts_until_close_on(ws).await
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// A raw TCP connection that has completed a WebSocket handshake by hand, for
/// sending frames a well-behaved client library refuses to send.
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    pub fn connect(addr: SocketAddr, path: &str) -> RawClient {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let head = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 101"), "handshake: {head}");
        RawClient { stream }
    }

    /// Sends one masked frame with the given first byte (FIN + opcode).
    pub fn send_frame(&mut self, first: u8, payload: &[u8]) {
        let mut frame = vec![first];
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len < 65536 {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [0x12, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    /// Reads frames until a close frame; returns its code (None if the
    /// connection ended first).
    pub fn read_close_code(&mut self) -> Option<u16> {
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).ok()?;
            let opcode = head[0] & 0x0f;
            let mut len = (head[1] & 0x7f) as u64;
            if len == 126 {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).ok()?;
                len = u16::from_be_bytes(b) as u64;
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).ok()?;
                len = u64::from_be_bytes(b);
            }
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).ok()?;
            if opcode == 0x8 {
                return Some(if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                });
            }
        }
    }
}

/// Reads an HTTP response head (up to the blank line).
///
/// Retries reads interrupted by a signal: a socket with a receive timeout
/// (SO_RCVTIMEO) returns EINTR instead of restarting when any signal wakes
/// the thread, e.g. a SIGCHLD from another test's child, and that must not
/// be taken for the end of the response.
pub fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Sends a raw HTTP request and returns the status line's code and the
/// whole response head (read by [`read_head`], which survives EINTR).
pub fn raw_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head)
}

/// Starts a thread that collects `child`'s stderr (which must be piped) into
/// a [`Log`].
fn collect_stderr(child: &mut Child) -> Arc<Log> {
    let log = Arc::new(Log::default());
    let stderr = child.stderr.take().expect("stderr");
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if std::env::var_os("WSPIPE_TEST_LOG").is_some() {
                eprintln!("[wspipe] {line}");
            }
            sink.lines.lock().unwrap().push(line);
            sink.changed.notify_all();
            sink.added.send_modify(|n| *n += 1);
        }
    });
    log
}

/// A `wspipe` process started with exactly the arguments given, its
/// stderr collected into a [`Log`]. Dropping it stops it gracefully.
pub struct Daemon {
    pub child: Child,
    pub log: Arc<Log>,
}

impl Daemon {
    pub fn spawn(args: &[&str]) -> Daemon {
        Self::spawn_cmd(Command::new(bin()), args)
    }

    /// Same with a prepared command (environment, limits...).
    pub fn spawn_cmd(mut cmd: Command, args: &[&str]) -> Daemon {
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wspipe");
        let log = collect_stderr(&mut child);
        Daemon { child, log }
    }

    /// Waits (bounded) for a log line containing `needle`; panics with the
    /// log so far if none comes.
    pub fn wait_log(&self, needle: &str) -> String {
        self.log
            .wait_for(needle, TIMEOUT)
            .unwrap_or_else(|| panic!("no log line with {needle:?}: {:?}", self.log.lines()))
    }

    /// [`Daemon::wait_log`] for async tests.
    pub async fn wait_log_async(&self, needle: &str) -> String {
        self.log
            .wait_for_async(needle, TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no log line with {needle:?}: {:?}", self.log.lines()))
    }

    /// The TCP address from the "serving on ws://ADDR/" (or wss://) line.
    pub fn tcp_addr(&self) -> SocketAddr {
        let line = self.wait_log("serving on ws");
        line.split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .expect("address in log line")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Direct children of the server: (pid, state letter).
    pub fn children(&self) -> Vec<(u32, char)> {
        children_of(self.pid())
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(self.pid(), libc::SIGTERM);
        self.wait_exit(TIMEOUT).expect("wspipe exits after SIGTERM")
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Open file descriptors of the server process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A graceful stop, so the server ends its own children; SIGKILL
        // would orphan them (each runs in a process group of its own).
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(self.pid(), libc::SIGTERM);
            if self.wait_exit(TIMEOUT).is_none() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

/// Runs `wspipe ARGS...` to completion (bounded by [`TIMEOUT`]; killed and
/// a panic if it does not exit) and returns its status and output.
pub fn run_bin(args: &[&str]) -> std::process::Output {
    let child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wspipe");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(output) => output.expect("wait for wspipe"),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("wspipe {args:?} did not exit within {TIMEOUT:?}");
        }
    }
}

/// Asserts that `wspipe ARGS...` refuses to start as bad flags must: exit
/// 2 with one line on stderr, and that line mentions `needle`.
pub fn assert_usage_error(args: &[&str], needle: &str) {
    let out = run_bin(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
}

/// Sends a raw HTTP request and returns the status code, the response head
/// and the body (read by Content-Length).
pub fn raw_response(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len: usize = header_values(&head, "content-length")
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).expect("response body");
    (code, head, String::from_utf8_lossy(&body).into_owned())
}

/// The values of header `name` (case-insensitive) in a response head.
pub fn header_values(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// Connects a WebSocket client over a Unix socket.
pub async fn connect_unix(path: &Path) -> WebSocketStream<tokio::net::UnixStream> {
    let stream = tokio::time::timeout(TIMEOUT, tokio::net::UnixStream::connect(path))
        .await
        .expect("unix connect timed out")
        .expect("unix connect");
    let (ws, _) = tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::client_async("ws://localhost/", stream),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake");
    ws
}

/// [`next_event`] for a WebSocket over any stream.
pub async fn next_event_on<S>(ws: &mut WebSocketStream<S>) -> Event
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("no message within the timeout");
        match msg {
            None | Some(Err(_)) => return Event::End,
            Some(Ok(Message::Text(t))) => return Event::Text(t.to_string()),
            Some(Ok(Message::Binary(b))) => return Event::Binary(b.to_vec()),
            Some(Ok(Message::Close(f))) => {
                return Event::Close(
                    f.map(|f: CloseFrame| (u16::from(f.code), f.reason.to_string())),
                )
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// [`texts_until_close`] for a WebSocket over any stream.
pub async fn texts_until_close_on<S>(ws: &mut WebSocketStream<S>) -> (Vec<String>, (u16, String))
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut texts = Vec::new();
    loop {
        match next_event_on(ws).await {
            Event::Text(t) => texts.push(t),
            Event::Close(c) => return (texts, c.unwrap_or((1005, String::new()))),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// `VAR=value` lines (as `env` prints them) into (name, value) pairs.
pub fn parse_env(lines: &[String]) -> std::collections::BTreeMap<String, String> {
    lines
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Like [`script`], but the file is written by a separate `sh`, so this
/// (multi-threaded) test process never holds a writable fd to it. With
/// [`script`], a child that another test thread is forking at that moment
/// inherits the fd until its exec, and executing the script then fails
/// with ETXTBSY.
pub fn script_external(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let mut child = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("start sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write script");
    assert!(child.wait().expect("wait for sh").success(), "{path:?}");
    path
}

/// The process group of `pid`, from /proc/PID/stat.
pub fn pgrp(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    // state, ppid, pgrp
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Live (non-zombie) processes in process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pgrp(pid) == Some(pgid) && alive(pid))
        .collect()
}

/// Waits (bounded) until `path` holds a whole line with a pid, as written by
/// `echo $$ > path` in a script, and returns it.
pub fn read_pid(path: &Path) -> u32 {
    let mut pid = None;
    let found = wait_until(TIMEOUT, || {
        pid = std::fs::read_to_string(path)
            .ok()
            .filter(|s| s.ends_with('\n'))
            .and_then(|s| s.trim().parse().ok());
        pid.is_some()
    });
    assert!(found, "no pid written to {}", path.display());
    pid.unwrap()
}

/// [`read_pid`] for async tests.
pub async fn read_pid_async(path: &Path) -> u32 {
    let mut pid = None;
    let found = wait_until_async(TIMEOUT, || {
        pid = std::fs::read_to_string(path)
            .ok()
            .filter(|s| s.ends_with('\n'))
            .and_then(|s| s.trim().parse().ok());
        pid.is_some()
    })
    .await;
    assert!(found, "no pid written to {}", path.display());
    pid.unwrap()
}

/// After a close frame was sent or received: keeps reading (which flushes
/// our reply to the peer's close) until the connection ends. Bounded.
pub async fn finish_close(ws: &mut Ws) {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next()).await {
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("connection still open {TIMEOUT:?} after the close"),
        }
    }
}

/// The access log's `disconnect` line for the session of child `pid`.
pub fn disconnect_line(log: &Log, pid: u32, timeout: Duration) -> Option<String> {
    let needle = format!(" pid={pid} ");
    log.wait_line(|l| l.contains("disconnect") && l.contains(&needle), timeout)
}

/// [`disconnect_line`] for async tests.
pub async fn disconnect_line_async(log: &Log, pid: u32, timeout: Duration) -> Option<String> {
    let needle = format!(" pid={pid} ");
    log.wait_line_async(|l| l.contains("disconnect") && l.contains(&needle), timeout)
        .await
}

impl RawClient {
    /// Drops the connection with a TCP reset (SO_LINGER 0) instead of a FIN.
    pub fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket we own, with a correctly sized value.
        unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        drop(self);
    }
}

/// Raises this process's soft RLIMIT_NOFILE to at least `want` (capped at
/// the hard limit); returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

/// The TCP address in a log line like "metrics on http://ADDR/metrics".
pub fn http_addr(line: &str) -> SocketAddr {
    line.split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no http://ADDR/ in {line:?}"))
}

/// A command whose fd 3 is `fd` and whose LISTEN_PID is its own pid, as a
/// service manager starts a socket-activated service: `sh` learns its pid
/// and execs wspipe, which keeps it.
pub fn activated(fd: &impl AsRawFd, name: &str) -> Command {
    let raw = fd.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", bin()])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", name);
    // SAFETY: dup2 and fcntl are async-signal-safe; they only put the
    // socket at fd 3, without close-on-exec, in the child.
    unsafe {
        cmd.pre_exec(move || {
            let moved = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if moved < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}
