//! The state every connection shares, behind a cheap handle (mini-redis's
//! `Db`): the configuration and what is derived from it once, the
//! `--maxforks` slots, the registry of live sessions, the channel hub, the
//! shared children and the shutdown; and the settings a SIGHUP may change
//! ([`Reloadable`]), swapped whole so that a connection sees one version.
//! Callers get what they need through methods; nothing here is a public
//! field to reach into.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::bridge::BridgeOptions;
use crate::bus::Bus;
use crate::cluster::rpc::Rpc;
use crate::config::{Config, ExtraHeaders};
use crate::control::Control;
use crate::events::Events;
use crate::forks::Forks;
pub use crate::forks::ForksExhausted;
use crate::history::History;
use crate::hub::Hub;
use crate::logging::LogLevel;
use crate::origin::OriginPolicy;
use crate::peer::AddressPolicy;
use crate::session::Registry;
use crate::shared::{self, Shared};
use crate::shutdown::Shutdown;

/// tungstenite's read buffer per connection. It stays allocated and
/// resident for the connection's life (tungstenite zero-fills it up to this
/// size before each read) and bounds how much one read takes from the
/// socket; a bigger frame grows it on demand. Measured with the bench
/// (docs/benchmarks.md): 2 KiB instead of 4 keeps echo and 64 KiB binary
/// throughput the same and saves 2 KiB of RSS per connection; 1 KiB costs
/// a quarter of the binary throughput.
const WS_READ_BUFFER: usize = 2 * 1024;

/// tungstenite's write buffer: how much a slow client may have queued
/// before the pump stops reading the child.
const WS_WRITE_BUFFER: usize = 64 * 1024;

/// A handle on the shared state; clones are cheap and see the same state.
#[derive(Debug, Clone)]
pub struct State(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    config: Config,
    /// Session settings, derived once from the configuration (the ping
    /// interval comes from `reloadable`).
    bridge: BridgeOptions,
    /// What SIGHUP may change; read once per connection.
    reloadable: RwLock<Arc<Reloadable>>,
    /// WebSocket protocol limits, derived once from the configuration.
    ws_config: WebSocketConfig,
    /// Live-children limit (`--maxforks`).
    forks: Forks,
    /// Live sessions, for the control socket and metrics.
    registry: Arc<Registry>,
    /// Channels and their members, here and (with `--redis`) on the
    /// other instances.
    bus: Bus,
    /// The shared children (`--shared`), by endpoint.
    shared: Shared,
    /// What happens, for `wspipe ctl watch`.
    events: Events,
    /// Every task, and the signal to stop.
    shutdown: Shutdown,
    /// With `--redis`: control requests to and from the other instances.
    remote: Option<Rpc>,
}

/// The settings a SIGHUP with `--config` applies to new connections (live
/// sessions keep what they started with).
#[derive(Debug, Clone)]
pub struct Reloadable {
    pub origin: OriginPolicy,
    pub headers: ExtraHeaders,
    /// `--staticdir`, canonical.
    pub static_dir: Option<PathBuf>,
    /// `--pingms`, for sessions that start after it.
    pub ping: Option<Duration>,
    pub log_level: LogLevel,
    pub max_forks: Option<usize>,
}

impl Reloadable {
    fn from_config(config: &Config) -> Self {
        Reloadable {
            origin: config.origin.clone(),
            headers: config.headers.clone(),
            static_dir: config.static_dir.clone(),
            ping: config.ping,
            log_level: config.log_level,
            max_forks: config.max_forks,
        }
    }
}

/// The longest message any publish path here takes: a client message
/// (`--maxframesize`), a child's line (`--maxlinesize`), a control request.
fn largest_publish(config: &Config) -> usize {
    config
        .max_message
        .max(config.max_line)
        .max(crate::control::protocol::MAX_REQUEST)
}

