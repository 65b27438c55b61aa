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

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::config::Mode;
use crate::mailbox::{mailbox, Poster};
use crate::peer::PeerSocket;
use crate::process::{Child, Exit, Spawned, ESCALATION};
use crate::session::stderr::log_stderr;
use crate::session::{Links, SessionCtl};
use crate::shutdown::Shutdown;

mod child_output;
mod inbound;
mod outbound;
mod sending;
mod tagged;

pub(crate) use child_output::ChildOutput;
use inbound::inbound;
pub(crate) use inbound::{step, InEnd, Step};
use outbound::{outbound, Command, OutEnd, Sources};
pub(crate) use sending::{feed_or_flush, MissedPong, Pinger};

/// How long we wait for the client's half of a close handshake, or for a
/// stalled socket to take our close frame, before dropping the connection.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The per-session settings, taken from the configuration.
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    pub mode: Mode,
    pub max_line: usize,
    pub close_grace: Duration,
    pub ping: Option<Duration>,
    pub pass_stderr: bool,
}

/// How a session ended, for the access log.
#[derive(Debug, Clone)]
pub struct SessionEnd {
    /// The close code we sent, or else the one the client sent.
    pub close_code: Option<u16>,
    pub exit: Exit,
    /// What ended the session, in a few words.
    pub cause: &'static str,
}

/// Runs a session to its end: pumps both ways, closes the socket with a code
/// that tells how the child ended, and reaps the child.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    spawned: Spawned,
    opts: &BridgeOptions,
    shutdown: &Shutdown,
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
    let (cmd_tx, cmd_rx) = mailbox(4);
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
        killed: false,
        shutting_down: false,
        close_sent: None,
        close_deadline: None,
        escalation: None,
        signalled: None,
        cause: None,
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
        let stderr_log = async {
            if let Some(pipe) = stderr_log {
                log_stderr(pipe, id, opts.max_line).await;
            }
            // Done, or nothing to log: never a reason to wake the loop.
            std::future::pending::<()>().await
        };
        let exit = child.exited();
        tokio::pin!(inbound, outbound, stderr_log, exit);
        loop {
            let esc_deadline = s.escalation.as_ref().map(|e| e.deadline);
            tokio::select! {
                end = &mut inbound, if s.inbound.is_none() => s.on_inbound(end).await,
                (sink, end) = &mut outbound, if s.outbound.is_none() => {
                    s.sink = Some(sink);
                    s.on_outbound(end).await;
                }
                () = &mut exit, if !s.exited => s.on_exit(&child),
                () = shutdown.cancelled(), if !s.shutting_down => s.on_shutdown().await,
                ctl = control.recv() => s.on_control(ctl).await,
                () = sleep_until(esc_deadline), if esc_deadline.is_some() => s.escalate(&child),
                () = sleep_until(s.close_deadline), if s.close_deadline.is_some() => {
                    s.set_cause("close handshake timed out");
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
        exit: status,
        cause: s.cause.unwrap_or("ended"),
    }
}

/// The last step of [`ESCALATION`] (SIGKILL): all that is left for strays
/// once the leader has exited.
const KILL_STEP: usize = ESCALATION.len() - 1;

/// Where the signal escalation stands.
#[derive(Debug)]
struct Escalation {
    /// Index into [`ESCALATION`] of the next signal.
    step: usize,
    deadline: Instant,
}

/// The supervisor's view of a session.
struct Supervisor<'a, S> {
    opts: &'a BridgeOptions,
    cmd_tx: Poster<Command>,
    /// Set when the inbound direction has ended.
    inbound: Option<InEnd>,
    /// Set when the outbound direction has ended.
    outbound: Option<OutEnd>,
    /// The socket's write half, handed back when outbound ends.
    sink: Option<SplitSink<WebSocketStream<S>, Message>>,
    exited: bool,
    /// `wspipe ctl kill` asked for the session to end.
    killed: bool,
    shutting_down: bool,
    /// The close code we sent, once sent.
    close_sent: Option<u16>,
    /// How long we still wait for the client's close frame.
    close_deadline: Option<Instant>,
    escalation: Option<Escalation>,
    /// The last signal we sent the child's group, if any.
    signalled: Option<Signal>,
    /// What ended the session: the first reason given wins.
    cause: Option<&'static str>,
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

    async fn on_outbound(&mut self, end: OutEnd) {
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
            OutEnd::BadOutput(e) => {
                self.set_cause("child broke the framing");
                self.close_sent = Some(u16::from(CloseCode::Error));
                self.close_with(frame(CloseCode::Error, &e.to_string()))
                    .await;
                self.start_escalation();
            }
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
            // The leader is gone but stdout is still open (something it
            // spawned holds it), or its last output is still going out. Ask
            // the group to go; force it after the grace.
            child.kill_group(Signal::SIGTERM);
            self.escalation = Some(Escalation {
                step: KILL_STEP,
                deadline: Instant::now() + self.opts.close_grace,
            });
            if self.killed {
                self.stop_waiting_for_output();
            }
        }
    }

    /// After `wspipe ctl kill`, once the child is gone: what it wrote gets
    /// [`CLOSE_TIMEOUT`] to reach the client, then the session ends, read
    /// or not. (A client that stopped reading would otherwise hold the
    /// session, its zombie and its `--maxforks` slot until it went away.)
    fn stop_waiting_for_output(&mut self) {
        if self.outbound.is_none() {
            self.close_deadline
                .get_or_insert(Instant::now() + CLOSE_TIMEOUT);
        }
    }

    /// `wspipe ctl close` / `kill`.
    async fn on_control(&mut self, ctl: SessionCtl) {
        match ctl {
            SessionCtl::Close(frame) | SessionCtl::Drain(frame) => {
                self.close_by(frame, "closed by control").await
            }
            SessionCtl::Evicted(why) => {
                let (code, reason) = why.close();
                self.close_by(frame(CloseCode::from(code), reason), reason)
                    .await;
            }
            SessionCtl::Kill => {
                self.set_cause("killed by control");
                self.killed = true;
                if self.exited {
                    self.stop_waiting_for_output();
                } else {
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

    /// Closes the socket with `frame` on request, and ends the child.
    async fn close_by(&mut self, frame: CloseFrame, cause: &'static str) {
        if self.close_sent.is_some() || self.inbound.is_some() {
            return;
        }
        self.set_cause(cause);
        self.close_sent = Some(u16::from(frame.code));
        if self.outbound.is_none() {
            self.command(Command::Close(Some(frame))).await;
        } else {
            self.close_with(frame).await;
        }
        self.start_escalation();
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
        let exit = child.peek_exit().unwrap_or(Exit::Unknown);
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
            // Fails only once outbound has ended, which is then handled.
            let _ = self.cmd_tx.post(cmd);
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
        if self.exited && esc.step < KILL_STEP {
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
        self.cause.get_or_insert(cause);
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

/// A close frame, its reason cut to fit.
pub(crate) fn frame(code: CloseCode, reason: &str) -> CloseFrame {
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
    fn an_unknown_exit_is_not_a_normal_close() {
        assert_eq!(
            close_for_exit(Exit::Unknown, false),
            (CloseCode::Error, "exit status unknown".to_string())
        );
        // Not even when we signalled it: it may have died of something else.
        assert_eq!(close_for_exit(Exit::Unknown, true).0, CloseCode::Error);
    }

    #[test]
    fn close_reason_is_cut_to_fit() {
        let long = "é".repeat(100);
        let f = frame(CloseCode::Error, &long);
        assert!(f.reason.len() <= 123);
    }
}
