//! `--auth-url URL`: an HTTP service decides, as nginx's `auth_request`
//! does. wspipe sends it a `GET URL` carrying the original request's
//! headers (Cookie, Authorization, Origin...; not the hop-by-hop and
//! WebSocket ones) and `X-Original-Method`, `X-Original-URI` and
//! `X-Original-Remote-Addr`. Headers named `X-Original-*` or `Wspipe-*`
//! that the client sent are dropped first: the service must be able to
//! trust what it reads.
//!
//! - 2xx admits; each response header `Wspipe-Env-NAME: value` becomes a
//!   variable of the child: `WSPIPE_AUTH_NAME` (NAME upper-cased, `-` as
//!   `_`), and `Wspipe-Env-Remote-User` its REMOTE_USER.
//!   `Wspipe-Channels: /a, /rooms/*` limits the channels the client may
//!   join ([`Permits`]).
//! - 401 and 403 refuse with that status (a 401's `WWW-Authenticate`
//!   passed through);
//! - anything else, a refused connection, garbage or no answer within
//!   `--auth-timeout`: 503. Fail closed, always.
//!
//! One connection per check (loopback or a Unix socket: cheap), at most as
//! many at once as the caller's check slots allow.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use super::channels::Permits;
use super::command::valid_name;

/// Where the service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `http://HOST:PORT/PATH` on a loopback address.
    Tcp { authority: String, path: String },
    /// `unix:/SOCKET:/PATH`.
    Unix { socket: PathBuf, path: String },
}

/// The configured service.
#[derive(Debug, Clone)]
pub struct AuthUrl {
    pub target: Target,
    /// `--auth-timeout`: connect, send and answer, all of it.
    pub timeout: Duration,
}

/// What the service answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Admit {
        user: Option<String>,
        vars: Vec<(String, String)>,
        /// `Wspipe-Channels`.
        channels: Option<Permits>,
    },
    /// 401 or 403, with a 401's challenge.
    Refuse(StatusCode, Option<HeaderValue>),
    /// Why it is a 503, for the log.
    Failed(String),
}

/// The original request, as the service is told of it.
#[derive(Debug)]
pub struct Original<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// REMOTE_ADDR (the client behind a trusted proxy); empty over a Unix
    /// socket.
    pub remote_addr: &'a str,
}

/// Why an `--auth-url` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--auth-url {0:?}: give http://LOOPBACK-ADDRESS:PORT/PATH or unix:/SOCKET:/PATH")]
pub struct BadUrl(String);

impl Target {
    /// Parses `--auth-url`. HTTP only to loopback addresses: the
    /// credentials of every client go there, so not across a network in
    /// the clear.
    pub fn parse(url: &str) -> Result<Self, BadUrl> {
        let bad = || BadUrl(url.to_owned());
        if let Some(rest) = url.strip_prefix("unix:") {
            let at = rest.rfind(":/").ok_or_else(bad)?;
            let (socket, path) = (&rest[..at], &rest[at + 1..]);
            if !socket.starts_with('/') || path.parse::<Uri>().is_err() {
                return Err(bad());
            }
            return Ok(Target::Unix {
                socket: socket.into(),
                path: path.to_owned(),
            });
        }
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let authority = uri.authority().filter(|_| uri.scheme_str() == Some("http"));
        let authority = authority.ok_or_else(bad)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback || authority.port_u16().is_none() {
            return Err(bad());
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Target::Tcp {
            authority: authority.to_string(),
            path,
        })
    }
}

impl AuthUrl {
    /// Asks the service about `original`.
    pub async fn ask(&self, original: &Original<'_>) -> Answer {
        let request = match self.request(original) {
            Ok(request) => request,
            Err(e) => return Answer::Failed(e),
        };
        match tokio::time::timeout(self.timeout, self.send(request)).await {
            Ok(Ok(response)) => answer(response.status(), response.headers()),
            Ok(Err(e)) => Answer::Failed(e),
            Err(_) => Answer::Failed(format!("no answer within {:?}", self.timeout)),
        }
    }

    fn request(&self, original: &Original<'_>) -> Result<Request<Empty<Bytes>>, String> {
        let (host, path) = match &self.target {
            Target::Tcp { authority, path } => (authority.as_str(), path),
            Target::Unix { path, .. } => ("localhost", path),
        };
        let mut request = Request::get(path.as_str())
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        for (name, value) in original.headers {
            if forwarded(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
            HeaderValue::from_str(value)
                .map(|v| headers.insert(HeaderName::from_static(name), v))
                .map_err(|_| format!("{name} cannot be sent"))
        };
        set(headers, "host", host)?;
        set(headers, "x-original-method", original.method.as_str())?;
        let uri = original.uri.path_and_query().map_or("/", |p| p.as_str());
        set(headers, "x-original-uri", uri)?;
        set(headers, "x-original-remote-addr", original.remote_addr)?;
        Ok(request)
    }

    /// One connection, one request; the body of the answer is not read.
    async fn send(
        &self,
        request: Request<Empty<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let unreachable = |e: std::io::Error| format!("cannot connect: {e}");
        let mut sender = match &self.target {
            Target::Tcp { authority, .. } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(unreachable)?;
                handshake(stream).await?
            }
            Target::Unix { socket, .. } => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(unreachable)?;
                handshake(stream).await?
            }
        };
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("bad answer: {e}"))
    }
}

async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // Drives the connection; it ends with the exchange (or the timeout
    // that drops the sender).
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Whether an original request header goes to the service: not the
/// hop-by-hop ones, not the WebSocket handshake's, and never one the
/// client could use to pose as wspipe.
fn forwarded(name: &HeaderName) -> bool {
    let name = name.as_str();
    let hop_by_hop = matches!(
        name,
        "host"
            | "connection"
            | "upgrade"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "content-length"
            | "proxy-authorization"
            | "proxy-connection"
    );
    !hop_by_hop
        && !name.starts_with("sec-websocket-")
        && !name.starts_with("x-original-")
        && !name.starts_with("wspipe-")
}

