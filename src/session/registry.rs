//! The registry of live sessions: what `wspipe ctl` can see and reach.
//!
//! Each session registers a [`SessionHandle`] before its socket opens and
//! is removed (by dropping its [`Registration`]) when it ends, whatever the
//! path out. A handle holds the two mailboxes into the session (messages to
//! inject into its output, and control requests for its supervisor) plus
//! the counters the pump updates. The registry also hands out the ids that
//! sessions and CGI requests are known by, and keeps the server's totals.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio_tungstenite::tungstenite::Message;

use super::{Identity, Kind, SessionCtl, SessionStats, Traffic};
use crate::mailbox::Poster;

/// What the registry knows about one live session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub id: u64,
    pub remote: String,
    pub path: String,
    /// Its child's pid (the shared child's for a shared endpoint); `None`
    /// for a channel endpoint.
    pub pid: Option<u32>,
    pub kind: Kind,
    pub started: SystemTime,
    pub stats: Arc<SessionStats>,
    /// Messages to deliver to the client, in order with the child's lines.
    pub inject: Poster<Message>,
    /// Requests for the supervisor.
    pub control: Poster<SessionCtl>,
}

impl SessionHandle {
    pub(super) fn new(
        identity: Identity,
        stats: Arc<SessionStats>,
        inject: Poster<Message>,
        control: Poster<SessionCtl>,
    ) -> Self {
        let Identity {
            id,
            remote,
            path,
            pid,
            kind,
        } = identity;
        SessionHandle {
            id,
            remote,
            path,
            pid,
            kind,
            started: SystemTime::now(),
            stats,
            inject,
            control,
        }
    }
}

/// Server-wide counters of what has come and gone.
#[derive(Debug, Default)]
struct Totals {
    /// Sessions registered since start.
    opened: AtomicU64,
    /// Requests refused before a session began.
    refused: AtomicU64,
    /// Of those, refused by authentication (`--basic-auth`).
    refused_auth: AtomicU64,
    /// The traffic of sessions that have ended.
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Totals {
    fn fold(&self, t: Traffic) {
        self.messages_in.fetch_add(t.messages_in, Ordering::Relaxed);
        self.messages_out
            .fetch_add(t.messages_out, Ordering::Relaxed);
        self.bytes_in.fetch_add(t.bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(t.bytes_out, Ordering::Relaxed);
    }

    fn ended_traffic(&self) -> Traffic {
        Traffic {
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// The server's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Live sessions.
    pub live: u64,
    /// Sessions opened since start.
    pub opened: u64,
    /// Requests refused since start.
    pub refused: u64,
    /// Of those, refused by authentication.
    pub refused_auth: u64,
    /// Traffic of every session, live ones included.
    pub traffic: Traffic,
    pub uptime: Duration,
}

/// All live sessions, by id.
#[derive(Debug)]
pub struct Registry {
    sessions: Mutex<BTreeMap<u64, SessionHandle>>,
    /// Source of session and CGI request ids.
    next_id: AtomicU64,
    totals: Totals,
    started: Instant,
    /// Woken when the last live session goes (`ctl drain` waits for it).
    emptied: tokio::sync::Notify,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            sessions: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            totals: Totals::default(),
            started: Instant::now(),
            emptied: tokio::sync::Notify::new(),
        }
    }
}

/// Removes its session from the registry when dropped, and folds the
/// session's counters into the totals.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
    stats: Arc<SessionStats>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let empty = {
            let mut sessions = self.registry.lock();
            sessions.remove(&self.id);
            sessions.is_empty()
        };
        self.registry.totals.fold(self.stats.traffic());
        if empty {
            self.registry.emptied.notify_waiters();
        }
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, SessionHandle>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every operation is a single insert/remove/read), so poison is moot.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new id, never handed out before.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a request refused before it became a session.
    pub fn count_refused(&self) {
        self.totals.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request authentication refused (it is a refusal too).
    pub fn count_refused_auth(&self) {
        self.count_refused();
        self.totals.refused_auth.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a session; it stays listed while the returned guard lives.
    pub fn register(self: &Arc<Self>, handle: SessionHandle) -> Registration {
        self.totals.opened.fetch_add(1, Ordering::Relaxed);
        let reg = Registration {
            registry: self.clone(),
            id: handle.id,
            stats: handle.stats.clone(),
        };
        self.lock().insert(handle.id, handle);
        reg
    }

    /// Resolves once no session is live.
    pub async fn wait_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            // Registered before the check: a last session that goes right
            // after it still wakes us.
            emptied.as_mut().enable();
            if self.lock().is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// One session's handle.
    pub fn get(&self, id: u64) -> Option<SessionHandle> {
        self.lock().get(&id).cloned()
    }

    /// Every live session (optionally only those on one URL path), by id.
    pub fn list(&self, path: Option<&str>) -> Vec<SessionHandle> {
        self.lock()
            .values()
            .filter(|h| path.is_none_or(|p| h.path == p))
            .cloned()
            .collect()
    }

    /// The counters now, the live sessions' traffic so far included.
    pub fn snapshot(&self) -> Snapshot {
        let mut traffic = self.totals.ended_traffic();
        let sessions = self.lock();
        for h in sessions.values() {
            traffic += h.stats.traffic();
        }
        Snapshot {
            live: sessions.len() as u64,
            opened: self.totals.opened.load(Ordering::Relaxed),
            refused: self.totals.refused.load(Ordering::Relaxed),
            refused_auth: self.totals.refused_auth.load(Ordering::Relaxed),
            traffic,
            uptime: self.started.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(id: u64, path: &str) -> (SessionHandle, crate::mailbox::Mailbox<Message>) {
        let (inject, rx) = crate::mailbox::mailbox(1);
        let (control, _) = crate::mailbox::mailbox(1);
        let identity = Identity {
            id,
            remote: "127.0.0.1:1".into(),
            path: path.into(),
            pid: Some(1),
            kind: Kind::Process,
        };
        (
            SessionHandle::new(identity, Arc::default(), inject, control),
            rx,
        )
    }

    #[test]
    fn registration_lives_as_long_as_its_guard() {
        let reg = Arc::new(Registry::default());
        let (a, _ra) = handle(1, "/a");
        let (b, _rb) = handle(2, "/b");
        let ga = reg.register(a);
        let _gb = reg.register(b);
        assert_eq!(reg.snapshot().live, 2);
        assert_eq!(reg.list(Some("/a")).len(), 1);
        reg.get(1).unwrap().stats.count_out(10);
        drop(ga);
        assert!(reg.get(1).is_none());
        let snap = reg.snapshot();
        assert_eq!(
            snap.traffic,
            Traffic {
                messages_out: 1,
                bytes_out: 10,
                ..Traffic::default()
            }
        );
        assert_eq!((snap.live, snap.opened), (1, 2));
    }

    #[test]
    fn ids_are_never_reused() {
        let reg = Registry::default();
        let (a, b) = (reg.next_id(), reg.next_id());
        assert!(a >= 1 && b > a);
    }
}
