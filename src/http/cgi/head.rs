//! The header block a CGI script prints before its body (RFC 3875 6):
//! `Status`, `Location` and `Content-Type`, the rest passed through.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

/// Largest header block a script may print before its body (bigger: 502).
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Most header lines in a script's header block (more: 502).
const MAX_HEADERS: usize = 100;

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
}