/// What a status and its headers mean.
pub fn answer(status: StatusCode, headers: &HeaderMap) -> Answer {
    match status.as_u16() {
        200..=299 => admit(headers),
        401 => Answer::Refuse(status, headers.get(header::WWW_AUTHENTICATE).cloned()),
        403 => Answer::Refuse(status, None),
        other => Answer::Failed(format!("status {other}")),
    }
}

/// The `Wspipe-Env-*` headers of an admitting answer.
fn admit(headers: &HeaderMap) -> Answer {
    let mut user = None;
    let mut vars = Vec::new();
    for (name, value) in headers {
        let Some(suffix) = name.as_str().strip_prefix("wspipe-env-") else {
            continue;
        };
        let var = suffix.to_ascii_uppercase().replace('-', "_");
        let Some(value) = value.to_str().ok().filter(|_| valid_name(&var)) else {
            return Answer::Failed(format!("bad header {name}"));
        };
        if var == "REMOTE_USER" {
            user = Some(value.to_owned());
        } else {
            vars.push((format!("WSPIPE_AUTH_{var}"), value.to_owned()));
        }
    }
    let channels = match channels(headers) {
        Ok(channels) => channels,
        Err(why) => return Answer::Failed(why),
    };
    Answer::Admit {
        user,
        vars,
        channels,
    }
}

/// The `Wspipe-Channels` headers of an admitting answer, as one list.
fn channels(headers: &HeaderMap) -> Result<Option<Permits>, String> {
    let values: Vec<&str> = headers
        .get_all("wspipe-channels")
        .iter()
        .map(|v| {
            v.to_str()
                .map_err(|_| "bad header wspipe-channels".to_owned())
        })
        .collect::<Result<_, _>>()?;
    if values.is_empty() {
        return Ok(None);
    }
    Permits::parse_list(&values.join(","))
        .map(Some)
        .map_err(|e| format!("wspipe-channels: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_loopback_http_or_a_unix_socket() {
        assert_eq!(
            Target::parse("http://127.0.0.1:9000/auth?x=1").unwrap(),
            Target::Tcp {
                authority: "127.0.0.1:9000".into(),
                path: "/auth?x=1".into()
            }
        );
        assert!(Target::parse("http://[::1]:9000/").is_ok());
        assert!(Target::parse("http://localhost:9000/").is_ok());
        assert_eq!(
            Target::parse("unix:/run/auth.sock:/check").unwrap(),
            Target::Unix {
                socket: "/run/auth.sock".into(),
                path: "/check".into()
            }
        );
        for bad in [
            "https://127.0.0.1:9000/",
            "http://10.0.0.1:9000/",
            "http://example.com:80/",
            "http://127.0.0.1/",
            "unix:relative.sock:/x",
            "unix:/no/path",
            "ftp://127.0.0.1:21/",
            "",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_map_to_admit_refuse_or_fail() {
        let mut headers = HeaderMap::new();
        headers.insert("wspipe-env-remote-user", HeaderValue::from_static("alice"));
        headers.insert("wspipe-env-role", HeaderValue::from_static("admin"));
        headers.insert("x-other", HeaderValue::from_static("ignored"));
        assert_eq!(
            answer(StatusCode::NO_CONTENT, &headers),
            Answer::Admit {
                user: Some("alice".into()),
                vars: vec![("WSPIPE_AUTH_ROLE".into(), "admin".into())],
                channels: None,
            }
        );
        headers.append("wspipe-channels", HeaderValue::from_static("/a, /b"));
        headers.append("wspipe-channels", HeaderValue::from_static("/rooms/*"));
        let Answer::Admit { channels, .. } = answer(StatusCode::OK, &headers) else {
            panic!("admitted");
        };
        let channels = channels.unwrap();
        assert!(channels.allows("/b") && channels.allows("/rooms/1") && !channels.allows("/c"));
        headers.insert("wspipe-channels", HeaderValue::from_static("no-slash"));
        assert!(matches!(
            answer(StatusCode::OK, &headers),
            Answer::Failed(_)
        ));
        let mut challenge = HeaderMap::new();
        challenge.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        assert_eq!(
            answer(StatusCode::UNAUTHORIZED, &challenge),
            Answer::Refuse(
                StatusCode::UNAUTHORIZED,
                Some(HeaderValue::from_static("Bearer"))
            )
        );
        assert_eq!(
            answer(StatusCode::FORBIDDEN, &challenge),
            Answer::Refuse(StatusCode::FORBIDDEN, None)
        );
        for status in [302, 404, 500, 502] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(
                matches!(answer(status, &headers), Answer::Failed(_)),
                "{status}"
            );
        }
        let mut bad = HeaderMap::new();
        bad.insert("wspipe-env-1x", HeaderValue::from_static("v"));
        assert!(matches!(answer(StatusCode::OK, &bad), Answer::Failed(_)));
    }

    #[test]
    fn forged_and_hop_by_hop_headers_stay_behind() {
        for name in [
            "x-original-uri",
            "wspipe-env-role",
            "sec-websocket-key",
            "upgrade",
            "host",
        ] {
            assert!(!forwarded(&HeaderName::from_static(name)), "{name}");
        }
        for name in [
            "cookie",
            "authorization",
            "origin",
            "user-agent",
            "x-forwarded-for",
        ] {
            assert!(forwarded(&HeaderName::from_static(name)), "{name}");
        }
    }
}
