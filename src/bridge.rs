//! The pump between one WebSocket and one child process.
//!
//! Two directions run side by side in the connection's task, each on its own
//! so neither can stall the other:
//!
//! - **inbound** (socket -> stdin): reads a message, writes it to the child,
//!   and only then reads the next one. A child that stops reading stops us
//!   reading the socket; TCP flow control then slows the client.
//! - **outbound** (stdout -> socket): reads the child only when every line it
//!   gave before has been accepted by the socket's bounded write buffer. A
//!   client that stops reading stops us reading the pipe; the child blocks on
//!   its write. Lines are fed back to back and flushed once no complete line
//!   is left, so a burst becomes few system calls and a lone line goes out at
//!   once.
//!
//! A supervisor loop watches both, the child's exit, server shutdown and the
//! signal escalation timer, and decides how the session ends: the close code
//! follows the child's exit status, and the child is always reaped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::config::Mode;
use crate::control::registry::{SessionCtl, SessionStats};
use crate::lines::{to_text, LineSplitter, READ_CHUNK};
use crate::process::{Child, Exit, Spawned};
use crate::server::PeerSocket;

/// How long we wait for the client's half of a close handshake, or for a
/// stalled socket to take our close frame, before dropping the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a connection whose child is not reading stdin checks whether
/// its client is still there.
const STALL_PROBE: Duration = Duration::from_secs(1);

/// Largest read from a child's stdout in binary mode (one binary message).
const BINARY_CHUNK: usize = 64 * 1024;

/// The per-session settings, taken from the configuration.
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    pub mode: Mode,
    pub max_line: usize,
    pub close_grace: Duration,
    pub ping: Option<Duration>,
    pub pass_stderr: bool,
}

/// The session's ends of the control channels, and its counters.
#[derive(Debug)]
pub struct Links {
    /// Messages injected by `wspipe ctl send/broadcast`.
    pub inject: mpsc::Receiver<Message>,
    /// Close and kill requests from `wspipe ctl`.
    pub control: mpsc::Receiver<SessionCtl>,
    pub stats: std::sync::Arc<SessionStats>,
}

/// How a session ended, for the access log.
#[derive(Debug, Clone)]
pub struct SessionEnd {
    /// The close code we sent, or else the one the client sent.
    pub close_code: Option<u16>,
    pub exit: Exit,
    /// A signal we had to send to end the child, if any.
    pub signalled: Option<Signal>,
    /// What ended the session, in a few words.
    pub cause: &'static str,
}

/// Requests from the supervisor to the outbound direction, which owns the
/// socket's write half.
#[derive(Debug)]
enum Command {
    /// Send this close frame (or flush the reply to the client's close).
    Close(Option<CloseFrame>),
    /// Stop at once: the peer is gone.
    Abort,
}

/// Why the inbound direction stopped.
#[derive(Debug)]
enum InEnd {
    /// The client sent a close frame (its code, if any).
    ClientClosed(Option<u16>),
    /// The connection dropped without a close frame.
    Gone,
    /// The client broke a rule; we close with this code.
    Violation(CloseCode, &'static str),
}

/// Why the outbound direction stopped.
#[derive(Debug, PartialEq, Eq)]
enum OutEnd {
    /// The child closed stdout and every line went out.
    Eof,
    /// Writing failed or was aborted: the peer is gone.
    Gone,
    /// A close frame was sent on request.
    Closed,
    /// The client missed a pong.
    PingTimeout,
}

/// Runs a session to its end: pumps both ways, closes the socket with a code
/// that tells how the child ended, and reaps the child.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    spawned: Spawned,
    opts: &BridgeOptions,
    shutdown: &CancellationToken,
    id: &str,
    links: Links,
    socket: Option<PeerSocket>,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Spawned {
        mut child,
        stdin,
        stdout,
        stderr,
    } = spawned;
    let Links {
        inject,
        mut control,
        stats,
    } = links;
    let (sink, stream) = ws.split();
    let pong = AtomicBool::new(false);
    let (cmd_tx, cmd_rx) = mpsc::channel(4);
    let (stderr_log, stderr_pass) = if opts.pass_stderr {
        (None, Some(stderr))
    } else {
        (Some(stderr), None)
    };

