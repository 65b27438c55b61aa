//! The WebSocket handshake (RFC 6455 section 4.2): check, admit, spawn, 101.
//!
//! The order of checks is the order of cost: protocol rules first (cheap,
//! no side effects), then the origin, the path, the fork limit, and only
//! then the child is spawned, *before* answering 101, so that a failure to
//! spawn is an honest HTTP error rather than a socket that opens and dies.

use std::time::Instant;

use base64::Engine;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::{add_headers, empty, Body};
use crate::auth;
use crate::bus::Bus;
use crate::config::{Config, Endpoint, ExtraHeaders};
use crate::env::{request_vars, RequestEnv};
use crate::events::Event;
use crate::history::Position;
use crate::hub::{ChannelName, Presence};
use crate::peer::{client_text, Peer, PeerSocket};
use crate::process::{SpawnSpec, Spawned};
use crate::pubsub;
use crate::route;
use crate::session::{self, Identity, Kind, Links, Refusal, Registration, SessionHandle};
use crate::shared::{self, Membership};
use crate::state::State;

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal::new(status, reason)
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
    peer: &Peer,
    state: &State,
) -> Result<Response<Body>, Refusal> {
    let config = state.config();
    let key = check_protocol(req)?;
    let headers = req.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let addresses = state.address_policy();
    let https = addresses.is_https(peer, headers);
    // Taken once: the origin check and the 101's headers are one version.
    let reloadable = state.reloadable();
    reloadable
        .origin
        .check(origin, host, https)
        .map_err(|e| refuse(StatusCode::FORBIDDEN, format!("origin refused: {e}")))?;
    let protocol = req
        .extensions()
        .get::<auth::Admission>()
        .and_then(|a| a.protocol.clone());
    // Read before anything starts: a bad one is the client's mistake (400).
    let position = match state.bus().keeps_history() {
        true => Position::of_request(req.uri(), req.headers())
            .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?,
        false => None,
    };
    let admitted = admit(config, req.uri().path(), state).await?;

    let id = state.registry().next_id();
    let remote = super::remote_of(req, peer, state).await;
    let mut identity = Identity {
        id,
        remote: client_text(peer, &remote),
        path: req.uri().path().to_owned(),
        pid: None,
        kind: Kind::Pubsub,
    };
    let work = match admitted {
        Admitted::Channel => Work::Channel,
        Admitted::Shared(resolved) => {
            identity.kind = Kind::Shared;
            Work::Joining(resolved)
        }
        Admitted::Program(resolved, permit) => {
            let mut vars = request_vars(&RequestEnv {
                id: &id.to_string(),
                method: req.method(),
                uri: req.uri(),
                version: req.version(),
                headers: req.headers(),
                remote: &remote,
                tls: https,
                local_port: peer.local_port(),
                script_name: &resolved.script_name,
                path_info: &resolved.path_info,
            });
            vars.extend(auth::child_vars(req.extensions().get()));
            let spawned = session::spawn::spawn(&SpawnSpec {
                program: &resolved.program,
                args: &resolved.args,
                env: [config.base_env.vars(), &vars],
                // websocketd's WebSocket children share its working directory.
                dir: None,
            })
            .await?;
            identity.pid = Some(spawned.child.pid());
            identity.kind = Kind::Process;
            Work::Program { spawned, permit }
        }
    };

    let (links, mut handle) = session::links(identity.clone());
    // A shared endpoint's client joins (starting its child if need be)
    // before it is registered: the child's pid is part of its listing.
    let work = match work {
        Work::Joining(resolved) => {
            let membership = join_shared(state, &resolved, id, &handle).await?;
            identity.pid = membership.pid();
            handle.pid = identity.pid;
            Work::Shared(membership)
        }
        other => other,
    };
    // Registered before the 101 goes out: a client that has its answer is
    // already reachable by `wspipe ctl` (messages wait in its mailbox).
    // Told before its channels are joined, so watchers see them in order.
    state.events().emit(|| Event::Open {
        id: identity.id,
        path: identity.path.clone(),
        remote: identity.remote.clone(),
        kind: identity.kind.as_str(),
    });
    // A shared endpoint's stream is its child's channel, the others' their
    // path's.
    let stream = match &work {
        Work::Shared(membership) => Some(membership.channel()),
        _ => None,
    };
    let presence = join_channels(state.bus(), &identity, &handle, stream, position.as_ref());
    if let Work::Shared(membership) = &work {
        // Its child may answer its join now: it is there to hear it.
        membership.announce();
    }
    let session = Session {
        identity,
        links,
        registration: state.registry().register(handle),
        presence,
        socket: peer.socket(),
    };
    let on_upgrade = hyper::upgrade::on(req);
    // Each kind's own future, spawned as it is: wrapped in another async
    // fn or block, it would hold a second copy of what it moves in for the
    // session's whole life (hundreds of bytes per connection).
    let task_state = state.clone();
    match work {
        Work::Program { spawned, permit } => state
            .shutdown()
            .spawn(session.run_program(on_upgrade, spawned, permit, task_state)),
        Work::Channel => state
            .shutdown()
            .spawn(session.run_channel(on_upgrade, task_state, None)),
        Work::Shared(membership) => {
            state
                .shutdown()
                .spawn(session.run_channel(on_upgrade, task_state, Some(membership)))
        }
        // Replaced by `Shared` above.
        Work::Joining(_) => {}
    }
    Ok(switching_protocols(&key, protocol, &reloadable.headers))
}

