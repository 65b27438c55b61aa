//! `--redirport`: a plain HTTP port whose every request is redirected (301)
//! to the same host and path on the main port, https:// when `--ssl` is on.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::{text, Body};
use crate::server::{accept_loop, Shared, HEADER_READ_TIMEOUT};

/// Accepts on `listener` and redirects every request to `port`.
pub async fn serve(listener: TcpListener, port: u16, shared: Arc<Shared>) {
    let https = shared.config.tls.is_some();
    let accept = || listener.accept();
    accept_loop(&shared.shutdown, accept, |(stream, _)| {
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let service = service_fn(move |req| async move {
            Ok::<_, std::convert::Infallible>(redirect(&req, https, port, &local.ip().to_string()))
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    })
    .await;
}

/// The 301 for one request.
pub fn redirect<B>(
    req: &Request<B>,
    https: bool,
    port: u16,
    fallback_host: &str,
) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .map(|a| a.host().to_string())
        .unwrap_or_else(|| fallback_host.to_string());
    let scheme = if https { "https" } else { "http" };
    let default_port = if https { 443 } else { 80 };
    let authority = if port == default_port {
        host
    } else {
        format!("{host}:{port}")
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!("{scheme}://{authority}{path}");
    let mut response = text(
        StatusCode::MOVED_PERMANENTLY,
        &format!("Moved to {location}\n"),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_host_and_path() {
        let req = Request::builder()
            .uri("/chat?x=1")
            .header("host", "example.com:8080")
            .body(())
            .unwrap();
        let r = redirect(&req, true, 8443, "127.0.0.1");
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()["location"], "https://example.com:8443/chat?x=1");
        let r = redirect(&req, true, 443, "127.0.0.1");
        assert_eq!(r.headers()["location"], "https://example.com/chat?x=1");
    }
}