    let mut s = Supervisor {
        opts,
        cmd_tx,
        inbound: None,
        outbound: None,
        sink: None,
        exited: false,
        shutting_down: false,
        close_sent: None,
        close_deadline: None,
        escalation: None,
        signalled: None,
        cause: "",
    };
    {
        let inbound = inbound(stream, stdin, opts.mode, &pong, &stats, socket);
        let outbound = outbound(
            sink,
            Sources {
                stdout,
                stderr: stderr_pass,
                inject,
                commands: cmd_rx,
            },
            opts,
            &pong,
            &stats,
            id,
        );
        let stderr_log = log_stderr(stderr_log, id, opts.max_line);
        let exit = child.exited();
        tokio::pin!(inbound, outbound, stderr_log, exit);
        loop {
            let esc_deadline = s.escalation.as_ref().map(|e| e.deadline);
            tokio::select! {
                end = &mut inbound, if s.inbound.is_none() => s.on_inbound(end).await,
                (sink, end) = &mut outbound, if s.outbound.is_none() => {
                    s.sink = Some(sink);
                    s.on_outbound(end);
                }
                () = &mut exit, if !s.exited => s.on_exit(&child),
                () = shutdown.cancelled(), if !s.shutting_down => s.on_shutdown().await,
                Some(ctl) = control.recv() => s.on_control(ctl).await,
                () = sleep_until(esc_deadline), if esc_deadline.is_some() => s.escalate(&child),
                () = sleep_until(s.close_deadline), if s.close_deadline.is_some() => {
                    s.cause = if s.cause.is_empty() { "close handshake timed out" } else { s.cause };
                    break;
                }
                () = &mut stderr_log => {}
            }
            if s.exited && s.outbound == Some(OutEnd::Eof) {
                s.send_final_close(&child).await;
            }
            if s.done() {
                break;
            }
        }
    }
    if let Some(sink) = s.sink.as_mut() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
    }
    let status = child.reap().await;
    SessionEnd {
        close_code: s.close_sent.or(match s.inbound {
            Some(InEnd::ClientClosed(code)) => code,
            _ => None,
        }),
        exit: Exit::from(status),
        signalled: s.signalled,
        cause: if s.cause.is_empty() { "ended" } else { s.cause },
    }
}

/// Where the signal escalation stands.
#[derive(Debug)]
struct Escalation {
    /// Index into [`ESCALATION`] of the next signal.
    step: usize,
    deadline: Instant,
}

/// The escalation ladder: (signal, wait before it as a multiple of the grace).
const ESCALATION: [(Signal, f32); 3] = [
    (Signal::SIGINT, 1.0),
    (Signal::SIGTERM, 1.5),
    (Signal::SIGKILL, 2.5),
];

/// The supervisor's view of a session.
struct Supervisor<'a, S> {
    opts: &'a BridgeOptions,
    cmd_tx: mpsc::Sender<Command>,
    /// Set when the inbound direction has ended.
    inbound: Option<InEnd>,
    /// Set when the outbound direction has ended.
    outbound: Option<OutEnd>,
    /// The socket's write half, handed back when outbound ends.
    sink: Option<SplitSink<WebSocketStream<S>, Message>>,
    exited: bool,
    shutting_down: bool,
    /// The close code we sent, once sent.
    close_sent: Option<u16>,
    /// How long we still wait for the client's close frame.
    close_deadline: Option<Instant>,
    escalation: Option<Escalation>,
    signalled: Option<Signal>,
    cause: &'static str,
}

