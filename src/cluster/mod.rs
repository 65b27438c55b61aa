//! Channels across several wspipe instances, through Redis (`--redis`).
//!
//! ```text
//!  publish on this instance                      Redis
//!    -> the hub: local members, at once          PUBLISH wspipe:/room
//!    -> Cluster::forward -> outbox (bounded) -> publisher task -------+
//!                                                                    |
//!  hub.publish <- Deliver <- subscriber task <- PSUBSCRIBE wspipe:* <-+
//!                             (drops its own messages)
//! ```
//!
//! This layer knows Redis and nothing of the hub: what comes from other
//! instances is handed to a [`Deliver`] (the layer above, `crate::bus`,
//! wires it to the hub). A publish never waits for Redis: it is queued in
//! an outbox of at most [`OUTBOX`] that one publisher task empties, in
//! order, pipelined over one connection. While Redis is away the outbox
//! fills, then loses its oldest messages, counted in `dropped`; a batch
//! whose sending failed is counted there too and not sent again (at most
//! once: Redis may or may not have passed it on). Both tasks reconnect
//! with an exponential [`Backoff`](crate::backoff::Backoff).
//!
//! One job per file: [`target`] checks `--redis` and `--instance`,
//! [`codec`] is the payload format, `link` a connection's health and its
//! log lines, `publisher` and `subscriber` the two tasks; [`rpc`] carries
//! control requests between instances and [`presence`] registers the live
//! ones (docs/scale-out.md, "Control across instances").

pub mod codec;
mod link;
pub mod numbered;
pub mod presence;
mod publisher;
mod pump;
pub mod rpc;
pub mod stream;
mod subscriber;
pub mod target;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;

use crate::backoff::Policy;
use crate::mailbox::{mailbox_weighed, Bound, Poster};
use crate::shutdown::Shutdown;
use codec::Origin;
use link::{Link, Role};
pub use target::{InstanceName, Target};

/// What the outbox holds while Redis is slow or away, before its oldest
/// messages are dropped: a few seconds of a busy instance's publishes.
pub const OUTBOX: Bound = Bound {
    items: 10_000,
    bytes: 16 << 20,
};

/// Reconnection waits: 100 ms doubling to 5 s; reset once a connection
/// has held 10 s.
pub const RECONNECT: Policy = Policy {
    first: Duration::from_millis(100),
    max: Duration::from_secs(5),
    stable: Duration::from_secs(10),
};

/// How long connecting, and any answer, may take before the connection
/// counts as lost (a Redis that hangs is as good as gone).
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// `--redis` and `--instance`, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Target,
    pub instance: InstanceName,
}

/// Where messages published on other instances go. Called from the
/// subscriber task, in the order Redis passes them on; must not wait.
pub trait Deliver: Send + Sync + 'static {
    fn deliver(&self, channel: &str, message: Message);
}

/// A handle on this instance's part of the cluster; clones are cheap.
#[derive(Debug, Clone)]
pub struct Cluster(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    outbox: Poster<Outgoing>,
    origin: Origin,
    counters: Arc<Counters>,
    publish: Arc<Link>,
    subscribe: Arc<Link>,
    /// `--history`: numbering and resumes ([`stream`]).
    history: Option<stream::HistoryLink>,
}

/// One message on its way to Redis.
#[derive(Debug)]
struct Outgoing {
    /// `wspipe:/room`.
    channel: String,
    payload: Vec<u8>,
}

/// Counters since start, shared by the tasks and the handle.
#[derive(Debug, Default)]
struct Counters {
    /// Messages Redis took from us.
    published: AtomicU64,
    /// Messages of other instances handed to local members.
    received: AtomicU64,
    /// Cross-instance messages lost: evicted from a full outbox, in a
    /// batch whose sending failed, or received in a form we cannot read
    /// or longer than we take.
    dropped: AtomicU64,
}

/// The counters and state, for `ctl stats` and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Both connections (publish and subscribe) are up.
    pub connected: bool,
    pub published: u64,
    pub received: u64,
    pub dropped: u64,
}

