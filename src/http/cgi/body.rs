//! Both bodies of a CGI request: the client's, fed to the script's stdin,
//! and the script's output, streamed to the client.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::{MAX_DURATION, MAX_REQUEST_BODY};

/// Chunks of script output (of up to [`READ_CHUNK`] bytes) queued for a slow
/// client before the script is made to wait.
pub(super) const BODY_QUEUE: usize = 4;

/// The request body, as the script's stdin will get it.
pub(super) enum RequestBody {
    /// Known length (`Content-Length`, possibly 0): streamed as it arrives.
    Stream(Incoming),
    /// Chunked: collected first, so that CONTENT_LENGTH can be set.
    Buffered(Bytes),
}

impl RequestBody {
    /// The body and its length: streamed when the length is declared,
    /// else collected. The error is the answer to give.
    pub(super) async fn new(
        incoming: Incoming,
        declared: Option<u64>,
    ) -> Result<(Self, u64), (StatusCode, &'static str)> {
        if let Some(n) = declared {
            return Ok((RequestBody::Stream(incoming), n));
        }
        match collect(incoming).await {
            Ok(bytes) => {
                let n = bytes.len() as u64;
                Ok((RequestBody::Buffered(bytes), n))
            }
            Err(status) if status == StatusCode::PAYLOAD_TOO_LARGE => {
                Err((status, "request body too large"))
            }
            Err(status) => Err((status, "request body could not be read")),
        }
    }
}

/// A chunked body, collected up to [`MAX_REQUEST_BODY`] within
/// [`MAX_DURATION`]; the error is the status to answer.
async fn collect(incoming: Incoming) -> Result<Bytes, StatusCode> {
    let limited = Limited::new(incoming, MAX_REQUEST_BODY as usize);
    match tokio::time::timeout(MAX_DURATION, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        }
        Ok(Err(_)) => Err(StatusCode::BAD_REQUEST),
        Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
    }
}

/// How feeding the request body to stdin ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Feed {
    /// All of it written (or the script stopped reading: it may answer
    /// without reading everything), stdin closed.
    Done,
    /// More than [`MAX_REQUEST_BODY`].
    TooLarge,
}

/// Writes the request body to stdin, then closes it (by dropping it).
pub(super) async fn feed_stdin(mut stdin: pipe::Sender, body: RequestBody) -> Feed {
    match body {
        RequestBody::Buffered(bytes) => {
            // An error means the script closed stdin: it wants no more.
            let _ = stdin.write_all(&bytes).await;
        }
        RequestBody::Stream(mut incoming) => {
            let mut total: u64 = 0;
            while let Some(frame) = incoming.frame().await {
                // A failed upload: the connection is gone and the task
                // notices that on its own; the script just sees stdin end.
                let Ok(frame) = frame else { break };
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                total += data.len() as u64;
                if total > MAX_REQUEST_BODY {
                    return Feed::TooLarge;
                }
                if stdin.write_all(&data).await.is_err() {
                    break;
                }
            }
        }
    }
    Feed::Done
}

/// The response body: script output as it is read. It ends cleanly only if
/// the script's output did; otherwise it fails, so that hyper aborts the
/// response instead of passing a truncated one off as complete.
pub struct CgiBody {
    pub(super) rx: mpsc::Receiver<Bytes>,
    pub(super) complete: Arc<AtomicBool>,
}

impl HttpBody for CgiBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(match ready!(self.rx.poll_recv(cx)) {
            Some(bytes) => Some(Ok(Frame::data(bytes))),
            None if self.complete.load(Ordering::Acquire) => None,
            None => Some(Err(io::Error::other("CGI script output cut short"))),
        })
    }
}

/// Room for one chunk of the response body (`None`: the client is gone).
/// Without a body to send, never ready.
pub(super) async fn reserve(tx: &Option<mpsc::Sender<Bytes>>) -> Option<mpsc::Permit<'_, Bytes>> {
    match tx {
        Some(tx) => tx.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

/// Resolves once the client has dropped the response body.
pub(super) async fn closed(tx: &Option<mpsc::Sender<Bytes>>) {
    match tx {
        Some(tx) => tx.closed().await,
        None => std::future::pending().await,
    }
}
