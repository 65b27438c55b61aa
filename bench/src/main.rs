//! `wspipe-bench`: runs the same scenarios against wspipe, websocketd and an
//! in-process echo server (the reference, no child process), side by side in
//! one run, and prints a markdown report: medians of several runs, the
//! wspipe/websocketd and wspipe/reference ratios, and the machine.
//!
//! Everything stays on 127.0.0.1. Every loop is bounded in count and in
//! time, every run has a hard time limit, and a watchdog ends the whole
//! bench (and the servers it started) if it runs past `--max-total-secs`.
//!
//! See docs/benchmarks.md for what each scenario measures.

mod channel_suite;
mod channels;
mod client;
mod control;
mod fanout;
mod feed;
mod http_publish;
mod nchan;
mod report;
mod scenarios;
mod server;
mod shared;
mod shared_suite;
mod sys;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use report::{Better, Results, Row};
use scenarios::Metric;
use server::{Kind, Programs, Server, Spec};

/// Benchmarks wspipe against websocketd and an in-process echo server.
#[derive(Debug, Parser)]
#[command(name = "wspipe-bench")]
struct Args {
    /// Tiny counts (CI smoke test): every scenario once, in seconds.
    #[arg(long)]
    smoke: bool,
    /// Runs per figure (the median is reported). Default 3 (smoke: 1).
    #[arg(long)]
    runs: Option<usize>,
    /// Scenarios to run, comma separated (1-9). Default: all.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u8).range(1..=9))]
    only: Vec<u8>,
    /// 1: sequential round trips. Default 5000 (smoke: 200).
    #[arg(long)]
    latency_count: Option<usize>,
    /// 2: seconds of pipelined echo. Default 5 (smoke: 0.5).
    #[arg(long)]
    throughput_secs: Option<f64>,
    /// 2: messages in flight.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// 3: sessions (connect, one echo, close). Default 1000 (smoke: 40).
    #[arg(long)]
    churn_count: Option<usize>,
    /// 3: sessions at a time.
    #[arg(long, default_value_t = 4)]
    churn_parallel: usize,
    /// 3: spawns of /bin/true for the ceiling. Default 1000 (smoke: 50).
    #[arg(long)]
    spawn_count: Option<usize>,
    /// 4: concurrent connections. Default 2000 (smoke: 50).
    #[arg(long)]
    storm_count: Option<usize>,
    /// 4: handshakes in flight while connecting.
    #[arg(long, default_value_t = 256)]
    storm_parallel: usize,
    /// 5: seconds of binary echo. Default 5 (smoke: 0.5).
    #[arg(long)]
    binary_secs: Option<f64>,
    /// 5: bytes per binary message (at most 65536).
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=65536))]
    binary_size: u32,
    /// 5: bytes in flight. websocketd 0.4.1 deadlocks once more than its
    /// pipes hold is in flight, so the measured window stays small.
    #[arg(long, default_value_t = 128 << 10)]
    binary_window: usize,
    /// 5: bytes in flight for the one-off deadlock probe (0: no probe).
    #[arg(long, default_value_t = 1 << 20)]
    binary_probe_window: usize,
    /// 6: seconds of slow reading. Default 5 (smoke: 0.5).
    #[arg(long)]
    backpressure_secs: Option<f64>,
    /// 6: lines the child writes (100 bytes each). Default 400000 (smoke:
    /// 20000).
    #[arg(long)]
    backpressure_lines: Option<u64>,
    /// 7: clients subscribed. Default 1000 (smoke: 50). Connected with
    /// --storm-parallel handshakes in flight.
    #[arg(long)]
    fanout_clients: Option<usize>,
    /// 7: numbered messages per phase (at most 2000). Default 200 (smoke:
    /// 20).
    #[arg(long)]
    fanout_messages: Option<usize>,
    /// 7: messages sent with one `wspipe ctl broadcast` process each (0: none).
    /// Default 20 (smoke: 3).
    #[arg(long)]
    fanout_cli_messages: Option<usize>,
    /// 8: channel sizes (subscribers), comma separated. Default 1,1000,10000
    /// (smoke: 1,50).
    #[arg(long, value_delimiter = ',')]
    channel_sizes: Vec<usize>,
    /// 8: deliveries per acknowledged phase, spread over the subscribers
    /// (20 to 20,000 messages). Default 500000 (smoke: 2000).
    #[arg(long)]
    channel_deliveries: Option<usize>,
    /// 8: deliveries/s of the paced phase, spread over the subscribers (at
    /// most 1000 messages/s); well below what either server can do, so
    /// latency is not queueing. Default 20000 (smoke: 5000).
    #[arg(long)]
    channel_paced: Option<f64>,
    /// 8: seconds of the paced phase. Default 5 (smoke: 0.5).
    #[arg(long)]
    channel_paced_secs: Option<f64>,
    /// 9: client counts, comma separated. Default 1,100,1000 (smoke: 1,20).
    #[arg(long, value_delimiter = ',')]
    shared_sizes: Vec<usize>,
    /// 9: deliveries per unpaced phase, spread over the clients (20 to
    /// 20,000 messages). Default 200000 (smoke: 1000).
    #[arg(long)]
    shared_deliveries: Option<usize>,
    /// 9: deliveries/s of the paced phase, spread over the clients (at most
    /// 1000 messages/s). Default 20000 (smoke: 5000).
    #[arg(long)]
    shared_paced: Option<f64>,
    /// 9: seconds of the paced phase. Default 3 (smoke: 0.5).
    #[arg(long)]
    shared_paced_secs: Option<f64>,
    /// The nginx binary (8: it loads the nchan module).
    #[arg(long, default_value = "nginx")]
    nginx: PathBuf,
    /// The wspipe binary. Default: `wspipe` next to this binary.
    #[arg(long)]
    wspipe: Option<PathBuf>,
    /// The websocketd binary.
    #[arg(long, default_value = "websocketd")]
    websocketd: PathBuf,
    /// Watchdog: end everything after this many seconds. Default 1200
    /// (smoke: 240).
    #[arg(long)]
    max_total_secs: Option<u64>,
}