/// What an admitted upgrade is served by, before anything is started.
enum Admitted {
    /// Its channel alone (`--pubsub`).
    Channel,
    /// Its endpoint's shared child (`--shared`), started if need be.
    Shared(route::Resolved),
    /// A child of its own, and its `--maxforks` slot.
    Program(route::Resolved, Option<OwnedSemaphorePermit>),
}

/// Resolves what serves the path (404/400/403 when nothing may), with a
/// `--maxforks` slot for a child of its own.
async fn admit(config: &Config, path: &str, state: &State) -> Result<Admitted, Refusal> {
    match &config.endpoint {
        Some(Endpoint::PubSub { .. }) => Ok(Admitted::Channel),
        // A shared child takes its slot when it starts, not per client.
        endpoint if config.shared.is_some() => route::resolve(endpoint.as_ref(), path)
            .await
            .map(Admitted::Shared)
            .map_err(|e| refuse(e.status(), e.to_string())),
        endpoint => {
            let (resolved, permit) = admit_program(endpoint.as_ref(), path, state).await?;
            Ok(Admitted::Program(resolved, permit))
        }
    }
}

/// Makes session `id` a client of its endpoint's shared child.
async fn join_shared(
    state: &State,
    resolved: &route::Resolved,
    id: u64,
    handle: &SessionHandle,
) -> Result<Membership, Refusal> {
    let permit = || fork_permit(state);
    let start = shared::Start {
        resolved,
        base_env: state.config().base_env.vars(),
        permit: &permit,
    };
    state.shared().join(start, id, handle.control.clone()).await
}

/// A `--maxforks` slot, or the 429 that says there is none.
fn fork_permit(state: &State) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
    state.fork_permit().map_err(|_| {
        tracing::error!("--maxforks reached: upgrade refused");
        refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections (--maxforks reached)",
        )
    })
}

/// The program a path runs, and its `--maxforks` slot.
async fn admit_program(
    endpoint: Option<&Endpoint>,
    path: &str,
    state: &State,
) -> Result<(route::Resolved, Option<OwnedSemaphorePermit>), Refusal> {
    let resolved = route::resolve(endpoint, path)
        .await
        .map_err(|e| refuse(e.status(), e.to_string()))?;
    Ok((resolved, fork_permit(state)?))
}

