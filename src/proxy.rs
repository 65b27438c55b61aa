//! Client addresses behind a reverse proxy (`--trusted-proxy`).
//!
//! Behind nginx or apache every connection comes from the proxy, and the
//! client's address travels in `Forwarded` (RFC 7239) or `X-Forwarded-For`.
//! Those headers are written by whoever sends the request, so they are only
//! believed when the connection comes from a listed proxy. The chain is then
//! walked from the nearest hop outwards, skipping listed proxies; the first
//! address not listed is the client. From any other peer the headers are
//! ignored (they still reach the child as HTTP_* variables, for what they
//! are worth).

use std::net::IpAddr;

use forwarded_header_value::ForwardedHeaderValue;
use http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    /// Trust peers on the Unix socket (a proxy on the same host).
    unix: bool,
}

impl TrustedProxies {
    /// Parses `CIDR,IP,...`; the word `unix` trusts Unix socket peers.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut trusted = TrustedProxies::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "unix" {
                trusted.unix = true;
            } else if let Ok(net) = item.parse::<IpNet>() {
                trusted.nets.push(net);
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                trusted.nets.push(IpNet::from(ip));
            } else {
                return Err(format!("{item:?} is not an IP address or CIDR range"));
            }
        }
        Ok(trusted)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    fn trusts_peer(&self, peer: Option<IpAddr>) -> bool {
        match peer {
            Some(ip) => self.trusts(ip),
            None => self.unix,
        }
    }

    /// True when a trusted proxy says the client spoke HTTPS to it
    /// (`X-Forwarded-Proto: https`, or `proto=https` in `Forwarded`): TLS
    /// ended at the proxy, and origins and HTTPS=on should say so.
    pub fn forwarded_https(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
        if !self.trusts_peer(peer) {
            return false;
        }
        let nearest = |name: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .last()
                .map(|v| v.trim().to_ascii_lowercase())
        };
        if let Some(proto) = nearest("x-forwarded-proto") {
            return proto == "https" || proto == "wss";
        }
        nearest("forwarded").is_some_and(|stanza| {
            stanza
                .split(';')
                .any(|pair| matches!(pair.trim(), "proto=https" | "proto=\"https\""))
        })
    }

    /// The client's address for a request from `peer` (`None`: a Unix socket
    /// peer), or `None` when the headers are not to be believed or name no
    /// address.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        if !self.trusts_peer(peer) {
            return None;
        }
        let chain = forwarded_chain(headers)?;
        // Nearest hop first: skip our own proxies, take the first stranger.
        let mut hops = chain.iter().rev().filter_map(|s| s.forwarded_for_ip());
        let mut last = None;
        for ip in hops.by_ref() {
            if !self.trusts(ip) {
                return Some(ip);
            }
            last = Some(ip);
        }
        last
    }
}

/// The forwarding chain: `X-Forwarded-For` if present (what nginx and apache
/// append to by default, while they pass a client's `Forwarded` through
/// untouched), else `Forwarded`. Several header lines are one list.
fn forwarded_chain(headers: &HeaderMap) -> Option<ForwardedHeaderValue> {
    let joined = |name: &str| {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    if let Some(value) = joined("x-forwarded-for") {
        return parse_guarded(|| ForwardedHeaderValue::from_x_forwarded_for(&value).ok());
    }
    let value = joined("forwarded")?;
    // forwarded-header-value 0.1.1 panics on a lone `"` as a host (`host="`,
    // found by fuzz/fuzz_targets/fuzz_proxy.rs): refuse it as malformed.
    if value.split([',', ';']).any(|p| {
        p.trim()
            .split_once('=')
            .is_some_and(|(k, v)| k.eq_ignore_ascii_case("host") && v == "\"")
    }) {
        return None;
    }
    parse_guarded(|| ForwardedHeaderValue::from_forwarded(&value).ok())
}

/// Runs the header parser so that a panic in it (it has had one, see
/// above) makes the header malformed instead of ending the connection's
/// task: these bytes come from strangers.
fn parse_guarded(
    parse: impl FnOnce() -> Option<ForwardedHeaderValue>,
) -> Option<ForwardedHeaderValue> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(t.client_ip(Some(ip("192.168.1.1")), &h), None);
        assert_eq!(t.client_ip(None, &h), None, "unix peers need the word unix");
        assert_eq!(
            TrustedProxies::default().client_ip(Some(ip("10.0.0.1")), &h),
            None
        );
    }

    #[test]
    fn chain_is_walked_from_the_nearest_hop() {
        let t = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8").unwrap();
        // A client may put anything on the left; only the right is ours.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")]);
        assert_eq!(t.client_ip(Some(ip("127.0.0.1")), &h), Some(ip("1.2.3.4")));
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        assert_eq!(t.client_ip(Some(ip("127.0.0.1")), &h), Some(ip("1.2.3.4")));
    }

    #[test]
    fn x_forwarded_for_wins_over_a_forwarded_header_a_client_may_have_sent() {
        let t = TrustedProxies::parse("unix").unwrap();
        let h = headers(&[
            ("forwarded", "for=198.51.100.9"),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(t.client_ip(None, &h), Some(ip("9.9.9.9")));
        let h = headers(&[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")]);
        assert_eq!(t.client_ip(None, &h), Some(ip("2001:db8::1")));
    }

    #[test]
    fn https_at_the_proxy_counts_only_from_trusted_peers() {
        let t = TrustedProxies::parse("127.0.0.1").unwrap();
        let h = headers(&[("x-forwarded-proto", "https")]);
        assert!(t.forwarded_https(Some(ip("127.0.0.1")), &h));
        assert!(!t.forwarded_https(Some(ip("10.1.1.1")), &h));
        let h = headers(&[("forwarded", "for=1.2.3.4;proto=https")]);
        assert!(t.forwarded_https(Some(ip("127.0.0.1")), &h));
        assert!(!t.forwarded_https(Some(ip("127.0.0.1")), &HeaderMap::new()));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges() {
        let t = TrustedProxies::parse("127.0.0.0/8").unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            t.client_ip(Some(ip("::ffff:127.0.0.1")), &h),
            Some(ip("1.2.3.4"))
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(TrustedProxies::parse("not-an-ip").is_err());
    }
}

/// Regression tests from fuzzing (fuzz/fuzz_targets/fuzz_proxy.rs).
#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    #[test]
    fn a_lone_quote_as_forwarded_host_is_malformed_not_a_panic() {
        let t = TrustedProxies::parse("unix, 127.0.0.1").unwrap();
        for value in [
            "host=\"",
            "for=1.2.3.4, host=\"",
            "for=1.2.3.4;HOST=\"",
            " host=\" ;for=_x",
        ] {
            let mut h = HeaderMap::new();
            h.insert("forwarded", value.parse().unwrap());
            assert_eq!(t.client_ip(None, &h), None, "{value}");
            assert_eq!(
                t.client_ip(Some("127.0.0.1".parse().unwrap()), &h),
                None,
                "{value}"
            );
        }
        // A quoted host is still fine.
        let mut h = HeaderMap::new();
        h.insert("forwarded", "for=1.2.3.4;host=\"a\"".parse().unwrap());
        assert_eq!(t.client_ip(None, &h), Some("1.2.3.4".parse().unwrap()));
    }
}
