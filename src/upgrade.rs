//! The WebSocket handshake (RFC 6455 section 4.2): check, admit, spawn, 101.
//!
//! The order of checks is the order of cost: protocol rules first (cheap,
//! no side effects), then the origin, the path, the fork limit, and only
//! then the child is spawned, *before* answering 101, so that a failure to
//! spawn is an honest HTTP error rather than a socket that opens and dies.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::bridge::Links;
use crate::control::registry::{SessionHandle, SessionStats};
use crate::env::{request_vars, RemoteInfo, RequestEnv};
use crate::http::{add_headers, Body};
use crate::process::{self, SpawnSpec};
use crate::route;
use crate::server::{Peer, Shared};

/// A refused handshake: the status and a one-line reason for the client.
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
    }
}

/// True if the request asks for a WebSocket (`Upgrade: websocket` and a
/// `Connection` header listing `upgrade`).
pub fn wants_websocket<B>(req: &Request<B>) -> bool {
    let has_token = |name, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has_token(header::UPGRADE, "websocket") && has_token(header::CONNECTION, "upgrade")
}

/// Checks a handshake, spawns the child and answers 101; the session then
/// runs in its own task.
pub async fn upgrade(
    req: &mut Request<Incoming>,
    peer: Peer,
    shared: &Arc<Shared>,
) -> Result<Response<Body>, Refusal> {
    let config = &shared.config;
    if req.method() != Method::GET {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket handshake must be a GET",
        ));
    }
    if req.version() != Version::HTTP_11 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "a WebSocket handshake needs HTTP/1.1",
        ));
    }
    let headers = req.headers();
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(refuse(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version (need 13)",
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| is_valid_key(k.as_bytes()))
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "missing or malformed Sec-WebSocket-Key",
            )
        })?
        .clone();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let https = is_https(peer, headers, config);
    config
        .origin
        .check(origin, host, https)
        .map_err(|e| refuse(StatusCode::FORBIDDEN, format!("origin refused: {e}")))?;
    let resolved = route::resolve(config.endpoint.as_ref(), req.uri().path())
        .map_err(|e| refuse(e.status(), e.to_string()))?;
    let permit = shared.fork_permit().map_err(|_| {
        tracing::error!("--maxforks reached: upgrade refused");
        refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections (--maxforks reached)",
        )
    })?;

    let id_num = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let id = id_num.to_string();
    let remote = remote_info(peer, req.headers(), config).await;
    let local_port = peer.local_port();
    let vars = request_vars(&RequestEnv {
        id: &id,
        method: req.method(),
        uri: req.uri(),
        version: req.version(),
        headers: req.headers(),
        remote: &remote,
        tls: https,
        local_port,
        script_name: &resolved.script_name,
        path_info: &resolved.path_info,
    });
    let spec = SpawnSpec {
        program: &resolved.program,
        args: &resolved.args,
        env: [config.base_env.vars(), &vars],
        // websocketd's WebSocket children share its working directory.
        dir: None,
    };
    let spawned = spawn_retrying(&spec).await.map_err(|e| {
        tracing::error!("cannot start {}: {e}", resolved.program.display());
        spawn_refusal(&e)
    })?;

    let client = client_text(peer, &remote);
    let path = req.uri().path().to_owned();
    let pid = spawned.child.pid();
    // Registered before the 101 goes out: a client that has its answer is
    // already reachable by `wspipe ctl` (messages wait in its mailbox).
    let (links, handle) = session_links(id_num, client.clone(), path.clone(), pid);
    let registration = shared.registry.register(handle);
    let on_upgrade = hyper::upgrade::on(req);
    let session_shared = shared.clone();
    shared.tasks.spawn(async move {
        let shared = session_shared;
        let _permit = permit;
        let _registration = registration;
        let mut spawned = spawned;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("upgrade failed: {e}");
                spawned.child.terminate(shared.config.close_grace).await;
                return;
            }
        };
        let io = TokioIo::new(upgraded);
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(shared.ws_config)).await;
        let remote = client;
        tracing::info!(target: "wspipe::access", id = %id, remote = %remote, path = %path, pid, "connect");
        let started = Instant::now();
        let end = crate::bridge::run(ws, spawned, &shared.bridge, &shared.shutdown, &id, links, peer.socket()).await;
        tracing::info!(
            target: "wspipe::access",
            id = %id,
            remote = %remote,
            path = %path,
            pid,
            duration = ?started.elapsed(),
            exit = %end.exit,
            close = end.close_code.map(i32::from).unwrap_or(-1),
            cause = end.cause,
            "disconnect"
        );
    });

    let mut response = Response::new(crate::http::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    add_headers(&mut response, &config.headers.all);
    add_headers(&mut response, &config.headers.ws);
    Ok(response)
}

