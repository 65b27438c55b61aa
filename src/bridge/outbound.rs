//! Child stdout (and stderr with `--passstderr`, both tagged) -> socket.
//!
//! Owns the socket's write half. Reads the child only when every message it
//! gave before has been accepted by the socket's bounded write buffer: a
//! client that stops reading stops us reading the pipe, and the child blocks
//! on its write. Messages are fed back to back and flushed once nothing is
//! pending, so a burst becomes few system calls and a lone line goes out at
//! once. Pings, injected messages (`wspipe ctl send`) and close requests
//! join here, between whole lines.

use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::child_output::ChildOutput;
use super::sending::{feed_or_flush, MissedPong, Pinger};
use super::tagged::{tagged, Stream};
use super::{BridgeOptions, CLOSE_TIMEOUT};
use crate::frames::FrameError;
use crate::lines::LineSplitter;
use crate::mailbox::Mailbox;
use crate::pipes::{read_into, readable};
use crate::session::stderr::log_line;
use crate::session::SessionStats;

/// Requests from the supervisor to the outbound direction, which owns the
/// socket's write half.
#[derive(Debug)]
pub(super) enum Command {
    /// Send this close frame (or flush the reply to the client's close).
    Close(Option<CloseFrame>),
    /// Stop at once: the peer is gone.
    Abort,
}

/// Why the outbound direction stopped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum OutEnd {
    /// The child closed stdout and every line went out.
    Eof,
    /// Writing failed or was aborted: the peer is gone.
    Gone,
    /// A close frame was sent on request.
    Closed,
    /// The client missed a pong.
    PingTimeout,
    /// The child's framed output was malformed.
    BadOutput(FrameError),
}

/// Everything the outbound direction sends from.
pub(super) struct Sources {
    pub stdout: pipe::Receiver,
    /// stderr, when it is forwarded (`--passstderr`): then every line of
    /// both streams goes out tagged with its stream's name.
    pub stderr: Option<pipe::Receiver>,
    /// Messages from `wspipe ctl send/broadcast`.
    pub inject: Mailbox<Message>,
    pub commands: Mailbox<Command>,
}

/// Child stdout (and stderr with `--passstderr`) -> socket. Owns the write
/// half of the socket and hands it back when done.
pub(super) async fn outbound<S>(
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
    // config.rs allows --passstderr in text mode only, as websocketd does.
    let mut out = match stderr {
        Some(_) => ChildOutput::tagged(stdout, opts.max_line),
        None => ChildOutput::new(stdout, opts.mode, opts.max_line),
    };
    let mut err = stderr.map(|pipe| StderrLines {
        pipe,
        lines: LineSplitter::new(opts.max_line),
        eof: false,
    });
    let mut pinger = Pinger::new(opts.ping);
    let mut ping_due = false;
    let mut pending: Option<Message> = None;
    let mut unflushed = false;
    // Injected messages that were queued when a look at the pipe found no
    // complete line: they may go without another look.
    let mut cleared = 0;

    loop {
        if pending.is_none() {
            // Injected messages go between whole lines, never inside one,
            // and after whatever the child had written before they came.
            pending = if std::mem::take(&mut ping_due) {
                Some(Message::Ping(Bytes::new()))
            } else {
                out.next_message()
                    .or_else(|| next_injected(&mut out, &mut inject, &mut cleared))
                    .or_else(|| stderr_message(&mut err, id))
            };
        }
        if let Some(e) = out.broken {
            return (sink, OutEnd::BadOutput(e));
        }
        // A forwarded stderr is drained to its end too: a child's last
        // words on stderr, written just before it exits, must not be lost
        // because stdout happened to close first.
        if pending.is_none() && !unflushed && out.eof && err.is_none() {
            return (sink, OutEnd::Eof);
        }
        let reading = pending.is_none() && !unflushed;
        tokio::select! {
            biased;
            cmd = commands.recv() => {
                return match cmd {
                    Command::Close(frame) => {
                        let close = async {
                            match frame {
                                Some(frame) => sink.send(Message::Close(Some(frame))).await,
                                None => sink.close().await,
                            }
                        };
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
                        (sink, OutEnd::Closed)
                    }
                    Command::Abort => (sink, OutEnd::Gone),
                };
            }
            due = pinger.tick(pong) => match due {
                Ok(()) => ping_due = true,
                Err(MissedPong) => return (sink, OutEnd::PingTimeout),
            },
            // Feed the pending message once the sink has room, or flush
            // once nothing is pending: one branch, as both need the sink.
            sent = feed_or_flush(&mut sink, &mut pending, stats), if !reading => match sent {
                Ok(fed) => unflushed = fed,
                Err(_) => return (sink, OutEnd::Gone),
            },
            // Only a wake-up: the top of the loop takes the message, after
            // reading what the child wrote before it came.
            () = inject.ready(), if reading => {}
            _ = out.pipe.readable(), if reading && !out.eof => out.read(),
            _ = readable(err.as_ref().filter(|e| !e.eof).map(|e| &e.pipe)), if reading => {
                if let Some(e) = err.as_mut() {
                    e.eof = read_into(&e.pipe, e.lines.read_buf());
                    e.lines.release_if_idle();
                }
            }
        }
    }
}

