//! Control across instances (`--redis`): a request for a connection that
//! is not here goes to the instance that has it, `--all` gathers from
//! every live instance, `instances` lists them. The transport is
//! [`crate::cluster::rpc`]; this module decides what to ask whom and how
//! to merge the answers.
//!
//! A connection is `NAME:ID` across instances (ids are per instance).
//! A request with a plain `ID` acts here when the connection is here;
//! otherwise every other live instance is asked whether it has `ID`
//! ([`Body::Has`]) and the request goes to the one that does (two that
//! do: refused, give `NAME:ID`). Each step waits at most [`WAIT`]; an
//! instance that does not answer in time counts as not having it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use super::commands::{local, not_found};
use super::protocol::{ErrorKind, InstanceInfo, InstanceStats, Request, Response};
use super::Control;
use crate::cluster::presence;
use crate::cluster::rpc::{Answer, AskError, Rpc};

/// How long one step of a request to other instances may take.
pub const WAIT: Duration = Duration::from_millis(1500);

/// What one instance asks another.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Body {
    /// Is connection `id` yours? (`ok` yes, `not_found` no)
    Has { id: u64 },
    /// Carry out this request here (never routed on).
    Do { request: Request },
}

/// The connection a request targets, and the instance it names.
fn target(req: &Request) -> Option<(u64, Option<&str>)> {
    match req {
        Request::Send { id, instance, .. }
        | Request::Close { id, instance, .. }
        | Request::Subscribe { id, instance, .. }
        | Request::Unsubscribe { id, instance, .. } => Some((*id, instance.as_deref())),
        Request::Kill {
            id: Some(id),
            instance,
            ..
        } => Some((*id, instance.as_deref())),
        _ => None,
    }
}

/// `req` bound to instance `name` and to no gathering: what is sent to
/// it, so that it acts locally.
fn pinned(mut req: Request, name: &str) -> Request {
    match &mut req {
        Request::Send { instance, .. }
        | Request::Close { instance, .. }
        | Request::Kill { instance, .. }
        | Request::Subscribe { instance, .. }
        | Request::Unsubscribe { instance, .. } => *instance = Some(name.to_owned()),
        Request::List { all, .. } | Request::Stats { all } | Request::Channels { all } => {
            *all = false
        }
        _ => {}
    }
    req
}

fn gathers(req: &Request) -> bool {
    matches!(
        req,
        Request::List { all: true, .. }
            | Request::Stats { all: true }
            | Request::Channels { all: true }
    )
}

/// Carries out `req` where it belongs: `Err(req)` when that is here and
/// now (the caller acts locally).
pub async fn route(req: Request, control: &Control) -> Result<Response, Request> {
    if let Request::Instances {} = req {
        return Ok(instances(control).await);
    }
    let Some(rpc) = &control.remote else {
        if let Some((id, Some(name))) = target(&req) {
            return Ok(Response::error(
                ErrorKind::NotFound,
                format!("no session {name}:{id}: this server runs without --redis"),
            ));
        }
        // Alone, `--all` is this instance.
        return Err(pinned(req, ""));
    };
    if gathers(&req) {
        return Ok(gather(req, control, rpc).await);
    }
    let Some((id, named)) = target(&req) else {
        return Err(req);
    };
    let me = rpc.name();
    match named {
        Some(name) if name == me => Err(req),
        Some(name) => {
            let name = name.to_owned();
            Ok(forward(rpc, &name, req, id).await)
        }
        None if control.registry.get(id).is_some() => Err(req),
        None => Ok(find_and_forward(rpc, req, id).await),
    }
}

/// Sends `req` to instance `name` and returns its answer.
async fn forward(rpc: &Rpc, name: &str, req: Request, id: u64) -> Response {
    let body = Body::Do {
        request: pinned(req, name),
    };
    match ask(rpc, name, &body).await {
        Ok(response) => response,
        Err(Failed::Busy(e)) => Response::error(ErrorKind::Busy, e),
        Err(Failed::Other(e)) => Response::error(
            ErrorKind::NotFound,
            format!("no session {name}:{id}: instance {name}: {e}"),
        ),
    }
}

