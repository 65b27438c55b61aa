//! Listeners, the accept loop, and graceful shutdown.
//!
//! Every accepted connection is served by hyper (HTTP/1.1). A WebSocket
//! upgrade goes through [`crate::upgrade`], which spawns the child and hands
//! the upgraded socket to [`crate::bridge`]. On SIGTERM or SIGINT the server
//! stops accepting, every session is closed with 1001 and its child ended,
//! and the process exits once all children are reaped (bounded in time).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bridge::BridgeOptions;
use crate::config::{Config, Listen};
use crate::control::registry::Registry;
use crate::http::static_files::StaticFiles;

/// How long a client may take to send its request headers.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head we buffer (hyper's own limit is larger).
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// The state shared by every connection.
pub struct Shared {
    pub config: Config,
    /// Session settings, derived once from the configuration.
    pub bridge: BridgeOptions,
    /// WebSocket protocol limits, derived once from the configuration.
    pub ws_config: WebSocketConfig,
    /// Live-children limit (`--maxforks`); `None` is unlimited.
    pub forks: Option<Arc<Semaphore>>,
    /// Source of connection ids.
    pub next_id: AtomicU64,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Every connection and session task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Live sessions, for the control socket.
    pub registry: Arc<Registry>,
    /// `--staticdir`, if given.
    pub static_files: Option<StaticFiles>,
}

/// Who is connected, as the listener saw it.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Tcp {
        remote: SocketAddr,
        local: SocketAddr,
        /// Whether the connection is TLS (`--ssl`).
        tls: bool,
        /// The TCP socket, for asking the kernel whether the peer has gone.
        socket: PeerSocket,
    },
    Unix,
}

/// A connection's TCP socket, by descriptor number: only used to ask the
/// kernel about the connection's state while the connection (which owns
/// the descriptor) is alive.
#[derive(Debug, Clone, Copy)]
pub struct PeerSocket(std::os::fd::RawFd);

impl PeerSocket {
    /// True once the peer has closed or reset the connection, even while
    /// unread data is still queued in front of its FIN (which a read would
    /// only reach after that data).
    pub fn peer_closed(&self) -> bool {
        // SAFETY: tcp_info is plain old data; getsockopt writes at most
        // `len` bytes into it and the fd is owned by a live connection.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                self.0,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        // Linux tcp_states.h: TCP_CLOSE = 7, TCP_CLOSE_WAIT = 8.
        rc == 0 && matches!(info.tcpi_state, 7 | 8)
    }
}

impl Peer {
    /// The listening port the connection came in on (TCP only).
    pub fn local_port(&self) -> Option<u16> {
        match self {
            Peer::Tcp { local, .. } => Some(local.port()),
            Peer::Unix => None,
        }
    }

    /// The TCP socket, if this is a TCP peer.
    pub fn socket(&self) -> Option<PeerSocket> {
        match self {
            Peer::Tcp { socket, .. } => Some(*socket),
            Peer::Unix => None,
        }
    }
}

impl Peer {
    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Peer::Tcp { tls: true, .. })
    }
}

impl Shared {
    /// A slot under `--maxforks` for one child, held until it is reaped:
    /// `Ok(None)` when unlimited, `Err` when every slot is taken.
    pub fn fork_permit(
        &self,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, tokio::sync::TryAcquireError> {
        match &self.forks {
            None => Ok(None),
            Some(forks) => forks.clone().try_acquire_owned().map(Some),
        }
    }

    fn new(config: Config) -> Self {
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(config.max_message))
            .max_frame_size(Some(config.max_message))
            .read_buffer_size(WS_READ_BUFFER)
            .write_buffer_size(64 * 1024);
        let bridge = BridgeOptions {
            mode: config.mode,
            max_line: config.max_line,
            close_grace: config.close_grace,
            ping: config.ping,
            pass_stderr: config.pass_stderr,
        };
        Shared {
            forks: config.max_forks.map(|n| Arc::new(Semaphore::new(n))),
            bridge,
            ws_config,
            next_id: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            registry: Arc::default(),
            static_files: config
                .static_dir
                .clone()
                .map(|dir| StaticFiles::new(dir, config.cgi_dir.clone())),
            config,
        }
    }
}

