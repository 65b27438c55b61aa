//! Where a client's token is: `Authorization: Bearer TOKEN`; an offered
//! WebSocket subprotocol `bearer.TOKEN` (browsers cannot set headers on a
//! WebSocket, but they can offer protocols: `new WebSocket(url,
//! ["bearer." + token])`); or, with `--jwt-query NAME`, the query
//! parameter NAME. Exactly one of them: two tokens in one request are
//! refused rather than one picked.
//!
//! Once the request is admitted, [`scrub`] takes the token out of it, so
//! the child's environment (HTTP_AUTHORIZATION, HTTP_SEC_WEBSOCKET_PROTOCOL,
//! QUERY_STRING, REQUEST_URI) never holds it.

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use percent_encoding::percent_decode_str;

/// The subprotocol prefix that carries a token.
pub const PROTOCOL_PREFIX: &str = "bearer.";

/// Longest token looked at: a longer one is refused unread.
pub const MAX_TOKEN: usize = 8192;

/// A token, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub token: String,
    /// The subprotocol it was offered as: the 101 answers with it, as a
    /// browser requires an answer among the protocols it offered.
    pub protocol: Option<HeaderValue>,
}

/// The request's one token, or why there is none to verify.
pub fn find(headers: &HeaderMap, uri: &Uri, query: Option<&str>) -> Result<Found, &'static str> {
    let mut found = Vec::new();
    if let Some(token) = bearer_header(headers)? {
        found.push(Found {
            token,
            protocol: None,
        });
    }
    for entry in protocols(headers) {
        if let Some(token) = entry.strip_prefix(PROTOCOL_PREFIX) {
            found.push(Found {
                token: token.to_owned(),
                protocol: HeaderValue::from_str(entry).ok(),
            });
        }
    }
    if let Some(name) = query {
        for value in query_values(uri, name) {
            found.push(Found {
                token: value,
                protocol: None,
            });
        }
    }
    let one = match found.len() {
        0 => return Err("token required"),
        1 => found.remove(0),
        _ => return Err("more than one token"),
    };
    if one.token.len() > MAX_TOKEN {
        return Err("token too long");
    }
    if one.token.is_empty() {
        return Err("malformed token");
    }
    Ok(one)
}

/// Takes every token out of the request: the `bearer.` subprotocols, the
/// query parameter (`Authorization` the caller removes for every
/// mechanism).
pub fn scrub(headers: &mut HeaderMap, uri: &mut Uri, query: Option<&str>) {
    let kept: Vec<String> = protocols(headers)
        .filter(|p| !p.starts_with(PROTOCOL_PREFIX))
        .map(str::to_owned)
        .collect();
    if kept.len() != protocols(headers).count() {
        headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
        if let Ok(value) = HeaderValue::from_str(&kept.join(", ")) {
            if !kept.is_empty() {
                headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
            }
        }
    }
    if let Some(name) = query {
        if let Some(stripped) = without_param(uri, name) {
            *uri = stripped;
        }
    }
}

/// The token of an `Authorization: Bearer` header; another scheme is no
/// token (the header goes all the same).
fn bearer_header(headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("more than one Authorization header");
    }
    let text = value
        .to_str()
        .map_err(|_| "malformed Authorization header")?;
    Ok(text
        .trim()
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned()))
}

/// Every offered subprotocol, across all `Sec-WebSocket-Protocol` headers.
fn protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// The decoded values of the query parameter `name`.
fn query_values(uri: &Uri, name: &str) -> Vec<String> {
    let Some(query) = uri.query() else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(key, _)| decoded(key) == name)
        .map(|(_, value)| decoded(value))
        .collect()
}

fn decoded(text: &str) -> String {
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// `uri` without the query parameter `name`; `None` when it has none.
fn without_param(uri: &Uri, name: &str) -> Option<Uri> {
    let query = uri.query()?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| decoded(pair.split_once('=').map_or(*pair, |(k, _)| k)) != name)
        .collect();
    if kept.len() == query.split('&').count() {
        return None;
    }
    let rest = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(rest).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_token_is_found_in_one_of_three_places() {
        let uri: Uri = "/chat?room=1&access_token=q.r.s".parse().unwrap();
        let bare: Uri = "/chat".parse().unwrap();
        let by_header = find(&headers(&[("authorization", "Bearer a.b.c")]), &bare, None);
        assert_eq!(by_header.unwrap().token, "a.b.c");
        let offered = headers(&[("sec-websocket-protocol", "chat, bearer.x.y.z")]);
        let by_protocol = find(&offered, &bare, None).unwrap();
        assert_eq!(by_protocol.token, "x.y.z");
        assert_eq!(by_protocol.protocol.unwrap(), "bearer.x.y.z");
        let by_query = find(&HeaderMap::new(), &uri, Some("access_token")).unwrap();
        assert_eq!(by_query.token, "q.r.s");
        // The query is not looked at unless --jwt-query names it.
        assert_eq!(find(&HeaderMap::new(), &uri, None), Err("token required"));
        assert_eq!(
            find(&headers(&[("authorization", "Basic eDp5")]), &bare, None),
            Err("token required")
        );
    }

    #[test]
    fn two_tokens_or_an_overlong_one_are_refused() {
        let uri: Uri = "/?t=a.b.c".parse().unwrap();
        let both = headers(&[
            ("authorization", "Bearer a.b.c"),
            ("sec-websocket-protocol", "bearer.a.b.c"),
        ]);
        assert_eq!(find(&both, &uri, None), Err("more than one token"));
        let header = headers(&[("authorization", "Bearer a.b.c")]);
        assert_eq!(find(&header, &uri, Some("t")), Err("more than one token"));
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN + 1));
        let long = headers(&[("authorization", &long)]);
        assert_eq!(find(&long, &uri, None), Err("token too long"));
    }

    #[test]
    fn scrubbing_leaves_no_token_and_keeps_the_rest() {
        let mut map = headers(&[("sec-websocket-protocol", "chat, bearer.x.y.z")]);
        let mut uri: Uri = "/room?a=1&t=x.y.z&b=2".parse().unwrap();
        scrub(&mut map, &mut uri, Some("t"));
        assert_eq!(map.get(header::SEC_WEBSOCKET_PROTOCOL).unwrap(), "chat");
        assert_eq!(uri, "/room?a=1&b=2");
        let mut map = headers(&[("sec-websocket-protocol", "bearer.x.y.z")]);
        let mut uri: Uri = "/room?t=x".parse().unwrap();
        scrub(&mut map, &mut uri, Some("t"));
        assert!(map.get(header::SEC_WEBSOCKET_PROTOCOL).is_none());
        assert_eq!(uri, "/room");
        let mut untouched: Uri = "/room?a=1".parse().unwrap();
        scrub(&mut map, &mut untouched, Some("t"));
        assert_eq!(untouched, "/room?a=1");
    }
}