/// Asks every other live instance whether it has `id`, then sends `req`
/// to the one that does.
async fn find_and_forward(rpc: &Rpc, req: Request, id: u64) -> Response {
    let others: Vec<String> = match presence::live(rpc, WAIT).await {
        Ok(live) => live
            .into_iter()
            .map(|(name, _)| name)
            .filter(|n| n != rpc.name())
            .collect(),
        Err(e) => {
            return Response::error(
                ErrorKind::NotFound,
                format!("no session with id {id} here, and other instances cannot be asked ({e})"),
            )
        }
    };
    let asks = others.iter().map(|name| async move {
        let has = matches!(ask(rpc, name, &Body::Has { id }).await, Ok(r) if r.ok);
        has.then_some(name)
    });
    let owners: Vec<&String> = join_all(asks).await.into_iter().flatten().collect();
    match owners.as_slice() {
        [] => not_found(id),
        [name] => forward(rpc, name, req, id).await,
        several => {
            let named: Vec<String> = several.iter().map(|n| format!("{n}:{id}")).collect();
            Response::error(
                ErrorKind::BadRequest,
                format!(
                    "id {id} is on several instances: give one of {}",
                    named.join(", ")
                ),
            )
        }
    }
}

/// Why an ask brought no answer.
enum Failed {
    /// Too many asks of ours in flight: try again.
    Busy(String),
    /// No answer in time, Redis away, or an answer we cannot read.
    Other(String),
}

/// One ask, its answer read as a [`Response`].
async fn ask(rpc: &Rpc, name: &str, body: &Body) -> Result<Response, Failed> {
    let body = serde_json::to_string(body).map_err(|e| Failed::Other(e.to_string()))?;
    let answer = rpc.ask(name, body, WAIT).await.map_err(|e| match e {
        AskError::Busy => Failed::Busy(e.to_string()),
        other => Failed::Other(other.to_string()),
    })?;
    serde_json::from_str(&answer)
        .map_err(|_| Failed::Other("answered something that is not wspipe's".into()))
}

/// `list`, `stats` or `channels` with `--all`: this instance's answer and
/// every other live one's that comes within [`WAIT`], merged.
async fn gather(req: Request, control: &Control, rpc: &Rpc) -> Response {
    let me = rpc.name().to_owned();
    let req = pinned(req, &me);
    let (others, unreachable) = match presence::live(rpc, WAIT).await {
        Ok(live) => (
            live.into_iter()
                .map(|(name, _)| name)
                .filter(|n| *n != me)
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e)),
    };
    let body = Body::Do {
        request: req.clone(),
    };
    let asks = others.iter().map(|name| ask(rpc, name, &body));
    let (mine, theirs) = tokio::join!(local(req, control), join_all(asks));
    let mut merged = Response {
        answered: Some(vec![me.clone()]),
        unanswered: Some(Vec::new()),
        unreachable,
        ..Response::ok()
    };
    absorb(&mut merged, &me, mine);
    for (name, answer) in others.into_iter().zip(theirs) {
        match answer {
            Ok(response) if response.ok => {
                absorb(&mut merged, &name, response);
                merged.answered.get_or_insert_with(Vec::new).push(name);
            }
            _ => merged.unanswered.get_or_insert_with(Vec::new).push(name),
        }
    }
    // In name order, whichever answered first.
    for names in [&mut merged.answered, &mut merged.unanswered]
        .into_iter()
        .flatten()
    {
        names.sort();
    }
    merged
}

/// Adds instance `name`'s answer to the merged one, each entry marked
/// with its instance; the first counters (this instance's) stay `stats`.
fn absorb(merged: &mut Response, name: &str, answer: Response) {
    if let Some(sessions) = answer.sessions {
        let all = merged.sessions.get_or_insert_with(Vec::new);
        all.extend(sessions.into_iter().map(|mut s| {
            s.instance.get_or_insert_with(|| name.to_owned());
            s
        }));
    }
    if let Some(shared) = answer.shared {
        merged.shared.get_or_insert_with(Vec::new).extend(shared);
    }
    if let Some(channels) = answer.channels {
        let all = merged.channels.get_or_insert_with(Vec::new);
        all.extend(channels.into_iter().map(|mut c| {
            c.instance.get_or_insert_with(|| name.to_owned());
            c
        }));
    }
    if let Some(stats) = answer.stats {
        merged.stats.get_or_insert_with(|| stats.clone());
        merged
            .all_stats
            .get_or_insert_with(Vec::new)
            .push(InstanceStats {
                instance: name.to_owned(),
                stats,
            });
    }
}

/// `instances`: the registrations of the live instances.
async fn instances(control: &Control) -> Response {
    let Some(rpc) = &control.remote else {
        return Response::error(
            ErrorKind::BadRequest,
            "this server runs without --redis: it is the only instance",
        );
    };
    match presence::live(rpc, WAIT).await {
        Ok(live) => {
            let listed = live
                .into_iter()
                .map(|(name, json)| {
                    serde_json::from_str::<InstanceInfo>(&json).unwrap_or(InstanceInfo {
                        name,
                        listen: Vec::new(),
                        started: 0,
                        connections: 0,
                    })
                })
                .collect();
            Response {
                instances: Some(listed),
                ..Response::ok()
            }
        }
        Err(e) => Response::error(
            ErrorKind::BadRequest,
            format!("cannot list the instances: {e}"),
        ),
    }
}

