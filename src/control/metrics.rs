//! The control statistics in Prometheus / OpenMetrics text format, for
//! `--metrics` (served by `crate::http::metrics`, apart from the public
//! port so scrapes never collide with user paths).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as Metrics;

use crate::bus::Bus;
use crate::session::Registry;
use crate::shared::Shared;

/// The current statistics as OpenMetrics text.
pub fn render(registry: &Registry, bus: &Bus, shared: &Shared) -> String {
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
    let snap = registry.snapshot();
    let t = snap.traffic;
    gauge(
        &mut m,
        "connections",
        "Live WebSocket sessions (one child each)",
        snap.live,
    );
    counter(&mut m, "connections_opened", "Sessions opened", snap.opened);
    counter(&mut m, "upgrades_refused", "Upgrades refused", snap.refused);
    counter(
        &mut m,
        "auth_refused",
        "Requests refused by authentication (--basic-auth, --auth-cmd, --auth-url, --jwt-key) or by a channel permit",
        snap.refused_auth,
    );
    counter(
        &mut m,
        "messages_in",
        "Messages from clients",
        t.messages_in,
    );
    counter(
        &mut m,
        "messages_out",
        "Messages to clients",
        t.messages_out,
    );
    counter(&mut m, "bytes_in", "Payload bytes from clients", t.bytes_in);
    counter(&mut m, "bytes_out", "Payload bytes to clients", t.bytes_out);
    gauge(
        &mut m,
        "uptime_seconds",
        "Seconds since start",
        snap.uptime.as_secs(),
    );
    let h = bus.hub().totals();
    gauge(&mut m, "channels", "Channels with members", h.channels);
    gauge(&mut m, "channel_members", "Channel memberships", h.members);
    counter(
        &mut m,
        "published",
        "Messages published to channels",
        h.published,
    );
    counter(
        &mut m,
        "delivered",
        "Published messages handed to members",
        h.delivered,
    );
    counter(
        &mut m,
        "dropped",
        "Published messages slow members lost",
        h.dropped,
    );
    gauge(
        &mut m,
        "shared_children",
        "Shared children alive (--shared)",
        shared.children(),
    );
    counter(
        &mut m,
        "shared_input_dropped",
        "Client messages dropped: a shared child's input queue was full",
        shared.dropped(),
    );
    counter(
        &mut m,
        "shared_unaddressed_dropped",
        "Output lines of --shared-ids children dropped: they addressed no client of theirs",
        shared.unaddressed(),
    );
    counter(
        &mut m,
        "shared_restarts",
        "Shared children started again after one exited (--shared-restart)",
        shared.restarts(),
    );
    if let Some(r) = bus.cluster_stats() {
        gauge(
            &mut m,
            "redis_up",
            "1 while both connections to Redis are up (--redis)",
            u64::from(r.connected),
        );
        counter(
            &mut m,
            "redis_published",
            "Messages of this instance Redis took",
            r.published,
        );
        counter(
            &mut m,
            "redis_received",
            "Messages of other instances handed to members here",
            r.received,
        );
        counter(&mut m, "redis_dropped", "Cross-instance messages lost: outbox full during an outage, a failed send, an unreadable or too long payload", r.dropped);
    }
    if let Some(h) = bus.history_stats() {
        let held = [
            (
                "history_channels",
                "Channels with a history (--history)",
                h.channels,
            ),
            (
                "history_messages",
                "Messages held in channel histories",
                h.messages,
            ),
            (
                "history_bytes",
                "Bytes held in channel histories, ids included",
                h.bytes,
            ),
        ];
        for (name, help, value) in held {
            gauge(&mut m, name, help, value);
        }
    }
    if let Some(n) = bus.history_unnumbered() {
        counter(
            &mut m,
            "history_unnumbered",
            "Publishes served un-numbered to local members only: Redis could not number them (--history with --redis)",
            n,
        );
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &m);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn renders_every_metric() {
        let registry = Registry::default();
        registry.count_refused();
        registry.count_refused();
        let bus = Bus::local(Arc::new(crate::hub::Hub::default()));
        let shared = Shared::new(
            bus.clone(),
            crate::shutdown::Shutdown::new(),
            crate::shared::Options {
                mode: crate::config::Mode::Text,
                max_line: 1024,
                close_grace: std::time::Duration::from_millis(100),
                flags: Default::default(),
            },
        );
        let text = render(&registry, &bus, &shared);
        for line in [
            "wspipe_connections 0",
            "wspipe_connections_opened_total 0",
            "wspipe_upgrades_refused_total 2",
            "wspipe_auth_refused_total 0",
            "wspipe_messages_in_total 0",
            "wspipe_bytes_out_total 0",
            "wspipe_channels 0",
            "wspipe_published_total 0",
            "wspipe_dropped_total 0",
            "wspipe_shared_children 0",
            "wspipe_shared_input_dropped_total 0",
            "wspipe_shared_unaddressed_dropped_total 0",
            "wspipe_shared_restarts_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
