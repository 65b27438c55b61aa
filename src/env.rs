//! The CGI/1.1 environment of a child (RFC 3875, as websocketd sets it).
//!
//! A child sees only what is built here: wspipe's own environment is not
//! inherited, except `PATH` and the variables named by `--passenv`. The part
//! that never changes is computed once at start-up ([`BaseEnv`]); the request
//! part is added per connection ([`request_vars`]).

use std::ffi::OsString;
use std::net::IpAddr;
use std::os::unix::ffi::OsStringExt;

use http::{HeaderMap, Method, Uri, Version};

/// `SERVER_SOFTWARE` value.
pub const SERVER_SOFTWARE: &str = concat!("wspipe/", env!("CARGO_PKG_VERSION"));

/// One environment variable.
pub type Var = (OsString, OsString);

/// With `--control`: the control socket's absolute path (`wspipe ctl`
/// reads it).
pub const CONTROL_VAR: &str = "WSPIPE_CONTROL";
/// With `--control`: the wspipe binary, so `"$WSPIPE_BIN" ctl` works when
/// wspipe is not on the child's PATH.
pub const BIN_VAR: &str = "WSPIPE_BIN";

/// Every variable a WebSocket child can get, with what it holds: the man
/// page's ENVIRONMENT section is printed from this table, and a test checks
/// it against what [`BaseEnv`] and [`request_vars`] build. `HTTP_*` stands
/// for one variable per request header.
pub const CHILD_VARS: &[(&[&str], &str)] = &[
    (&["PATH"], "wspipe's own PATH."),
    (&["GATEWAY_INTERFACE"], "CGI/1.1."),
    (&["SERVER_SOFTWARE"], SERVER_SOFTWARE),
    (
        &["SERVER_NAME"],
        "The host named by the request's Host header.",
    ),
    (
        &["SERVER_PORT"],
        "The port named by the Host header (80, or 443 with TLS, when it names none; the listening port when there is no Host header).",
    ),
    (&["SERVER_PROTOCOL"], "The request's HTTP version: HTTP/1.1."),
    (&["REQUEST_METHOD"], "The request method: GET."),
    (
        &["REQUEST_URI"],
        "The path and query string of the request, as sent.",
    ),
    (
        &["SCRIPT_NAME"],
        "The part of the path that chose the program: / for a COMMAND, /chat for DIR/chat with --dir.",
    ),
    (&["PATH_INFO"], "The rest of the path, after SCRIPT_NAME."),
    (&["PATH_TRANSLATED"], "The request path, percent-decoded."),
    (&["QUERY_STRING"], "The query string, without the '?'."),
    (
        &["REMOTE_ADDR"],
        "The client's IP address (the one a --trusted-proxy names, if it came through one); empty on a Unix socket.",
    ),
    (
        &["REMOTE_HOST"],
        "The client's host name with --reverselookup, else its IP address.",
    ),
    (
        &["REMOTE_PORT"],
        "The client's port; empty when not known (a Unix socket, or a forwarded client).",
    ),
    (&["UNIQUE_ID"], "The connection id, as websocketd sets it."),
    (
        &["WSPIPE_CONNECTION_ID"],
        "The connection id again, for wspipe ctl (send, close, subscribe ...).",
    ),
    (
        &["HTTPS"],
        "\"on\" on a TLS connection (--ssl); not set otherwise.",
    ),
    (
        &["HTTP_*"],
        "One per request header: HTTP_ and the name in capitals with '-' as '_' (HTTP_USER_AGENT). Headers whose names contain '_', and Proxy, are not passed.",
    ),
    (
        &[
            "AUTH_TYPE",
            "CONTENT_LENGTH",
            "CONTENT_TYPE",
            "REMOTE_IDENT",
            "REMOTE_USER",
        ],
        "Empty: CGI variables with no meaning for a WebSocket (a --cgidir script gets CONTENT_LENGTH and CONTENT_TYPE of its request).",
    ),
    (
        &[CONTROL_VAR],
        "With --control: the control socket's absolute path; wspipe ctl reads it.",
    ),
    (
        &[BIN_VAR],
        "With --control: the wspipe binary, so that \"$WSPIPE_BIN\" ctl works when wspipe is not on PATH.",
    ),
];

