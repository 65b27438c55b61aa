//! One control connection: `wspipe ctl` (or any program speaking the
//! protocol) sends requests, one per line, and gets the answers in order.
//!
//! Bounded on every axis a client controls: request size
//! ([`MAX_REQUEST`]), concurrent control connections, and requests per
//! second on one connection. A bad request gets an error reply, never a crash.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::commands::dispatch;
use super::protocol::{parse_request, ErrorKind, Request, Response, MAX_REQUEST};
use super::Control;

/// Control connections served at once; more wait in the accept queue.
pub const MAX_CLIENTS: usize = 64;

/// Requests per second one connection may make before being slowed.
const MAX_RATE: u32 = 2000;

/// Serves one control connection until it closes or the server shuts
/// down (a request in progress is answered first).
pub async fn serve(stream: UnixStream, control: Control) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    let mut window = Instant::now();
    let mut in_window = 0u32;
    loop {
        let line = tokio::select! {
            _ = control.shutdown.cancelled() => return,
            line = read_request(&mut reader, &mut buf) => line,
        };
        let response = match line {
            Ok(Line::Eof) | Err(_) => return,
            Ok(Line::TooLong) => Response::error(ErrorKind::BadRequest, "request too long"),
            Ok(Line::Request(text)) => match parse_request(text.trim()) {
                // A publish never waits and the connection answers one
                // request at a time: one publisher's throughput is bounded
                // by the work, not by a rate.
                Ok(req @ Request::Publish { .. }) => dispatch(req, &control).await,
                // The connection becomes a stream of events until it closes.
                Ok(Request::Watch { publishes }) => {
                    return super::watch::stream(write, reader, &control, publishes).await;
                }
                parsed => {
                    if window.elapsed() >= Duration::from_secs(1) {
                        window = Instant::now();
                        in_window = 0;
                    }
                    in_window += 1;
                    if in_window > MAX_RATE {
                        let wait = Duration::from_secs(1).saturating_sub(window.elapsed());
                        tokio::time::sleep(wait).await;
                        Response::error(ErrorKind::RateLimited, "too many requests; slow down")
                    } else {
                        match parsed {
                            Ok(req) => dispatch(req, &control).await,
                            Err(e) => Response::error(ErrorKind::BadRequest, e),
                        }
                    }
                }
            },
        };
        let mut out = encode(&response);
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One request line, read with a bound.
enum Line {
    Request(String),
    /// Longer than [`MAX_REQUEST`]; the rest of it was skipped.
    TooLong,
    Eof,
}

async fn read_request<R>(reader: &mut BufReader<R>, buf: &mut Vec<u8>) -> std::io::Result<Line>
where
    R: tokio::io::AsyncRead + Unpin,
{
    buf.clear();
    let limit = MAX_REQUEST as u64 + 1;
    if (&mut *reader).take(limit).read_until(b'\n', buf).await? == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') || buf.len() <= MAX_REQUEST {
        return Ok(Line::Request(String::from_utf8_lossy(buf).into_owned()));
    }
    // Skip to the end of the overlong line without keeping it.
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            break;
        }
        if let Some(end) = memchr::memchr(b'\n', chunk) {
            reader.consume(end + 1);
            break;
        }
        let len = chunk.len();
        reader.consume(len);
    }
    Ok(Line::TooLong)
}

fn encode(response: &Response) -> String {
    serde_json::to_string(response)
        .unwrap_or_else(|_| r#"{"ok":false,"error":"internal error","kind":"bad_request"}"#.into())
}
