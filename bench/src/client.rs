//! The WebSocket client side: connecting, and the payloads the scenarios
//! send and check.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// Bound on one connect + handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `ws://127.0.0.1:PORT/` (TCP_NODELAY, like both servers).
pub async fn connect(port: u16, config: Option<WebSocketConfig>) -> anyhow::Result<Ws> {
    connect_path(port, "/", config).await
}

/// Connects to `ws://127.0.0.1:PORT{path}`.
pub async fn connect_path(
    port: u16,
    path: &str,
    config: Option<WebSocketConfig>,
) -> anyhow::Result<Ws> {
    let handshake = async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .context("tcp connect")?;
        tcp.set_nodelay(true)?;
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, config)
            .await
            .context("websocket handshake")?;
        anyhow::Ok(ws)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .context("connect timed out")?
}

/// A small-footprint configuration for scenarios with many connections.
pub fn small_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Length of the text messages of the echo scenarios.
pub const LINE_LEN: usize = 64;

/// The text message number `seq`: 64 bytes, the number first.
pub fn line(seq: u64) -> String {
    const PAD: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    let mut s = format!("{seq:020}:");
    s.push_str(&PAD[..LINE_LEN - s.len()]);
    s
}

/// The byte pattern of the binary scenario: byte at stream offset `o` is
/// `o % 251` (a prime, so it never lines up with message sizes).
pub struct Pattern {
    buf: Vec<u8>,
}

const PERIOD: usize = 251;

/// Longest slice [`Pattern::at`] returns.
pub const PATTERN_MAX: usize = 64 * 1024;

impl Pattern {
    pub fn new() -> Pattern {
        let buf = (0..PERIOD + PATTERN_MAX)
            .map(|i| (i % PERIOD) as u8)
            .collect();
        Pattern { buf }
    }

    /// The `len` bytes (at most [`PATTERN_MAX`]) starting at stream offset
    /// `offset`.
    pub fn at(&self, offset: u64, len: usize) -> &[u8] {
        let start = (offset % PERIOD as u64) as usize;
        &self.buf[start..start + len]
    }

    /// Checks `data` against the pattern at `offset`; the index of the first
    /// wrong byte, if any.
    pub fn check(&self, offset: u64, data: &[u8]) -> Option<u64> {
        let mut pos = 0;
        for piece in data.chunks(PATTERN_MAX) {
            let want = self.at(offset + pos as u64, piece.len());
            if piece != want {
                let i = piece.iter().zip(want).position(|(a, b)| a != b)?;
                return Some(offset + (pos + i) as u64);
            }
            pos += piece.len();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_64_bytes_and_distinct() {
        assert_eq!(line(0).len(), LINE_LEN);
        assert_eq!(line(u64::MAX).len(), LINE_LEN);
        assert_ne!(line(1), line(2));
    }

    #[test]
    fn pattern_checks_across_chunkings() {
        let p = Pattern::new();
        let mut stream = Vec::new();
        for k in 0..5u64 {
            stream.extend_from_slice(p.at(k * 65536, 65536));
        }
        // Any re-chunking of the stream checks out.
        let mut off = 0u64;
        for piece in stream.chunks(10_000) {
            assert_eq!(p.check(off, piece), None);
            off += piece.len() as u64;
        }
        assert_eq!(p.check(0, &stream), None);
        stream[70_000] ^= 1;
        assert_eq!(p.check(0, &stream), Some(70_000));
    }
}
