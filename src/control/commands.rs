//! What each control request does, one function per command.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::join_all;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::channels;
use super::protocol::{
    ErrorKind, Request, Response, SessionInfo, SessionKind, SharedChild, Stats, DRAIN_TIMEOUT,
};
use super::Control;
use crate::bus::Bus;
use crate::config::Mode;
use crate::hub::Hub;
use crate::mailbox::PostError;
use crate::session::{Kind, Registry, SessionCtl, SessionHandle};
use crate::shared::Shared;

/// How long `send` and `broadcast` wait for a session whose queue is full
/// (its client reads slowly) before reporting it busy.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Carries out one request, here or, with `--redis`, on the instance it
/// belongs to ([`super::remote`]).
pub async fn dispatch(req: Request, control: &Control) -> Response {
    match super::remote::route(req, control).await {
        Ok(response) => response,
        Err(req) => local(req, control).await,
    }
}

/// Carries out one request here.
pub(super) async fn local(req: Request, control: &Control) -> Response {
    let (registry, mode) = (&*control.registry, control.mode);
    let bus = &control.bus;
    let hub = &**bus.hub();
    match req {
        Request::List { path, .. } => {
            let mut listed = list(registry, hub, &control.shared, path.as_deref());
            if let (Some(sessions), Some(me)) = (listed.sessions.as_mut(), bus.instance()) {
                for s in sessions {
                    s.instance = Some(me.to_string());
                }
            }
            listed
        }
        Request::Send { id, message, .. } => send(registry, id, message, mode).await,
        Request::Broadcast { message, path } => {
            broadcast(registry, message, path.as_deref(), mode).await
        }
        Request::Close {
            id, code, reason, ..
        } => close(registry, id, code, reason),
        Request::Kill { id, endpoint, .. } => match (id, endpoint) {
            (Some(id), None) => kill(registry, id),
            (None, Some(endpoint)) => kill_shared(&control.shared, &endpoint),
            _ => Response::error(ErrorKind::BadRequest, "kill takes one of id and endpoint"),
        },
        Request::Stats { .. } => stats(registry, bus, &control.shared),
        Request::Drain { timeout } => drain(control, timeout.unwrap_or(DRAIN_TIMEOUT)),
        Request::Publish { channel, message } => channels::publish(bus, &channel, &message, mode),
        Request::Subscribe { id, channel, .. } => channels::subscribe(hub, id, &channel),
        Request::Unsubscribe { id, channel, .. } => channels::unsubscribe(hub, id, &channel),
        Request::Channels { .. } => channels::list(hub),
        // `remote::route` answers it.
        Request::Instances {} => Response::error(ErrorKind::BadRequest, "instances: not here"),
        // The listener streams it; a request that reaches here is refused.
        Request::Watch { .. } => Response::error(
            ErrorKind::BadRequest,
            "watch is only served as the stream of a control connection",
        ),
    }
}

pub(super) fn not_found(id: u64) -> Response {
    Response::error(ErrorKind::NotFound, format!("no session with id {id}"))
}

/// The message as the session's mode frames it.
pub(super) fn message(text: &str, mode: Mode) -> Message {
    match mode {
        Mode::Text | Mode::Framed => Message::text(text),
        Mode::Binary => Message::Binary(Bytes::copy_from_slice(text.as_bytes())),
    }
}

fn list(registry: &Registry, hub: &Hub, shared: &Shared, path: Option<&str>) -> Response {
    let sessions = registry.list(path);
    // A shared session's child changes when it is restarted: the pid
    // registered at its join may be gone.
    let shared_pids = if sessions.iter().any(|h| h.kind == Kind::Shared) {
        shared.member_pids()
    } else {
        Default::default()
    };
    let sessions = sessions
        .iter()
        .map(|h| {
            let mut info = info(h, hub);
            if h.kind == Kind::Shared {
                info.pid = shared_pids.get(&h.id).copied();
            }
            info
        })
        .collect();
    let children = shared.list().into_iter().map(|c| SharedChild {
        endpoint: c.endpoint,
        pid: c.pid,
        members: c.members as u64,
        restarts: c.restarts,
        started: epoch_seconds(c.started),
    });
    Response {
        sessions: Some(sessions),
        shared: Some(children.collect()),
        ..Response::ok()
    }
}

fn epoch_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn info(h: &SessionHandle, hub: &Hub) -> SessionInfo {
    let t = h.stats.traffic();
    SessionInfo {
        id: h.id,
        remote: h.remote.clone(),
        path: h.path.clone(),
        kind: match h.kind {
            Kind::Process => SessionKind::Process,
            Kind::Pubsub => SessionKind::Pubsub,
            Kind::Shared => SessionKind::Shared,
        },
        pid: h.pid,
        started: epoch_seconds(h.started),
        messages_in: t.messages_in,
        messages_out: t.messages_out,
        bytes_in: t.bytes_in,
        bytes_out: t.bytes_out,
        channels: hub
            .channels_of(h.id)
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        dropped: h.inject.evicted(),
        instance: None,
    }
}

