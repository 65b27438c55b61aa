//! Accepting connections: one accept loop for every listener (the public
//! TCP and Unix listeners, `--redirport`, the control socket and
//! `--metrics`), each connection served in a task the shutdown tracks.

mod bind;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

pub use bind::{adopt, bind_tcp, bind_unix, Adopted, SocketFiles};

use crate::bus::Bus;
use crate::control::listener::MAX_CLIENTS;
use crate::control::Control;
use crate::http::conn::{self, HEADER_READ_TIMEOUT};
use crate::http::Site;
use crate::peer::{Peer, Watched};
use crate::session::Registry;
use crate::shutdown::Shutdown;
use crate::state::State;

/// How long to pause accepting when the system is out of descriptors or
/// memory: long enough not to spin, short enough to resume at once.
const RESOURCE_BACKOFF: Duration = Duration::from_millis(50);

/// Calls `on_accept` for every connection `accept` yields, until a drain
/// or the shutdown begins (then the listener is dropped by the caller:
/// its port or path is free for a new instance).
/// With `slots`, at most that many connections are open at once: the loop
/// waits for a free slot before accepting (the rest wait in the kernel's
/// queue), and the connection holds its slot.
pub async fn accept_loop<S, A, F>(
    shutdown: &Shutdown,
    slots: Option<&Arc<Semaphore>>,
    accept: A,
    mut on_accept: impl FnMut(S, Option<OwnedSemaphorePermit>),
) where
    A: Fn() -> F,
    F: Future<Output = std::io::Result<S>>,
{
    loop {
        let slot = match slots {
            None => None,
            Some(slots) => tokio::select! {
                _ = shutdown.accepting_stopped() => return,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => return, // closed: nothing more to serve
                },
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.accepting_stopped() => return,
            a = accept() => a,
        };
        match accepted {
            Ok(stream) => on_accept(stream, slot),
            Err(e) => accept_error(e).await,
        }
    }
}

/// Out of fds or memory: say so and back off briefly instead of spinning;
/// the sessions that exist keep working and new ones succeed once fds
/// free. Anything else concerns one connection only (a client that gave
/// up before we accepted it, a firewall verdict...): skipped at once.
async fn accept_error(e: std::io::Error) {
    if is_resource_error(&e) {
        tracing::error!("accept failed: {e}");
        tokio::time::sleep(RESOURCE_BACKOFF).await;
    } else {
        tracing::debug!("accept failed for one connection: {e}");
    }
}

fn is_resource_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
    )
}

/// Serves the public TCP listener (over TLS with `--ssl`).
pub async fn serve_tcp(listener: TcpListener, site: Arc<Site>, tls: Option<TlsAcceptor>) {
    let shutdown = site.state().shutdown().clone();
    accept_loop(
        &shutdown,
        None,
        || listener.accept(),
        |(stream, remote), _| {
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(remote);
            let (stream, socket) = Watched::new(stream);
            let peer = Peer::Tcp {
                remote,
                local,
                tls: tls.is_some(),
                socket,
            };
            let Some(tls) = tls.clone() else {
                shutdown.spawn(serve_http(stream, peer, site.clone()));
                return;
            };
            let site = site.clone();
            shutdown.spawn(async move {
                // The handshake is bounded like the request head is.
                let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream));
                match handshake.await {
                    Ok(Ok(stream)) => serve_http(stream, peer, site).await,
                    Ok(Err(e)) => tracing::debug!("TLS handshake with {remote} failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake with {remote} timed out"),
                }
            });
        },
    )
    .await;
}

/// Serves the public Unix socket listener.
pub async fn serve_unix(listener: UnixListener, site: Arc<Site>) {
    let shutdown = site.state().shutdown().clone();
    accept_loop(
        &shutdown,
        None,
        || listener.accept(),
        |(stream, _), _| {
            shutdown.spawn(serve_http(stream, Peer::Unix, site.clone()));
        },
    )
    .await;
}

/// One public connection: every request goes to the site.
async fn serve_http<IO>(io: IO, peer: Peer, site: Arc<Site>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = site.state().shutdown().clone();
    let service = service_fn(move |req| {
        let (site, peer) = (site.clone(), peer.clone());
        async move { site.handle(req, &peer).await }
    });
    conn::serve(io, service, &shutdown).await;
}