impl<S> Supervisor<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn on_inbound(&mut self, end: InEnd) {
        match &end {
            InEnd::ClientClosed(_) => {
                self.set_cause("client closed");
                // tungstenite has queued the reply; have it flushed.
                self.command(Command::Close(None)).await;
            }
            InEnd::Gone => {
                self.set_cause("client disconnected");
                self.command(Command::Abort).await;
            }
            InEnd::Violation(code, reason) => {
                self.set_cause(reason);
                self.close_sent = Some(u16::from(*code));
                self.command(Command::Close(Some(frame(*code, reason))))
                    .await;
            }
        }
        // stdin was owned by the inbound direction and is closed now.
        self.inbound = Some(end);
        self.start_escalation();
    }

    fn on_outbound(&mut self, end: OutEnd) {
        match end {
            OutEnd::Eof => {
                // Output is over; a child that lingers is ended like on close.
                if !self.exited {
                    self.start_escalation();
                }
            }
            OutEnd::Gone => {
                self.set_cause("client disconnected");
                self.start_escalation();
            }
            OutEnd::PingTimeout => {
                self.set_cause("client missed a pong");
                self.start_escalation();
            }
            OutEnd::Closed => self.start_escalation(),
        }
        if end != OutEnd::Eof {
            // Reading the socket is pointless once we stopped writing to it.
            self.close_deadline
                .get_or_insert(Instant::now() + CLOSE_TIMEOUT);
        }
        self.outbound = Some(end);
    }

    fn on_exit(&mut self, child: &Child) {
        self.exited = true;
        if self.outbound.is_none() {
            // The leader is gone but stdout is still open: something it
            // spawned holds it. Ask the group to go; force it after the grace.
            child.kill_group(Signal::SIGTERM);
            self.escalation = Some(Escalation {
                step: 2,
                deadline: Instant::now() + self.opts.close_grace,
            });
        }
    }

    /// `wspipe ctl close` / `kill`.
    async fn on_control(&mut self, ctl: SessionCtl) {
        match ctl {
            SessionCtl::Close(frame) => {
                if self.close_sent.is_some() || self.inbound.is_some() {
                    return;
                }
                self.set_cause("closed by control");
                self.close_sent = Some(u16::from(frame.code));
                if self.outbound.is_none() {
                    self.command(Command::Close(Some(frame))).await;
                } else {
                    self.close_with(frame).await;
                }
                self.start_escalation();
            }
            SessionCtl::Kill => {
                self.set_cause("killed by control");
                if !self.exited {
                    // The escalation, starting now rather than after the grace.
                    let step = self.escalation.as_ref().map_or(0, |e| e.step);
                    self.escalation = Some(Escalation {
                        step,
                        deadline: Instant::now(),
                    });
                }
            }
        }
    }

    async fn on_shutdown(&mut self) {
        self.shutting_down = true;
        self.set_cause("server shutting down");
        let code = CloseCode::Away;
        if self.outbound.is_none() {
            self.close_sent = Some(u16::from(code));
            self.command(Command::Close(Some(frame(code, "server shutting down"))))
                .await;
        } else if self.close_sent.is_none() {
            self.close_sent = Some(u16::from(code));
            self.close_with(frame(code, "server shutting down")).await;
        }
        self.start_escalation();
    }

    /// Sends the close frame that reports the child's exit, once.
    async fn send_final_close(&mut self, child: &Child) {
        if self.close_sent.is_some() || self.inbound.is_some() {
            return;
        }
        let exit = child.peek_exit().unwrap_or(Exit::Code(0));
        let (code, reason) = close_for_exit(exit, self.signalled.is_some());
        self.set_cause("child exited");
        self.close_sent = Some(u16::from(code));
        self.close_with(frame(code, &reason)).await;
    }

    async fn close_with(&mut self, frame: CloseFrame) {
        if let Some(sink) = self.sink.as_mut() {
            let sent = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame))));
            if !matches!(sent.await, Ok(Ok(()))) {
                // The peer cannot take it; nothing more to wait for.
                self.close_deadline = Some(Instant::now());
                return;
            }
        }
        self.close_deadline
            .get_or_insert(Instant::now() + CLOSE_TIMEOUT);
    }

    async fn command(&mut self, cmd: Command) {
        if self.outbound.is_none() {
            let _ = self.cmd_tx.send(cmd).await;
        } else if let (Command::Close(None), Some(sink)) = (cmd, self.sink.as_mut()) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.flush()).await;
        }
    }

    fn start_escalation(&mut self) {
        if self.escalation.is_none() && !self.exited {
            self.escalation = Some(Escalation {
                step: 0,
                deadline: Instant::now() + self.opts.close_grace,
            });
        }
    }

    fn escalate(&mut self, child: &Child) {
        let Some(esc) = self.escalation.as_mut() else {
            return;
        };
        if self.exited && esc.step < 2 {
            self.escalation = None;
            return;
        }
        let (sig, _) = ESCALATION[esc.step];
        tracing::debug!(
            pid = child.pid(),
            signal = sig.as_str(),
            "signalling child group"
        );
        child.kill_group(sig);
        self.signalled = Some(sig);
        esc.step += 1;
        match ESCALATION.get(esc.step) {
            Some((_, factor)) => {
                esc.deadline = Instant::now() + self.opts.close_grace.mul_f32(*factor)
            }
            None => self.escalation = None,
        }
    }

    fn set_cause(&mut self, cause: &'static str) {
        if self.cause.is_empty() {
            self.cause = cause;
        }
    }

    /// The session is over when the child has exited, output is done, and
    /// the client has closed (or we stopped waiting for it).
    fn done(&self) -> bool {
        self.exited
            && self.outbound.is_some()
            && (self.inbound.is_some() || self.close_deadline_passed())
    }

    fn close_deadline_passed(&self) -> bool {
        self.close_deadline.is_some_and(|d| d <= Instant::now())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn frame(code: CloseCode, reason: &str) -> CloseFrame {
    // A close reason must fit in a control frame (125 bytes with the code).
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].to_owned().into(),
    }
}