/// The request-independent part of every child's environment.
#[derive(Debug, Clone, Default)]
pub struct BaseEnv {
    vars: Vec<Var>,
}

impl BaseEnv {
    /// `PATH` and the `--passenv` variables from wspipe's environment, plus
    /// the constant CGI variables.
    pub fn from_parent(passenv: &[String]) -> Self {
        Self::from_lookup(passenv, |name| std::env::var_os(name))
    }

    /// Same as [`from_parent`](Self::from_parent) with an explicit lookup
    /// (for tests).
    pub fn from_lookup(passenv: &[String], lookup: impl Fn(&str) -> Option<OsString>) -> Self {
        let mut vars: Vec<Var> = Vec::new();
        let names = std::iter::once("PATH").chain(passenv.iter().map(String::as_str));
        for name in names {
            let name = name.trim();
            if name.is_empty() || vars.iter().any(|(n, _)| n == name) {
                continue;
            }
            if let Some(value) = lookup(name) {
                vars.push((name.into(), value));
            }
        }
        let constant = [
            ("SERVER_SOFTWARE", SERVER_SOFTWARE),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            // Part of CGI but meaningless for a WebSocket; set empty so that
            // nothing can leak in under these names.
            ("AUTH_TYPE", ""),
            ("CONTENT_LENGTH", ""),
            ("CONTENT_TYPE", ""),
            ("REMOTE_IDENT", ""),
            ("REMOTE_USER", ""),
        ];
        vars.extend(constant.iter().map(|(k, v)| (k.into(), v.into())));
        BaseEnv { vars }
    }

    /// Adds (or replaces) a variable.
    pub fn set(&mut self, name: &str, value: &std::ffi::OsStr) {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.into(), value.into()));
    }

    /// The variables, in order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }
}

/// Who is on the other end of a connection, as the CGI variables tell it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RemoteInfo {
    /// A Unix socket peer: no address to tell.
    #[default]
    Unix,
    /// A TCP peer, as the socket shows it.
    Peer {
        ip: IpAddr,
        /// `REMOTE_HOST`: its name with `--reverselookup`, else its IP.
        host: String,
        port: u16,
    },
    /// The client a trusted proxy named; its port is not known.
    Forwarded { ip: IpAddr, host: String },
}

impl RemoteInfo {
    /// `REMOTE_ADDR`, `REMOTE_HOST` and `REMOTE_PORT` (empty when unknown).
    /// REMOTE_ADDR's value: the client's address, empty over a Unix socket.
    pub fn addr_text(&self) -> String {
        let [addr, _, _] = self.cgi_values();
        addr
    }

    fn cgi_values(&self) -> [String; 3] {
        match self {
            RemoteInfo::Unix => Default::default(),
            RemoteInfo::Peer { ip, host, port } => [ip.to_string(), host.clone(), port.to_string()],
            RemoteInfo::Forwarded { ip, host } => [ip.to_string(), host.clone(), String::new()],
        }
    }
}

/// What a request contributes to the environment.
#[derive(Debug)]
pub struct RequestEnv<'a> {
    /// Connection id: `UNIQUE_ID` (as websocketd) and `WSPIPE_CONNECTION_ID`.
    pub id: &'a str,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub headers: &'a HeaderMap,
    pub remote: &'a RemoteInfo,
    /// Whether the connection is TLS (`HTTPS=on`).
    pub tls: bool,
    /// The listening port, used when the Host header names none.
    pub local_port: Option<u16>,
    pub script_name: &'a str,
    pub path_info: &'a str,
}

