//! One running CGI request, driven by its own task: stdin fed, stderr
//! logged, the header block read, the body streamed, and the script ended
//! and reaped whatever happens.

use std::future::Future;
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
            stdout,
            stderr,
        } = spawned;
        let pid = child.pid();
        let id = access.id.clone();
        let mut script = Script {
            stdout,
            feed: Box::pin(feed_stdin(stdin, body)),
            feed_done: false,
            logs: Box::pin(async move { log_stderr(stderr, &id, max_line).await }),
            logs_done: false,
            deadline: Box::pin(tokio::time::sleep(
                MAX_DURATION.saturating_sub(access.started.elapsed()),
            )),
            shutdown,
        };
        let mut sent = 0;
        let (status, cause) = match script.wait_head(&mut head_tx, header_timeout).await {
            Err(failure) => {
                let (status, reason) = failure.answer();
                if status == StatusCode::BAD_GATEWAY {
                    tracing::error!("CGI {}: {reason}", access.path);
                }
                let cause = failure.cause();
                let _ = head_tx.send(Err(failure));
                (status.as_u16(), cause)
            }
            Ok((head, leftover)) => {
                script
                    .respond(&access, head, leftover, head_tx, &mut sent)
                    .await
            }
        };
        // The end: stdin and stdout closed (a script still writing gets
        // EPIPE), the grace, signals if needed, reaped.
        let Script {
            stdout,
            feed,
            logs,
            logs_done,
            ..
        } = script;
        drop(feed);
        drop(stdout);
        let exit = end_child(&mut child, grace, logs, logs_done).await;
        drop(permit);
        access.log(status, Some(pid), sent, &exit.to_string(), cause);
    }
}

/// A running script and what runs beside its header and body phases: the
/// request body going to stdin, stderr going to the log, and the limits.
struct Script {
    stdout: pipe::Receiver,
    /// Writes the request body, then closes stdin.
    feed: Pin<Box<dyn Future<Output = Feed> + Send>>,
    feed_done: bool,
    /// Logs stderr until it closes.
    logs: Pin<Box<dyn Future<Output = ()> + Send>>,
    logs_done: bool,
    /// [`MAX_DURATION`] from the start of the request.
    deadline: Pin<Box<tokio::time::Sleep>>,
    shutdown: Shutdown,
}

impl Script {
    /// The header block. `--cgitimeout` counts from the moment the script
    /// has the whole request body (a slow upload is bounded by
    /// [`MAX_DURATION`] only).
    async fn wait_head(
        &mut self,
        head_tx: &mut oneshot::Sender<HeadResult>,
        header_timeout: Duration,
    ) -> Result<(Head, Bytes), Failure> {
        let head_timeout = tokio::time::sleep(header_timeout);
        let reading = read_head(&mut self.stdout);
        tokio::pin!(head_timeout, reading);
        loop {
            tokio::select! {
                head = &mut reading => return head,
                fed = &mut self.feed, if !self.feed_done => {
                    self.feed_done = true;
                    if fed == Feed::TooLarge {
                        return Err(Failure::TooLarge);
                    }
                    head_timeout
                        .as_mut()
                        .reset(tokio::time::Instant::now() + header_timeout);
                }
                () = &mut self.logs, if !self.logs_done => self.logs_done = true,
                () = &mut head_timeout, if self.feed_done => return Err(Failure::Timeout),
                () = &mut self.deadline => return Err(Failure::Timeout),
                () = head_tx.closed() => return Err(Failure::ClientGone),
                () = self.shutdown.cancelled() => return Err(Failure::Shutdown),
            }
        }
    }

    /// Hands the head to the client and streams the body after it; the
    /// status and the cause for the access log.
    async fn respond(
        &mut self,
        access: &Access,
        head: Head,
        leftover: Bytes,
        head_tx: oneshot::Sender<HeadResult>,
        sent: &mut u64,
    ) -> (u16, &'static str) {
        let status = head.status.as_u16();
        // hyper sends no body with these: the output is read and dropped,
        // so that the script can finish normally.
        let bodiless = access.method == Method::HEAD
            || matches!(
                head.status,
                StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
            );
        let complete = Arc::new(AtomicBool::new(bodiless));
        let (tx, rx) = mpsc::channel(BODY_QUEUE);
        let body = CgiBody {
            rx,
            complete: complete.clone(),
        };
        let body_tx = (!bodiless).then_some(tx);
        let end = if head_tx.send(Ok((head, body))).is_err() {
            End::ClientGone
        } else {
            self.stream_body(leftover, &body_tx, sent).await
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
        // Dropping the sender ends the response (cleanly only if complete).
        drop(body_tx);
        (status, end.cause())
    }

    /// Streams stdout to the client (or, without a body to send, reads and
    /// drops it) until it ends; counts the bytes sent.
    async fn stream_body(
        &mut self,
        leftover: Bytes,
        body_tx: &Option<mpsc::Sender<Bytes>>,
        sent: &mut u64,
    ) -> End {
        let mut out = BytesMut::new();
        let mut pending = (body_tx.is_some() && !leftover.is_empty()).then_some(leftover);
        loop {
            if pending.is_none() && out.capacity() == 0 {
                out.reserve(READ_CHUNK);
            }
            tokio::select! {
                permit = reserve(body_tx), if pending.is_some() => match permit {
                    Some(permit) => {
                        let chunk = pending.take().unwrap_or_default();
                        *sent += chunk.len() as u64;
                        permit.send(chunk);
                    }
                    None => return End::ClientGone,
                },
                read = self.stdout.read_buf(&mut out), if pending.is_none() => match read {
                    Ok(0) => return End::Done,
                    Ok(_) if body_tx.is_some() => pending = Some(out.split().freeze()),
                    Ok(_) => out.clear(),
                    Err(_) => return End::Io,
                },
                fed = &mut self.feed, if !self.feed_done => {
                    self.feed_done = true;
                    if fed == Feed::TooLarge {
                        return End::TooLarge;
                    }
                }
                () = &mut self.logs, if !self.logs_done => self.logs_done = true,
                () = &mut self.deadline => return End::Timeout,
                () = closed(body_tx) => return End::ClientGone,
                () = self.shutdown.cancelled() => return End::Shutdown,
            }
        }
    }
}

/// Ends and reaps `child` (logging its stderr meanwhile) and returns how it
/// ended.
async fn end_child(
    child: &mut Child,
    grace: Duration,
    mut logs: Pin<Box<dyn Future<Output = ()> + Send>>,
    logs_done: bool,
) -> Exit {
    let mut logs_done = logs_done;
    let exit = {
        let terminate = child.terminate(grace);
        tokio::pin!(terminate);
        loop {
            tokio::select! {
                (_, exit) = &mut terminate => break exit,
                () = logs.as_mut(), if !logs_done => logs_done = true,
            }
        }
    };
    if !logs_done {
        let _ = tokio::time::timeout(STDERR_DRAIN, logs.as_mut()).await;
    }
    exit
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