async fn send(registry: &Registry, id: u64, text: String, mode: Mode) -> Response {
    let Some(h) = registry.get(id) else {
        return not_found(id);
    };
    match h
        .inject
        .post_timeout(message(&text, mode), DELIVERY_TIMEOUT)
        .await
    {
        Ok(()) => Response::ok(),
        Err(PostError::Full) => Response::error(
            ErrorKind::Busy,
            format!("session {id} did not take the message in time"),
        ),
        Err(PostError::Closed) => not_found(id),
    }
}

async fn broadcast(registry: &Registry, text: String, path: Option<&str>, mode: Mode) -> Response {
    let msg = message(&text, mode);
    let mut delivered = 0u64;
    let mut waiting = Vec::new();
    // Most queues have room: hand over without waiting, and only wait
    // (concurrently, bounded) for the few that are full.
    for h in registry.list(path) {
        match h.inject.try_post(msg.clone()) {
            Ok(()) => delivered += 1,
            Err((PostError::Full, m)) => waiting
                .push(async move { h.inject.post_timeout(m, DELIVERY_TIMEOUT).await.is_ok() }),
            Err((PostError::Closed, _)) => {} // ended meanwhile: not a target
        }
    }
    let late = join_all(waiting).await;
    let late_ok = late.iter().filter(|ok| **ok).count() as u64;
    Response {
        delivered: Some(delivered + late_ok),
        failed: Some(late.len() as u64 - late_ok),
        ..Response::ok()
    }
}

fn close(registry: &Registry, id: u64, code: Option<u16>, reason: Option<String>) -> Response {
    let code = code.unwrap_or(1000);
    // Codes an endpoint may send (RFC 6455 section 7.4): 1000-1003,
    // 1007-1011, and 3000-4999 for applications.
    let sendable = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
    if !sendable {
        return Response::error(
            ErrorKind::BadRequest,
            format!("close code {code} cannot be sent"),
        );
    }
    let reason = reason.unwrap_or_default();
    if reason.len() > 123 {
        return Response::error(ErrorKind::BadRequest, "close reason longer than 123 bytes");
    }
    let Some(h) = registry.get(id) else {
        return not_found(id);
    };
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    control(&h, SessionCtl::Close(frame))
}

fn kill(registry: &Registry, id: u64) -> Response {
    let Some(h) = registry.get(id) else {
        return not_found(id);
    };
    control(&h, SessionCtl::Kill)
}

/// Begins a drain of `timeout` seconds (see [`crate::shutdown`]).
fn drain(control: &Control, timeout: u64) -> Response {
    let bound = Duration::from_secs(timeout.min(u64::from(u32::MAX)));
    if control.shutdown.drain(bound) {
        Response::ok()
    } else {
        Response::error(ErrorKind::BadRequest, "already draining or shutting down")
    }
}

/// Ends the shared child of `endpoint` (its SCRIPT_NAME).
fn kill_shared(shared: &Shared, endpoint: &str) -> Response {
    match shared.kill(endpoint) {
        Ok(_pid) => Response::ok(),
        Err(e) => Response::error(ErrorKind::NotFound, format!("{endpoint}: {e}")),
    }
}

/// Hands a close or kill request to the session's supervisor.
fn control(h: &SessionHandle, request: SessionCtl) -> Response {
    match h.control.post(request) {
        Ok(()) => Response::ok(),
        Err(PostError::Closed) => not_found(h.id),
        Err(PostError::Full) => Response::error(
            ErrorKind::Busy,
            format!("session {} has requests pending", h.id),
        ),
    }
}

fn stats(registry: &Registry, bus: &Bus, shared: &Shared) -> Response {
    let snap = registry.snapshot();
    let t = snap.traffic;
    let h = bus.hub().totals();
    let redis = bus.cluster_stats();
    let history = bus.history_stats();
    Response {
        stats: Some(Stats {
            connections: snap.live,
            connections_total: snap.opened,
            refused_total: snap.refused,
            auth_refused_total: snap.refused_auth,
            messages_in: t.messages_in,
            messages_out: t.messages_out,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
            uptime_seconds: snap.uptime.as_secs(),
            channels: h.channels,
            channel_members: h.members,
            published_total: h.published,
            delivered_total: h.delivered,
            dropped_total: h.dropped,
            shared_children: shared.children(),
            shared_input_dropped_total: shared.dropped(),
            shared_unaddressed_dropped_total: shared.unaddressed(),
            shared_restarts_total: shared.restarts(),
            redis_instance: bus.instance().map(|i| i.to_string()),
            history_channels: history.map(|h| h.channels),
            history_messages: history.map(|h| h.messages),
            history_bytes: history.map(|h| h.bytes),
            redis_connected: redis.map(|r| r.connected),
            redis_published_total: redis.map(|r| r.published),
            redis_received_total: redis.map(|r| r.received),
            redis_dropped_total: redis.map(|r| r.dropped),
            history_unnumbered_total: bus.history_unnumbered(),
        }),
        ..Response::ok()
    }
}