/// The close code (and reason) that reports how a child ended: 1000 for
/// success or for a stop we asked for, 1011 with the status otherwise.
pub fn close_for_exit(exit: Exit, we_signalled: bool) -> (CloseCode, String) {
    match exit {
        Exit::Code(0) => (CloseCode::Normal, String::new()),
        Exit::Signal(_) if we_signalled => (CloseCode::Normal, String::new()),
        other => (CloseCode::Error, other.to_string()),
    }
}

/// Socket -> child stdin. Owns stdin: returning closes it.
async fn inbound<S>(
    mut stream: SplitStream<WebSocketStream<S>>,
    stdin: pipe::Sender,
    mode: Mode,
    pong: &AtomicBool,
    stats: &SessionStats,
    socket: Option<PeerSocket>,
) -> InEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stdin = Some(stdin);
    let mut scratch = Vec::new();
    loop {
        let msg = match stream.next().await {
            None => return InEnd::Gone,
            Some(Err(e)) => return classify(e),
            Some(Ok(msg)) => msg,
        };
        let data: Bytes = match msg {
            Message::Text(text) => text.into(),
            Message::Binary(_) if mode == Mode::Text => {
                return InEnd::Violation(
                    CloseCode::Unsupported,
                    "binary messages are not accepted in text mode",
                )
            }
            Message::Binary(data) => data,
            Message::Pong(_) => {
                pong.store(true, Ordering::Relaxed);
                continue;
            }
            Message::Close(frame) => return InEnd::ClientClosed(frame.map(|f| u16::from(f.code))),
            Message::Ping(_) | Message::Frame(_) => continue,
        };
        stats.count_in(data.len());
        let Some(pipe) = stdin.as_mut() else {
            continue; // the child closed its stdin; nobody to give this to
        };
        let newline = mode == Mode::Text;
        // While the child is not reading, the socket is not read either, so
        // a client that vanished would go unnoticed: ask the kernel now and
        // then whether the peer is still there.
        let written = {
            let write = write_message(pipe, &data, newline, &mut scratch);
            tokio::pin!(write);
            loop {
                tokio::select! {
                    r = &mut write => break r,
                    () = tokio::time::sleep(STALL_PROBE), if socket.is_some() => {
                        if socket.is_some_and(|s| s.peer_closed()) {
                            return InEnd::Gone;
                        }
                    }
                }
            }
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "child stopped reading stdin");
            stdin = None;
        }
    }
}

/// Writes one message (plus `\n` in text mode) with as few writes as
/// possible, reusing `scratch` for small messages.
async fn write_message(
    pipe: &mut pipe::Sender,
    data: &[u8],
    newline: bool,
    scratch: &mut Vec<u8>,
) -> std::io::Result<()> {
    if !newline {
        return pipe.write_all(data).await;
    }
    if data.len() < 4096 {
        scratch.clear();
        scratch.extend_from_slice(data);
        scratch.push(b'\n');
        pipe.write_all(scratch).await
    } else {
        pipe.write_all(data).await?;
        pipe.write_all(b"\n").await
    }
}

