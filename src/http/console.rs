//! The dev console (`--devconsole`): a plain GET or HEAD on a path that is a
//! WebSocket endpoint gets a small interactive page instead of the 426.
//!
//! The page is self-contained (inline CSS and JS, nothing fetched from
//! elsewhere) and identical for every path: its script connects to its own
//! path and query string, over `ws://` or `wss://` as the page itself was
//! loaded, so it also works behind a proxy that rewrites hosts or terminates
//! TLS. Nothing from the request is written into the page.

use http::header::{self, HeaderValue};
use http::Response;

use super::{full, Body};

/// The page, with its CSS and JS inline.
pub const PAGE: &str = include_str!("console.html");

/// The console page: 200, HTML, never cached (the page is tied to whatever
/// wspipe version and endpoint answered it).
pub fn page() -> Response<Body> {
    let mut r = Response::new(full(PAGE));
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained_html() {
        assert!(PAGE.starts_with("<!doctype html>"));
        for external in ["http://", "https://", "src=", "<link"] {
            assert!(!PAGE.contains(external), "page refers to {external}");
        }
        assert!(PAGE.contains("location.search"), "keeps the query string");
        assert!(PAGE.contains("\"wss:\""), "wss:// under https");
    }

    #[test]
    fn headers() {
        let r = page();
        assert_eq!(r.status(), http::StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    }
}
