//! Start, signals and shutdown.
//!
//! [`run`] binds every listener (the side doors first, so that once
//! "serving on" is logged everything is up), serves until SIGTERM or
//! SIGINT, then shuts down: accepting stops, every session is closed with
//! 1001 and its child ended, requests in progress are answered, and the
//! process exits once every task has ended (bounded in time).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use crate::config::{Config, Endpoint, Listen};
use crate::http::Site;
use crate::net::{self, Adopted, SideListener, SocketFiles};
use crate::state::State;
use crate::systemd::{self, Passed};

/// Binds every listener (and takes over those `passed` by systemd), serves
/// until SIGTERM/SIGINT, then shuts down.
pub async fn run(config: Config, passed: Vec<Passed>) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives once we are listening must
    // start a graceful shutdown, not kill us with the default action.
    let signals = Signals::new()?;
    serve(config, passed, signals.wait()).await
}

/// Binds every listener, takes over the sockets `passed` by the service
/// manager, and serves until `stop` resolves, then shuts down gracefully;
/// returns once every task the server started has ended.
pub async fn serve(
    config: Config,
    passed: Vec<Passed>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let state = State::new(config);
    // Before any listener: a SIGHUP once serving must reload, not kill.
    crate::reload::start(&state)?;
    // Socket files we created are removed however this ends.
    let mut files = SocketFiles::default();
    start_control(&state, &mut files)?;
    start_metrics(&state, &mut files).await?;
    start_publish(&state, &mut files).await?;
    let listeners = start_public(&state, passed, &mut files).await?;
    crate::limits::report(state.config().max_forks);
    systemd::ready(&format!("serving on {listeners} listener(s)"));
    start_watchdog();
    let mut stop = std::pin::pin!(stop);
    let drain = tokio::select! {
        () = &mut stop => None,
        bound = state.shutdown().drain_requested() => Some(bound),
    };
    if let Some(bound) = drain {
        // The listeners are closing: their paths are free for a new
        // instance too.
        drop(files);
        drain_sessions(&state, bound, stop).await;
    }
    systemd::stopping();
    tracing::info!("shutting down: closing sessions and ending children");
    // Bounded: the escalation ends any child within 5x the grace, plus the
    // close handshake timeouts.
    let limit = state.config().close_grace * 5 + Duration::from_secs(5);
    if !state.shutdown().finish(limit).await {
        tracing::error!("some sessions did not end in {limit:?}; exiting anyway");
    }
    Ok(())
}

/// `ctl drain`: accepting has stopped; waits for the live sessions to end,
/// for at most `bound` (or until `stop`), before the shutdown proper
/// closes whatever is left with 1001.
async fn drain_sessions(state: &State, bound: Duration, stop: impl Future<Output = ()>) {
    let live = state.registry().snapshot().live;
    tracing::info!("draining: no longer accepting; {live} session(s) may run for up to {bound:?}");
    systemd::status(&format!("draining {live} session(s)"));
    tokio::select! {
        () = state.registry().wait_empty() => tracing::info!("drained: every session has ended"),
        () = tokio::time::sleep(bound) => {
            let left = state.registry().snapshot().live;
            tracing::info!("drain bound passed: closing the {left} session(s) left");
        }
        () = stop => tracing::info!("signal during the drain: closing the sessions left"),
    }
}

fn start_control(state: &State, files: &mut SocketFiles) -> anyhow::Result<()> {
    let Some(control) = &state.config().control else {
        return Ok(());
    };
    let listener = net::bind_unix(&control.path, Some(control.mode), files)?;
    tracing::info!("control socket at {}", control.path.display());
    let shutdown = state.shutdown().clone();
    shutdown.spawn(net::serve_control(
        listener,
        state.control(),
        shutdown.clone(),
    ));
    Ok(())
}

async fn start_metrics(state: &State, files: &mut SocketFiles) -> anyhow::Result<()> {
    let listener = match &state.config().metrics {
        None => return Ok(()),
        Some(Listen::Tcp(addr)) => {
            let listener = net::bind_tcp(*addr).await?;
            tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
            SideListener::Tcp(listener)
        }
        Some(Listen::Unix(path)) => {
            let listener = net::bind_unix(path, None, files)?;
            tracing::info!("metrics on unix:{}", path.display());
            SideListener::Unix(listener)
        }
    };
    let shutdown = state.shutdown().clone();
    let counters = net::Counters {
        registry: state.registry().clone(),
        bus: state.bus().clone(),
        shared: state.shared().clone(),
    };
    shutdown.spawn(net::serve_metrics(listener, counters, shutdown.clone()));
    Ok(())
}

