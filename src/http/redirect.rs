//! `--redirport`: a plain HTTP port whose every request is redirected (301)
//! to the same host and path on the main port, https:// when `--ssl` is on.

use std::net::IpAddr;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use super::{text, Body};

/// The 301 for one request.
///
/// The host is the one the client asked for, or else the address it
/// reached us on (`fallback`), in brackets when it is IPv6.
pub fn redirect<B>(req: &Request<B>, https: bool, port: u16, fallback: IpAddr) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .map(|a| a.host().to_string())
        .unwrap_or_else(|| match fallback.to_canonical() {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        });
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
        let local = IpAddr::from([127, 0, 0, 1]);
        let r = redirect(&req, true, 8443, local);
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()["location"], "https://example.com:8443/chat?x=1");
        let r = redirect(&req, true, 443, local);
        assert_eq!(r.headers()["location"], "https://example.com/chat?x=1");
    }

    #[test]
    fn without_a_host_the_local_address_is_used_bracketed_when_ipv6() {
        let req = Request::builder().uri("/a").body(()).unwrap();
        let v6 = redirect(&req, false, 8080, "::1".parse().unwrap());
        assert_eq!(v6.headers()["location"], "http://[::1]:8080/a");
        let v4 = redirect(&req, false, 80, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(v4.headers()["location"], "http://10.0.0.1/a");
        // An IPv4 client on a dual-stack socket: the plain IPv4 address.
        let mapped = redirect(&req, false, 80, "::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(mapped.headers()["location"], "http://10.0.0.1/a");
    }
}
