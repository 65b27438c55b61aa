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

mod body;
mod head;
mod run;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Incoming};
use tokio::sync::oneshot;

use super::{text, Body};
use crate::config::Endpoint;
use crate::env::{request_vars, RequestEnv, Var};
use crate::peer::Peer;
use crate::process::SpawnSpec;
use crate::route::{self, Resolved};
use crate::session;
use crate::state::State;
use body::RequestBody;
use run::Run;

pub use head::{parse_head, Head, MAX_HEADER_BLOCK};

/// Largest request body passed to a script (bigger: 413).
pub const MAX_REQUEST_BODY: u64 = 16 * 1024 * 1024;

/// Longest a CGI request may take from start to the end of its response
/// (body upload and download included); then the script is ended and the
/// response aborted.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 60);

/// The script a request path names under `--cgidir`, if any. Anything that
/// does not resolve (nothing there, a bad path, a file that is not
/// executable) is left to the static files or the default answer.
/// Looking happens off the runtime's workers ([`route::resolve`]).
pub async fn script_for(cgi_dir: Option<&PathBuf>, path: &str) -> Option<Resolved> {
    let dir = cgi_dir?;
    route::resolve(Some(&Endpoint::Dir(dir.clone())), path)
        .await
        .ok()
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

/// Runs `script` for `req` and answers with what it prints.
pub async fn serve(
    req: Request<Incoming>,
    peer: &Peer,
    state: &State,
    script: Resolved,
) -> Response<Body> {
    let config = state.config();
    let access = Access {
        id: state.registry().next_id().to_string(),
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        remote: peer.text(),
        started: Instant::now(),
    };
    let declared = req.body().size_hint().exact();
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY) {
        return access.refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let Ok(permit) = state.fork_permit() else {
        tracing::error!("--maxforks reached: CGI request refused");
        return access.refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests (--maxforks reached)",
        );
    };
    let addresses = state.address_policy();
    let remote = crate::http::remote_of(&req, peer, state).await;
    let (parts, incoming) = req.into_parts();
    let (body, length) = match RequestBody::new(incoming, declared).await {
        Ok(body) => body,
        Err((status, reason)) => return access.refuse(status, reason),
    };

    let mut vars = request_vars(&RequestEnv {
        id: &access.id,
        method: &parts.method,
        uri: &parts.uri,
        version: parts.version,
        headers: &parts.headers,
        remote: &remote,
        tls: addresses.is_https(peer, &parts.headers),
        local_port: peer.local_port(),
        script_name: &script.script_name,
        path_info: &script.path_info,
    });
    vars.extend(content_vars(&parts.headers, length));
    vars.extend(crate::auth::child_vars(parts.extensions.get()));
    vars.push(("SCRIPT_FILENAME".into(), script.program.clone().into()));
    let spawned = match session::spawn::spawn(&SpawnSpec {
        program: &script.program,
        args: &script.args,
        env: [config.base_env.vars(), &vars],
        // RFC 3875 7.2 (and Go's net/http/cgi, websocketd's): the script's
        // own directory. The program path is absolute (--cgidir is canonical).
        dir: script.program.parent(),
    })
    .await
    {
        Ok(spawned) => spawned,
        Err(refusal) => return access.refuse(refusal.status, &refusal.reason),
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
        shutdown: state.shutdown().clone(),
    };
    state.shutdown().spawn(run.drive(spawned));
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

#[cfg(test)]
mod tests {
    use super::*;

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
