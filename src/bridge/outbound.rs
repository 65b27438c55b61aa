//! Child stdout (and stderr with `--passstderr`) -> socket.
//!
//! Owns the socket's write half. Reads the child only when every message it
//! gave before has been accepted by the socket's bounded write buffer: a
//! client that stops reading stops us reading the pipe, and the child blocks
//! on its write. Messages are fed back to back and flushed once nothing is
//! pending, so a burst becomes few system calls and a lone line goes out at
//! once. Pings, injected messages (`wspipe ctl send`) and close requests
//! join here, between whole lines.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{BridgeOptions, CLOSE_TIMEOUT};
use crate::config::Mode;
use crate::control::registry::SessionStats;
use crate::frames::{FrameError, FrameSplitter, Kind};
use crate::lines::{to_text, LineSplitter, READ_CHUNK};
use crate::mailbox::Mailbox;

/// Largest read from a child's stdout in binary mode (one binary message).
const BINARY_CHUNK: usize = 64 * 1024;

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
    /// stderr, when it is forwarded (`--passstderr`).
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
                    .or_else(|| {
                        err.as_mut()
                            .and_then(|(_, lines)| stderr_message(lines, id))
                    })
            };
        }
        if let Some(e) = out.broken {
            return (sink, OutEnd::BadOutput(e));
        }
        if pending.is_none() && !unflushed && out.eof {
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
            // Only a wake-up: the top of the loop takes the message, after
            // reading what the child wrote before it came.
            () = inject.ready(), if reading => {}
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
        // Nothing is taken anywhere else, so this cannot happen; if it
        // did, the next message must be looked for afresh.
        *cleared = 0;
        return None;
    };
    *cleared -= 1;
    Some(message)
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
    ended(pipe.try_read_buf(buf))
}

/// True when a read says the pipe is done: end of file or a real error
/// (not "nothing yet", not an interrupted call).
fn ended(read: std::io::Result<usize>) -> bool {
    match read {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        ),
    }
}

