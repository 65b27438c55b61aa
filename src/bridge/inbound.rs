//! Socket -> child stdin.
//!
//! Reads one message, writes it to the child, and only then reads the next:
//! a child that stops reading stops us reading the socket, and TCP flow
//! control slows the client. While stuck like that the socket is probed now
//! and then, so a client that went away is still noticed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::config::Mode;
use crate::control::registry::SessionStats;
use crate::frames::{self, Kind};
use crate::server::PeerSocket;

/// How often a connection whose child is not reading stdin checks whether
/// its client is still there.
const STALL_PROBE: Duration = Duration::from_secs(1);

/// Why the inbound direction stopped.
#[derive(Debug)]
pub(super) enum InEnd {
    /// The client sent a close frame (its code, if any).
    ClientClosed(Option<u16>),
    /// The connection dropped without a close frame.
    Gone,
    /// The client broke a rule; we close with this code.
    Violation(CloseCode, &'static str),
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
    let mut scratch = Vec::new();
    loop {
        let msg = match stream.next().await {
            None => return InEnd::Gone,
            Some(Err(e)) => return classify(e),
            Some(Ok(msg)) => msg,
        };
        let (kind, data): (Kind, Bytes) = match msg {
            Message::Text(text) => (Kind::Text, text.into()),
            Message::Binary(_) if mode == Mode::Text => {
                return InEnd::Violation(
                    CloseCode::Unsupported,
                    "binary messages are not accepted in text mode",
                )
            }
            Message::Binary(data) => (Kind::Binary, data),
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
        // What goes around the payload on the pipe, by mode.
        let header;
        let (before, after): (&[u8], &[u8]) = match mode {
            Mode::Text => (b"", b"\n"),
            Mode::Binary => (b"", b""),
            Mode::Framed => {
                header = frames::header(kind, data.len());
                (&header, b"")
            }
        };
        // While the child is not reading, the socket is not read either, so
        // a client that vanished would go unnoticed: ask the kernel now and
        // then whether the peer is still there.
        let written = {
            let write = write_message(pipe, [before, &data, after], &mut scratch);
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

/// Writes one message with what the mode puts around it (`\n` after it in
/// text mode, a header before it in framed mode) in as few writes as
/// possible, reusing `scratch` for small messages.
async fn write_message(
    pipe: &mut pipe::Sender,
    parts: [&[u8]; 3],
    scratch: &mut Vec<u8>,
) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len < 4096 {
        scratch.clear();
        parts.iter().for_each(|p| scratch.extend_from_slice(p));
        return pipe.write_all(scratch).await;
    }
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        pipe.write_all(part).await?;
    }
    Ok(())
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
