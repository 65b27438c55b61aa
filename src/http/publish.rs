//! `--publish ADDR|PATH`: channel publishes over HTTP, for programs that
//! would rather not exec `wspipe ctl` per message (PHP's curl with
//! CURLOPT_UNIX_SOCKET_PATH, a webhook).
//!
//! `POST /room` with the message as the body publishes it to channel
//! `/room` and answers `{"ok":true,"delivered":N,"dropped":M}`, the same
//! fields as the control protocol's `publish`. Errors are JSON too:
//! `{"ok":false,"error":"...","kind":"bad_request"}` with 400 (bad
//! channel, a text-mode body that is not UTF-8), 401 (token missing or
//! wrong), 405 (not a POST), 413 (a body over `--maxframesize`).

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use super::{full, Body};
use crate::bus::Bus;
use crate::config::{Mode, Token};
use crate::control::protocol::{ErrorKind, Response as Answer};
use crate::hub::ChannelName;

/// What answering a publish takes.
#[derive(Debug, Clone, Copy)]
pub struct Publisher<'a> {
    /// Where the message is published (here, and with `--redis` on the
    /// other instances).
    pub bus: &'a Bus,
    /// Text mode publishes text messages (the body must be UTF-8), binary
    /// mode binary ones.
    pub mode: Mode,
    /// Largest body (`--maxframesize`, what a client may send).
    pub max_message: usize,
    /// Required as `Authorization: Bearer TOKEN` when set.
    pub token: Option<&'a Token>,
}

impl Publisher<'_> {
    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if req.method() != Method::POST {
            let mut r = json(
                StatusCode::METHOD_NOT_ALLOWED,
                &refusal(ErrorKind::BadRequest, "publish with POST /CHANNEL"),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        if !self.authorized(req.headers()) {
            let mut r = json(
                StatusCode::UNAUTHORIZED,
                &refusal(
                    ErrorKind::BadRequest,
                    "a valid Authorization: Bearer token is required",
                ),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let channel = match ChannelName::parse(req.uri().path()) {
            Ok(channel) => channel,
            Err(e) => return bad_request(&format!("bad channel: {e}")),
        };
        let body = match Limited::new(req.into_body(), self.max_message)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let why = format!("message larger than {} bytes", self.max_message);
                return json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &refusal(ErrorKind::BadRequest, &why),
                );
            }
            Err(_) => return bad_request("the request body could not be read"),
        };
        let message = match self.mode {
            Mode::Binary => tokio_tungstenite::tungstenite::Message::Binary(body),
            Mode::Text | Mode::Framed => {
                match tokio_tungstenite::tungstenite::Utf8Bytes::try_from(body) {
                    Ok(text) => tokio_tungstenite::tungstenite::Message::Text(text),
                    Err(_) => return bad_request("the body is not UTF-8 (text mode)"),
                }
            }
        };
        let delivery = self.bus.publish(&channel, message);
        json(
            StatusCode::OK,
            &Answer {
                delivered: Some(delivery.delivered),
                dropped: Some(delivery.dropped),
                ..Answer::ok()
            },
        )
    }

    /// No token configured, or the right one given (compared in constant
    /// time).
    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(token) = self.token else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        bool::from(given.ct_eq(token.as_bytes()))
    }
}

fn refusal(kind: ErrorKind, why: &str) -> Answer {
    Answer::error(kind, why)
}

fn bad_request(why: &str) -> Response<Body> {
    json(
        StatusCode::BAD_REQUEST,
        &refusal(ErrorKind::BadRequest, why),
    )
}

fn json(status: StatusCode, answer: &Answer) -> Response<Body> {
    let mut text = serde_json::to_string(answer)
        .unwrap_or_else(|_| r#"{"ok":false,"error":"internal error"}"#.into());
    text.push('\n');
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
