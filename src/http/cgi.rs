//! CGI/1.1 (RFC 3875) for `--cgidir`, on the same port as the WebSockets.
//!
//! websocketd hands these requests to Go's `net/http/cgi`; this is the same
//! contract, with the limits a server needs:
//!
//! - A request path is resolved exactly as for `--dir` ([`route::resolve`]):
//!   directories are walked, the first file found is the script, the rest of
//!   the path is `PATH_INFO`. A path that names no script falls through to
//!   `--staticdir` (which never serves a file under `--cgidir`) or the
//!   default answer.
//! - The environment is the one a WebSocket child gets (only `PATH` and
//!   `--passenv` from wspipe's own environment, the request variables, one
//!   `HTTP_*` per header) plus `CONTENT_LENGTH`, `CONTENT_TYPE` and
//!   `SCRIPT_FILENAME`.
//! - The request body is written to the script's stdin as it arrives, then
//!   stdin is closed. At most [`MAX_REQUEST_BODY`] bytes (413 beyond). A
//!   chunked body is collected first (same bound), so that `CONTENT_LENGTH`
//!   is always right, as RFC 3875 requires.
//! - stdout starts with a header block (at most [`MAX_HEADER_BLOCK`] bytes,
//!   `\n` or `\r\n` lines, at least one of `Content-Type`, `Location`,
//!   `Status`). `Status: 404 Not Found` sets the status, `Location` without
//!   `Status` answers 302, other headers pass through (hop-by-hop ones are
//!   dropped). The rest of stdout is streamed to the client through a small
//!   channel, so a big output never sits in memory and a slow client slows
//!   the script down.
//! - No valid header block (garbage, exit before headers, nothing within
//!   `--cgitimeout` of having the whole request body) is answered 502 Bad
//!   Gateway. The whole request is capped at [`MAX_DURATION`]; a response
//!   cut short is aborted, never ended as if it were complete.
//! - The script runs in its own directory (RFC 3875 7.2; Go's `net/http/cgi`
//!   does the same), so it can open files beside it by relative path.
//! - stderr goes to the log, line by line (target `wspipe::stderr`).
//! - Each script takes a `--maxforks` permit (429 when none is left), held
//!   until the script is reaped. The script is always reaped: when its output
//!   ends, on any error, and when the client goes away (it is then ended
//!   with the `--closems` signal escalation, to its whole process group).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::{text, Body};
use crate::config::Endpoint;
use crate::env::{request_vars, RequestEnv, Var};
use crate::lines::{LineSplitter, READ_CHUNK};
use crate::process::{self, Child, Exit, SpawnSpec, Spawned};
use crate::route::{self, Resolved};
use crate::server::{Peer, Shared};
use crate::upgrade::{is_https, remote_info, remote_text, spawn_refusal};

/// Largest request body passed to a script (bigger: 413).
pub const MAX_REQUEST_BODY: u64 = 16 * 1024 * 1024;

/// Largest header block a script may print before its body (bigger: 502).
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Most header lines in a script's header block (more: 502).
const MAX_HEADERS: usize = 100;

/// Longest a CGI request may take from start to the end of its response
/// (body upload and download included); then the script is ended and the
/// response aborted.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 60);

/// Chunks of script output (of up to [`READ_CHUNK`] bytes) queued for a slow
/// client before the script is made to wait.
const BODY_QUEUE: usize = 4;

/// How long to keep logging stderr after the script was reaped (a stray
/// grandchild may still hold the pipe).
const STDERR_DRAIN: Duration = Duration::from_millis(200);

/// Headers a script may not set: they describe one connection, and hyper
/// manages them.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The script a request path names under `--cgidir`, if any. Anything that
/// does not resolve (nothing there, a bad path, a file that is not
/// executable) is left to the static files or the default answer.
pub fn script_for(shared: &Shared, path: &str) -> Option<Resolved> {
    let dir = shared.config.cgi_dir.as_ref()?;
    route::resolve(Some(&Endpoint::Dir(dir.clone())), path).ok()
}

/// Who asked for what, for the access log.
struct Access {
    id: String,
    method: Method,
    path: String,
    remote: String,
    started: Instant,
}