async fn start_publish(state: &State, files: &mut SocketFiles) -> anyhow::Result<()> {
    let Some(publish) = &state.config().publish else {
        return Ok(());
    };
    let listener = match &publish.listen {
        Listen::Tcp(addr) => {
            let listener = net::bind_tcp(*addr).await?;
            tracing::info!("publish on http://{}/CHANNEL", listener.local_addr()?);
            SideListener::Tcp(listener)
        }
        Listen::Unix(path) => {
            let listener = net::bind_unix(path, publish.mode, files)?;
            tracing::info!("publish on unix:{}", path.display());
            SideListener::Unix(listener)
        }
    };
    state
        .shutdown()
        .spawn(net::serve_publish(listener, state.clone()));
    Ok(())
}

/// Starts the public listeners: the sockets systemd passed, and the ones
/// the flags name (the default port only when nothing was passed).
/// Returns how many there are.
async fn start_public(
    state: &State,
    passed: Vec<Passed>,
    files: &mut SocketFiles,
) -> anyhow::Result<usize> {
    let site = Site::new(state.clone());
    let config = state.config();
    let shutdown = state.shutdown();
    let bind_own = passed.is_empty() || config.listen_given;
    let mut count = 0;
    for socket in passed {
        match net::adopt(socket)? {
            Adopted::Tcp(listener) => {
                let local = listener.local_addr()?;
                let scheme = if config.tls.is_some() { "wss" } else { "ws" };
                tracing::info!(
                    "serving on {scheme}://{local}/ ({}; socket from systemd)",
                    describe(config)
                );
                let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
                shutdown.spawn(net::serve_tcp(listener, site.clone(), tls));
            }
            Adopted::Unix(listener) => {
                let local = listener.local_addr()?;
                let path = local
                    .as_pathname()
                    .map_or_else(|| "(unnamed)".into(), |p| p.display().to_string());
                tracing::info!(
                    "serving on unix:{path} ({}; socket from systemd)",
                    describe(config)
                );
                shutdown.spawn(net::serve_unix(listener, site.clone()));
            }
        }
        count += 1;
    }
    if !bind_own {
        return Ok(count);
    }
    for listen in &config.listen {
        match listen {
            Listen::Tcp(addr) => {
                let listener = net::bind_tcp(*addr).await?;
                let local = listener.local_addr()?;
                let scheme = if config.tls.is_some() { "wss" } else { "ws" };
                tracing::info!("serving on {scheme}://{local}/ ({})", describe(config));
                if let Some(port) = config.redirect_port {
                    start_redirect(state, SocketAddr::new(addr.ip(), port), local.port()).await?;
                }
                let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
                shutdown.spawn(net::serve_tcp(listener, site.clone(), tls));
            }
            Listen::Unix(path) => {
                let listener = net::bind_unix(path, config.socket_mode, files)?;
                tracing::info!("serving on unix:{} ({})", path.display(), describe(config));
                shutdown.spawn(net::serve_unix(listener, site.clone()));
            }
        }
        count += 1;
    }
    Ok(count)
}

/// With `WatchdogSec=`: `WATCHDOG=1` twice per period for as long as the
/// runtime runs (shutdown included: a slow drain is no hang). Not tracked
/// by the shutdown: it must not hold the exit up.
fn start_watchdog() {
    let Some(every) = systemd::watchdog_interval() else {
        return;
    };
    tracing::info!("systemd watchdog: alive every {every:?}");
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            systemd::keepalive();
        }
    });
}

/// `--redirport`: plain HTTP at `addr`, redirected to the main `port`.
async fn start_redirect(state: &State, addr: SocketAddr, port: u16) -> anyhow::Result<()> {
    let listener = net::bind_tcp(addr).await?;
    tracing::info!(
        "redirecting http://{}/ to port {port}",
        listener.local_addr()?
    );
    let https = state.config().tls.is_some();
    let shutdown = state.shutdown().clone();
    shutdown.spawn(net::serve_redirect(listener, port, https, shutdown.clone()));
    Ok(())
}

/// What is served, for the "serving on" line.
fn describe(config: &Config) -> String {
    let mut parts = Vec::new();
    match &config.endpoint {
        Some(Endpoint::Command(spec)) => parts.push(format!("command {}", spec.program.display())),
        Some(Endpoint::Dir(dir)) => parts.push(format!("scripts in {}", dir.display())),
        Some(Endpoint::PubSub { read_only: false }) => parts.push("channels".into()),
        Some(Endpoint::PubSub { read_only: true }) => parts.push("channels, read-only".into()),
        None => {}
    }
    if config.shared.is_some() {
        parts.push("one shared process per endpoint".into());
    }
    if let Some(dir) = &config.static_dir {
        parts.push(format!("static files in {}", dir.display()));
    }
    if let Some(dir) = &config.cgi_dir {
        parts.push(format!("CGI in {}", dir.display()));
    }
    parts.join(", ")
}

/// SIGTERM and SIGINT, both meaning "shut down gracefully".
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
