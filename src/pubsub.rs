//! A session with no child process of its own: a channel endpoint
//! (`--pubsub`), or a client of a shared child (`--shared`).
//!
//! The client is a member of the channel of its URL path (made so by the
//! upgrade, like every session). What it sends goes to its [`Inbox`]: with
//! `--pubsub`, published to that channel, the sender included (a chat room
//! in which everyone, the author too, sees every line in the one order the
//! hub gave them); for a shared child, onto the child's stdin. What members
//! are sent comes from the session's queue (publishes, `ctl send`), fed to
//! the socket as it takes them; a client that reads slowly loses the
//! oldest of its queued publishes (see [`crate::hub`]), never holding up
//! the others. With `--pubsub-readonly` a client message closes the
//! connection with 1008 (policy violation).
//!
//! Pings (`--pingms`), `ctl close` / `ctl kill` and server shutdown end a
//! session as they end any other; [`SessionCtl::Drain`] ends it once what
//! is queued has gone out.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::bridge::{feed_or_flush, frame, step, InEnd, MissedPong, Pinger, Step, CLOSE_TIMEOUT};
use crate::bus::Bus;
use crate::config::Mode;
use crate::frames::Kind;
use crate::hub::ChannelName;
use crate::mailbox::Mailbox;
use crate::session::{Links, SessionCtl};
use crate::shutdown::Shutdown;

/// Where a session's client messages go. A trait, so that this loop
/// serves `--pubsub` ([`Publish`]) and shared children (`crate::shared`,
/// a layer above) alike.
pub trait Inbox: Sync {
    /// Takes one client message; never waits (a destination that cannot
    /// take it now drops it, and counts that).
    fn take(&self, kind: Kind, data: Bytes);
}

/// `--pubsub`: client messages are published to a channel.
#[derive(Debug)]
pub struct Publish<'a> {
    pub bus: &'a Bus,
    /// `None` when the URL path names no channel (then client messages go
    /// nowhere).
    pub channel: Option<ChannelName>,
}

impl Inbox for Publish<'_> {
    fn take(&self, kind: Kind, data: Bytes) {
        if let Some(channel) = &self.channel {
            self.bus.publish(channel, message(kind, data));
        }
    }
}

/// What a channel session needs to know.
pub struct Options<'a> {
    /// Text or binary: how client messages may come and publishes go out.
    pub mode: Mode,
    pub ping: Option<Duration>,
    /// Clients may not send.
    pub read_only: bool,
    /// Where client messages go.
    pub inbox: &'a dyn Inbox,
    pub shutdown: &'a Shutdown,
}

/// A [`SessionCtl::Drain`] in progress: the close to send once the
/// messages queued when it came have gone out (or its deadline passed).
struct Drain {
    frame: CloseFrame,
    /// Queued messages still to send before the close.
    left: usize,
    /// A client that does not read gets its close anyway, this late.
    deadline: Instant,
}

impl Drain {
    fn new(frame: CloseFrame, queued: usize) -> Self {
        Drain {
            frame,
            left: queued,
            deadline: Instant::now() + CLOSE_TIMEOUT,
        }
    }

    /// True once nothing queued before it is left (publishes to a full
    /// queue may have evicted some: an empty queue is done too).
    fn done(&self, inject: &Mailbox<Message>) -> bool {
        self.left == 0 || inject.is_empty()
    }
}

/// Cause of a close after [`SessionCtl::Drain`], for the access log.
const DRAINED: &str = "shared child exited";