impl Access {
    fn log(&self, status: u16, pid: Option<u32>, bytes: u64, exit: &str, cause: &str) {
        let pid = pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
        tracing::info!(
            target: "wspipe::access",
            id = %self.id,
            method = %self.method,
            path = %self.path,
            remote = %self.remote,
            status,
            pid = %pid,
            duration = ?self.started.elapsed(),
            bytes,
            exit = %exit,
            cause,
            "cgi"
        );
    }

    /// Logs and answers a request that never reached a script.
    fn refuse(&self, status: StatusCode, reason: &str) -> Response<Body> {
        self.log(status.as_u16(), None, 0, "-", reason);
        text(status, &format!("{reason}\n"))
    }
}

/// The request body, as the script's stdin will get it.
enum RequestBody {
    /// Known length (`Content-Length`, possibly 0): streamed as it arrives.
    Stream(Incoming),
    /// Chunked: collected first, so that CONTENT_LENGTH can be set.
    Buffered(Bytes),
}

/// Runs `script` for `req` and answers with what it prints.
pub async fn serve(
    req: Request<Incoming>,
    peer: Peer,
    shared: &Shared,
    script: Resolved,
) -> Response<Body> {
    let config = &shared.config;
    let access = Access {
        id: shared.next_id.fetch_add(1, Ordering::Relaxed).to_string(),
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        remote: remote_text(peer),
        started: Instant::now(),
    };
    let declared = req.body().size_hint().exact();
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY) {
        return access.refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let Ok(permit) = shared.fork_permit() else {
        tracing::error!("--maxforks reached: CGI request refused");
        return access.refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests (--maxforks reached)",
        );
    };
    let remote = remote_info(peer, req.headers(), config).await;
    let local_port = peer.local_port();
    let (parts, incoming) = req.into_parts();
    let (body, length) = match declared {
        Some(n) => (RequestBody::Stream(incoming), n),
        None => match collect(incoming).await {
            Ok(bytes) => {
                let n = bytes.len() as u64;
                (RequestBody::Buffered(bytes), n)
            }
            Err(status) => {
                let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "request body too large"
                } else {
                    "request body could not be read"
                };
                return access.refuse(status, reason);
            }
        },
    };

    let mut vars = request_vars(&RequestEnv {
        id: &access.id,
        method: &parts.method,
        uri: &parts.uri,
        version: parts.version,
        headers: &parts.headers,
        remote: &remote,
        tls: is_https(peer, &parts.headers, config),
        local_port,
        script_name: &script.script_name,
        path_info: &script.path_info,
    });
    vars.extend(content_vars(&parts.headers, length));
    vars.push(("SCRIPT_FILENAME".into(), script.program.clone().into()));
    let spawned = match process::spawn(&SpawnSpec {
        program: &script.program,
        args: &script.args,
        env: [config.base_env.vars(), &vars],
        // RFC 3875 7.2 (and Go's net/http/cgi, websocketd's): the script's
        // own directory. The program path is absolute (--cgidir is canonical).
        dir: script.program.parent(),
    }) {
        Ok(spawned) => spawned,
        Err(e) => {
            tracing::error!("cannot start {}: {e}", script.program.display());
            let refusal = spawn_refusal(&e);
            return access.refuse(refusal.status, &refusal.reason);
        }
    };

    let (head_tx, head_rx) = oneshot::channel();
    let run = Run {
        access,
        permit,
        body,
        head_tx,
        header_timeout: config.cgi_timeout,
        grace: config.close_grace,
        max_line: config.max_line,
        shutdown: shared.shutdown.clone(),
    };
    shared.tasks.spawn(run.drive(spawned));
    match head_rx.await {
        Ok(Ok((head, body))) => {
            let mut response = Response::new(body.boxed_unsync());
            *response.status_mut() = head.status;
            *response.headers_mut() = head.headers;
            response
        }
        Ok(Err(failure)) => {
            let (status, reason) = failure.answer();
            text(status, &format!("{reason}\n"))
        }
        // The task is gone without a word: only a panic does that.
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "CGI request failed\n"),
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

