//! The bench's command line, and the counts it turns into (smoke or full,
//! each checked against sane bounds).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;

use crate::{channel_suite, fanout};

/// Benchmarks wspipe against websocketd and an in-process echo server.
#[derive(Debug, Parser)]
#[command(name = "wspipe-bench")]
pub struct Args {
    /// Tiny counts (CI smoke test): every scenario once, in seconds.
    #[arg(long)]
    pub smoke: bool,
    /// Runs per figure (the median is reported). Default 3 (smoke: 1).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Scenarios to run, comma separated (1-10). Default: all.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u8).range(1..=10))]
    pub only: Vec<u8>,
    /// 1: sequential round trips. Default 5000 (smoke: 200).
    #[arg(long)]
    pub latency_count: Option<usize>,
    /// 2: seconds of pipelined echo. Default 5 (smoke: 0.5).
    #[arg(long)]
    pub throughput_secs: Option<f64>,
    /// 2: messages in flight.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// 3: sessions (connect, one echo, close). Default 1000 (smoke: 40).
    #[arg(long)]
    pub churn_count: Option<usize>,
    /// 3: sessions at a time.
    #[arg(long, default_value_t = 4)]
    pub churn_parallel: usize,
    /// 3: spawns of /bin/true for the ceiling. Default 1000 (smoke: 50).
    #[arg(long)]
    pub spawn_count: Option<usize>,
    /// 4: concurrent connections. Default 2000 (smoke: 50).
    #[arg(long)]
    pub storm_count: Option<usize>,
    /// 4: handshakes in flight while connecting.
    #[arg(long, default_value_t = 256)]
    pub storm_parallel: usize,
    /// 5: seconds of binary echo. Default 5 (smoke: 0.5).
    #[arg(long)]
    pub binary_secs: Option<f64>,
    /// 5: bytes per binary message (at most 65536).
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub binary_size: u32,
    /// 5: bytes in flight. websocketd 0.4.1 deadlocks once more than its
    /// pipes hold is in flight, so the measured window stays small.
    #[arg(long, default_value_t = 128 << 10)]
    pub binary_window: usize,
    /// 5: bytes in flight for the one-off deadlock probe (0: no probe).
    #[arg(long, default_value_t = 1 << 20)]
    pub binary_probe_window: usize,
    /// 6: seconds of slow reading. Default 5 (smoke: 0.5).
    #[arg(long)]
    pub backpressure_secs: Option<f64>,
    /// 6: lines the child writes (100 bytes each). Default 400000 (smoke:
    /// 20000).
    #[arg(long)]
    pub backpressure_lines: Option<u64>,
    /// 7: clients subscribed. Default 1000 (smoke: 50). Connected with
    /// --storm-parallel handshakes in flight.
    #[arg(long)]
    pub fanout_clients: Option<usize>,
    /// 7: numbered messages per phase (at most 2000). Default 200 (smoke:
    /// 20).
    #[arg(long)]
    pub fanout_messages: Option<usize>,
    /// 7: messages sent with one `wspipe ctl broadcast` process each (0: none).
    /// Default 20 (smoke: 3).
    #[arg(long)]
    pub fanout_cli_messages: Option<usize>,
    /// 8: channel sizes (subscribers), comma separated. Default 1,1000,10000
    /// (smoke: 1,50).
    #[arg(long, value_delimiter = ',')]
    pub channel_sizes: Vec<usize>,
    /// 8: deliveries per acknowledged phase, spread over the subscribers
    /// (20 to 20,000 messages). Default 500000 (smoke: 2000).
    #[arg(long)]
    pub channel_deliveries: Option<usize>,
    /// 8: deliveries/s of the paced phase, spread over the subscribers (at
    /// most 1000 messages/s); well below what either server can do, so
    /// latency is not queueing. Default 20000 (smoke: 5000).
    #[arg(long)]
    pub channel_paced: Option<f64>,
    /// 8: seconds of the paced phase. Default 5 (smoke: 0.5).
    #[arg(long)]
    pub channel_paced_secs: Option<f64>,
    /// 9: client counts, comma separated. Default 1,100,1000 (smoke: 1,20).
    #[arg(long, value_delimiter = ',')]
    pub shared_sizes: Vec<usize>,
    /// 9: deliveries per unpaced phase, spread over the clients (20 to
    /// 20,000 messages). Default 200000 (smoke: 1000).
    #[arg(long)]
    pub shared_deliveries: Option<usize>,
    /// 9: deliveries/s of the paced phase, spread over the clients (at most
    /// 1000 messages/s). Default 20000 (smoke: 5000).
    #[arg(long)]
    pub shared_paced: Option<f64>,
    /// 9: seconds of the paced phase. Default 3 (smoke: 0.5).
    #[arg(long)]
    pub shared_paced_secs: Option<f64>,
    /// 10: subscribers, spread round-robin over the instances. Default 1000
    /// (smoke: 30).
    #[arg(long)]
    pub scaleout_subscribers: Option<usize>,
    /// 10: deliveries of the windowed phase, spread over the subscribers
    /// (20 to 20,000 messages). Default 500000 (smoke: 600).
    #[arg(long)]
    pub scaleout_deliveries: Option<usize>,
    /// 10: deliveries/s of the paced phase, spread over the subscribers (at
    /// most 1000 messages/s). Default 20000 (smoke: 3000).
    #[arg(long)]
    pub scaleout_paced: Option<f64>,
    /// 10: seconds of the paced phase. Default 5 (smoke: 0.5).
    #[arg(long)]
    pub scaleout_paced_secs: Option<f64>,
    /// The redis-server binary (10: the bench starts its own).
    #[arg(long, default_value = crate::redis::DEFAULT_BIN)]
    pub redis_server: PathBuf,
    /// The nginx binary (8: it loads the nchan module).
    #[arg(long, default_value = "nginx")]
    pub nginx: PathBuf,
    /// The wspipe binary. Default: `wspipe` next to this binary.
    #[arg(long)]
    pub wspipe: Option<PathBuf>,
    /// The websocketd binary.
    #[arg(long, default_value = "websocketd")]
    pub websocketd: PathBuf,
    /// Watchdog: end everything after this many seconds. Default 1200
    /// (smoke: 240).
    #[arg(long)]
    pub max_total_secs: Option<u64>,
}