/// Maps a read error to how the session ends (RFC 6455 section 7.4.1 codes).
fn classify(err: WsError) -> InEnd {
    match err {
        WsError::Utf8(_) => InEnd::Violation(CloseCode::Invalid, "invalid UTF-8 in text message"),
        WsError::Capacity(_) => InEnd::Violation(CloseCode::Size, "message too big"),
        WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::SendAfterClosing,
        ) => InEnd::Gone,
        WsError::Protocol(_) => InEnd::Violation(CloseCode::Protocol, "protocol error"),
        _ => InEnd::Gone,
    }
}

/// Child stdout (and stderr with `--passstderr`) -> socket. Owns the write
/// half of the socket and hands it back when done.
/// Everything the outbound direction sends from.
struct Sources {
    stdout: pipe::Receiver,
    /// stderr, when it is forwarded (`--passstderr`).
    stderr: Option<pipe::Receiver>,
    /// Messages from `wspipe ctl send/broadcast`.
    inject: mpsc::Receiver<Message>,
    commands: mpsc::Receiver<Command>,
}

async fn outbound<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    sources: Sources,
    opts: &BridgeOptions,
    pong: &AtomicBool,
    stats: &SessionStats,
    id: &str,
) -> (SplitSink<WebSocketStream<S>, Message>, OutEnd)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Sources {
        stdout,
        stderr,
        mut inject,
        mut commands,
    } = sources;
    let mut inject_open = true;
    let mut out = ChildOutput::new(stdout, opts);
    let mut err = stderr.map(|pipe| (pipe, LineSplitter::new(opts.max_line)));
    let mut ping = opts.ping.map(|period| {
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    });
    let mut awaiting_pong = false;
    let mut ping_due = false;
    let mut pending: Option<Message> = None;
    let mut unflushed = false;

    loop {
        if pending.is_none() {
            // Injected messages go between whole lines, never inside one.
            pending = if std::mem::take(&mut ping_due) {
                Some(Message::Ping(Bytes::new()))
            } else {
                inject
                    .try_recv()
                    .ok()
                    .or_else(|| out.next_message())
                    .or_else(|| {
                        err.as_mut()
                            .and_then(|(_, lines)| stderr_message(lines, id))
                    })
            };
        }
        if pending.is_none() && !unflushed && out.eof {
            return (sink, OutEnd::Eof);
        }
        let reading = pending.is_none() && !unflushed;
        tokio::select! {
            biased;
            cmd = commands.recv() => {
                return match cmd {
                    Some(Command::Close(frame)) => {
                        let close = async {
                            match frame {
                                Some(frame) => sink.send(Message::Close(Some(frame))).await,
                                None => sink.close().await,
                            }
                        };
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
                        (sink, OutEnd::Closed)
                    }
                    Some(Command::Abort) | None => (sink, OutEnd::Gone),
                };
            }
            _ = tick(ping.as_mut()) => {
                if awaiting_pong && !pong.swap(false, Ordering::Relaxed) {
                    return (sink, OutEnd::PingTimeout);
                }
                pong.store(false, Ordering::Relaxed);
                awaiting_pong = true;
                ping_due = true;
            }
            // Feed the pending message once the sink has room, or flush
            // once nothing is pending: one branch, as both need the sink.
            progress = std::future::poll_fn(|cx| {
                if pending.is_some() {
                    sink.poll_ready_unpin(cx)
                } else {
                    sink.poll_flush_unpin(cx)
                }
            }), if !reading => {
                let sent = progress.and_then(|()| match pending.take() {
                    Some(msg) => {
                        if msg.is_text() || msg.is_binary() {
                            stats.count_out(msg.len());
                        }
                        sink.start_send_unpin(msg).map(|()| true)
                    }
                    None => Ok(false),
                });
                match sent {
                    Ok(fed) => unflushed = fed,
                    Err(_) => return (sink, OutEnd::Gone),
                }
            }
            msg = inject.recv(), if reading && inject_open => match msg {
                Some(msg) => pending = Some(msg),
                None => inject_open = false,
            },
            _ = out.pipe.readable(), if reading && !out.eof => out.read(),
            _ = readable(err.as_ref().map(|(pipe, _)| pipe)), if reading => {
                if let Some((pipe, lines)) = err.as_mut() {
                    if read_into(pipe, lines.read_buf()) {
                        if let Some(last) = lines.finish() {
                            log_line(id, &last);
                        }
                        err = None;
                    }
                }
            }
        }
    }
}