/// What serves a session.
// Moved once into the session's task and kept there: boxing the big
// variant would only add an allocation per session.
#[allow(clippy::large_enum_variant)]
enum Work {
    /// A child process, and its `--maxforks` slot (held until it is reaped).
    Program {
        spawned: Spawned,
        permit: Option<OwnedSemaphorePermit>,
    },
    /// Nothing but its channel (`--pubsub`).
    Channel,
    /// A shared endpoint's client, before it has joined.
    Joining(route::Resolved),
    /// A shared endpoint's client (`--shared`).
    Shared(Membership),
}

/// Makes the session present in the hub, a member of the channel of its
/// URL path (when that path can name one: at most 1024 bytes).
/// Makes the session present in the hub, a member of its path's channel
/// and of its `stream` channel (a shared endpoint's; else the path's is
/// its stream). It catches up on the stream alone, from `position`.
fn join_channels(
    bus: &Bus,
    identity: &Identity,
    handle: &SessionHandle,
    stream: Option<&ChannelName>,
    position: Option<&Position>,
) -> Presence {
    let hub = bus.hub();
    let presence = hub.enter(identity.id, handle.inject.clone(), handle.control.clone());
    let path = ChannelName::parse(&identity.path)
        .inspect_err(|e| tracing::debug!(path = %identity.path, "in no channel: {e}"))
        .ok();
    let stream = match (stream, &path) {
        (Some(stream), Some(path)) if stream != path => {
            let _ = hub.subscribe(identity.id, path);
            stream
        }
        (Some(stream), _) => stream,
        (None, Some(path)) => path,
        (None, None) => return presence,
    };
    if bus.join(identity.id, stream, position) == Some(false) {
        tracing::debug!(id = identity.id, channel = %stream, "caught up with a gap: told reset");
    }
    presence
}

/// The protocol rules of a handshake (RFC 6455 4.2.1), before anything
/// costs: the key to answer, or the refusal.
fn check_protocol<B>(req: &Request<B>) -> Result<HeaderValue, Refusal> {
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
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| is_valid_key(k.as_bytes()))
        .cloned()
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "missing or malformed Sec-WebSocket-Key",
            )
        })
}

/// The 101 answer, with `--header` and `--header-ws`.
/// The 101: with `protocol`, the subprotocol chosen among those offered.
fn switching_protocols(
    key: &HeaderValue,
    protocol: Option<HeaderValue>,
    headers: &ExtraHeaders,
) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    add_headers(&mut response, &headers.all);
    add_headers(&mut response, &headers.ws);
    response
}

/// An admitted session, waiting for hyper to hand over the socket.
struct Session {
    identity: Identity,
    links: Links,
    /// Keeps the session listed until it ends.
    registration: Registration,
    /// Keeps it in its channels until it ends.
    presence: Presence,
    socket: Option<PeerSocket>,
}

impl Session {
    /// Runs the bridge to the child once the upgrade completes; a failed
    /// upgrade just ends the child.
    async fn run_program(
        self,
        on_upgrade: OnUpgrade,
        mut spawned: Spawned,
        permit: Option<OwnedSemaphorePermit>,
        state: State,
    ) {
        let Some(ws) = websocket(on_upgrade, &state).await else {
            spawned.child.terminate(state.config().close_grace).await;
            return self.end(&state, "upgrade failed");
        };
        let started = self.connected();
        let Session {
            identity,
            links,
            registration,
            presence,
            socket,
        } = self;
        let id = identity.id.to_string();
        let opts = state.bridge_options();
        let end =
            crate::bridge::run(ws, spawned, &opts, state.shutdown(), &id, links, socket).await;
        // The child is reaped: its slot goes.
        drop(permit);
        let ended = Ended {
            started,
            exit: end.exit.to_string(),
            close_code: end.close_code,
            cause: end.cause,
        };
        disconnected(&state, identity, registration, presence, ended);
    }

