//! Where wspipe listens and how its sockets are set up: the public
//! listeners (`--port`, `--address`, `--unixsocket`, `--socketmode`), TLS,
//! the control socket and `--publish`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use super::{bad, ConfigError, ControlSocket, Listen, PublishListen, Token};
use crate::cli::Cli;

pub(super) fn tls(cli: &Cli) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, ConfigError> {
    match (cli.ssl, &cli.sslcert, &cli.sslkey) {
        (false, None, None) if cli.sslca.is_none() => Ok(None),
        (true, Some(cert), Some(key)) => crate::tls::server_config(cert, key, cli.sslca.as_deref())
            .map(Some)
            .map_err(bad),
        (true, _, _) => Err(bad("--ssl needs both --sslcert and --sslkey")),
        (false, _, _) => Err(bad("--sslcert, --sslkey and --sslca need --ssl")),
    }
}

pub(super) fn control(cli: &Cli) -> Result<Option<ControlSocket>, ConfigError> {
    let Some(path) = &cli.control else {
        return Ok(None);
    };
    let mode = octal_mode("--control-mode", &cli.control_mode)?;
    let path =
        std::path::absolute(path).map_err(|e| bad(format!("--control {}: {e}", path.display())))?;
    if cli
        .unixsocket
        .as_ref()
        .is_some_and(|u| std::path::absolute(u).ok().as_ref() == Some(&path))
    {
        return Err(bad("--control and --unixsocket must be different paths"));
    }
    Ok(Some(ControlSocket { path, mode }))
}

/// `--socketmode`, as websocketd 0.5 has it: octal, 1 to 777, and only
/// with `--unixsocket` (a mode for no file is a mistake worth a word).
pub(super) fn socket_mode(cli: &Cli) -> Result<Option<u32>, ConfigError> {
    let Some(value) = cli.socketmode.as_deref() else {
        return Ok(None);
    };
    if cli.unixsocket.is_none() {
        return Err(bad("--socketmode needs --unixsocket"));
    }
    match octal_mode("--socketmode", value)? {
        // No one, not even wspipe's user, could connect.
        0 => Err(bad("--socketmode 0: nobody could connect")),
        mode => Ok(Some(mode)),
    }
}

/// A socket file's permission bits (`--control-mode`, `--publish-mode`,
/// `--socketmode`): octal, at most 777.
fn octal_mode(flag: &str, value: &str) -> Result<u32, ConfigError> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            bad(format!(
                "{flag} {value}: expected octal permission bits like 600"
            ))
        })
}

pub(super) fn listen(cli: &Cli) -> Result<Vec<Listen>, ConfigError> {
    let mut out = Vec::new();
    if let Some(path) = &cli.unixsocket {
        out.push(Listen::Unix(path.clone()));
        if cli.port.is_none() && cli.address.is_empty() {
            return Ok(out);
        }
    }
    let port = cli.port.unwrap_or(if cli.ssl { 443 } else { 80 });
    if cli.address.is_empty() {
        out.push(Listen::Tcp(SocketAddr::new(IpAddr::from([0u16; 8]), port)));
        return Ok(out);
    }
    for address in &cli.address {
        let addrs = resolve(address, port).map_err(|e| bad(format!("--address {address}: {e}")))?;
        for addr in addrs {
            if !out.contains(&Listen::Tcp(addr)) {
                out.push(Listen::Tcp(addr));
            }
        }
    }
    Ok(out)
}

pub(super) fn publish(cli: &Cli) -> Result<Option<PublishListen>, ConfigError> {
    let token = match &cli.publish_token {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(format!("--publish-token {}: {e}", path.display())))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(bad(format!(
                    "--publish-token {}: the file is empty",
                    path.display()
                )));
            }
            Some(Token(token.to_owned()))
        }
    };
    let mode = cli
        .publish_mode
        .as_deref()
        .map(|m| octal_mode("--publish-mode", m))
        .transpose()?;
    let Some(value) = &cli.publish else {
        if token.is_some() {
            return Err(bad("--publish-token needs --publish"));
        }
        if mode.is_some() {
            return Err(bad("--publish-mode needs --publish"));
        }
        return Ok(None);
    };
    let listen = addr_or_path("--publish", value)?;
    let mode = match listen {
        Listen::Unix(_) => Some(mode.unwrap_or(0o600)),
        Listen::Tcp(_) if mode.is_some() => {
            return Err(bad(format!(
                "--publish-mode needs a Unix socket --publish; {value} is a TCP address"
            )));
        }
        Listen::Tcp(addr) => {
            if !addr.ip().is_loopback() && token.is_none() {
                return Err(bad(format!(
                    "--publish {value}: not a loopback address; give --publish-token FILE to take publishes from the network"
                )));
            }
            None
        }
    };
    Ok(Some(PublishListen {
        listen,
        token,
        mode,
    }))
}

/// An `ADDR|PATH` flag's value: a value with a `/` (or starting `unix:`) is
/// a Unix socket path; anything else must be `HOST:PORT`, resolved now (an
/// IP literal, IPv6 in brackets, or a host name), so that a mistyped address
/// never silently becomes a socket file named after it.
pub(super) fn addr_or_path(flag: &str, value: &str) -> Result<Listen, ConfigError> {
    if let Some(path) = value.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad(format!("{flag} {value}: no socket path after unix:")));
        }
        return Ok(Listen::Unix(path.into()));
    }
    if value.contains('/') {
        return Ok(Listen::Unix(value.into()));
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(bad(format!(
            "{flag} {value}: expected HOST:PORT, a path containing '/', or unix:PATH"
        )));
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| bad(format!("{flag} {value}: invalid port {port:?}")))?;
    let addrs = resolve(host, port).map_err(|e| bad(format!("{flag} {value}: {e}")))?;
    // A host name may have several addresses: the first, as a client would
    // try it first.
    Ok(Listen::Tcp(addrs[0]))
}

/// An `--address` value: an IP (IPv6 optionally in brackets) or a host name.
fn resolve(address: &str, port: u16) -> Result<Vec<SocketAddr>, ConfigError> {
    let bare = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(bad("no address found"));
    }
    Ok(addrs)
}
