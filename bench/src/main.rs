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
mod params;
mod redis;
mod render;
mod report;
mod scaleout;
mod scaleout_suite;
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

use params::{Args, Params};
use report::Results;
use scenarios::Metric;
use server::{Kind, Programs, Server, Spec};

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
    ScaleOut = 10,
}

const SCENARIOS: [Scenario; 10] = [
    Scenario::Latency,
    Scenario::Throughput,
    Scenario::Churn,
    Scenario::Storm,
    Scenario::Binary,
    Scenario::Backpressure,
    Scenario::FanOut,
    Scenario::Channels,
    Scenario::Shared,
    Scenario::ScaleOut,
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
            Scenario::ScaleOut => "scale-out",
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
            Scenario::ScaleOut => &scaleout::CONFIGS,
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
            Scenario::Channels | Scenario::Shared | Scenario::ScaleOut => Duration::from_secs(240),
        }
    }
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
        render::render(
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
    let redis = if args.only.is_empty() || args.only.contains(&10) {
        Some(which(&args.redis_server).with_context(|| {
            format!(
                "{} not found (apt-get install redis-server, or --redis-server PATH)",
                args.redis_server.display()
            )
        })?)
    } else {
        None
    };
    Ok(Programs {
        wspipe,
        websocketd,
        nginx,
        redis,
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
        if sc == Scenario::ScaleOut {
            for run in 0..p.runs {
                scaleout_suite::run(&p.scaleout_suite(), programs, run, &mut results).await;
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
            Scenario::ScaleOut => Err(anyhow::anyhow!("scale-out runs in scaleout_suite")),
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
