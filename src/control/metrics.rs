//! `--metrics ADDR|PATH`: the control statistics in Prometheus / OpenMetrics
//! text format, on a TCP address (`127.0.0.1:9100`) or a Unix socket path,
//! apart from the public port so scrapes never collide with user paths.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as Metrics;
use tokio::io::{AsyncRead, AsyncWrite};

use super::registry::Registry;
use crate::http::{full, text, Body};
use crate::server::{Shared, HEADER_READ_TIMEOUT};

/// Where metrics are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAddr {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

impl MetricsAddr {
    /// `HOST:PORT` (an IP address) or else a Unix socket path.
    pub fn parse(value: &str) -> Self {
        match value.parse() {
            Ok(addr) => MetricsAddr::Tcp(addr),
            Err(_) => MetricsAddr::Unix(value.into()),
        }
    }
}

/// The current statistics as OpenMetrics text.
pub fn render(registry: &Registry) -> String {
    let mut m = Metrics::with_prefix("wspipe");
    let gauge = |m: &mut Metrics, name: &str, help: &str, value: u64| {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        m.register(name, help, g);
    };
    let counter = |m: &mut Metrics, name: &str, help: &str, value: u64| {
        let c: Counter = Counter::default();
        c.inc_by(value);
        m.register(name, help, c);
    };
    let t = &registry.totals;
    let [msg_in, msg_out, bytes_in, bytes_out] = registry.traffic();
    gauge(
        &mut m,
        "connections",
        "Live WebSocket sessions (one child each)",
        registry.len() as u64,
    );
    counter(
        &mut m,
        "connections_opened",
        "Sessions opened",
        t.connections.load(Ordering::Relaxed),
    );
    counter(
        &mut m,
        "upgrades_refused",
        "Upgrades refused",
        t.refused.load(Ordering::Relaxed),
    );
    counter(&mut m, "messages_in", "Messages from clients", msg_in);
    counter(&mut m, "messages_out", "Messages to clients", msg_out);
    counter(&mut m, "bytes_in", "Payload bytes from clients", bytes_in);
    counter(&mut m, "bytes_out", "Payload bytes to clients", bytes_out);
    gauge(
        &mut m,
        "uptime_seconds",
        "Seconds since start",
        registry.started.elapsed().as_secs(),
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &m);
    out
}

/// Serves one connection to the metrics listener.
pub async fn serve<IO>(io: IO, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(respond(req.method(), &shared)) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

fn respond(method: &http::Method, shared: &Shared) -> Response<Body> {
    if method != http::Method::GET && method != http::Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
    }
    let mut r = Response::new(full(render(&shared.registry)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric() {
        let registry = Registry::default();
        registry.totals.refused.fetch_add(2, Ordering::Relaxed);
        let text = render(&registry);
        for line in [
            "wspipe_connections 0",
            "wspipe_connections_opened_total 0",
            "wspipe_upgrades_refused_total 2",
            "wspipe_messages_in_total 0",
            "wspipe_bytes_out_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn addresses_are_tcp_or_unix() {
        assert_eq!(
            MetricsAddr::parse("127.0.0.1:9100"),
            MetricsAddr::Tcp("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(
            MetricsAddr::parse("/run/m.sock"),
            MetricsAddr::Unix("/run/m.sock".into())
        );
    }
}
