//! Every HTTP request lands here first and is sent one way:
//!
//! ```text
//! WebSocket handshake ............ upgrade (spawn a child, 101)
//! GET with --devconsole .......... the dev console page for that endpoint
//! a script under --cgidir ........ CGI/1.1
//! a file under --staticdir ....... static file
//! anything else .................. 426 (GET/HEAD: "this is a WebSocket
//!                                  endpoint") or 405 / 404
//! ```

pub mod cgi;
pub mod console;
pub mod redirect;
pub mod static_files;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;

use crate::server::{Peer, Shared};
use crate::upgrade::{self, remote_text, wants_websocket};

/// The body of every response: static files stream, the rest is in memory.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body from bytes in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A short plain-text response.
pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Appends configured extra headers.
pub fn add_headers<B>(response: &mut Response<B>, extra: &[(http::HeaderName, HeaderValue)]) {
    for (name, value) in extra {
        response.headers_mut().append(name.clone(), value.clone());
    }
}

/// Serves one request.
pub async fn handle(
    mut req: Request<Incoming>,
    peer: Peer,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Infallible> {
    if wants_websocket(&req) {
        return Ok(match upgrade::upgrade(&mut req, peer, &shared).await {
            Ok(response) => response,
            Err(refusal) => {
                shared
                    .registry
                    .totals
                    .refused
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    target: "wspipe::access",
                    path = %req.uri().path(),
                    remote = %remote_text(peer),
                    status = refusal.status.as_u16(),
                    "refused: {}", refusal.reason
                );
                let mut response = text(refusal.status, &format!("{}\n", refusal.reason));
                if refusal.status == StatusCode::UPGRADE_REQUIRED {
                    response.headers_mut().insert(
                        header::SEC_WEBSOCKET_VERSION,
                        HeaderValue::from_static("13"),
                    );
                }
                http_headers(&shared, response)
            }
        });
    }
    let response = plain(req, peer, &shared).await;
    Ok(http_headers(&shared, response))
}

/// Adds `--header` and `--header-http` to a non-upgrade response.
fn http_headers(shared: &Shared, mut response: Response<Body>) -> Response<Body> {
    add_headers(&mut response, &shared.config.headers.all);
    add_headers(&mut response, &shared.config.headers.http);
    response
}

/// A request that is not a WebSocket handshake.
async fn plain(req: Request<Incoming>, peer: Peer, shared: &Shared) -> Response<Body> {
    if let Some(script) = cgi::script_for(shared, req.uri().path()) {
        return cgi::serve(req, peer, shared, script).await;
    }
    if let Some(files) = &shared.static_files {
        return files.serve(req).await;
    }
    if shared.config.dev_console && console::wants_console(req.method()) {
        return match crate::route::resolve(shared.config.endpoint.as_ref(), req.uri().path()) {
            Ok(_) => console::page(),
            Err(e) => text(e.status(), &format!("{e}\n")),
        };
    }
    if req.method() == Method::GET || req.method() == Method::HEAD {
        let mut r = text(
            StatusCode::UPGRADE_REQUIRED,
            "This is a WebSocket endpoint served by wspipe: connect with a WebSocket client (ws://).\n",
        );
        r.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        r
    } else {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    }
}