impl State {
    pub fn new(config: Config) -> Self {
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(config.max_message))
            .max_frame_size(Some(config.max_message))
            .read_buffer_size(WS_READ_BUFFER)
            .write_buffer_size(WS_WRITE_BUFFER);
        let bridge = BridgeOptions {
            mode: config.mode,
            max_line: config.max_line,
            close_grace: config.close_grace,
            ping: config.ping,
            pass_stderr: config.pass_stderr,
        };
        let events = Events::default();
        let hub = Arc::new(Hub::new(config.overflow, events.clone()));
        let shutdown = Shutdown::new();
        let bus = match &config.cluster {
            Some(settings) => Bus::clustered(
                hub,
                settings,
                largest_publish(&config),
                config.history,
                &shutdown,
            ),
            None => Bus::local_with_history(hub, config.history.map(History::new)),
        };
        let shared = Shared::new(
            bus.clone(),
            shutdown.clone(),
            shared::Options {
                mode: config.mode,
                max_line: config.max_line,
                close_grace: config.close_grace,
                flags: config.shared.unwrap_or_default(),
            },
        );
        let remote = config
            .cluster
            .as_ref()
            .map(|settings| Rpc::start(settings, &shutdown));
        let state = State(Arc::new(Inner {
            forks: Forks::new(config.max_forks),
            reloadable: RwLock::new(Arc::new(Reloadable::from_config(&config))),
            bridge,
            ws_config,
            registry: Arc::default(),
            bus,
            shared,
            events,
            shutdown,
            remote,
            config,
        }));
        // Other instances are answered (and this one registered) whether
        // or not a control socket is open here.
        if state.0.remote.is_some() {
            let _ = state.control();
        }
        state
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// The settings for a session starting now.
    pub fn bridge_options(&self) -> BridgeOptions {
        BridgeOptions {
            ping: self.reloadable().ping,
            ..self.0.bridge.clone()
        }
    }

    /// The reloadable settings as they are now: take them once per
    /// connection, so one request sees one version.
    pub fn reloadable(&self) -> Arc<Reloadable> {
        let current = self.0.reloadable.read().unwrap_or_else(|e| e.into_inner());
        current.clone()
    }

    /// Applies the reloadable part of `config` (already validated) to new
    /// connections; returns what was in force before.
    pub fn apply(&self, config: &Config) -> Arc<Reloadable> {
        let new = Arc::new(Reloadable::from_config(config));
        if new.max_forks != self.reloadable().max_forks {
            self.0.forks.set_limit(new.max_forks);
        }
        let mut current = self.0.reloadable.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *current, new)
    }

    pub fn ws_config(&self) -> WebSocketConfig {
        self.0.ws_config
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.0.registry
    }

    pub fn hub(&self) -> &Arc<Hub> {
        self.0.bus.hub()
    }

    /// Where publishes go: the hub, and the other instances with
    /// `--redis`.
    pub fn bus(&self) -> &Bus {
        &self.0.bus
    }

    /// The shared children (`--shared`).
    pub fn shared(&self) -> &Shared {
        &self.0.shared
    }

    pub fn events(&self) -> &Events {
        &self.0.events
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.0.shutdown
    }

    /// How client addresses are learned (`--trusted-proxy`,
    /// `--reverselookup`).
    pub fn address_policy(&self) -> AddressPolicy<'_> {
        AddressPolicy {
            trusted_proxies: &self.0.config.trusted_proxies,
            reverse_lookup: self.0.config.reverse_lookup,
        }
    }

    /// What the control socket needs.
    pub fn control(&self) -> Control {
        Control::new(
            self.0.registry.clone(),
            self.0.bus.clone(),
            self.0.shared.clone(),
            self.0.events.clone(),
            self.0.config.mode,
            self.0.shutdown.clone(),
        )
        .with_remote(self.0.remote.clone(), self.listen_text())
    }

    /// The listening addresses as `ctl instances` shows them.
    fn listen_text(&self) -> Vec<String> {
        self.0
            .config
            .listen
            .iter()
            .map(|l| match l {
                crate::config::Listen::Tcp(addr) => addr.to_string(),
                crate::config::Listen::Unix(path) => format!("unix:{}", path.display()),
            })
            .collect()
    }

    /// A slot under `--maxforks` for one child, held until it is reaped.
    /// (Always a permit: unlimited is many, so a limit set later by SIGHUP
    /// counts the children already running.)
    pub fn fork_permit(&self) -> Result<Option<OwnedSemaphorePermit>, ForksExhausted> {
        self.0.forks.try_acquire().map(Some)
    }
}
