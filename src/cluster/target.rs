//! What `--redis URL` and `--instance NAME` may say, checked at start so
//! that a typo is one line and exit status 2, never a server that runs
//! without its peers.

use std::fmt;

/// Longest instance name, in bytes: it travels in every message.
pub const MAX_INSTANCE: usize = 64;

/// Where Redis is: `redis://[user:pass@]host[:port][/db]`,
/// `rediss://...` (TLS, rustls with the system's roots) or
/// `unix:///path/to/redis.sock[?db=N&user=U&pass=P]`.
#[derive(Clone)]
pub struct Target {
    /// For the subscribed connection, as the URL says.
    client: redis::Client,
    /// For the publishing connection: RESP3, so that the redis crate tells
    /// us when the connection closes (a push), even while it is idle.
    publishing: redis::Client,
    /// The URL with its password replaced, for logs.
    shown: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Target {
    /// Checks a `--redis` value. The error is the whole message after
    /// `--redis URL: `.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            "expected redis://HOST[:PORT][/DB], rediss://... or unix:///PATH".to_owned()
        })?;
        match scheme {
            "redis" | "rediss" => check_tcp(rest)?,
            "unix" => check_unix(rest)?,
            other => {
                return Err(format!(
                    "unknown scheme {other:?}: expected redis, rediss or unix"
                ))
            }
        }
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let publishing =
            redis::Client::open(info.set_redis_settings(resp3)).map_err(|e| e.to_string())?;
        Ok(Target {
            client,
            publishing,
            shown: redacted(url),
        })
    }

    pub(super) fn client(&self) -> &redis::Client {
        &self.client
    }

    pub(super) fn publishing_client(&self) -> &redis::Client {
        &self.publishing
    }
}

/// `[user:pass@]host[:port][/db]`: a host, a port that is a number, a
/// database that is a number, no fragment (the redis crate would read
/// `#insecure` as "skip certificate checks").
fn check_tcp(rest: &str) -> Result<(), String> {
    if rest.contains('#') {
        return Err("a URL fragment (#...) is not accepted".into());
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = split_port(host_port)?;
    if host.is_empty() {
        return Err("no host".into());
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("bad port {port:?}")),
        }
    }
    let db = path.split('?').next().unwrap_or_default();
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(format!("bad database {db:?}: expected a number"));
    }
    Ok(())
}

/// Splits `host:port` (IPv6 in brackets) into its parts.
fn split_port(host_port: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in the host".to_owned())?;
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or_else(|| format!("unexpected {after:?} after the host")),
        };
    }
    Ok(match host_port.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    })
}

/// `/absolute/path[?query]`.
fn check_unix(rest: &str) -> Result<(), String> {
    let path = rest.split('?').next().unwrap_or_default();
    if !path.starts_with('/') || path.len() < 2 {
        return Err("expected unix:///ABSOLUTE/PATH".into());
    }
    Ok(())
}

/// The URL with any password shown as `***`, for logs and errors.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    if scheme == "unix" {
        return match rest.split_once('?') {
            Some((path, query)) if query.contains("pass=") => format!("unix://{path}?***"),
            _ => url.to_owned(),
        };
    }
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// This instance's name among those sharing a Redis (`--instance`): 1 to
/// 64 bytes of ASCII letters, digits, `.`, `_`, `-` and `:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceName(String);

impl InstanceName {
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() > MAX_INSTANCE {
            return Err(format!("1 to {MAX_INSTANCE} bytes expected"));
        }
        if !name.bytes().all(allowed) {
            return Err("only ASCII letters, digits, '.', '_', '-' and ':' are allowed".into());
        }
        Ok(InstanceName(name.to_owned()))
    }

    /// The default: the host name (characters a name may not hold turned
    /// into `-`) and the port, `web1:8080`.
    pub fn default_for(host: &str, port: Option<u16>) -> Self {
        let mut name: String = host
            .bytes()
            .map(|b| if allowed(b) { b as char } else { '-' })
            .take(MAX_INSTANCE - 6)
            .collect();
        if name.is_empty() {
            name.push_str("wspipe");
        }
        if let Some(port) = port {
            name.push_str(&format!(":{port}"));
        }
        InstanceName(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_urls_are_taken_and_shown_without_their_password() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "redis://localhost",
            "redis://[::1]:7000/3",
            "unix:///run/redis/redis.sock",
            "unix:///run/redis.sock?db=2",
        ] {
            let t = Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(t.to_string(), url);
        }
        let t = Target::parse("redis://app:s3cret@10.0.0.5:6380/1").unwrap();
        assert_eq!(t.to_string(), "redis://app:***@10.0.0.5:6380/1");
        assert!(!format!("{t:?}").contains("s3cret"));
        let t = Target::parse("redis://:s3cret@host").unwrap();
        assert_eq!(t.to_string(), "redis://:***@host");
        let t = Target::parse("unix:///r.sock?pass=s3cret").unwrap();
        assert!(!t.to_string().contains("s3cret"));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("localhost:6379", "expected redis://"),
            ("http://localhost", "unknown scheme \"http\""),
            ("redis://", "no host"),
            ("redis://:6379", "no host"),
            ("redis://host:port", "bad port \"port\""),
            ("redis://host:70000", "bad port"),
            ("redis://host:0", "bad port"),
            ("redis://host/abc", "bad database \"abc\""),
            ("redis://[::1", "unclosed"),
            ("rediss://host#insecure", "fragment"),
            ("unix://relative.sock", "ABSOLUTE"),
        ];
        for (url, want) in cases {
            match Target::parse(url) {
                Ok(_) => panic!("{url} was taken"),
                Err(e) => assert!(e.contains(want), "{url}: {e}"),
            }
        }
    }

    #[test]
    fn instance_names_are_short_and_plain() {
        assert!(InstanceName::parse("web1:8080").is_ok());
        assert!(InstanceName::parse("a.b_c-d").is_ok());
        assert!(InstanceName::parse("").is_err());
        assert!(InstanceName::parse("has space").is_err());
        assert!(InstanceName::parse("é").is_err());
        assert!(InstanceName::parse(&"x".repeat(MAX_INSTANCE + 1)).is_err());
        assert_eq!(
            InstanceName::default_for("web 1", Some(8080)).as_str(),
            "web-1:8080"
        );
        assert_eq!(InstanceName::default_for("", None).as_str(), "wspipe");
        let long = InstanceName::default_for(&"h".repeat(300), Some(65535));
        assert!(InstanceName::parse(long.as_str()).is_ok());
    }
}