/// How a channel session ended, for the access log.
#[derive(Debug, Clone, Copy)]
pub struct End {
    /// The close code we sent, or else the one the client sent.
    pub close_code: Option<u16>,
    pub cause: &'static str,
}

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// Runs a channel session until its client goes or it is closed.
pub async fn run<S>(ws: WebSocketStream<S>, opts: Options<'_>, links: Links) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Links {
        mut inject,
        mut control,
        stats,
    } = links;
    let (mut sink, mut stream) = ws.split();
    let pong = AtomicBool::new(false);
    let mut pinger = Pinger::new(opts.ping);
    let mut ping_due = false;
    let mut pending: Option<Message> = None;
    let mut unflushed = false;
    let mut draining: Option<Drain> = None;
    loop {
        if pending.is_none() {
            // A ping goes ahead of queued messages (it is tiny and time-bound)
            // but, like them, only once the socket has room: a client that
            // stopped reading never blocks this loop.
            pending = if std::mem::take(&mut ping_due) {
                Some(Message::Ping(Bytes::new()))
            } else {
                next_queued(&mut inject, draining.as_mut())
            };
        }
        if let Some(drain) =
            draining.take_if(|d| pending.is_none() && !unflushed && d.done(&inject))
        {
            return close(sink, stream, drain.frame, DRAINED).await;
        }
        let idle = pending.is_none() && !unflushed;
        let drain_deadline = draining.as_ref().map(|d| d.deadline);
        tokio::select! {
            biased;
            ctl = control.recv() => {
                let (frame, cause) = match ctl {
                    SessionCtl::Drain(frame) => {
                        // Queued messages first; the loop closes after them.
                        draining.get_or_insert_with(|| Drain::new(frame, inject.len()));
                        continue;
                    }
                    SessionCtl::Close(frame) => (frame, "closed by control"),
                    SessionCtl::Kill => (frame(CloseCode::Normal, ""), "killed by control"),
                    SessionCtl::Evicted(why) => {
                        let (code, reason) = why.close();
                        (frame(CloseCode::from(code), reason), reason)
                    }
                };
                return close(sink, stream, frame, cause).await;
            }
            () = sleep_until(drain_deadline), if drain_deadline.is_some() => {
                if let Some(drain) = draining.take() {
                    return close(sink, stream, drain.frame, DRAINED).await;
                }
            }
            () = opts.shutdown.cancelled() => {
                let away = frame(CloseCode::Away, "server shutting down");
                return close(sink, stream, away, "server shutting down").await;
            }
            due = pinger.tick(&pong) => match due {
                Ok(()) => ping_due = true,
                Err(MissedPong) => return End { close_code: None, cause: "client missed a pong" },
            },
            item = stream.next() => match step(item, opts.mode, &pong) {
                Step::Skip => {}
                Step::Data(..) if opts.read_only => {
                    let refused = frame(CloseCode::Policy, "this endpoint is read-only");
                    return close(sink, stream, refused, "client wrote to a read-only endpoint").await;
                }
                Step::Data(kind, data) => {
                    stats.count_in(data.len());
                    opts.inbox.take(kind, data);
                }
                Step::End(InEnd::ClientClosed(code)) => {
                    // tungstenite has queued the reply: have it flushed.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
                    return End { close_code: code, cause: "client closed" };
                }
                Step::End(InEnd::Gone) => return gone(),
                Step::End(InEnd::Violation(code, reason)) => {
                    return close(sink, stream, frame(code, reason), reason).await;
                }
            },
            // Feed the pending message once the sink has room, or flush
            // once nothing is pending.
            sent = feed_or_flush(&mut sink, &mut pending, &stats), if !idle => match sent {
                Ok(fed) => unflushed = fed,
                Err(_) => return gone(),
            },
            () = inject.ready(), if idle => {}
        }
    }
}

/// The next queued message, counting it against a drain in progress.
fn next_queued(inject: &mut Mailbox<Message>, draining: Option<&mut Drain>) -> Option<Message> {
    match draining {
        // Nothing after what the drain waits for: the close comes next.
        Some(d) if d.left == 0 => None,
        Some(d) => {
            let message = inject.try_recv();
            d.left -= usize::from(message.is_some());
            message
        }
        None => inject.try_recv(),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// A client message as the channel passes it on: its type is kept.
fn message(kind: Kind, data: Bytes) -> Message {
    match kind {
        // The bytes came from a text frame, which tungstenite checked:
        // the conversion back costs no copy and cannot fail.
        Kind::Text => match Utf8Bytes::try_from(data.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(data),
        },
        Kind::Binary => Message::Binary(data),
    }
}

fn gone() -> End {
    End {
        close_code: None,
        cause: "client disconnected",
    }
}

/// Sends `frame` and waits (bounded) for the client's answer.
async fn close<S>(
    mut sink: Sink<S>,
    mut stream: SplitStream<WebSocketStream<S>>,
    frame: CloseFrame,
    cause: &'static str,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let code = u16::from(frame.code);
    let sent = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame))));
    if matches!(sent.await, Ok(Ok(()))) {
        let answer = async {
            while let Some(Ok(msg)) = stream.next().await {
                if msg.is_close() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, answer).await;
    }
    End {
        close_code: Some(code),
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{links, Identity, Kind as SessionKind};
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// Takes nothing: client messages are not this test's business.
    struct Nowhere;

    impl Inbox for Nowhere {
        fn take(&self, _kind: Kind, _data: Bytes) {}
    }

    // A drain sends what was queued when it came, then the close, however
    // the two mailboxes wake the loop.
    #[tokio::test]
    async fn a_drain_sends_what_is_queued_then_closes() {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let identity = Identity {
            id: 1,
            remote: "test".into(),
            path: "/".into(),
            pid: None,
            kind: SessionKind::Shared,
        };
        let (links, handle) = links(identity);
        for line in ["one", "two", "three"] {
            handle.inject.post(Message::text(line)).expect("queued");
        }
        let bye = frame(CloseCode::Error, "exit status 3");
        handle.control.post(SessionCtl::Drain(bye)).expect("asked");
        let session = tokio::spawn(async move {
            let shutdown = Shutdown::new();
            let opts = Options {
                mode: Mode::Text,
                ping: None,
                read_only: false,
                inbox: &Nowhere,
                shutdown: &shutdown,
            };
            run(server, opts, links).await
        });
        let mut got = Vec::new();
        while let Some(Ok(message)) = client.next().await {
            match message {
                Message::Text(text) => got.push(text.to_string()),
                Message::Close(frame) => {
                    let frame = frame.expect("a close frame");
                    got.push(format!("close {} {}", u16::from(frame.code), frame.reason));
                }
                _ => {}
            }
        }
        assert_eq!(got, ["one", "two", "three", "close 1011 exit status 3"]);
        let end = session.await.expect("session ends");
        assert_eq!((end.close_code, end.cause), (Some(1011), DRAINED));
    }
}