/// Binds every listener, serves until SIGTERM/SIGINT, then shuts down.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives once we are listening must
    // start a graceful shutdown, not kill us with the default action.
    let signals = Signals::new()?;
    let shared = Arc::new(Shared::new(config));
    // Socket files we created are removed however run() ends.
    let mut unix_paths = SocketFiles::default();
    // The side doors first: once "serving on" is logged, everything is up.
    if let Some(control) = &shared.config.control {
        let listener = bind_unix(&control.path)?;
        crate::control::listener::set_mode(&control.path, control.mode)
            .with_context(|| format!("cannot set the mode of {}", control.path.display()))?;
        tracing::info!("control socket at {}", control.path.display());
        unix_paths.0.push(control.path.clone());
        shared
            .tasks
            .spawn(crate::control::listener::serve(listener, shared.clone()));
    }
    if let Some(addr) = shared.config.metrics.clone() {
        serve_metrics(addr, &shared, &mut unix_paths.0).await?;
    }
    for listen in shared.config.listen.clone() {
        match listen {
            Listen::Tcp(addr) => {
                let listener = bind_tcp(addr).await?;
                let local = listener.local_addr()?;
                let scheme = if shared.config.tls.is_some() {
                    "wss"
                } else {
                    "ws"
                };
                tracing::info!(
                    "serving on {scheme}://{local}/ ({})",
                    describe(&shared.config)
                );
                if let Some(port) = shared.config.redirect_port {
                    let redirect = bind_tcp(SocketAddr::new(addr.ip(), port)).await?;
                    tracing::info!(
                        "redirecting http://{}/ to port {}",
                        redirect.local_addr()?,
                        local.port()
                    );
                    shared.tasks.spawn(crate::http::redirect::serve(
                        redirect,
                        local.port(),
                        shared.clone(),
                    ));
                }
                shared.tasks.spawn(accept_tcp(listener, shared.clone()));
            }
            Listen::Unix(path) => {
                let listener = bind_unix(&path)?;
                tracing::info!(
                    "serving on unix:{} ({})",
                    path.display(),
                    describe(&shared.config)
                );
                unix_paths.0.push(path);
                shared.tasks.spawn(accept_unix(listener, shared.clone()));
            }
        }
    }
    crate::limits::report(shared.config.max_forks);
    signals.wait().await;
    tracing::info!("shutting down: closing sessions and ending children");
    shared.shutdown.cancel();
    shared.tasks.close();
    // Bounded: the escalation ends any child within 5x the grace, plus the
    // close handshake timeouts.
    let limit = shared.config.close_grace * 5 + Duration::from_secs(5);
    if tokio::time::timeout(limit, shared.tasks.wait())
        .await
        .is_err()
    {
        tracing::error!("some sessions did not end in {limit:?}; exiting anyway");
    }
    Ok(())
}

fn describe(config: &Config) -> String {
    use crate::config::Endpoint;
    let mut parts = Vec::new();
    match &config.endpoint {
        Some(Endpoint::Command(spec)) => parts.push(format!("command {}", spec.program.display())),
        Some(Endpoint::Dir(dir)) => parts.push(format!("scripts in {}", dir.display())),
        None => {}
    }
    if let Some(dir) = &config.static_dir {
        parts.push(format!("static files in {}", dir.display()));
    }
    if let Some(dir) = &config.cgi_dir {
        parts.push(format!("CGI in {}", dir.display()));
    }
    parts.join(", ")
}

/// tungstenite's read buffer per connection. It stays allocated and
/// resident for the connection's life (tungstenite zero-fills it up to this
/// size before each read) and bounds how much one read takes from the
/// socket; a bigger frame grows it on demand. Measured with the bench
/// (docs/benchmarks.md): 2 KiB instead of 4 keeps echo and 64 KiB binary
/// throughput the same and saves 2 KiB of RSS per connection; 1 KiB costs
/// a quarter of the binary throughput.
const WS_READ_BUFFER: usize = 2 * 1024;

/// Listen backlog for every listener: as deep as the kernel allows (it caps
/// the value at `net.core.somaxconn`, 4096 by default), as Go's and so
/// websocketd's listeners do. The standard library's 128 overflows when a
/// burst of clients connects while children are being spawned, and a dropped
/// SYN costs the client a one-second retransmission.
const LISTEN_BACKLOG: u32 = i32::MAX as u32;

pub(crate) async fn bind_tcp(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    match listen_tcp(addr) {
        Ok(l) => Ok(l),
        // No IPv6 on this host: "all interfaces" falls back to IPv4.
        Err(_) if addr.ip().is_unspecified() && addr.is_ipv6() => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            listen_tcp(v4).with_context(|| format!("cannot listen on {v4}"))
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen on {addr}")),
    }
}

