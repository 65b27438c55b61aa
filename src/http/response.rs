//! Response helpers every HTTP answer is built with.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::session::Refusal;

/// The body of every response: static files and CGI output stream, the
/// rest is in memory.
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

/// The answer to a refused request: its status and reason, one line.
pub fn refused(refusal: &Refusal) -> Response<Body> {
    text(refusal.status, &format!("{}\n", refusal.reason))
}

/// 405 for anything but GET and HEAD, saying which methods are allowed.
pub fn method_not_allowed() -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

/// True for the methods that read: GET and HEAD (hyper drops the body of
/// a HEAD response itself, keeping its Content-Length).
pub fn is_read(method: &http::Method) -> bool {
    method == http::Method::GET || method == http::Method::HEAD
}

/// Appends configured extra headers.
pub fn add_headers<B>(response: &mut Response<B>, extra: &[(http::HeaderName, HeaderValue)]) {
    for (name, value) in extra {
        response.headers_mut().append(name.clone(), value.clone());
    }
}