/// The counts actually used.
#[derive(Debug, Clone)]
struct Params {
    smoke: bool,
    runs: usize,
    only: Vec<u8>,
    latency_count: usize,
    throughput_secs: f64,
    window: usize,
    churn_count: usize,
    churn_parallel: usize,
    spawn_count: usize,
    storm_count: usize,
    storm_parallel: usize,
    binary_secs: f64,
    binary_size: usize,
    binary_window: usize,
    binary_probe_window: usize,
    backpressure_secs: f64,
    backpressure_lines: u64,
    fanout_clients: usize,
    fanout_messages: usize,
    fanout_cli_messages: usize,
    channel_sizes: Vec<usize>,
    channel_deliveries: usize,
    channel_paced: f64,
    channel_paced_secs: f64,
    shared_sizes: Vec<usize>,
    shared_deliveries: usize,
    shared_paced: f64,
    shared_paced_secs: f64,
    max_total: Duration,
}

impl Params {
    fn from_args(a: &Args) -> anyhow::Result<Params> {
        let s = a.smoke;
        let pick = |full, smoke| if s { smoke } else { full };
        let p = Params {
            smoke: s,
            runs: a.runs.unwrap_or(pick(3, 1)),
            only: if a.only.is_empty() {
                (1..=9).collect()
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
            max_total: Duration::from_secs(a.max_total_secs.unwrap_or(if s { 240 } else { 1200 })),
        };
        let secs_ok = |v: f64| v.is_finite() && v > 0.0 && v <= 60.0;
        if !(secs_ok(p.throughput_secs)
            && secs_ok(p.binary_secs)
            && secs_ok(p.backpressure_secs)
            && secs_ok(p.channel_paced_secs)
            && secs_ok(p.shared_paced_secs))
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
        Ok(p)
    }

    fn shared_suite(&self) -> channel_suite::Suite {
        channel_suite::Suite {
            sizes: self.shared_sizes.clone(),
            deliveries: self.shared_deliveries,
            paced: self.shared_paced,
            paced_secs: self.shared_paced_secs,
            parallel: self.storm_parallel,
            runs: self.runs,
        }
    }

    fn suite(&self) -> channel_suite::Suite {
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

/// Fan-out: wspipe's control socket and websocketd's shared file, in the
/// run's scratch directory.
const CONTROL_SOCKET: &str = "control.sock";
const FEED_FILE: &str = "feed";

/// The scenarios that run against servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Latency = 1,
    Throughput = 2,
    Churn = 3,
    Storm = 4,
    Binary = 5,
    Backpressure = 6,
    FanOut = 7,
    Channels = 8,
    Shared = 9,
}

const SCENARIOS: [Scenario; 9] = [
    Scenario::Latency,
    Scenario::Throughput,
    Scenario::Churn,
    Scenario::Storm,
    Scenario::Binary,
    Scenario::Backpressure,
    Scenario::FanOut,
    Scenario::Channels,
    Scenario::Shared,
];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Latency => "echo latency",
            Scenario::Throughput => "echo throughput",
            Scenario::Churn => "connection churn",
            Scenario::Storm => "connection storm",
            Scenario::Binary => "binary throughput",
            Scenario::Backpressure => "backpressure",
            Scenario::FanOut => "fan-out",
            Scenario::Channels => "channels",
            Scenario::Shared => "shared process",
        }
    }

    /// The reference echo server applies where no child is needed.
    fn servers(self) -> &'static [Kind] {
        match self {
            Scenario::Latency | Scenario::Throughput | Scenario::Binary => {
                &[Kind::Wspipe, Kind::Websocketd, Kind::Reference]
            }
            Scenario::Channels => &[Kind::Wspipe, Kind::Nchan],
            Scenario::Shared => &shared::MODES,
            _ => &[Kind::Wspipe, Kind::Websocketd],
        }
    }

    /// What `kind` runs for this scenario; `scratch` is the run's private
    /// directory (fan-out: the control socket, or the shared file).
    fn spec(self, p: &Params, kind: Kind, scratch: Option<&std::path::Path>) -> Spec {
        match self {
            Scenario::Binary => Spec::binary(&["cat"]),
            Scenario::Backpressure => Spec {
                binary: false,
                command: scenarios::seq_command(p.backpressure_lines),
                control: None,
                args: Vec::new(),
            },
            // wspipe: `cat` writes nothing (the clients send nothing), so
            // every message a client gets came through the control socket.
            Scenario::FanOut => match (kind, scratch) {
                (Kind::Wspipe, Some(dir)) => Spec {
                    control: Some(dir.join(CONTROL_SOCKET)),
                    ..Spec::text(&["cat"])
                },
                (_, Some(dir)) => Spec {
                    binary: false,
                    command: fanout::tail_command(&dir.join(FEED_FILE)),
                    control: None,
                    args: Vec::new(),
                },
                (_, None) => unreachable!("fan-out runs in a scratch directory"),
            },
            _ => Spec::text(&["cat"]),
        }
    }

    /// Hard limit on one run (the scenario's own deadlines come first).
    fn limit(self, p: &Params) -> Duration {
        let secs = |s: f64| Duration::from_secs_f64(s);
        match self {
            Scenario::Latency => Duration::from_secs(60),
            Scenario::Throughput => secs(p.throughput_secs) + Duration::from_secs(40),
            Scenario::Churn => Duration::from_secs(150),
            Scenario::Storm => Duration::from_secs(200),
            Scenario::Binary => secs(p.binary_secs) + Duration::from_secs(40),
            Scenario::Backpressure => secs(p.backpressure_secs) + Duration::from_secs(140),
            Scenario::FanOut => Duration::from_secs(240),
            // One size against one server.
            Scenario::Channels | Scenario::Shared => Duration::from_secs(240),
        }
    }
}

