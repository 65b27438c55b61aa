//! The control socket: accepts `wspipe ctl` (or any program speaking the
//! protocol) and answers requests.
//!
//! Bounded on every axis a client controls: request size
//! ([`MAX_REQUEST`]), concurrent control connections, and requests per
//! second on one connection. A bad request gets an error reply, never a crash.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

use super::commands::dispatch;
use super::protocol::{parse_request, ErrorKind, Response, MAX_REQUEST};
use crate::server::Shared;

/// Control connections served at once; more wait in the accept queue.
const MAX_CLIENTS: usize = 64;

/// Requests per second one connection may make before being slowed.
const MAX_RATE: u32 = 2000;

/// Sets the socket file's permission bits (`--control-mode`).
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Serves control clients until shutdown.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let permit = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => p,
        };
        let Ok(permit) = permit else {
            return;
        };
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    client(stream, shared).await;
                });
            }
            Err(e) => {
                tracing::error!("control accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn client(stream: UnixStream, shared: Arc<Shared>) {
    let mut framed = Framed::new(stream, LinesCodec::new_with_max_length(MAX_REQUEST));
    let mut window = Instant::now();
    let mut in_window = 0u32;
    loop {
        let line = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            line = framed.next() => line,
        };
        let response = match line {
            None => return,
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                let r = Response::error(ErrorKind::BadRequest, "request too long");
                let _ = framed.send(encode(&r)).await;
                return; // the rest of that line cannot be trusted
            }
            Some(Err(LinesCodecError::Io(_))) => return,
            Some(Ok(line)) => {
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
                    match parse_request(line.trim()) {
                        Ok(req) => dispatch(req, &shared.registry, shared.config.mode).await,
                        Err(e) => Response::error(ErrorKind::BadRequest, e),
                    }
                }
            }
        };
        if framed.send(encode(&response)).await.is_err() {
            return;
        }
    }
}

fn encode(response: &Response) -> String {
    serde_json::to_string(response)
        .unwrap_or_else(|_| r#"{"ok":false,"error":"internal error","kind":"bad_request"}"#.into())
}
