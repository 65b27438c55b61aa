//! Socket -> child stdin.
//!
//! Reads a message (and whatever others have already arrived), writes them
//! to the child, and only then reads on: a child that stops reading stops us
//! reading the socket, and TCP flow control slows the client. While stuck
//! like that the socket is probed now and then, so a client that went away
//! is still noticed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::SplitStream;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::config::Mode;
use crate::frames::{self, Kind};
use crate::peer::PeerSocket;
use crate::session::SessionStats;

/// How often a connection whose child is not reading stdin checks whether
/// its client is still there.
const STALL_PROBE: Duration = Duration::from_secs(1);

/// Why the inbound direction stopped.
#[derive(Debug)]
pub(crate) enum InEnd {
    /// The client sent a close frame (its code, if any).
    ClientClosed(Option<u16>),
    /// The connection dropped without a close frame.
    Gone,
    /// The client broke a rule; we close with this code.
    Violation(CloseCode, &'static str),
}

/// Small messages that are already waiting are gathered into one write to
/// the child, up to this many bytes: under load the child is handed a burst
/// in one system call instead of one per message.
const BATCH: usize = 16 * 1024;

/// A message at least this big is written from its own buffer, not copied.
const DIRECT: usize = 4096;

/// What one item from the socket means for the pump.
pub(crate) enum Step {
    Data(Kind, Bytes),
    Skip,
    End(InEnd),
}

pub(crate) fn step(item: Option<Result<Message, WsError>>, mode: Mode, pong: &AtomicBool) -> Step {
    let msg = match item {
        None => return Step::End(InEnd::Gone),
        Some(Err(e)) => return Step::End(classify(e)),
        Some(Ok(msg)) => msg,
    };
    match msg {
        Message::Text(text) => Step::Data(Kind::Text, text.into()),
        Message::Binary(_) if mode == Mode::Text => Step::End(InEnd::Violation(
            CloseCode::Unsupported,
            "binary messages are not accepted in text mode",
        )),
        Message::Binary(data) => Step::Data(Kind::Binary, data),
        Message::Pong(_) => {
            pong.store(true, Ordering::Relaxed);
            Step::Skip
        }
        Message::Close(frame) => Step::End(InEnd::ClientClosed(frame.map(|f| u16::from(f.code)))),
        Message::Ping(_) | Message::Frame(_) => Step::Skip,
    }
}

/// Socket -> child stdin. Owns stdin: returning closes it.
pub(super) async fn inbound<S>(
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
    let mut batch: Vec<u8> = Vec::new();
    loop {
        // Wait for one message, then take whatever else has already arrived
        // (polling without waiting), up to the batch size or the end.
        let mut end = None;
        let mut item = Some(stream.next().await);
        while let Some(next) = item.take() {
            match step(next, mode, pong) {
                Step::Skip => {}
                Step::End(e) => {
                    end = Some(e);
                    break;
                }
                Step::Data(kind, data) => {
                    stats.count_in(data.len());
                    let Some(pipe) = stdin.as_mut() else {
                        continue; // the child closed its stdin: nobody to give it to
                    };
                    let header;
                    let (before, after): (&[u8], &[u8]) = match mode {
                        Mode::Text => (b"", b"\n"),
                        Mode::Binary => (b"", b""),
                        Mode::Framed => {
                            header = frames::header(kind, data.len());
                            (&header, b"")
                        }
                    };
                    if data.len() >= DIRECT {
                        let parts = [batch.as_slice(), before, &data, after];
                        match deliver(pipe, &parts, socket.as_ref()).await {
                            Ok(written) => stdin = checked(stdin.take(), written),
                            Err(gone) => return gone,
                        }
                        batch.clear();
                    } else {
                        batch.extend_from_slice(before);
                        batch.extend_from_slice(&data);
                        batch.extend_from_slice(after);
                    }
                }
            }
            if batch.len() < BATCH {
                item = stream.next().now_or_never();
            }
        }
        if let Some(pipe) = stdin.as_mut().filter(|_| !batch.is_empty()) {
            match deliver(pipe, &[batch.as_slice()], socket.as_ref()).await {
                Ok(written) => stdin = checked(stdin.take(), written),
                Err(gone) => return gone,
            }
        }
        batch.clear();
        if batch.capacity() > DIRECT {
            // Keep idle connections small after a burst.
            batch = Vec::new();
        }
        if let Some(end) = end {
            return end;
        }
    }
}

/// stdin stays usable unless the write failed (the child closed it or exited).
fn checked(stdin: Option<pipe::Sender>, written: std::io::Result<()>) -> Option<pipe::Sender> {
    match written {
        Ok(()) => stdin,
        Err(e) => {
            tracing::debug!(error = %e, "child stopped reading stdin");
            None
        }
    }
}

/// Writes `parts` to the child in order. While the child is not reading,
/// the socket is not read either, so a client that vanished would go
/// unnoticed: meanwhile the kernel is asked now and then whether the peer is
/// still there, and `Err(Gone)` returned if it is not.
async fn deliver(
    pipe: &mut pipe::Sender,
    parts: &[&[u8]],
    socket: Option<&PeerSocket>,
) -> Result<std::io::Result<()>, InEnd> {
    let write = async {
        for part in parts.iter().filter(|p| !p.is_empty()) {
            pipe.write_all(part).await?;
        }
        Ok(())
    };
    tokio::pin!(write);
    loop {
        tokio::select! {
            r = &mut write => return Ok(r),
            () = tokio::time::sleep(STALL_PROBE), if socket.is_some() => {
                if socket.is_some_and(|s| s.peer_closed()) {
                    return Err(InEnd::Gone);
                }
            }
        }
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
