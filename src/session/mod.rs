//! What every session has, whatever carries it (a WebSocket bridge, or a
//! CGI request for the parts that apply): an id and a registry entry
//! ([`registry`]), traffic counters, the mailboxes through which the
//! control socket reaches it, one way to spawn its child ([`spawn`]) and
//! one logger for the child's stderr ([`stderr`]).

pub mod registry;
pub mod spawn;
pub mod stderr;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::mailbox::{mailbox, mailbox_weighed, Mailbox};

pub use registry::{Registration, Registry, SessionHandle, Snapshot};
pub use spawn::Refusal;

/// Messages, in both directions, and their payload bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl std::ops::AddAssign for Traffic {
    fn add_assign(&mut self, other: Traffic) {
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }
}

/// Per-session traffic counters, updated by the pump with relaxed atomics
/// (cheap enough for every message) and read by the control socket.
#[derive(Debug, Default)]
pub struct SessionStats {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
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

    /// The counts so far.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// A request for a session's supervisor.
#[derive(Debug)]
pub enum SessionCtl {
    /// Close the socket with this frame and end the child.
    Close(CloseFrame),
    /// The hub gives the client no more messages: close with the
    /// eviction's code and reason, and end the child.
    Evicted(Eviction),
    /// Start the signal escalation now.
    Kill,
    /// Send the client what is queued for it now, then close with this
    /// frame: a shared child that exited has its last lines delivered
    /// before the close that reports its exit (`crate::shared`). A session
    /// with a child of its own treats it as [`SessionCtl::Close`].
    Drain(CloseFrame),
}

/// Why the hub stopped giving a member messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Too slow for its channels (`--channel-overflow close`).
    TooSlow,
    /// This instance's stream of a channel with `--history` skipped
    /// messages (its Redis subscription dropped): the client, closed, can
    /// get them by resuming with `since=`.
    Missed,
}

impl Eviction {
    /// The close code and reason the client is told.
    pub fn close(self) -> (u16, &'static str) {
        match self {
            Eviction::TooSlow => (1008, "too slow for its channels"),
            // 1012 (service restart): come back, and the history has it.
            Eviction::Missed => (1012, "missed messages: resume with since="),
        }
    }
}

/// Injected messages a session holds for its client from `send` and
/// `broadcast`: bounds the memory a burst can take per slow client (the
/// rest wait, then time out). Channel publishes, which never wait, have a
/// bound of their own (`crate::hub`).
const INJECT_QUEUE: usize = 64;

/// Close and kill requests a session holds (they come once in its life).
const CONTROL_QUEUE: usize = 4;

/// The session's ends of the control mailboxes, and its counters.
#[derive(Debug)]
pub struct Links {
    /// Messages injected by `wspipe ctl send/broadcast`.
    pub inject: Mailbox<Message>,
    /// Close and kill requests from `wspipe ctl`.
    pub control: Mailbox<SessionCtl>,
    pub stats: Arc<SessionStats>,
}

/// Who a session is, as `wspipe ctl list` shows it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: u64,
    /// The client (see [`crate::peer::client_text`]).
    pub remote: String,
    /// The URL path it connected to.
    pub path: String,
    /// Its child's pid (the shared child's for a shared endpoint); `None`
    /// for a channel endpoint, which has none.
    pub pid: Option<u32>,
    pub kind: Kind,
}

/// What serves a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A child of its own.
    Process,
    /// No child: a channel endpoint (`--pubsub`).
    Pubsub,
    /// A child shared with every client of its endpoint (`--shared`).
    Shared,
}

impl Kind {
    /// The word `ctl list` and `ctl watch` show.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Process => "process",
            Kind::Pubsub => "pubsub",
            Kind::Shared => "shared",
        }
    }
}

/// The mailboxes and counters of a new session: its own ends, and the
/// handle the registry keeps.
pub fn links(identity: Identity) -> (Links, SessionHandle) {
    let (inject_tx, inject) = mailbox_weighed(INJECT_QUEUE, |m: &Message| m.len());
    let (control_tx, control) = mailbox(CONTROL_QUEUE);
    let stats = Arc::new(SessionStats::default());
    let handle = SessionHandle::new(identity, stats.clone(), inject_tx, control_tx);
    (
        Links {
            inject,
            control,
            stats,
        },
        handle,
    )
}
