//! The registry of live sessions: what `wspipe ctl` can see and reach.
//!
//! Each session registers a [`SessionHandle`] when its socket opens and is
//! removed (by dropping its [`Registration`]) when it ends, whatever the path
//! out. A handle holds the two mailboxes into the session (messages to inject
//! into its output, and control requests for its supervisor) plus counters
//! the pump updates with relaxed atomics, cheap enough for every message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use crate::mailbox::Poster;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Per-session traffic counters.
#[derive(Debug, Default)]
pub struct SessionStats {
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl SessionStats {
    /// Counts a message from the client.
    pub fn count_in(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a message to the client.
    pub fn count_out(&self, bytes: usize) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// A request for a session's supervisor.
#[derive(Debug)]
pub enum SessionCtl {
    /// Close the socket with this frame and end the child.
    Close(CloseFrame),
    /// Start the signal escalation now.
    Kill,
}

/// What the registry knows about one live session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub id: u64,
    pub remote: String,
    pub path: String,
    pub pid: u32,
    pub started: SystemTime,
    pub stats: Arc<SessionStats>,
    /// Messages to deliver to the client, in order with the child's lines.
    pub inject: Poster<Message>,
    /// Requests for the supervisor.
    pub control: Poster<SessionCtl>,
}

/// Server-wide counters.
#[derive(Debug, Default)]
pub struct Totals {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// All live sessions, by id.
#[derive(Debug)]
pub struct Registry {
    sessions: Mutex<BTreeMap<u64, SessionHandle>>,
    pub totals: Totals,
    pub started: Instant,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            sessions: Mutex::new(BTreeMap::new()),
            totals: Totals::default(),
            started: Instant::now(),
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
        self.registry.lock().remove(&self.id);
        let t = &self.registry.totals;
        let s = &self.stats;
        let fold = |total: &AtomicU64, part: &AtomicU64| {
            total.fetch_add(part.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        fold(&t.messages_in, &s.messages_in);
        fold(&t.messages_out, &s.messages_out);
        fold(&t.bytes_in, &s.bytes_in);
        fold(&t.bytes_out, &s.bytes_out);
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, SessionHandle>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every operation is a single insert/remove/read), so poison is moot.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a session; it stays listed while the returned guard lives.
    pub fn register(self: &Arc<Self>, handle: SessionHandle) -> Registration {
        self.totals.connections.fetch_add(1, Ordering::Relaxed);
        let reg = Registration {
            registry: self.clone(),
            id: handle.id,
            stats: handle.stats.clone(),
        };
        self.lock().insert(handle.id, handle);
        reg
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

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Totals including the live sessions' counters so far:
    /// (messages_in, messages_out, bytes_in, bytes_out).
    pub fn traffic(&self) -> [u64; 4] {
        let t = &self.totals;
        let mut sums = [
            t.messages_in.load(Ordering::Relaxed),
            t.messages_out.load(Ordering::Relaxed),
            t.bytes_in.load(Ordering::Relaxed),
            t.bytes_out.load(Ordering::Relaxed),
        ];
        for h in self.lock().values() {
            let s = &h.stats;
            sums[0] += s.messages_in.load(Ordering::Relaxed);
            sums[1] += s.messages_out.load(Ordering::Relaxed);
            sums[2] += s.bytes_in.load(Ordering::Relaxed);
            sums[3] += s.bytes_out.load(Ordering::Relaxed);
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(id: u64, path: &str) -> (SessionHandle, crate::mailbox::Mailbox<Message>) {
        let (inject, rx) = crate::mailbox::mailbox(1);
        let (control, _) = crate::mailbox::mailbox(1);
        let h = SessionHandle {
            id,
            remote: "127.0.0.1:1".into(),
            path: path.into(),
            pid: 1,
            started: SystemTime::now(),
            stats: Arc::default(),
            inject,
            control,
        };
        (h, rx)
    }

    #[test]
    fn registration_lives_as_long_as_its_guard() {
        let reg = Arc::new(Registry::default());
        let (a, _ra) = handle(1, "/a");
        let (b, _rb) = handle(2, "/b");
        let ga = reg.register(a);
        let _gb = reg.register(b);
        assert_eq!(reg.len(), 2);
        assert_eq!(reg.list(Some("/a")).len(), 1);
        reg.get(1).unwrap().stats.count_out(10);
        drop(ga);
        assert!(reg.get(1).is_none());
        assert_eq!(reg.traffic(), [0, 1, 0, 10]);
        assert_eq!(reg.totals.connections.load(Ordering::Relaxed), 2);
    }
}
