//! The side door: control of a running server from scripts.
//!
//! ```text
//! wspipe ctl ...  --(NDJSON over a Unix socket)-->  listener -> commands
//!                                                       |
//!                                     registry of live sessions (id -> handle)
//!                                                       |
//!                       inject mailbox -> bridge outbound (in order with lines)
//!                       control mailbox -> bridge supervisor (close, kill)
//! ```
//!
//! `protocol` defines the wire format, `commands` what each request does,
//! `listener` serves one control connection, `client` is the `wspipe ctl`
//! command, and `metrics` renders the counters for Prometheus. The accept
//! loop is the server's own (`crate::net`); this layer needs only a
//! [`Control`]: the registry, the channel hub, the mode messages are framed
//! in, and the shutdown to watch.

pub mod across;
pub mod channels;
pub mod client;
pub mod commands;
pub mod listener;
pub mod metrics;
mod output;
pub mod protocol;
pub mod remote;
mod render;
pub mod watch;

use std::sync::Arc;

use crate::bus::Bus;
use crate::cluster::rpc::Rpc;
use crate::config::Mode;
use crate::events::Events;
use crate::session::Registry;
use crate::shared::Shared;
use crate::shutdown::Shutdown;

/// What serving control requests takes.
#[derive(Debug, Clone)]
pub struct Control {
    /// The sessions requests act on.
    registry: Arc<Registry>,
    /// The channels publish and subscribe act on (publishes reach the
    /// other instances too, with `--redis`).
    bus: Bus,
    /// The shared children: their statistics, listing and `ctl kill`.
    shared: Shared,
    /// What `watch` follows.
    events: Events,
    /// How injected messages are framed (binary mode sends binary).
    mode: Mode,
    /// Connections end when the server shuts down.
    shutdown: Shutdown,
    /// With `--redis`: requests to and from the other instances.
    remote: Option<Rpc>,
    /// The listening addresses, as `instances` shows them.
    listen: Vec<String>,
}

impl Control {
    pub fn new(
        registry: Arc<Registry>,
        bus: Bus,
        shared: Shared,
        events: Events,
        mode: Mode,
        shutdown: Shutdown,
    ) -> Self {
        Control {
            registry,
            bus,
            shared,
            events,
            mode,
            shutdown,
            remote: None,
            listen: Vec::new(),
        }
    }

    /// Reaches the other instances through `rpc` (with `--redis`) and
    /// answers theirs; `listen` is what `instances` shows of this one.
    pub fn with_remote(mut self, rpc: Option<Rpc>, listen: Vec<String>) -> Self {
        self.remote = rpc;
        self.listen = listen;
        remote::serve(&self);
        self
    }
}