async fn tick(timer: Option<&mut tokio::time::Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn readable(pipe: Option<&pipe::Receiver>) {
    match pipe {
        Some(pipe) => {
            let _ = pipe.readable().await;
        }
        None => std::future::pending().await,
    }
}

/// Reads what is available into `buf`; true at end of file (or error).
fn read_into(pipe: &pipe::Receiver, buf: &mut BytesMut) -> bool {
    match pipe.try_read_buf(buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
        Err(_) => true,
    }
}

/// A stderr line forwarded to the client (`--passstderr`), logged as well.
fn stderr_message(lines: &mut LineSplitter, id: &str) -> Option<Message> {
    let line = lines.next_line()?;
    log_line(id, &line);
    Some(Message::Text(to_text(line)))
}

fn log_line(id: &str, line: &[u8]) {
    tracing::error!(target: "wspipe::stderr", id = %id, "{}", String::from_utf8_lossy(line));
}

/// Logs a child's stderr, line by line, until it closes.
async fn log_stderr(pipe: Option<pipe::Receiver>, id: &str, max_line: usize) {
    let Some(pipe) = pipe else {
        return std::future::pending().await;
    };
    let mut lines = LineSplitter::new(max_line);
    loop {
        if pipe.readable().await.is_err() {
            break;
        }
        let eof = read_into(&pipe, lines.read_buf());
        while let Some(line) = lines.next_line() {
            log_line(id, &line);
        }
        if eof {
            if let Some(line) = lines.finish() {
                log_line(id, &line);
            }
            break;
        }
    }
    std::future::pending().await
}

/// The child's stdout, framed as the mode says.
struct ChildOutput {
    pipe: pipe::Receiver,
    mode: Mode,
    /// Text mode: the line splitter.
    lines: LineSplitter,
    /// Binary mode: bytes read and not yet sent.
    chunk: BytesMut,
    eof: bool,
}

impl ChildOutput {
    fn new(pipe: pipe::Receiver, opts: &BridgeOptions) -> Self {
        ChildOutput {
            pipe,
            mode: opts.mode,
            lines: LineSplitter::new(opts.max_line),
            chunk: BytesMut::new(),
            eof: false,
        }
    }

    /// Reads what the pipe has now (called once it is readable).
    fn read(&mut self) {
        let buf = match self.mode {
            Mode::Text => self.lines.read_buf(),
            Mode::Binary => {
                self.chunk.reserve(READ_CHUNK.max(BINARY_CHUNK));
                &mut self.chunk
            }
        };
        self.eof = read_into(&self.pipe, buf);
    }

    /// The next message ready to send, if any.
    fn next_message(&mut self) -> Option<Message> {
        match self.mode {
            Mode::Text => {
                let line = if self.eof {
                    self.lines.finish()
                } else {
                    self.lines.next_line()
                };
                line.map(|l| Message::Text(to_text(l)))
            }
            Mode::Binary if !self.chunk.is_empty() => {
                let data = self.chunk.split().freeze();
                if self.chunk.capacity() == 0 {
                    self.chunk = BytesMut::new();
                }
                Some(Message::Binary(data))
            }
            Mode::Binary => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_exit_status() {
        assert_eq!(close_for_exit(Exit::Code(0), false).0, CloseCode::Normal);
        assert_eq!(
            close_for_exit(Exit::Code(3), false),
            (CloseCode::Error, "exit status 3".to_string())
        );
        assert_eq!(close_for_exit(Exit::Signal(15), true).0, CloseCode::Normal);
        let (code, reason) = close_for_exit(Exit::Signal(11), false);
        assert_eq!(code, CloseCode::Error);
        assert_eq!(reason, "killed by SIGSEGV");
    }

    #[test]
    fn close_reason_is_cut_to_fit() {
        let long = "é".repeat(100);
        let f = frame(CloseCode::Error, &long);
        assert!(f.reason.len() <= 123);
    }
}