/// Serves other instances' requests with this instance's [`Control`].
pub struct Answerer(pub Control);

impl Answer for Answerer {
    fn answer(&self, body: String) -> Pin<Box<dyn Future<Output = String> + Send>> {
        let control = self.0.clone();
        Box::pin(async move {
            let response = match serde_json::from_str::<Body>(&body) {
                Ok(Body::Has { id }) if control.registry.get(id).is_some() => Response::ok(),
                Ok(Body::Has { id }) => not_found(id),
                Ok(Body::Do { request }) if servable(&request) => {
                    let me = control.remote.as_ref().map_or("", |r| r.name()).to_owned();
                    local(pinned(request, &me), &control).await
                }
                Ok(Body::Do { .. }) => Response::error(
                    ErrorKind::BadRequest,
                    "not a request other instances may make",
                ),
                Err(e) => Response::error(ErrorKind::BadRequest, format!("bad request: {e}")),
            };
            serde_json::to_string(&response).unwrap_or_default()
        })
    }

    fn presence(&self) -> String {
        let control = &self.0;
        let snap = control.registry.snapshot();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let info = InstanceInfo {
            name: control.remote.as_ref().map_or("", |r| r.name()).to_owned(),
            listen: control.listen.clone(),
            started: now.saturating_sub(snap.uptime.as_secs()),
            connections: snap.live,
        };
        serde_json::to_string(&info).unwrap_or_default()
    }
}

/// What another instance may have done here: acting on one connection and
/// reading; never a drain, a broadcast, a publish (that goes through the
/// channels already) or a watch.
fn servable(req: &Request) -> bool {
    target(req).is_some()
        || matches!(
            req,
            Request::List { .. } | Request::Stats { .. } | Request::Channels { .. }
        )
}

/// Starts answering for `control` (once; later calls are ignored).
pub fn serve(control: &Control) {
    if let Some(rpc) = &control.remote {
        rpc.answer_with(Arc::new(Answerer(control.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{ChannelEntry, SessionInfo, SessionKind};

    #[test]
    fn a_request_sent_on_is_bound_to_its_instance_and_never_gathers_again() {
        let send = Request::Send {
            id: 7,
            message: "hi".into(),
            instance: None,
        };
        assert_eq!(target(&send), Some((7, None)));
        let sent = pinned(send, "b");
        assert_eq!(target(&sent), Some((7, Some("b"))));
        let list = pinned(
            Request::List {
                path: None,
                all: true,
            },
            "b",
        );
        assert!(!gathers(&list));
        // kill /ENDPOINT, drain and publish are never served for others.
        let endpoint = Request::Kill {
            id: None,
            endpoint: Some("/x".into()),
            instance: None,
        };
        assert!(!servable(&endpoint));
        assert!(!servable(&Request::Drain { timeout: None }));
        assert!(!servable(&Request::Publish {
            channel: "/a".into(),
            message: "m".into()
        }));
    }

    #[test]
    fn merged_answers_mark_each_entry_with_its_instance() {
        let session = SessionInfo {
            id: 1,
            remote: "127.0.0.1:1".into(),
            path: "/".into(),
            kind: SessionKind::Pubsub,
            pid: None,
            started: 0,
            messages_in: 0,
            messages_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            channels: Vec::new(),
            dropped: 0,
            instance: None,
        };
        let channel = ChannelEntry {
            name: "/room".into(),
            members: 2,
            published: 0,
            dropped: 0,
            instance: None,
        };
        let answer = || Response {
            sessions: Some(vec![session.clone()]),
            channels: Some(vec![channel.clone()]),
            ..Response::ok()
        };
        let mut merged = Response::ok();
        absorb(&mut merged, "a", answer());
        absorb(&mut merged, "b", answer());
        let on: Vec<_> = merged
            .sessions
            .unwrap()
            .into_iter()
            .map(|s| (s.instance, s.id))
            .collect();
        assert_eq!(on, [(Some("a".into()), 1), (Some("b".into()), 1)]);
        let rooms: Vec<_> = merged
            .channels
            .unwrap()
            .into_iter()
            .map(|c| c.instance)
            .collect();
        assert_eq!(rooms, [Some("a".into()), Some("b".into())]);
    }
}