/// The per-request CGI variables plus `HTTP_*` for every request header.
pub fn request_vars(req: &RequestEnv<'_>) -> Vec<Var> {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    let server_name = host
        .as_ref()
        .map(|a| a.host().to_string())
        .unwrap_or_default();
    let server_port = host
        .as_ref()
        .and_then(|a| a.port_u16())
        .or(if host.is_some() {
            Some(if req.tls { 443 } else { 80 })
        } else {
            req.local_port
        })
        .map(|p| p.to_string())
        .unwrap_or_default();
    let path = req.uri.path();
    // No environment value can hold a NUL (routing refuses such paths; this
    // keeps the function total for any input).
    let decoded_path = percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .replace('\0', "");
    let request_uri = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or(path);

    let mut vars: Vec<Var> = Vec::with_capacity(20 + req.headers.keys_len());
    let mut set = |k: &str, v: &str| vars.push((k.into(), v.into()));
    let [remote_addr, remote_host, remote_port] = req.remote.cgi_values();
    set("REMOTE_ADDR", &remote_addr);
    set("REMOTE_HOST", &remote_host);
    set("REMOTE_PORT", &remote_port);
    set("SERVER_NAME", &server_name);
    set("SERVER_PORT", &server_port);
    set("SERVER_PROTOCOL", protocol(req.version));
    set("REQUEST_METHOD", req.method.as_str());
    set("REQUEST_URI", request_uri);
    set("SCRIPT_NAME", req.script_name);
    set("PATH_INFO", req.path_info);
    set("PATH_TRANSLATED", &decoded_path);
    set("QUERY_STRING", req.uri.query().unwrap_or(""));
    set("UNIQUE_ID", req.id);
    set("WSPIPE_CONNECTION_ID", req.id);
    if req.tls {
        set("HTTPS", "on");
    }
    for name in req.headers.keys() {
        if let Some(var) = header_var(name.as_str()) {
            let value = join_values(req.headers.get_all(name).iter().map(|v| v.as_bytes()));
            vars.push((var.into(), OsString::from_vec(value)));
        }
    }
    vars
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// `HTTP_` variable name for a header, or `None` for headers never passed:
/// names with `_` (they would be indistinguishable from their `-` twin, so a
/// client could forge e.g. `X-Forwarded-For`; Apache and nginx drop them too)
/// and `Proxy` (HTTP_PROXY would reconfigure HTTP clients in the child:
/// "httpoxy").
pub fn header_var(name: &str) -> Option<String> {
    if name.contains('_') || name.eq_ignore_ascii_case("proxy") {
        return None;
    }
    let mut var = String::with_capacity(5 + name.len());
    var.push_str("HTTP_");
    var.extend(name.chars().map(|c| {
        if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        }
    }));
    Some(var)
}

