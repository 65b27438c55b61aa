//! The CGI environment from arbitrary request headers (and request target).
//!
//! Input layout, lines split on `\n`: the first is the request target (taken
//! when `http::Uri` accepts it, else `/`); every other is `NAME:VALUE`, kept
//! when `HeaderName::from_bytes` and `HeaderValue::from_bytes` accept the
//! parts. The input length's parity picks TLS.
#![no_main]

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use libfuzzer_sys::fuzz_target;
use wspipe::env::{header_var, request_vars, RemoteInfo, RequestEnv};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let uri = lines
        .next()
        .and_then(|t| Uri::try_from(t).ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let remote = RemoteInfo::Peer {
        ip: std::net::IpAddr::from([127, 0, 0, 1]),
        host: "localhost".into(),
        port: 1,
    };
    let vars = request_vars(&RequestEnv {
        id: "7",
        method: &Method::GET,
        uri: &uri,
        version: Version::HTTP_11,
        headers: &headers,
        remote: &remote,
        tls: data.len() % 2 == 1,
        local_port: Some(8080),
        script_name: "/",
        path_info: "",
    });

    let mut names = HashSet::new();
    for (name, value) in &vars {
        let name = name.as_bytes();
        assert!(!name.is_empty());
        assert!(!name.contains(&b'=') && !name.contains(&0), "{name:?}");
        assert!(names.insert(name), "duplicate variable {name:?}");
        let value = value.as_bytes();
        if name.starts_with(b"HTTP_") {
            assert!(
                !value.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')),
                "{value:?}"
            );
        } else {
            // No environment value can hold a NUL: a spawn would fail.
            assert!(
                !value.contains(&0),
                "{:?}={value:?}",
                String::from_utf8_lossy(name)
            );
        }
    }
    // HTTP_* are exactly the headers without `_` other than Proxy.
    let http: HashSet<&[u8]> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with(b"HTTP_"))
        .collect();
    let want: HashSet<String> = headers
        .keys()
        .filter_map(|n| header_var(n.as_str()))
        .collect();
    assert_eq!(http.len(), want.len());
    for var in &want {
        assert!(http.contains(var.as_bytes()));
        assert!(!var.contains('='));
    }
    for n in headers.keys() {
        let n = n.as_str();
        if n.contains('_') || n == "proxy" {
            assert!(header_var(n).is_none(), "{n} passed through");
        } else {
            let twin = format!("HTTP_{}", n.to_ascii_uppercase().replace('-', "_"));
            assert!(http.contains(twin.as_bytes()), "{n} missing");
        }
    }
});