fn listen_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    // A restarted server must not wait for old connections in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds a Unix socket, removing a stale socket file but refusing to steal
/// the path from a live server.
fn bind_unix(path: &PathBuf) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is in use by a running server", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    listen_unix(path).with_context(|| format!("cannot listen on {}", path.display()))
}

fn listen_unix(path: &PathBuf) -> std::io::Result<UnixListener> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    socket.listen(LISTEN_BACKLOG as i32)?;
    socket.set_nonblocking(true)?;
    UnixListener::from_std(socket.into())
}

/// Binds the `--metrics` listener and serves it until shutdown.
async fn serve_metrics(
    addr: crate::control::metrics::MetricsAddr,
    shared: &Arc<Shared>,
    unix_paths: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    use crate::control::metrics::MetricsAddr;
    match addr {
        MetricsAddr::Tcp(addr) => {
            let listener = bind_tcp(addr).await?;
            tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
            let s = shared.clone();
            shared
                .tasks
                .spawn(async move { metrics_loop(&s, || listener.accept()).await });
        }
        MetricsAddr::Unix(path) => {
            let listener = bind_unix(&path)?;
            tracing::info!("metrics on unix:{}", path.display());
            unix_paths.push(path);
            let s = shared.clone();
            shared
                .tasks
                .spawn(async move { metrics_loop(&s, || listener.accept()).await });
        }
    }
    Ok(())
}

/// Serves every connection `accept` yields with the metrics page.
async fn metrics_loop<S, X, A, F>(shared: &Arc<Shared>, accept: A)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Fn() -> F,
    F: std::future::Future<Output = std::io::Result<(S, X)>>,
{
    accept_loop(&shared.shutdown, accept, |(stream, _)| {
        tokio::spawn(crate::control::metrics::serve(stream, shared.clone()));
    })
    .await;
}

/// Unix socket files this server created, removed when dropped.
#[derive(Default)]
struct SocketFiles(Vec<PathBuf>);

impl Drop for SocketFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
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

/// Calls `on_accept` for every connection `accept` yields, until shutdown.
pub(crate) async fn accept_loop<S, A, F>(
    shutdown: &CancellationToken,
    accept: A,
    mut on_accept: impl FnMut(S),
) where
    A: Fn() -> F,
    F: std::future::Future<Output = std::io::Result<S>>,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = accept() => a,
        };
        match accepted {
            Ok(stream) => on_accept(stream),
            Err(e) => accept_error(e).await,
        }
    }
}

async fn accept_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let tls = shared
        .config
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    let accept = || listener.accept();
    accept_loop(&shared.shutdown, accept, |(stream, remote)| {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(remote);
        let socket = PeerSocket(std::os::fd::AsRawFd::as_raw_fd(&stream));
        let Some(tls) = tls.clone() else {
            let peer = Peer::Tcp {
                remote,
                local,
                tls: false,
                socket,
            };
            shared.tasks.spawn(serve(stream, peer, shared.clone()));
            return;
        };
        let peer = Peer::Tcp {
            remote,
            local,
            tls: true,
            socket,
        };
        let task_shared = shared.clone();
        shared.tasks.spawn(async move {
            // The handshake is bounded like the request head is.
            let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream));
            match handshake.await {
                Ok(Ok(stream)) => serve(stream, peer, task_shared).await,
                Ok(Err(e)) => tracing::debug!("TLS handshake with {remote} failed: {e}"),
                Err(_) => tracing::debug!("TLS handshake with {remote} timed out"),
            }
        });
    })
    .await;
}

async fn accept_unix(listener: UnixListener, shared: Arc<Shared>) {
    let accept = || listener.accept();
    accept_loop(&shared.shutdown, accept, |(stream, _)| {
        shared
            .tasks
            .spawn(serve(stream, Peer::Unix, shared.clone()));
    })
    .await;
}

/// Out of fds (or similar): say so and back off briefly instead of spinning;
/// the sessions that exist keep working and new ones succeed once fds free.
async fn accept_error(e: std::io::Error) {
    tracing::error!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves HTTP/1.1 on one connection until it closes or is upgraded.
pub(crate) async fn serve<IO>(io: IO, peer: Peer, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let shared = shared.clone();
        service_fn(move |req| crate::http::handle(req, peer, shared.clone()))
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .max_header_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => log_conn_error(res),
        _ = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            log_conn_error(conn.await);
        }
    }
}

fn log_conn_error(res: Result<(), hyper::Error>) {
    if let Err(e) = res {
        tracing::debug!("http connection: {e}");
    }
}
