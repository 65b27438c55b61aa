//! One HTTP/1.1 connection, served by hyper with the same limits wherever
//! it comes from: the public listeners, `--redirport` and `--metrics`.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Body;
use crate::shutdown::Shutdown;

/// How long a client may take to send its request headers (and, for TLS,
/// its handshake).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head we buffer (hyper's own limit is larger).
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Serves `io` until it closes (or is upgraded, for a WebSocket); when the
/// server shuts down, a request in progress is answered and the connection
/// then closed.
pub async fn serve<IO, S>(io: IO, service: S, shutdown: &Shutdown)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<Incoming>, Response = http::Response<Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
        _ = shutdown.cancelled() => {
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