/// Several values of one header joined with ", ", each with line breaks
/// replaced by spaces and trimmed (as websocketd).
fn join_values<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend(
            value
                .trim_ascii()
                .iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(vars: &'a [Var], name: &str) -> Option<&'a str> {
        vars.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.to_str())
    }

    #[test]
    fn base_env_passes_only_path_and_whitelist() {
        let lookup = |name: &str| match name {
            "PATH" => Some("/bin".into()),
            "LANG" => Some("C".into()),
            "SECRET" => Some("x".into()),
            _ => None,
        };
        let base = BaseEnv::from_lookup(&["LANG".into(), "MISSING".into()], lookup);
        let vars = base.vars();
        assert_eq!(get(vars, "PATH"), Some("/bin"));
        assert_eq!(get(vars, "LANG"), Some("C"));
        assert_eq!(get(vars, "SECRET"), None);
        assert_eq!(get(vars, "MISSING"), None);
        assert_eq!(get(vars, "GATEWAY_INTERFACE"), Some("CGI/1.1"));
    }

    #[test]
    fn request_vars_follow_cgi() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.com:8080".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", " b ".parse().unwrap());
        headers.insert("x_forged", "1".parse().unwrap());
        headers.insert("proxy", "http://evil".parse().unwrap());
        let uri: Uri = "/chat/room%201?x=1&y=2".parse().unwrap();
        let remote = RemoteInfo::Peer {
            ip: IpAddr::from([127, 0, 0, 1]),
            host: "127.0.0.1".into(),
            port: 5555,
        };
        let vars = request_vars(&RequestEnv {
            id: "42",
            method: &Method::GET,
            uri: &uri,
            version: Version::HTTP_11,
            headers: &headers,
            remote: &remote,
            tls: false,
            local_port: Some(9),
            script_name: "/chat",
            path_info: "/room 1",
        });
        assert_eq!(get(&vars, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&vars, "SERVER_PORT"), Some("8080"));
        assert_eq!(get(&vars, "REQUEST_URI"), Some("/chat/room%201?x=1&y=2"));
        assert_eq!(get(&vars, "QUERY_STRING"), Some("x=1&y=2"));
        assert_eq!(get(&vars, "PATH_INFO"), Some("/room 1"));
        assert_eq!(get(&vars, "PATH_TRANSLATED"), Some("/chat/room 1"));
        assert_eq!(get(&vars, "SERVER_PROTOCOL"), Some("HTTP/1.1"));
        assert_eq!(get(&vars, "HTTP_X_MULTI"), Some("a, b"));
        assert_eq!(get(&vars, "HTTP_HOST"), Some("example.com:8080"));
        assert_eq!(get(&vars, "WSPIPE_CONNECTION_ID"), Some("42"));
        assert_eq!(get(&vars, "HTTP_X_FORGED"), None);
        assert_eq!(get(&vars, "HTTP_PROXY"), None);
        assert_eq!(get(&vars, "HTTPS"), None);
    }

    /// CHILD_VARS (the man page's list) names exactly what is built.
    #[test]
    fn child_vars_table_lists_every_variable_built() {
        let listed: Vec<&str> = CHILD_VARS
            .iter()
            .flat_map(|(n, _)| n.iter().copied())
            .collect();
        let base = BaseEnv::from_lookup(&["LANG".into()], |name| {
            (name == "PATH").then(|| "/bin".into())
        });
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.com".parse().unwrap());
        let uri: Uri = "/a?b".parse().unwrap();
        let remote = RemoteInfo::Unix;
        let request = request_vars(&RequestEnv {
            id: "1",
            method: &Method::GET,
            uri: &uri,
            version: Version::HTTP_11,
            headers: &headers,
            remote: &remote,
            tls: true,
            local_port: None,
            script_name: "/",
            path_info: "/a",
        });
        let built: Vec<String> = base
            .vars()
            .iter()
            .chain(&request)
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for name in &built {
            let header = name.starts_with("HTTP_") && listed.contains(&"HTTP_*");
            assert!(
                header || listed.contains(&name.as_str()),
                "{name} is not in CHILD_VARS"
            );
        }
        for name in &listed {
            // Set by config.rs with --control; HTTP_* is a pattern.
            if [CONTROL_VAR, BIN_VAR, "HTTP_*"].contains(name) {
                continue;
            }
            assert!(
                built.iter().any(|b| b == name),
                "{name} is listed but never set"
            );
        }
    }

    #[test]
    fn header_values_lose_line_breaks() {
        assert_eq!(join_values([&b" a\r\nb "[..]].into_iter()), b"a  b");
    }
}