/// The next injected message, once the child's output written before it
/// came has gone out: looks at the pipe (a system call) once per batch of
/// queued messages rather than once per message, which matters when
/// broadcasts are pipelined.
fn next_injected(
    out: &mut ChildOutput,
    inject: &mut Mailbox<Message>,
    cleared: &mut usize,
) -> Option<Message> {
    if *cleared == 0 {
        // Counted before the look: every message counted was posted before
        // it, so whatever the child wrote earlier is read by it.
        let queued = inject.len();
        if queued == 0 {
            return None;
        }
        out.read_now();
        if let Some(line) = out.next_message() {
            return Some(line);
        }
        *cleared = queued;
    }
    let Some(message) = inject.try_recv() else {
        // A channel publish to a full queue drops the oldest messages, so
        // fewer may be left than were counted: look afresh.
        *cleared = 0;
        return None;
    };
    *cleared -= 1;
    Some(message)
}

/// The child's stderr while it is forwarded (`--passstderr`).
struct StderrLines {
    pipe: pipe::Receiver,
    lines: LineSplitter,
    /// The pipe has ended; what is left in `lines` still goes out.
    eof: bool,
}

/// The next stderr line, tagged for the client and logged as well (the log
/// keeps stderr either way, as websocketd's does). Once the pipe has ended
/// and its last line is out, stderr is done (`None` in `err`).
fn stderr_message(err: &mut Option<StderrLines>, id: &str) -> Option<Message> {
    let e = err.as_mut()?;
    let Some(line) = e.lines.next_line_or_last(e.eof) else {
        if e.eof {
            *err = None;
        }
        return None;
    };
    log_line(id, &line);
    Some(tagged(Stream::Stderr, &line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use std::io::Write;
    use std::time::Duration;

    fn options(mode: Mode) -> BridgeOptions {
        BridgeOptions {
            mode,
            max_line: 1 << 20,
            close_grace: Duration::from_millis(100),
            ping: None,
            pass_stderr: false,
        }
    }

    /// Runs the outbound direction over an in-memory socket; returns the
    /// client's end, the child's stdout and the injection poster.
    async fn outbound_session() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        std::fs::File,
        crate::mailbox::Poster<Message>,
    ) {
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let (read, write) = nix::unistd::pipe().expect("pipe");
        let stdout = pipe::Receiver::from_owned_fd(read).expect("receiver");
        let (inject_tx, inject) = crate::mailbox::mailbox(4);
        // No supervisor: nobody posts commands.
        let (_, commands) = crate::mailbox::mailbox(4);
        let (sink, _stream) = futures_util::StreamExt::split(server);
        tokio::spawn(async move {
            let opts = options(Mode::Text);
            let (pong, stats) = (AtomicBool::new(false), SessionStats::default());
            let sources = Sources {
                stdout,
                stderr: None,
                inject,
                commands,
            };
            outbound(sink, sources, &opts, &pong, &stats, "test").await
        });
        (client, write.into(), inject_tx)
    }

    // The outbound task waits in its select when the child writes a line
    // and, at once, a broadcast comes: the line was first and goes first,
    // although the mailbox wakes the task before the reactor sees the pipe.
    #[tokio::test(flavor = "current_thread")]
    async fn a_message_injected_after_a_line_goes_after_it() {
        use futures_util::StreamExt;
        let (mut client, mut child, inject) = outbound_session().await;
        for round in 0..3 {
            // Let the task settle in its select, waiting for either.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            child
                .write_all(format!("line {round}\n").as_bytes())
                .expect("write");
            inject
                .post(Message::text(format!("injected {round}")))
                .expect("post");
            let first = client.next().await.expect("message").expect("ok");
            let second = client.next().await.expect("message").expect("ok");
            assert_eq!(
                first.into_text().expect("text").as_str(),
                format!("line {round}")
            );
            assert_eq!(
                second.into_text().expect("text").as_str(),
                format!("injected {round}")
            );
        }
    }
}
