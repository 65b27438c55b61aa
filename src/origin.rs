//! Origin checks for WebSocket upgrades (`--origin`, `--sameorigin`).
//!
//! Browsers send an `Origin` header with every WebSocket handshake; a server
//! that does not check it lets any web page the user visits open sockets to
//! it with the user's cookies (cross-site WebSocket hijacking). Semantics
//! follow websocketd: an allowed entry without a port (or with `:*`, as
//! websocketd 0.5 writes it) matches any port, an entry with a scheme must
//! match the scheme too, and when any restriction is set a handshake
//! without an Origin is refused.

use std::str::FromStr;

use http::uri::{Authority, Uri};

/// One `--origin` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
}

/// The configured origin restrictions.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    same_origin: bool,
    allowed: Option<Vec<Allowed>>,
}

/// Why an origin was refused (logged; the client sees 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("no usable Origin header")]
    Missing,
    #[error("Origin does not match Host")]
    NotSameOrigin,
    #[error("Origin is not in the --origin list")]
    NotAllowed,
}

impl OriginPolicy {
    /// Builds the policy from `--origin LIST` and `--sameorigin`.
    pub fn new(list: Option<&str>, same_origin: bool) -> Result<Self, String> {
        let allowed = match list {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(parse_allowed)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        if allowed.as_ref().is_some_and(Vec::is_empty) {
            return Err("empty list".into());
        }
        Ok(OriginPolicy {
            same_origin,
            allowed,
        })
    }

    /// True when no check is configured.
    pub fn is_open(&self) -> bool {
        !self.same_origin && self.allowed.is_none()
    }

    /// Checks a handshake's `Origin` against the policy; `host` is the
    /// request's Host header and `tls` whether it came over TLS.
    pub fn check(
        &self,
        origin: Option<&str>,
        host: Option<&str>,
        tls: bool,
    ) -> Result<(), OriginError> {
        if self.is_open() {
            return Ok(());
        }
        let (scheme, ohost, oport) = origin.and_then(parse_origin).ok_or(OriginError::Missing)?;
        if self.same_origin {
            let (hhost, hport) = host
                .and_then(|h| Authority::from_str(h).ok())
                .map(|a| {
                    let port = a.port_u16().unwrap_or(if tls { 443 } else { 80 });
                    (a.host().to_ascii_lowercase(), port)
                })
                .ok_or(OriginError::NotSameOrigin)?;
            if hhost != ohost || hport != oport {
                return Err(OriginError::NotSameOrigin);
            }
        }
        if let Some(allowed) = &self.allowed {
            let hit = allowed.iter().any(|a| {
                a.host == ohost
                    && a.port.is_none_or(|p| p == oport)
                    && a.scheme.as_deref().is_none_or(|s| s == scheme)
            });
            if !hit {
                return Err(OriginError::NotAllowed);
            }
        }
        Ok(())
    }
}

/// `scheme://host[:port]` into (scheme, lower-case host, port with default).
fn parse_origin(origin: &str) -> Option<(String, String, u16)> {
    let uri = Uri::from_str(origin.trim()).ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(match scheme.as_str() {
        "https" | "wss" => 443,
        _ => 80,
    });
    Some((scheme, host, port))
}

fn parse_allowed(entry: &str) -> Result<Allowed, String> {
    let (scheme, rest) = match entry.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, entry),
    };
    let rest = rest.trim_end_matches('/');
    // websocketd 0.5's spelling of "any port" (its port-less entry means
    // the scheme's default port only; here it has always meant any port).
    let rest = rest.strip_suffix(":*").unwrap_or(rest);
    let authority = Authority::from_str(rest)
        .ok()
        // http's Authority takes any text after the ':' and then reports no
        // port: "host:80x" would silently allow every port.
        .filter(|a| a.as_str() == a.host() || a.port_u16().is_some())
        .ok_or_else(|| format!("{entry:?} is not host[:port]"))?;
    Ok(Allowed {
        scheme,
        host: authority.host().to_ascii_lowercase(),
        port: authority.port_u16(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_policy_allows_anything() {
        let p = OriginPolicy::new(None, false).unwrap();
        assert_eq!(p.check(None, None, false), Ok(()));
    }

    #[test]
    fn list_matches_host_port_and_scheme() {
        let p = OriginPolicy::new(
            Some("example.com, localhost:8080,https://secure.org"),
            false,
        )
        .unwrap();
        assert_eq!(
            p.check(Some("http://example.com:1234"), None, false),
            Ok(())
        );
        assert_eq!(p.check(Some("http://EXAMPLE.com"), None, false), Ok(()));
        assert_eq!(p.check(Some("http://localhost:8080"), None, false), Ok(()));
        assert_eq!(
            p.check(Some("http://localhost:9090"), None, false),
            Err(OriginError::NotAllowed)
        );
        assert_eq!(p.check(Some("https://secure.org"), None, false), Ok(()));
        assert_eq!(
            p.check(Some("http://secure.org"), None, false),
            Err(OriginError::NotAllowed)
        );
        assert_eq!(
            p.check(Some("http://evil.com"), None, false),
            Err(OriginError::NotAllowed)
        );
        assert_eq!(p.check(None, None, false), Err(OriginError::Missing));
        assert_eq!(
            p.check(Some("null"), None, false),
            Err(OriginError::Missing)
        );
    }

    #[test]
    fn same_origin_compares_with_host_header() {
        let p = OriginPolicy::new(None, true).unwrap();
        assert_eq!(
            p.check(Some("http://a.com:8080"), Some("a.com:8080"), false),
            Ok(())
        );
        assert_eq!(p.check(Some("http://a.com"), Some("a.com"), false), Ok(()));
        assert_eq!(p.check(Some("https://a.com"), Some("a.com"), true), Ok(()));
        assert_eq!(
            p.check(Some("http://b.com:8080"), Some("a.com:8080"), false),
            Err(OriginError::NotSameOrigin)
        );
        assert_eq!(
            p.check(Some("http://a.com:9"), Some("a.com:8080"), false),
            Err(OriginError::NotSameOrigin)
        );
    }

    #[test]
    fn star_port_matches_any_port() {
        let p = OriginPolicy::new(Some("a.example:*,https://b.example:*"), false).unwrap();
        assert_eq!(p.check(Some("http://a.example:3000"), None, false), Ok(()));
        assert_eq!(p.check(Some("https://a.example"), None, false), Ok(()));
        assert_eq!(p.check(Some("https://b.example:8443"), None, false), Ok(()));
        assert_eq!(
            p.check(Some("http://b.example:8443"), None, false),
            Err(OriginError::NotAllowed)
        );
        for bad in ["a b:*", "a.example:**", "a.example:80x", "a.example:"] {
            assert!(OriginPolicy::new(Some(bad), false).is_err(), "{bad}");
        }
        assert!(OriginPolicy::new(Some("[::1]:8080,[::1]"), false).is_ok());
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(OriginPolicy::new(Some("a b"), false).is_err());
        assert!(OriginPolicy::new(Some(","), false).is_err());
    }
}