/// CONTENT_LENGTH and CONTENT_TYPE (they replace the empty ones of the base
/// environment: later entries win).
fn content_vars(headers: &HeaderMap, length: u64) -> [Var; 2] {
    let length = if length > 0 {
        length.to_string()
    } else {
        String::new()
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    [
        ("CONTENT_LENGTH".into(), length.into()),
        ("CONTENT_TYPE".into(), content_type.into()),
    ]
}

/// What a script's header block says.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
}

/// Parses a header block at the start of `buf`: `Ok(None)` while it is
/// incomplete, else the head and the length of the block (the body follows).
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, &'static str> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (len, fields) = match httparse::parse_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(done)) => done,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err("too many header lines"),
        Err(_) => return Err("malformed header block"),
    };
    let mut status = None;
    let mut headers = HeaderMap::new();
    for field in fields {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| "invalid header name")?;
        let value = HeaderValue::from_bytes(field.value.trim_ascii())
            .map_err(|_| "invalid header value")?;
        if name.as_str() == "status" {
            status = Some(parse_status(value.as_bytes())?);
        } else if !HOP_BY_HOP.contains(&name.as_str()) {
            headers.append(name, value);
        }
    }
    // A Content-Length we cannot trust would break the framing: drop it.
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let valid_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.parse::<u64>().is_ok());
    if lengths > 1 || (lengths == 1 && !valid_length) {
        headers.remove(header::CONTENT_LENGTH);
    }
    let location = headers.contains_key(header::LOCATION);
    let status = match status {
        Some(status) => status,
        // RFC 3875 6.2.3/6.2.4: a redirect (a local one, "/path", is also
        // answered as a client redirect).
        None if location => StatusCode::FOUND,
        None if headers.contains_key(header::CONTENT_TYPE) => StatusCode::OK,
        None => return Err("no Content-Type, Location or Status header"),
    };
    Ok(Some((Head { status, headers }, len)))
}

/// `Status: 404 Not Found` (or just `404`); 1xx is not something a script
/// may answer.
fn parse_status(value: &[u8]) -> Result<StatusCode, &'static str> {
    let bad = "invalid Status header";
    let code = value.get(..3).ok_or(bad)?;
    if value.get(3).is_some_and(|b| *b != b' ') {
        return Err(bad);
    }
    let status = StatusCode::from_bytes(code).map_err(|_| bad)?;
    if status.is_informational() {
        return Err(bad);
    }
    Ok(status)
}

