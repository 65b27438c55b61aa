//! One running CGI request, driven by its own task: stdin fed, stderr
//! logged, the header block read, the body streamed, and the script ended
//! and reaped whatever happens.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::body::{closed, feed_stdin, reserve, CgiBody, Feed, RequestBody, BODY_QUEUE};
use super::head::{parse_head, Head, MAX_HEADER_BLOCK};
use super::{Access, MAX_DURATION};
use crate::lines::READ_CHUNK;
use crate::process::{Child, Exit, Spawned};
use crate::session::stderr::log_stderr;
use crate::shutdown::Shutdown;

/// How long to keep logging stderr after the script was reaped (a stray
/// grandchild may still hold the pipe).
const STDERR_DRAIN: Duration = Duration::from_millis(200);

/// Why there is no regular response.
#[derive(Debug)]
pub(super) enum Failure {
    /// The header block is not valid CGI.
    BadHead(&'static str),
    /// stdout ended (usually: the script exited) before the header block did.
    NoHead { partial: bool },
    /// No header block within `--cgitimeout`.
    Timeout,
    /// The request body grew past [`MAX_REQUEST_BODY`].
    TooLarge,
    /// Reading the script's stdout failed.
    Io,
    /// The server is shutting down.
    Shutdown,
    /// The client went away (nobody to answer).
    ClientGone,
}

impl Failure {
    pub(super) fn answer(&self) -> (StatusCode, String) {
        let bad_gateway = |why: &str| (StatusCode::BAD_GATEWAY, format!("Bad Gateway: {why}"));
        match self {
            Failure::BadHead(why) => {
                bad_gateway(&format!("CGI script sent an invalid header block ({why})"))
            }
            Failure::NoHead { partial: false } => {
                bad_gateway("CGI script ended without sending a response")
            }
            Failure::NoHead { partial: true } => {
                bad_gateway("CGI script output ended inside its header block")
            }
            Failure::Timeout => bad_gateway("CGI script sent no response headers in time"),
            Failure::Io => bad_gateway("cannot read the CGI script's output"),
            Failure::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large".into(),
            ),
            Failure::Shutdown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server shutting down".into(),
            ),
            // Nobody reads it; nginx logs this case as 499.
            Failure::ClientGone => (
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                "client closed the request".into(),
            ),
        }
    }

    fn cause(&self) -> &'static str {
        match self {
            Failure::BadHead(_) => "invalid header block",
            Failure::NoHead { .. } => "no header block",
            Failure::Timeout => "header timeout",
            Failure::TooLarge => "request body too large",
            Failure::Io => "read error",
            Failure::Shutdown => "shutdown",
            Failure::ClientGone => "client gone",
        }
    }
}

/// How the streaming of a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The script closed stdout: the response is complete.
    Done,
    ClientGone,
    Timeout,
    TooLarge,
    Io,
    Shutdown,
}

impl End {
    fn cause(self) -> &'static str {
        match self {
            End::Done => "ok",
            End::ClientGone => "client gone",
            End::Timeout => "timeout",
            End::TooLarge => "request body too large",
            End::Io => "read error",
            End::Shutdown => "shutdown",
        }
    }
}

pub(super) type HeadResult = Result<(Head, CgiBody), Failure>;

/// One running CGI request, driven by its own task.
pub(super) struct Run {
    pub(super) access: Access,
    /// The `--maxforks` permit, released once the script is reaped.
    pub(super) permit: Option<OwnedSemaphorePermit>,
    pub(super) body: RequestBody,
    pub(super) head_tx: oneshot::Sender<HeadResult>,
    pub(super) header_timeout: Duration,
    pub(super) grace: Duration,
    pub(super) max_line: usize,
    pub(super) shutdown: Shutdown,
}