    /// Runs a session with no child of its own once the upgrade completes:
    /// a channel session (`--pubsub`), or a client of a shared child.
    async fn run_channel(self, on_upgrade: OnUpgrade, state: State, shared: Option<Membership>) {
        let Some(ws) = websocket(on_upgrade, &state).await else {
            return self.end(&state, "upgrade failed");
        };
        let started = self.connected();
        let Session {
            identity,
            links,
            registration,
            presence,
            socket: _,
        } = self;
        let config = state.config();
        let publish = pubsub::Publish {
            bus: state.bus(),
            channel: ChannelName::parse(&identity.path).ok(),
        };
        let inbox: &dyn pubsub::Inbox = match &shared {
            Some(membership) => membership,
            None => &publish,
        };
        let opts = pubsub::Options {
            mode: config.mode,
            ping: state.reloadable().ping,
            read_only: matches!(config.endpoint, Some(Endpoint::PubSub { read_only: true })),
            inbox,
            shutdown: state.shutdown(),
        };
        let end = pubsub::run(ws, opts, links).await;
        // Out of the shared child's clients before the session is gone:
        // the last to leave ends it.
        drop(shared);
        let ended = Ended {
            started,
            exit: "-".to_owned(),
            close_code: end.close_code,
            cause: end.cause,
        };
        disconnected(&state, identity, registration, presence, ended);
    }

    /// The access line for a session whose socket is open.
    fn connected(&self) -> Instant {
        let Identity {
            id,
            remote,
            path,
            pid,
            ..
        } = &self.identity;
        tracing::info!(target: "wspipe::access", id = %id, remote = %remote, path = %path, pid, "connect");
        Instant::now()
    }

    /// A session that never got its socket.
    fn end(self, state: &State, cause: &'static str) {
        let ended = Ended {
            started: Instant::now(),
            exit: "-".to_owned(),
            close_code: None,
            cause,
        };
        let Session {
            identity,
            registration,
            presence,
            ..
        } = self;
        leave(state, identity, registration, presence, &ended);
    }
}

/// How a session ended, for the access line and the watchers.
struct Ended {
    started: Instant,
    exit: String,
    close_code: Option<u16>,
    cause: &'static str,
}

/// The socket of an accepted upgrade, as a WebSocket.
async fn websocket(
    on_upgrade: OnUpgrade,
    state: &State,
) -> Option<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>> {
    match on_upgrade.await {
        Ok(upgraded) => {
            let io = TokioIo::new(upgraded);
            Some(WebSocketStream::from_raw_socket(io, Role::Server, Some(state.ws_config())).await)
        }
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            None
        }
    }
}

/// The access line for a session that ran, then [`leave`].
fn disconnected(
    state: &State,
    identity: Identity,
    registration: Registration,
    presence: Presence,
    ended: Ended,
) {
    let Identity {
        id,
        remote,
        path,
        pid,
        ..
    } = &identity;
    tracing::info!(
        target: "wspipe::access",
        id = %id,
        remote = %remote,
        path = %path,
        pid,
        duration = ?ended.started.elapsed(),
        exit = %ended.exit,
        close = ended.close_code.map(i32::from).unwrap_or(-1),
        cause = ended.cause,
        "disconnect"
    );
    leave(state, identity, registration, presence, &ended);
}

/// Its channels and its listing go, and the watchers are told.
fn leave(
    state: &State,
    identity: Identity,
    registration: Registration,
    presence: Presence,
    ended: &Ended,
) {
    drop(presence);
    drop(registration);
    state.events().emit(|| Event::Close {
        id: identity.id,
        path: identity.path,
        code: ended.close_code,
        duration_ms: u64::try_from(ended.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        cause: ended.cause,
    });
}

/// A Sec-WebSocket-Key must be base64 of 16 bytes (RFC 6455 section 4.1).
fn is_valid_key(key: &[u8]) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|k| k.len() == 16)
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