/// Serves `--redirport`: every request is redirected to `port`.
pub async fn serve_redirect(listener: TcpListener, port: u16, https: bool, shutdown: Shutdown) {
    accept_loop(
        &shutdown,
        None,
        || listener.accept(),
        |(stream, _), _| {
            let Ok(local) = stream.local_addr() else {
                return;
            };
            let service = service_fn(move |req| async move {
                let response = crate::http::redirect::redirect(&req, https, port, local.ip());
                Ok::<_, std::convert::Infallible>(response)
            });
            let s = shutdown.clone();
            shutdown.spawn(async move { conn::serve(stream, service, &s).await });
        },
    )
    .await;
}

/// Where a side door (`--metrics`, `--publish`) listens.
pub enum SideListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl SideListener {
    async fn accept(&self) -> std::io::Result<Either<TcpStream, UnixStream>> {
        Ok(match self {
            SideListener::Tcp(l) => Either::Left(l.accept().await?.0),
            SideListener::Unix(l) => Either::Right(l.accept().await?.0),
        })
    }
}

/// Serves `--metrics`.
pub async fn serve_metrics(listener: SideListener, counters: Counters, shutdown: Shutdown) {
    accept_loop(
        &shutdown,
        None,
        || listener.accept(),
        |stream, _| {
            shutdown.spawn(serve_scrape(stream, counters.clone(), shutdown.clone()));
        },
    )
    .await;
}

/// Where the metrics come from.
#[derive(Debug, Clone)]
pub struct Counters {
    pub registry: Arc<Registry>,
    pub bus: Bus,
    pub shared: crate::shared::Shared,
}

/// One connection to the metrics listener.
async fn serve_scrape<IO>(io: IO, counters: Counters, shutdown: Shutdown)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let response = crate::http::metrics::respond(
            req.method(),
            &counters.registry,
            &counters.bus,
            &counters.shared,
        );
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    conn::serve(io, service, &shutdown).await;
}

/// Serves `--publish`: channel publishes over HTTP.
pub async fn serve_publish(listener: SideListener, state: State) {
    let shutdown = state.shutdown().clone();
    accept_loop(
        &shutdown,
        None,
        || listener.accept(),
        |stream, _| {
            let state = state.clone();
            let service = service_fn(move |req| {
                let state = state.clone();
                async move {
                    let config = state.config();
                    let publisher = crate::http::publish::Publisher {
                        bus: state.bus(),
                        mode: config.mode,
                        max_message: config.max_message,
                        token: config.publish.as_ref().and_then(|p| p.token.as_ref()),
                    };
                    Ok::<_, std::convert::Infallible>(publisher.handle(req).await)
                }
            });
            let s = shutdown.clone();
            shutdown.spawn(async move { conn::serve(stream, service, &s).await });
        },
    )
    .await;
}

/// Serves the control socket, at most [`MAX_CLIENTS`] connections at once.
pub async fn serve_control(listener: UnixListener, control: Control, shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    accept_loop(
        &shutdown,
        Some(&slots),
        || listener.accept(),
        |(stream, _): (UnixStream, _), slot| {
            let control = control.clone();
            shutdown.spawn(async move {
                let _slot = slot;
                crate::control::listener::serve(stream, control).await;
            });
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    // Paused time: a back-off shows as virtual time passing, none as none.
    #[tokio::test(start_paused = true)]
    async fn per_connection_errors_are_skipped_at_once_and_resource_errors_back_off() {
        let shutdown = Shutdown::new();
        let errors = Mutex::new(VecDeque::from([
            libc::ECONNABORTED,
            libc::EPROTO,
            libc::EPERM,
            libc::EMFILE,
            libc::ENFILE,
        ]));
        let start = tokio::time::Instant::now();
        let calls = Mutex::new(Vec::new());
        let accept = || {
            calls.lock().unwrap().push(start.elapsed());
            let next = errors.lock().unwrap().pop_front();
            let s = shutdown.clone();
            async move {
                match next {
                    Some(errno) => Err::<(), _>(std::io::Error::from_raw_os_error(errno)),
                    None => {
                        // Out of errors: end the loop.
                        tokio::spawn(async move { s.finish(Duration::ZERO).await });
                        std::future::pending().await
                    }
                }
            }
        };
        accept_loop(&shutdown, None, accept, |(), _| {}).await;
        let b = RESOURCE_BACKOFF;
        assert_eq!(
            *calls.lock().unwrap(),
            [
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
                b,
                b * 2
            ]
        );
    }
}