/// Like [`read_into`], but asks the kernel even when tokio has not yet
/// seen the pipe become readable. tokio's `try_read` answers `WouldBlock`
/// without a system call until a reactor turn reports readiness, so bytes
/// the child wrote a moment ago can look absent. Reading behind tokio's back
/// is sound: a pipe this drains is reported readable later only if new
/// bytes arrive, and a stale readiness costs one empty read.
fn read_through(pipe: &pipe::Receiver, buf: &mut BytesMut) -> bool {
    use bytes::BufMut;
    use std::os::fd::AsRawFd;
    let dst = buf.chunk_mut();
    // SAFETY: read(2) writes at most `dst.len()` bytes into `dst`, which is
    // spare capacity of `buf`; the fd stays open while `pipe` is borrowed.
    let n = unsafe { libc::read(pipe.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len()) };
    let read = usize::try_from(n).map_err(|_| std::io::Error::last_os_error());
    if let Ok(n) = read {
        // SAFETY: the kernel initialised the first `n` bytes of `dst`.
        unsafe { buf.advance_mut(n) };
    }
    ended(read)
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
pub(super) async fn log_stderr(pipe: Option<pipe::Receiver>, id: &str, max_line: usize) {
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
    framing: Framing,
    eof: bool,
    /// Set when framed output turned out malformed.
    broken: Option<FrameError>,
}

/// The decoder for each mode.
enum Framing {
    /// One text message per line.
    Lines(LineSplitter),
    /// Bytes read and not yet sent, one binary message per read.
    Raw(BytesMut),
    /// Header-delimited messages (`--framed`).
    Frames(FrameSplitter),
}

impl ChildOutput {
    fn new(pipe: pipe::Receiver, opts: &BridgeOptions) -> Self {
        let framing = match opts.mode {
            Mode::Text => Framing::Lines(LineSplitter::new(opts.max_line)),
            Mode::Binary => Framing::Raw(BytesMut::new()),
            Mode::Framed => Framing::Frames(FrameSplitter::new(opts.max_line)),
        };
        ChildOutput {
            pipe,
            framing,
            eof: false,
            broken: None,
        }
    }

    /// Reads what the pipe holds right now, if it is still open (never
    /// waits), even before the reactor has reported it readable: an
    /// injected message must not overtake a line the child wrote before it.
    fn read_now(&mut self) {
        if !self.eof {
            self.read_with(read_through);
        }
    }

    /// Reads what the pipe has now (called once it is readable).
    fn read(&mut self) {
        self.read_with(read_into);
    }

    fn read_with(&mut self, reader: fn(&pipe::Receiver, &mut BytesMut) -> bool) {
        let buf = match &mut self.framing {
            Framing::Lines(lines) => lines.read_buf(),
            Framing::Raw(chunk) => {
                chunk.reserve(READ_CHUNK.max(BINARY_CHUNK));
                chunk
            }
            Framing::Frames(frames) => frames.read_buf(),
        };
        self.eof = reader(&self.pipe, buf);
        // A wake-up that found nothing (readiness is only cleared by a read
        // that would block) must not leave a reserved buffer behind: idle
        // connections should hold none.
        match &mut self.framing {
            Framing::Lines(lines) => lines.release_if_idle(),
            Framing::Raw(chunk) if chunk.is_empty() => *chunk = BytesMut::new(),
            Framing::Raw(_) => {}
            Framing::Frames(frames) => frames.release_if_idle(),
        }
    }

    /// The next message ready to send, if any.
    fn next_message(&mut self) -> Option<Message> {
        match &mut self.framing {
            Framing::Lines(lines) => {
                let line = if self.eof {
                    lines.finish()
                } else {
                    lines.next_line()
                };
                line.map(|l| Message::Text(to_text(l)))
            }
            Framing::Raw(chunk) if !chunk.is_empty() => {
                let data = chunk.split().freeze();
                Some(Message::Binary(data))
            }
            Framing::Raw(_) => None,
            Framing::Frames(frames) => {
                let next = frames.next_frame().and_then(|frame| match frame {
                    None if self.eof => frames.finish().map(|()| None),
                    other => Ok(other),
                });
                match next {
                    Ok(Some((Kind::Text, payload))) => Some(Message::Text(to_text(payload))),
                    Ok(Some((Kind::Binary, payload))) => Some(Message::Binary(payload)),
                    Ok(None) => None,
                    Err(e) => {
                        self.broken = Some(e);
                        None
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// A pipe whose read end tokio owns and whose write end we hold.
    fn child_pipe(mode: Mode) -> (ChildOutput, std::fs::File) {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        let receiver = pipe::Receiver::from_owned_fd(read).expect("receiver");
        (ChildOutput::new(receiver, &options(mode)), write.into())
    }

    // The current-thread runtime does not turn the reactor until the test
    // yields, so tokio has not seen these bytes arrive: exactly the moment
    // an injected message comes in right after the child wrote a line.
    #[tokio::test(flavor = "current_thread")]
    async fn read_now_sees_what_the_child_wrote_before_the_reactor_does() {
        for mode in [Mode::Text, Mode::Binary] {
            let (mut out, mut child) = child_pipe(mode);
            child.write_all(b"written first\n").expect("write");
            out.read_now();
            let message = out.next_message().expect("the line, before anything else");
            let expected: &[u8] = match mode {
                Mode::Text => b"written first",
                _ => b"written first\n",
            };
            assert_eq!(message.into_data().as_ref(), expected, "{mode:?}");
            drop(child);
            out.read_now();
            assert!(out.eof, "{mode:?}: end of file seen");
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

    #[tokio::test(flavor = "current_thread")]
    async fn read_now_on_an_empty_pipe_finds_nothing_and_waits_for_more() {
        let (mut out, mut child) = child_pipe(Mode::Text);
        out.read_now();
        assert!(out.next_message().is_none());
        assert!(!out.eof);
        child.write_all(b"later\n").expect("write");
        // The readiness path still works after a read behind tokio's back.
        out.pipe.readable().await.expect("readable");
        out.read();
        assert_eq!(
            out.next_message().expect("line").into_data().as_ref(),
            b"later"
        );
    }
}