/// The counts actually used.
#[derive(Debug, Clone)]
pub struct Params {
    pub smoke: bool,
    pub runs: usize,
    pub only: Vec<u8>,
    pub latency_count: usize,
    pub throughput_secs: f64,
    pub window: usize,
    pub churn_count: usize,
    pub churn_parallel: usize,
    pub spawn_count: usize,
    pub storm_count: usize,
    pub storm_parallel: usize,
    pub binary_secs: f64,
    pub binary_size: usize,
    pub binary_window: usize,
    pub binary_probe_window: usize,
    pub backpressure_secs: f64,
    pub backpressure_lines: u64,
    pub fanout_clients: usize,
    pub fanout_messages: usize,
    pub fanout_cli_messages: usize,
    pub channel_sizes: Vec<usize>,
    pub channel_deliveries: usize,
    pub channel_paced: f64,
    pub channel_paced_secs: f64,
    pub shared_sizes: Vec<usize>,
    pub shared_deliveries: usize,
    pub shared_paced: f64,
    pub shared_paced_secs: f64,
    pub scaleout_subscribers: usize,
    pub scaleout_deliveries: usize,
    pub scaleout_paced: f64,
    pub scaleout_paced_secs: f64,
    pub max_total: Duration,
}

impl Params {
    pub fn from_args(a: &Args) -> anyhow::Result<Params> {
        let s = a.smoke;
        let pick = |full, smoke| if s { smoke } else { full };
        let p = Params {
            smoke: s,
            runs: a.runs.unwrap_or(pick(3, 1)),
            only: if a.only.is_empty() {
                (1..=10).collect()
            } else {
                a.only.clone()
            },
            latency_count: a.latency_count.unwrap_or(pick(5000, 200)),
            throughput_secs: a.throughput_secs.unwrap_or(if s { 0.5 } else { 5.0 }),
            window: a.window,
            churn_count: a.churn_count.unwrap_or(pick(1000, 40)),
            churn_parallel: a.churn_parallel,
            spawn_count: a.spawn_count.unwrap_or(pick(1000, 50)),
            storm_count: a.storm_count.unwrap_or(pick(2000, 50)),
            storm_parallel: a.storm_parallel,
            binary_secs: a.binary_secs.unwrap_or(if s { 0.5 } else { 5.0 }),
            binary_size: a.binary_size as usize,
            binary_window: a.binary_window,
            binary_probe_window: a.binary_probe_window,
            backpressure_secs: a.backpressure_secs.unwrap_or(if s { 0.5 } else { 5.0 }),
            backpressure_lines: a
                .backpressure_lines
                .unwrap_or(if s { 20_000 } else { 400_000 }),
            fanout_clients: a.fanout_clients.unwrap_or(pick(1000, 50)),
            fanout_messages: a.fanout_messages.unwrap_or(pick(200, 20)),
            fanout_cli_messages: a.fanout_cli_messages.unwrap_or(pick(20, 3)),
            channel_sizes: if a.channel_sizes.is_empty() {
                if s {
                    vec![1, 50]
                } else {
                    vec![1, 1000, 10_000]
                }
            } else {
                a.channel_sizes.clone()
            },
            channel_deliveries: a.channel_deliveries.unwrap_or(pick(500_000, 2000)),
            channel_paced: a.channel_paced.unwrap_or(if s { 5000.0 } else { 20_000.0 }),
            channel_paced_secs: a.channel_paced_secs.unwrap_or(if s { 0.5 } else { 5.0 }),
            shared_sizes: match (a.shared_sizes.is_empty(), s) {
                (false, _) => a.shared_sizes.clone(),
                (true, true) => vec![1, 20],
                (true, false) => vec![1, 100, 1000],
            },
            shared_deliveries: a.shared_deliveries.unwrap_or(pick(200_000, 1000)),
            shared_paced: a.shared_paced.unwrap_or(if s { 5000.0 } else { 20_000.0 }),
            shared_paced_secs: a.shared_paced_secs.unwrap_or(if s { 0.5 } else { 3.0 }),
            scaleout_subscribers: a.scaleout_subscribers.unwrap_or(pick(1000, 30)),
            scaleout_deliveries: a.scaleout_deliveries.unwrap_or(pick(500_000, 600)),
            scaleout_paced: a
                .scaleout_paced
                .unwrap_or(if s { 3000.0 } else { 20_000.0 }),
            scaleout_paced_secs: a.scaleout_paced_secs.unwrap_or(if s { 0.5 } else { 5.0 }),
            max_total: Duration::from_secs(a.max_total_secs.unwrap_or(if s { 240 } else { 1200 })),
        };
        let secs_ok = |v: f64| v.is_finite() && v > 0.0 && v <= 60.0;
        if !(secs_ok(p.throughput_secs)
            && secs_ok(p.binary_secs)
            && secs_ok(p.backpressure_secs)
            && secs_ok(p.channel_paced_secs)
            && secs_ok(p.shared_paced_secs)
            && secs_ok(p.scaleout_paced_secs))
        {
            bail!("durations must be in (0, 60] seconds");
        }
        if p.runs == 0 || p.runs > 20 {
            bail!("--runs must be 1..=20");
        }
        let counts = [
            p.latency_count,
            p.window,
            p.churn_count,
            p.churn_parallel,
            p.spawn_count,
            p.storm_count,
            p.storm_parallel,
            p.binary_window,
        ];
        if counts.iter().any(|&c| c == 0 || c > 1_000_000) || p.backpressure_lines == 0 {
            bail!("counts must be in 1..=1000000");
        }
        // Every fan-out message is held by every client's checker, and the
        // run has a time limit: keep the product sane.
        if p.fanout_clients == 0
            || p.fanout_clients > 20_000
            || p.fanout_messages == 0
            || p.fanout_messages > fanout::MAX_MESSAGES
            || p.fanout_cli_messages > 1000
        {
            bail!(
                "fan-out: 1..=20000 clients, 1..={} messages, 0..=1000 via the CLI",
                fanout::MAX_MESSAGES
            );
        }
        if p.channel_sizes.iter().any(|&n| n == 0 || n > 15_000)
            || p.channel_deliveries == 0
            || p.channel_deliveries > 10_000_000
            || !(p.channel_paced >= 1.0 && p.channel_paced <= 10_000_000.0)
        {
            bail!(
                "channels: 1..=15000 subscribers, 1..=10000000 deliveries, \
                 1..=10000000 paced deliveries/s"
            );
        }
        // Per connection, each client has a child: the storm's bound.
        if p.shared_sizes.iter().any(|&n| n == 0 || n > 5000)
            || p.shared_deliveries == 0
            || p.shared_deliveries > 10_000_000
            || !(p.shared_paced >= 1.0 && p.shared_paced <= 10_000_000.0)
        {
            bail!(
                "shared: 1..=5000 clients, 1..=10000000 deliveries, \
                 1..=10000000 paced deliveries/s"
            );
        }
        if p.scaleout_subscribers == 0
            || p.scaleout_subscribers > 15_000
            || p.scaleout_deliveries == 0
            || p.scaleout_deliveries > 10_000_000
            || !(p.scaleout_paced >= 1.0 && p.scaleout_paced <= 10_000_000.0)
        {
            bail!(
                "scale-out: 1..=15000 subscribers, 1..=10000000 deliveries, \
                 1..=10000000 paced deliveries/s"
            );
        }
        Ok(p)
    }

    /// Scenario 10: one size, the subscriber count.
    pub fn scaleout_suite(&self) -> channel_suite::Suite {
        channel_suite::Suite {
            sizes: vec![self.scaleout_subscribers],
            deliveries: self.scaleout_deliveries,
            paced: self.scaleout_paced,
            paced_secs: self.scaleout_paced_secs,
            parallel: self.storm_parallel,
            runs: self.runs,
        }
    }

    pub fn shared_suite(&self) -> channel_suite::Suite {
        channel_suite::Suite {
            sizes: self.shared_sizes.clone(),
            deliveries: self.shared_deliveries,
            paced: self.shared_paced,
            paced_secs: self.shared_paced_secs,
            parallel: self.storm_parallel,
            runs: self.runs,
        }
    }

    pub fn suite(&self) -> channel_suite::Suite {
        channel_suite::Suite {
            sizes: self.channel_sizes.clone(),
            deliveries: self.channel_deliveries,
            paced: self.channel_paced,
            paced_secs: self.channel_paced_secs,
            parallel: self.storm_parallel,
            runs: self.runs,
        }
    }
}