fn rows(p: &Params) -> Vec<Row> {
    let l1 = format!(
        "1. echo latency (1 conn, {} sequential round trips, µs)",
        p.latency_count
    );
    let l2 = format!(
        "2. echo throughput (1 conn, {} in flight, 64-byte messages, {} s)",
        p.window, p.throughput_secs
    );
    let l3 = format!(
        "3. connection churn ({} × connect + echo + close, {} at a time)",
        p.churn_count, p.churn_parallel
    );
    let l4 = format!(
        "4. storm ({} concurrent conns, each with a `cat`; {} handshakes in flight)",
        p.storm_count, p.storm_parallel
    );
    let l5 = format!(
        "5. binary throughput ({} KiB messages, `--binary cat`, {} KiB in flight, {} s)",
        p.binary_size / 1024,
        p.binary_window / 1024,
        p.binary_secs
    );
    let l6 = format!(
        "6. backpressure (`seq`: {} lines of {} bytes; slow reader for {} s)",
        p.backpressure_lines,
        scenarios::SEQ_WIDTH + 1,
        p.backpressure_secs
    );
    let l7 = format!(
        "7. fan-out ({} clients × {} numbered 64-byte messages; wspipe: control-socket \
         broadcast; websocketd + tail -f shared file²)",
        p.fanout_clients, p.fanout_messages
    );
    let cli = format!(
        "`wspipe ctl broadcast` as a process, one exec per message, {} messages (broadcasts/s)",
        p.fanout_cli_messages
    );
    let row = |metric, scenario: &str, label: &str, better| Row {
        metric,
        scenario: scenario.to_string(),
        label: label.to_string(),
        better,
    };
    let probe = format!(
        "{} KiB in flight for 1 s (deadlock probe, run 1 only)",
        p.binary_probe_window / 1024
    );
    let all = vec![
        row(Metric::LatencyP50, &l1, "p50", Better::Lower),
        row(Metric::LatencyP99, &l1, "p99", Better::Lower),
        row(Metric::LatencyMax, &l1, "max", Better::Lower),
        row(
            Metric::LatencyCpu,
            &l1,
            "server CPU per round trip (µs)",
            Better::Lower,
        ),
        row(Metric::EchoRate, &l2, "messages/s", Better::Higher),
        row(
            Metric::EchoCpu,
            &l2,
            "server CPU per message (µs)",
            Better::Lower,
        ),
        row(Metric::ChurnRate, &l3, "sessions/s", Better::Higher),
        row(
            Metric::ChurnCpu,
            &l3,
            "server CPU per session (µs)",
            Better::Lower,
        ),
        row(
            Metric::SpawnRateSequential,
            &l3,
            "/bin/true spawn+wait, 1 thread (spawns/s)",
            Better::Neither,
        ),
        row(Metric::StormConnected, &l4, "connected", Better::Neither),
        row(Metric::StormChildren, &l4, "children seen", Better::Neither),
        row(
            Metric::StormSeconds,
            &l4,
            "time to connect all (s)",
            Better::Lower,
        ),
        row(
            Metric::StormRssPerConn,
            &l4,
            "server RSS per connection (KiB)",
            Better::Lower,
        ),
        row(Metric::BinaryRate, &l5, "MB/s", Better::Higher),
        row(Metric::BinaryBigWindow, &l5, &probe, Better::Neither),
        row(
            Metric::BackpressureGrowth,
            &l6,
            "max server RSS growth (KiB)",
            Better::Lower,
        ),
        row(
            Metric::BackpressureDelivered,
            &l6,
            "delivered",
            Better::Neither,
        ),
        row(
            Metric::FanOutDeliveries,
            &l7,
            "deliveries/s (clients × messages / time until every client had every message; \
             wspipe: one broadcast request at a time)",
            Better::Higher,
        ),
        row(
            Metric::FanOutLag,
            &l7,
            "last delivery after the last send (ms)",
            Better::Lower,
        ),
        row(
            Metric::FanOutPipelined,
            &l7,
            "deliveries/s, all broadcast requests written at once (pipelined)",
            Better::Neither,
        ),
        row(
            Metric::FanOutProducerRate,
            &l7,
            "producer: messages/s taken (wspipe: broadcasts answered; websocketd: lines appended)",
            Better::Neither,
        ),
        row(Metric::FanOutCliRate, &l7, &cli, Better::Neither),
        row(
            Metric::FanOutChecked,
            &l7,
            "every client got every message",
            Better::Neither,
        ),
    ];
    all.into_iter()
        .chain(channel_suite::rows(&p.suite()))
        .chain(shared_suite::rows(&p.shared_suite()))
        .filter(|r| {
            let n: u8 = r.scenario[..1].parse().unwrap_or(0);
            p.only.contains(&n)
                && (r.metric != Metric::BinaryBigWindow || p.binary_probe_window > 0)
                && (r.metric != Metric::FanOutCliRate || p.fanout_cli_messages > 0)
        })
        .collect()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let params = match Params::from_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("wspipe-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let programs = match find_programs(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("wspipe-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let (soft, hard) = sys::raise_nofile();
    let watchdog = params.max_total;
    std::thread::spawn(move || {
        std::thread::sleep(watchdog);
        eprintln!("wspipe-bench: watchdog: still running after {watchdog:?}, giving up");
        server::kill_all();
        sys::remove_all_scratch();
        std::process::exit(3);
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wspipe-bench: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let load_before = sys::loadavg();
    let results = runtime.block_on(run_all(&params, &programs));
    let load_after = sys::loadavg();
    println!(
        "{}",
        render(
            &params,
            &programs,
            &results,
            (soft, hard),
            started.elapsed(),
            (&load_before, &load_after)
        )
    );
    server::kill_all();
    if results.check_failed || !results.errors.is_empty() {
        eprintln!("wspipe-bench: FAILED (see the errors above the table)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn find_programs(args: &Args) -> anyhow::Result<Programs> {
    let wspipe = match &args.wspipe {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("where am I")?
            .with_file_name("wspipe"),
    };
    if !wspipe.is_file() {
        bail!(
            "no wspipe binary at {} (cargo build --release, or --wspipe PATH)",
            wspipe.display()
        );
    }
    let websocketd = which(&args.websocketd).with_context(|| {
        format!(
            "{} not found (apt-get install websocketd, or --websocketd PATH)",
            args.websocketd.display()
        )
    })?;
    let nginx = if args.only.is_empty() || args.only.contains(&8) {
        Some(find_nginx(&args.nginx)?)
    } else {
        None
    };
    Ok(Programs {
        wspipe,
        websocketd,
        nginx,
    })
}

/// nginx and the nchan module it will load (scenario 8).
fn find_nginx(name: &std::path::Path) -> anyhow::Result<PathBuf> {
    let nginx = which(name)
        .or_else(|| which(&std::path::Path::new("/usr/sbin").join(name)))
        .with_context(|| {
            format!(
                "{} not found (apt-get install nginx libnginx-mod-nchan, or --nginx PATH)",
                name.display()
            )
        })?;
    if !std::path::Path::new(nchan::MODULE).is_file() {
        bail!(
            "no nchan module at {} (apt-get install libnginx-mod-nchan)",
            nchan::MODULE
        );
    }
    Ok(nginx)
}

/// A program name resolved through PATH (or a path, if it is one).
fn which(name: &std::path::Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

async fn run_all(p: &Params, programs: &Programs) -> Results {
    let mut results = Results::default();
    for sc in SCENARIOS {
        if !p.only.contains(&(sc as u8)) {
            continue;
        }
        if sc == Scenario::Channels {
            for run in 0..p.runs {
                channel_suite::run(&p.suite(), programs, run, &mut results).await;
            }
            continue;
        }
        if sc == Scenario::Shared {
            for run in 0..p.runs {
                shared_suite::run(&p.shared_suite(), programs, run, &mut results).await;
            }
            continue;
        }
        for run in 0..p.runs {
            // Rotate the order so no server always goes first.
            let mut order = sc.servers().to_vec();
            let shift = run % order.len();
            order.rotate_left(shift);
            for kind in order {
                eprintln!(
                    "[{}. {}] run {}/{}: {}",
                    sc as u8,
                    sc.name(),
                    run + 1,
                    p.runs,
                    kind.name()
                );
                match run_one(sc, kind, run, p, programs).await {
                    Ok((figures, note)) => {
                        results.record(kind, run, p.runs, &figures);
                        if let Some(note) = note {
                            eprintln!("    note: {note}");
                            results.notes.push(format!(
                                "{}. {}, {} run {}: {note}",
                                sc as u8,
                                sc.name(),
                                kind.name(),
                                run + 1
                            ));
                        }
                    }
                    Err((e, tail)) => {
                        let mut msg = format!("{e:#}");
                        if !tail.is_empty() {
                            msg.push_str("\n  server log (last lines):\n    ");
                            msg.push_str(&tail.join("\n    "));
                        }
                        eprintln!("    ERROR: {msg}");
                        if e.downcast_ref::<scenarios::CheckFailed>().is_some() {
                            results.check_failed = true;
                        }
                        results
                            .errors
                            .push((sc.name().to_string(), kind, run + 1, msg));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if sc == Scenario::Churn {
                spawn_ceiling(p, run, &mut results).await;
            }
        }
    }
    results
}

/// The fork/exec ceiling for churn, measured between the churn runs so it
/// sees the same machine state: `churn_parallel` threads (the reference
/// column of the churn row, as churn runs that many sessions at a time) and
/// one loop (its own row).
async fn spawn_ceiling(p: &Params, run: usize, results: &mut Results) {
    eprintln!(
        "[3. connection churn] run {}/{}: /bin/true spawn+wait ceiling",
        run + 1,
        p.runs
    );
    let (count, threads) = (p.spawn_count, p.churn_parallel);
    let limit = Duration::from_secs(30);
    let measured = tokio::task::spawn_blocking(move || {
        let many = scenarios::spawn_rate(count, threads, limit)?;
        let one = scenarios::spawn_rate(count, 1, limit)?;
        anyhow::Ok((one, many))
    })
    .await;
    match measured {
        Ok(Ok((one, many))) => results.record(
            Kind::Reference,
            run,
            p.runs,
            &[
                (Metric::ChurnRate, many),
                (Metric::SpawnRateSequential, one),
            ],
        ),
        Ok(Err(e)) => results.errors.push((
            "spawn ceiling".into(),
            Kind::Reference,
            run + 1,
            format!("{e:#}"),
        )),
        Err(e) => results.errors.push((
            "spawn ceiling".into(),
            Kind::Reference,
            run + 1,
            e.to_string(),
        )),
    }
}

/// Starts a fresh server, runs one scenario against it under a hard time
/// limit, stops the server.
async fn run_one(
    sc: Scenario,
    kind: Kind,
    run: usize,
    p: &Params,
    programs: &Programs,
) -> Result<(scenarios::Figures, Option<String>), (anyhow::Error, Vec<String>)> {
    // Fan-out's control socket or shared file; removed when the run ends
    // (after the server stopped: declared before it, dropped after it).
    let scratch = match sc {
        Scenario::FanOut => Some(prepare_fanout(kind).map_err(|e| (e, Vec::new()))?),
        _ => None,
    };
    let dir = scratch.as_ref().map(sys::Scratch::path);
    let server = Server::start(kind, programs, &sc.spec(p, kind, dir))
        .await
        .map_err(|e| (e, Vec::new()))?;
    let limit = sc.limit(p);
    let work = async {
        match sc {
            Scenario::Latency => Ok((scenarios::latency(&server, p.latency_count).await?, None)),
            Scenario::Throughput => Ok((
                scenarios::throughput(&server, p.throughput_secs, p.window).await?,
                None,
            )),
            Scenario::Churn => Ok((
                scenarios::churn(
                    &server,
                    p.churn_count,
                    p.churn_parallel,
                    limit - Duration::from_secs(10),
                )
                .await?,
                None,
            )),
            Scenario::Storm => {
                scenarios::storm(&server, p.storm_count, p.storm_parallel, limit / 2).await
            }
            Scenario::Binary => {
                let mut figures = scenarios::binary(
                    &server,
                    p.binary_secs,
                    p.binary_size,
                    p.binary_window,
                    Duration::from_secs(5),
                )
                .await?;
                let mut note = None;
                if run == 0 && p.binary_probe_window > 0 {
                    let (ok, probe_note) = binary_probe(&server, p).await;
                    figures.push((Metric::BinaryBigWindow, ok));
                    note = probe_note;
                }
                Ok((figures, note))
            }
            Scenario::Backpressure => {
                scenarios::backpressure(
                    &server,
                    p.backpressure_lines,
                    p.backpressure_secs,
                    limit - Duration::from_secs(20),
                )
                .await
            }
            Scenario::FanOut => {
                let dir = dir.expect("fan-out has a scratch directory");
                let producer = match kind {
                    Kind::Wspipe => fanout::Producer::Control {
                        socket: dir.join(CONTROL_SOCKET),
                        cli: programs.wspipe.clone(),
                        cli_messages: p.fanout_cli_messages,
                    },
                    _ => fanout::Producer::TailFile {
                        file: dir.join(FEED_FILE),
                    },
                };
                let plan = fanout::Plan {
                    clients: p.fanout_clients,
                    messages: p.fanout_messages,
                    parallel: p.storm_parallel,
                };
                fanout::fanout(&server, &plan, &producer).await
            }
            Scenario::Channels => Err(anyhow::anyhow!("channels run in channel_suite")),
            Scenario::Shared => Err(anyhow::anyhow!("shared runs in shared_suite")),
        }
    };
    let outcome = match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("hard time limit of {limit:?} reached")),
    };
    let outcome = outcome.map_err(|e| {
        let tail = server.log_tail();
        let lines: Vec<String> = tail.lines().map(String::from).collect();
        let last = lines[lines.len().saturating_sub(5)..].to_vec();
        (e, last)
    });
    server.stop().await;
    outcome
}

/// Fan-out's scratch directory: websocketd's sessions follow a shared file
/// that must exist (empty) before the first one starts; wspipe creates its
/// control socket itself.
fn prepare_fanout(kind: Kind) -> anyhow::Result<sys::Scratch> {
    let scratch = sys::Scratch::new("fanout").context("scratch directory")?;
    // sockaddr_un holds 108 bytes.
    let socket = scratch.path().join(CONTROL_SOCKET);
    if socket.as_os_str().len() > 100 {
        bail!(
            "control socket path too long: {} (set TMPDIR)",
            socket.display()
        );
    }
    if kind == Kind::Websocketd {
        for tool in ["setpriv", "tail"] {
            which(std::path::Path::new(tool))
                .with_context(|| format!("{tool} not found (fan-out needs it for websocketd)"))?;
        }
        std::fs::File::create(scratch.path().join(FEED_FILE)).context("create the feed file")?;
    }
    Ok(scratch)
}

/// Scenario 5's deadlock probe: 1 s with a large window in flight. 1.0 if
/// every byte came back, 0.0 if the echo stalled (with a note).
async fn binary_probe(server: &Server, p: &Params) -> (f64, Option<String>) {
    let probe = scenarios::binary(
        server,
        1.0,
        p.binary_size,
        p.binary_probe_window,
        Duration::from_secs(2),
    )
    .await;
    let window = p.binary_probe_window / 1024;
    match probe {
        Ok(_) => (1.0, None),
        Err(e) => match e.downcast_ref::<scenarios::Stalled>() {
            Some(stall) => (
                0.0,
                Some(format!(
                    "deadlock probe with {window} KiB in flight: {stall} (the session hangs)"
                )),
            ),
            None => (
                0.0,
                Some(format!(
                    "deadlock probe with {window} KiB in flight failed: {e:#}"
                )),
            ),
        },
    }
}

fn version_of(program: &std::path::Path) -> String {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

fn debian_version(package: &str) -> Option<String> {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .ok()?;
    (out.status.success() && !out.stdout.is_empty())
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn render(
    p: &Params,
    programs: &Programs,
    results: &Results,
    nofile: (u64, u64),
    elapsed: Duration,
    load: (&str, &str),
) -> String {
    use std::fmt::Write as _;
    let m = sys::Machine::describe();
    let rows = rows(p);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## wspipe benchmark{}\n",
        if p.smoke {
            " (smoke: tiny counts, figures meaningless)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "- machine: {} × {}, kernel {}, {} RAM",
        m.nproc, m.cpu, m.kernel, m.mem_total
    );
    let _ = writeln!(
        out,
        "- load average (1/5/15 min) before: {}, after: {}",
        load.0, load.1
    );
    let rev = std::env::var("WSPIPE_BENCH_REV")
        .map(|r| format!(", git {r}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "- wspipe: {}{rev} ({})",
        version_of(&programs.wspipe),
        programs.wspipe.display()
    );
    let websocketd_pkg = debian_version("websocketd")
        .map(|v| format!(", Debian package {v}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "- websocketd: {}{} ({})",
        version_of(&programs.websocketd),
        websocketd_pkg,
        programs.websocketd.display()
    );
    if p.only.contains(&8) {
        let pkg = |name| debian_version(name).unwrap_or_else(|| "?".into());
        let _ = writeln!(
            out,
            "- nchan: Debian package libnginx-mod-nchan {} in nginx {}",
            pkg("libnginx-mod-nchan"),
            pkg("nginx")
        );
    }
    let _ = writeln!(
        out,
        "- {} run(s) per figure, median shown; open files limit {}/{}; took {:.0} s",
        p.runs,
        nofile.0,
        nofile.1,
        elapsed.as_secs_f64()
    );
    out.push('\n');
    let (shared_rows, rows): (Vec<Row>, Vec<Row>) = rows
        .into_iter()
        .partition(|r| matches!(r.metric, Metric::Shared(..)));
    let (channel_rows, rows): (Vec<Row>, Vec<Row>) = rows
        .into_iter()
        .partition(|r| matches!(r.metric, Metric::Channel(..)));
    if !rows.is_empty() {
        out.push_str(&report::table(
            results,
            &rows,
            p.runs,
            p.storm_count,
            &report::MAIN,
        ));
        out.push_str(
            "\n¹ reference: for 1, 2 and 5, an in-process tokio-tungstenite echo server with no \
         child process (the upper limit for a bridge); for 3, the raw fork/exec rate of \
         `/bin/true` (spawn + wait in a loop) from as many threads as churn runs sessions \
         at a time, the ceiling for sessions/s. \
         Ratios are plain quotients: read them with the \"better\" column.\n",
        );
    }
    if p.only.contains(&7) {
        out.push_str(
            "\n² For 7, websocketd has no broadcast: its column is websocketd + tail -f shared \
             file, the usual way to fan out with it (every session runs `tail -n +1 -F FILE` \
             on one file, the producer appends one line per message), against wspipe's \
             `broadcast` request on its control socket.\n",
        );
    }
    if !channel_rows.is_empty() {
        out.push_str("\n### Channels: wspipe --pubsub and nginx's nchan³\n\n");
        out.push_str(&report::table(
            results,
            &channel_rows,
            p.runs,
            0,
            &report::CHANNELS,
        ));
        out.push_str(channel_suite::FOOTNOTE);
    }
    if !shared_rows.is_empty() {
        out.push_str("\n### Shared process: --shared cat, --pubsub, cat per connection⁴\n\n");
        let table = report::table(results, &shared_rows, p.runs, 0, &report::SHARED);
        out.push_str(&table);
        out.push_str(shared_suite::FOOTNOTE);
    }
    if !results.notes.is_empty() {
        out.push_str("\nNotes:\n");
        for n in &results.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    if !results.errors.is_empty() {
        out.push_str("\nErrors:\n");
        for (sc, kind, run, msg) in &results.errors {
            let _ = writeln!(out, "- {sc}, {} run {run}: {msg}", kind.name());
        }
    }
    if p.runs > 1 {
        out.push_str("\n<details><summary>All runs</summary>\n\n");
        // One table per report table, only for those shown.
        let tables = [&rows, &channel_rows, &shared_rows];
        let shown: Vec<String> = tables
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| report::all_runs(results, t, p.runs))
            .collect();
        out.push_str(&shown.join("\n"));
        out.push_str("\n</details>\n");
    }
    out
}