impl Run {
    /// Feeds stdin, logs stderr, reads the header block, streams the body;
    /// ends and reaps the script whatever happens.
    pub(super) async fn drive(self, spawned: Spawned) {
        let Run {
            access,
            permit,
            body,
            mut head_tx,
            header_timeout,
            grace,
            max_line,
            shutdown,
        } = self;
        let Spawned {
            mut child,
            stdin,
            mut stdout,
            stderr,
        } = spawned;
        let pid = child.pid();
        let mut feed = Box::pin(feed_stdin(stdin, body));
        let mut feed_done = false;
        let id = access.id.clone();
        let mut logs = Box::pin(async move { log_stderr(stderr, &id, max_line).await });
        let mut logs_done = false;
        let deadline = tokio::time::sleep(MAX_DURATION.saturating_sub(access.started.elapsed()));
        tokio::pin!(deadline);

        // 1. The header block. `--cgitimeout` counts from the moment the
        // script has the whole request body (a slow upload is bounded by
        // MAX_DURATION only).
        let head = {
            let head_timeout = tokio::time::sleep(header_timeout);
            let reading = read_head(&mut stdout);
            tokio::pin!(head_timeout, reading);
            loop {
                tokio::select! {
                    head = &mut reading => break head,
                    fed = &mut feed, if !feed_done => {
                        feed_done = true;
                        if fed == Feed::TooLarge {
                            break Err(Failure::TooLarge);
                        }
                        head_timeout
                            .as_mut()
                            .reset(tokio::time::Instant::now() + header_timeout);
                    }
                    () = &mut logs, if !logs_done => logs_done = true,
                    () = &mut head_timeout, if feed_done => break Err(Failure::Timeout),
                    () = &mut deadline => break Err(Failure::Timeout),
                    () = head_tx.closed() => break Err(Failure::ClientGone),
                    () = shutdown.cancelled() => break Err(Failure::Shutdown),
                }
            }
        };

        // 2. The body.
        let complete = Arc::new(AtomicBool::new(false));
        let mut sent: u64 = 0;
        let (status, cause) = match head {
            Err(failure) => {
                let (status, reason) = failure.answer();
                if status == StatusCode::BAD_GATEWAY {
                    tracing::error!("CGI {}: {reason}", access.path);
                }
                let status = status.as_u16();
                let cause = failure.cause();
                let _ = head_tx.send(Err(failure));
                (status, cause)
            }
            Ok((head, leftover)) => {
                let status = head.status.as_u16();
                // hyper sends no body with these: the output is read and
                // dropped, so that the script can finish normally.
                let bodiless = access.method == Method::HEAD
                    || matches!(
                        head.status,
                        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
                    );
                let (tx, rx) = mpsc::channel(BODY_QUEUE);
                let body = CgiBody {
                    rx,
                    complete: complete.clone(),
                };
                complete.store(bodiless, Ordering::Release);
                let body_tx = (!bodiless).then_some(tx);
                let end = if head_tx.send(Ok((head, body))).is_err() {
                    End::ClientGone
                } else {
                    let mut out = BytesMut::new();
                    let mut pending =
                        (body_tx.is_some() && !leftover.is_empty()).then_some(leftover);
                    loop {
                        if pending.is_none() && out.capacity() == 0 {
                            out.reserve(READ_CHUNK);
                        }
                        tokio::select! {
                            permit = reserve(&body_tx), if pending.is_some() => match permit {
                                Some(permit) => {
                                    let chunk = pending.take().unwrap_or_default();
                                    sent += chunk.len() as u64;
                                    permit.send(chunk);
                                }
                                None => break End::ClientGone,
                            },
                            read = stdout.read_buf(&mut out), if pending.is_none() => match read {
                                Ok(0) => break End::Done,
                                Ok(_) if body_tx.is_some() => pending = Some(out.split().freeze()),
                                Ok(_) => out.clear(),
                                Err(_) => break End::Io,
                            },
                            fed = &mut feed, if !feed_done => {
                                feed_done = true;
                                if fed == Feed::TooLarge {
                                    break End::TooLarge;
                                }
                            }
                            () = &mut logs, if !logs_done => logs_done = true,
                            () = &mut deadline => break End::Timeout,
                            () = closed(&body_tx) => break End::ClientGone,
                            () = shutdown.cancelled() => break End::Shutdown,
                        }
                    }
                };
                if end == End::Timeout {
                    tracing::error!(
                        "CGI {}: response not finished within {MAX_DURATION:?}",
                        access.path
                    );
                }
                if !bodiless {
                    complete.store(end == End::Done, Ordering::Release);
                }
                // Dropping the sender ends the response (cleanly only if
                // complete).
                drop(body_tx);
                (status, end.cause())
            }
        };

        // 3. The end: stdin closed, the grace, signals if needed, reaped.
        drop(feed);
        drop(stdout);
        let exit = end_child(&mut child, grace, &mut logs, logs_done).await;
        drop(permit);
        access.log(status, Some(pid), sent, &exit.to_string(), cause);
    }
}

/// Ends and reaps `child` (logging its stderr meanwhile) and returns how it
/// ended.
async fn end_child<F>(
    child: &mut Child,
    grace: Duration,
    logs: &mut Pin<Box<F>>,
    logs_done: bool,
) -> Exit
where
    F: std::future::Future<Output = ()>,
{
    let mut logs_done = logs_done;
    let status = {
        let terminate = child.terminate(grace);
        tokio::pin!(terminate);
        loop {
            tokio::select! {
                (_, status) = &mut terminate => break status,
                () = logs.as_mut(), if !logs_done => logs_done = true,
            }
        }
    };
    if !logs_done {
        let _ = tokio::time::timeout(STDERR_DRAIN, logs.as_mut()).await;
    }
    Exit::from(status)
}

/// Reads stdout up to the end of the header block; returns the head and
/// whatever body bytes came with it.
async fn read_head(stdout: &mut pipe::Receiver) -> Result<(Head, Bytes), Failure> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some((head, len)) = parse_head(&buf).map_err(Failure::BadHead)? {
            return Ok((head, buf.split_off(len).freeze()));
        }
        if buf.len() >= MAX_HEADER_BLOCK {
            return Err(Failure::BadHead("header block larger than 64 KiB"));
        }
        buf.reserve(READ_CHUNK.min(MAX_HEADER_BLOCK - buf.len()));
        match stdout.read_buf(&mut buf).await {
            Ok(0) => {
                return Err(Failure::NoHead {
                    partial: !buf.is_empty(),
                })
            }
            Ok(_) => {}
            Err(_) => return Err(Failure::Io),
        }
    }
}