/// Channel capacity for injected messages: bounds the memory a burst of
/// broadcasts can take per slow client (the rest wait, then time out).
const INJECT_QUEUE: usize = 64;

/// The channels between a session and the control registry.
fn session_links(id: u64, remote: String, path: String, pid: u32) -> (Links, SessionHandle) {
    let (inject_tx, inject) = crate::mailbox::mailbox(INJECT_QUEUE);
    let (control_tx, control) = crate::mailbox::mailbox(4);
    let stats = Arc::new(SessionStats::default());
    let handle = SessionHandle {
        id,
        remote,
        path,
        pid,
        started: std::time::SystemTime::now(),
        stats: stats.clone(),
        inject: inject_tx,
        control: control_tx,
    };
    (
        Links {
            inject,
            control,
            stats,
        },
        handle,
    )
}

/// A Sec-WebSocket-Key must be base64 of 16 bytes (RFC 6455 section 4.1).
fn is_valid_key(key: &[u8]) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|k| k.len() == 16)
}

/// Spawns, retrying briefly on ETXTBSY: a script that was just written may
/// still be open for writing in a process that is between fork and exec
/// (a deploy in progress, or any fork elsewhere), which makes exec fail for
/// an instant.
pub async fn spawn_retrying(spec: &SpawnSpec<'_>) -> std::io::Result<process::Spawned> {
    let mut attempt = 0;
    loop {
        match process::spawn(spec) {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
            }
            other => return other,
        }
    }
}

/// Out of processes, fds or memory is temporary (503); anything else, like a
/// missing or non-executable program, is a server misconfiguration (500).
pub(crate) fn spawn_refusal(e: &std::io::Error) -> Refusal {
    let temporary = matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::EMFILE | libc::ENFILE | libc::ENOMEM)
    );
    if temporary {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot start the program now; try again later",
        )
    } else {
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot start the program",
        )
    }
}

/// REMOTE_ADDR, REMOTE_HOST, REMOTE_PORT: the peer, or the client named by
/// a trusted proxy (whose port we do not know).
pub(crate) async fn remote_info(
    peer: Peer,
    headers: &http::HeaderMap,
    config: &crate::config::Config,
) -> RemoteInfo {
    let peer_addr = match peer {
        Peer::Tcp { remote, .. } => Some(remote),
        Peer::Unix => None,
    };
    let forwarded = config
        .trusted_proxies
        .client_ip(peer_addr.map(|a| a.ip()), headers);
    let (ip, port) = match (forwarded, peer_addr) {
        (Some(ip), _) => (ip, String::new()),
        (None, Some(addr)) => (addr.ip(), addr.port().to_string()),
        (None, None) => return RemoteInfo::default(),
    };
    let ip = ip.to_canonical();
    let addr = ip.to_string();
    let host = if config.reverse_lookup {
        reverse(ip).await.unwrap_or_else(|| addr.clone())
    } else {
        addr.clone()
    };
    RemoteInfo { addr, host, port }
}

/// A bounded reverse DNS lookup.
async fn reverse(ip: std::net::IpAddr) -> Option<String> {
    let lookup = tokio::task::spawn_blocking(move || dns_lookup::lookup_addr(&ip).ok());
    match tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await {
        Ok(Ok(name)) => name,
        _ => None,
    }
}

/// Whether the client spoke HTTPS: to us (`--ssl`), or to a trusted proxy
/// that ended TLS and says so.
pub(crate) fn is_https(
    peer: Peer,
    headers: &http::HeaderMap,
    config: &crate::config::Config,
) -> bool {
    let peer_ip = match peer {
        Peer::Tcp { remote, .. } => Some(remote.ip()),
        Peer::Unix => None,
    };
    peer.is_tls() || config.trusted_proxies.forwarded_https(peer_ip, headers)
}

/// The client as the access log and `wspipe ctl list` show it: the address
/// a trusted proxy forwarded (with the proxy), or else the peer.
pub(crate) fn client_text(peer: Peer, remote: &RemoteInfo) -> String {
    let peer_text = remote_text(peer);
    if remote.port.is_empty() && !remote.addr.is_empty() {
        format!("{} via {peer_text}", remote.addr)
    } else {
        peer_text
    }
}

pub fn remote_text(peer: Peer) -> String {
    match peer {
        Peer::Tcp { remote, .. } => remote.to_string(),
        Peer::Unix => "unix".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_requests_are_recognised() {
        let req = Request::builder()
            .header("Upgrade", "WebSocket")
            .header("Connection", "keep-alive, Upgrade")
            .body(())
            .unwrap();
        assert!(wants_websocket(&req));
        let req = Request::builder()
            .header("Upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(!wants_websocket(&req));
    }

    #[test]
    fn keys_must_be_16_bytes_of_base64() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key(b"short"));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ")); // unpadded
    }
}