/// Why there is no regular response.
#[derive(Debug)]
enum Failure {
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
    fn answer(&self) -> (StatusCode, String) {
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

/// How feeding the request body to stdin ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// All of it written (or the script stopped reading: it may answer
    /// without reading everything), stdin closed.
    Done,
    /// More than [`MAX_REQUEST_BODY`].
    TooLarge,
}

/// The response body: script output as it is read. It ends cleanly only if
/// the script's output did; otherwise it fails, so that hyper aborts the
/// response instead of passing a truncated one off as complete.
pub struct CgiBody {
    rx: mpsc::Receiver<Bytes>,
    complete: Arc<AtomicBool>,
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

type HeadResult = Result<(Head, CgiBody), Failure>;

/// One running CGI request, driven by its own task.
struct Run {
    access: Access,
    /// The `--maxforks` permit, released once the script is reaped.
    permit: Option<OwnedSemaphorePermit>,
    body: RequestBody,
    head_tx: oneshot::Sender<HeadResult>,
    header_timeout: Duration,
    grace: Duration,
    max_line: usize,
    shutdown: CancellationToken,
}

impl Run {
    /// Feeds stdin, logs stderr, reads the header block, streams the body;
    /// ends and reaps the script whatever happens.
    async fn drive(self, spawned: Spawned) {
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
        let mut logs = Box::pin(log_stderr(stderr, access.id.clone(), max_line));
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

/// Room for one chunk of the response body (`None`: the client is gone).
/// Without a body to send, never ready.
async fn reserve(tx: &Option<mpsc::Sender<Bytes>>) -> Option<mpsc::Permit<'_, Bytes>> {
    match tx {
        Some(tx) => tx.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

/// Resolves once the client has dropped the response body.
async fn closed(tx: &Option<mpsc::Sender<Bytes>>) {
    match tx {
        Some(tx) => tx.closed().await,
        None => std::future::pending().await,
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

/// Writes the request body to stdin, then closes it (by dropping it).
async fn feed_stdin(mut stdin: pipe::Sender, body: RequestBody) -> Feed {
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

/// Logs stderr line by line until it closes.
async fn log_stderr(mut pipe: pipe::Receiver, id: String, max_line: usize) {
    let mut lines = LineSplitter::new(max_line);
    let log = |line: &[u8]| {
        tracing::error!(target: "wspipe::stderr", id = %id, "{}", String::from_utf8_lossy(line));
    };
    loop {
        match pipe.read_buf(lines.read_buf()).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                while let Some(line) = lines.next_line() {
                    log(&line);
                }
            }
        }
    }
    if let Some(line) = lines.finish() {
        log(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(buf: &[u8]) -> (Head, usize) {
        parse_head(buf).unwrap().expect("complete")
    }

    #[test]
    fn content_type_alone_is_200_and_body_follows() {
        let buf = b"Content-Type: text/plain\n\nhello";
        let (h, len) = head(buf);
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(&buf[len..], b"hello");
        assert_eq!(h.headers[header::CONTENT_TYPE], "text/plain");
    }

    #[test]
    fn crlf_status_and_custom_headers() {
        let buf = b"Status: 404 Not Found\r\nContent-Type: text/html\r\nX-A: 1\r\nX-A: 2\r\n\r\n";
        let (h, len) = head(buf);
        assert_eq!(h.status, StatusCode::NOT_FOUND);
        assert_eq!(len, buf.len());
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert!(!h.headers.contains_key("status"), "Status is not passed on");
    }

    #[test]
    fn location_without_status_redirects() {
        let (h, _) = head(b"Location: /elsewhere\n\n");
        assert_eq!(h.status, StatusCode::FOUND);
        let (h, _) = head(b"Status: 301\nLocation: http://example.com/\n\n");
        assert_eq!(h.status, StatusCode::MOVED_PERMANENTLY);
    }

    #[test]
    fn incomplete_blocks_wait_for_more() {
        assert!(parse_head(b"").unwrap().is_none());
        assert!(parse_head(b"Content-Type: text/pl").unwrap().is_none());
        assert!(parse_head(b"Content-Type: text/plain\n").unwrap().is_none());
    }

    #[test]
    fn garbage_and_missing_cgi_fields_are_refused() {
        assert!(parse_head(b"hello world\n\n").is_err());
        assert!(parse_head(b"<html>\n").is_err());
        assert!(parse_head(b"\nbody").is_err(), "empty header block");
        assert!(parse_head(b"X-Only: 1\n\n").is_err());
        assert!(parse_head(b"Status: abc\n\n").is_err());
        assert!(parse_head(b"Status: 100 Continue\n\n").is_err());
        assert!(parse_head(b"Status: 2000\n\n").is_err());
        let many = "X: 1\n".repeat(MAX_HEADERS + 1) + "\n";
        assert!(parse_head(many.as_bytes()).is_err());
    }

    #[test]
    fn hop_by_hop_and_bad_lengths_are_dropped() {
        let (h, _) = head(
            b"Content-Type: a/b\nTransfer-Encoding: chunked\nConnection: close\nContent-Length: x\n\n",
        );
        assert!(!h.headers.contains_key(header::TRANSFER_ENCODING));
        assert!(!h.headers.contains_key(header::CONNECTION));
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
        let (h, _) = head(b"Content-Type: a/b\nContent-Length: 5\n\n");
        assert_eq!(h.headers[header::CONTENT_LENGTH], "5");
    }

    #[test]
    fn content_vars_override_the_empty_ones() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        let [(k1, v1), (k2, v2)] = content_vars(&headers, 12);
        assert_eq!(
            (k1.to_str(), v1.to_str()),
            (Some("CONTENT_LENGTH"), Some("12"))
        );
        assert_eq!(
            (k2.to_str(), v2.to_str()),
            (Some("CONTENT_TYPE"), Some("text/plain"))
        );
        let [(_, v1), (_, v2)] = content_vars(&HeaderMap::new(), 0);
        assert_eq!((v1.to_str(), v2.to_str()), (Some(""), Some("")));
    }
}