/// Property tests: whatever headers a client sends, the environment built
/// from them is well formed and honours the `_` and `Proxy` exclusions.
#[cfg(test)]
mod proptests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::os::unix::ffi::OsStrExt;

    /// Header names as bytes: token characters (with `_` and `-` often),
    /// the famous ones, and arbitrary bytes (most are refused by `http`).
    fn name() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => "[A-Za-z0-9_!#$%&'*+.^`|~-]{1,12}".prop_map(String::into_bytes),
            1 => prop::sample::select(vec![
                "Proxy", "proxy", "PROXY", "Host", "x_forwarded_for", "X-Forwarded-For",
                "x-forwarded_for", "_", "-", "content-length", "origin",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..8),
        ]
    }

    /// Header values as bytes: anything `http` may accept (obs-text, tabs,
    /// spaces at the edges) plus bytes it refuses.
    fn value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => prop::collection::vec(prop_oneof![Just(b' '), Just(b'\t'), 0x21u8..0x7f, 0x80u8..=0xff], 0..16),
            1 => prop::collection::vec(any::<u8>(), 0..16),
            1 => "[a-z0-9.:\\[\\]-]{0,20}".prop_map(String::into_bytes),
        ]
    }

    fn headers() -> impl Strategy<Value = HeaderMap> {
        prop::collection::vec((name(), value()), 0..12).prop_map(|pairs| {
            let mut map = HeaderMap::new();
            for (n, v) in pairs {
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(&n), HeaderValue::from_bytes(&v)) {
                    map.append(n, v);
                }
            }
            map
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn request_vars_are_well_formed(
            headers in headers(),
            tls in any::<bool>(),
            local_port in any::<Option<u16>>(),
            uri in prop::sample::select(vec!["/", "/a%20b?x=1", "/%ff%fe?", "/a%00b", "*", "http://h:1/p?q"]),
        ) {
            let uri: Uri = uri.parse().unwrap();
            let remote = RemoteInfo::default();
            let vars = request_vars(&RequestEnv {
                id: "1",
                method: &Method::GET,
                uri: &uri,
                version: Version::HTTP_11,
                headers: &headers,
                remote: &remote,
                tls,
                local_port,
                script_name: "/",
                path_info: "",
            });
            let mut seen = HashSet::new();
            for (name, value) in &vars {
                let name = name.as_bytes();
                prop_assert!(!name.is_empty());
                prop_assert!(!name.contains(&b'=') && !name.contains(&0), "{:?}", name);
                prop_assert!(seen.insert(name.to_vec()), "duplicate {:?}", name);
                let v = value.as_bytes();
                // No value can hold a NUL (a spawn would fail); header
                // values hold no line breaks either.
                prop_assert!(!v.contains(&0), "{:?}={:?}", name, v);
                if name.starts_with(b"HTTP_") {
                    prop_assert!(!v.iter().any(|b| matches!(b, b'\r' | b'\n')), "{:?}", v);
                }
            }
            // HTTP_* variables are exactly those of the headers without `_`
            // that are not Proxy.
            let http: HashSet<Vec<u8>> = vars
                .iter()
                .map(|(n, _)| n.as_bytes().to_vec())
                .filter(|n| n.starts_with(b"HTTP_"))
                .collect();
            let want: HashSet<Vec<u8>> = headers
                .keys()
                .map(|n| n.as_str())
                .filter(|n| !n.contains('_') && *n != "proxy")
                .map(|n| format!("HTTP_{}", n.to_ascii_uppercase().replace('-', "_")).into_bytes())
                .collect();
            prop_assert_eq!(http, want);
        }

        #[test]
        fn header_var_excludes_underscores_and_proxy(name in "[A-Za-z0-9_-]{0,10}|[Pp][Rr][Oo][Xx][Yy]") {
            match header_var(&name) {
                Some(var) => {
                    prop_assert!(!name.contains('_'));
                    prop_assert!(!name.eq_ignore_ascii_case("proxy"));
                    prop_assert!(var.starts_with("HTTP_"));
                    prop_assert!(!var.contains('=') && !var.contains('\0') && !var.contains('-'));
                }
                None => prop_assert!(name.contains('_') || name.eq_ignore_ascii_case("proxy")),
            }
        }
    }
}
