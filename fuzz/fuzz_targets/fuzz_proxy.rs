//! Forwarding headers from a trusted proxy (`X-Forwarded-For`, `Forwarded`,
//! `X-Forwarded-Proto`) with fuzzer-chosen values: the parsers never panic,
//! an untrusted peer's headers are never believed, and an IPv4 client address
//! that is returned appears in the headers.
//!
//! Input layout: lines split on `\n`, each `NAME:VALUE` with NAME among the
//! forwarding headers by its first byte (mod 4); the first line's first byte
//! also picks the peer (bit 0: Unix socket, else 10.0.0.1).
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use wspipe::proxy::TrustedProxies;

const NAMES: [&str; 4] = [
    "x-forwarded-for",
    "forwarded",
    "x-forwarded-proto",
    "x-real-ip",
];

fn trusted() -> &'static TrustedProxies {
    static T: OnceLock<TrustedProxies> = OnceLock::new();
    T.get_or_init(|| TrustedProxies::parse("unix, 10.0.0.0/8, ::1, 127.0.0.1").unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some(&flags) = data.first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&pick, value)) = line.split_first() else {
            continue;
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(NAMES[pick as usize % NAMES.len()], v);
        }
    }
    let peer: Option<IpAddr> = if flags & 1 == 1 {
        None
    } else {
        Some("10.0.0.1".parse().unwrap())
    };
    let t = trusted();
    let client = t.client_ip(peer, &headers);
    let _ = t.forwarded_https(peer, &headers);

    if let Some(IpAddr::V4(ip)) = client {
        // An IPv4 address has one spelling (no leading zeros are accepted),
        // so it must appear in the headers as returned.
        let plain = ip.to_string();
        assert!(
            headers
                .values()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains(&plain)),
            "{ip} is in no header"
        );
    }

    // An untrusted peer's headers are never believed.
    let stranger: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
    assert_eq!(t.client_ip(stranger, &headers), None);
    assert!(!t.forwarded_https(stranger, &headers));
    let nobody = TrustedProxies::default();
    assert_eq!(nobody.client_ip(None, &headers), None);
});