impl Cluster {
    /// Starts the publisher and subscriber tasks (tracked by `shutdown`,
    /// ending with it); messages from other instances go to `deliver`.
    /// Needs a tokio runtime. Connecting happens in the background: a
    /// Redis that is down delays nothing.
    ///
    /// A message from another instance longer than `largest` bytes (more
    /// than any publish path here takes) is dropped and counted: it comes
    /// from a peer configured for bigger messages, or from a stranger.
    pub fn start(
        settings: &Settings,
        largest: usize,
        deliver: Arc<dyn Deliver>,
        shutdown: &Shutdown,
    ) -> Self {
        Self::start_with_history(settings, largest, deliver, None, shutdown)
    }

    /// [`Cluster::start`], with `--history` kept in Redis when `history`
    /// is given: numbered messages and fences go to its [`stream::Resumes`].
    pub fn start_with_history(
        settings: &Settings,
        largest: usize,
        deliver: Arc<dyn Deliver>,
        history: Option<(stream::Settings, Arc<dyn stream::Resumes>)>,
        shutdown: &Shutdown,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let shown = settings.target.to_string();
        let publish = Arc::new(Link::new(Role::Publish, shown.clone(), counters.clone()));
        let subscribe = Arc::new(Link::new(Role::Subscribe, shown, counters.clone()));
        let origin = Origin {
            nonce: nonce(),
            name: settings.instance.clone(),
        };
        let (outbox, queue) = mailbox_weighed(OUTBOX.items, |m: &Outgoing| m.payload.len());
        let client = settings.target.client().clone();
        shutdown.spawn(publisher::run(
            settings.target.publishing_client().clone(),
            queue,
            publish.clone(),
            counters.clone(),
            shutdown.clone(),
        ));
        shutdown.spawn(subscriber::run(
            subscriber::Task {
                client,
                origin: origin.clone(),
                largest,
                deliver,
                link: subscribe.clone(),
                counters: counters.clone(),
                garbled: AtomicBool::new(false),
                oversized: AtomicBool::new(false),
                resumes: history.as_ref().map(|(_, r)| r.clone()),
            },
            shutdown.clone(),
        ));
        tracing::info!(
            "instance {} (nonce {:016x}) shares channels through {}",
            origin.name,
            origin.nonce,
            settings.target
        );
        let history = history.map(|(history, _)| {
            let link = Arc::new(Link::new(
                Role::History,
                settings.target.to_string(),
                counters.clone(),
            ));
            stream::HistoryLink::start(
                settings.target.publishing_client().clone(),
                history,
                origin.clone(),
                link,
                counters.clone(),
                shutdown,
            )
        });
        Cluster(Arc::new(Inner {
            outbox,
            origin,
            counters,
            publish,
            subscribe,
            history,
        }))
    }

    /// Queues `message`, published on `channel` here, for the other
    /// instances. Never waits: a full outbox loses its oldest message.
    pub fn forward(&self, channel: &str, message: &Message) {
        let Some(payload) = codec::encode(&self.0.origin, message) else {
            return;
        };
        let outgoing = Outgoing {
            channel: codec::redis_channel(channel),
            payload,
        };
        // Closed only once the publisher task has ended, at shutdown.
        if let Ok(evicted) = self.0.outbox.post_evicting(outgoing, OUTBOX) {
            self.0.counters.lost(evicted);
        }
    }

    /// The history in Redis, with `--history`.
    pub fn history(&self) -> Option<&stream::HistoryLink> {
        self.0.history.as_ref()
    }

    pub fn instance(&self) -> &InstanceName {
        &self.0.origin.name
    }

    pub fn stats(&self) -> Stats {
        let c = &self.0.counters;
        Stats {
            connected: self.0.publish.is_up()
                && self.0.subscribe.is_up()
                && self
                    .0
                    .history
                    .as_ref()
                    .is_none_or(stream::HistoryLink::is_up),
            published: c.published.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Counters {
    fn lost(&self, n: u64) {
        if n > 0 {
            self.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// A number that tells this run of the process from any other: std's
/// randomly seeded hasher over the pid and the time (not a secret, only
/// unlikely to repeat).
fn nonce() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.finish()
}
