//! Scenario 8 in the bench's run: every size against wspipe and nchan,
//! each on a fresh server, the order rotated between runs; its rows and
//! its footnote in the report.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use crate::channels::{self, Figure, Plan};
use crate::report::{Better, Results, Row};
use crate::scenarios::Metric;
use crate::server::{Kind, Programs};
use crate::sys;

/// The counts of a scenario that runs sizes (8, and 9 alike).
pub struct Suite {
    pub sizes: Vec<usize>,
    pub deliveries: usize,
    pub paced: f64,
    pub paced_secs: f64,
    pub parallel: usize,
    pub runs: usize,
}

impl Suite {
    /// The counts for `n` clients, `parallel` handshakes in flight.
    pub fn plan(&self, n: usize, parallel: usize) -> Plan {
        Plan::new(n, self.deliveries, self.paced, self.paced_secs, parallel)
    }

    /// Every size of this suite against each of `kinds`; `title` and
    /// `unit` as [`Sweep`] has them.
    pub fn sweep<'a>(&'a self, (title, unit): (&'a str, &'a str), kinds: &'a [Kind]) -> Sweep<'a> {
        Sweep {
            title,
            unit,
            sizes: &self.sizes,
            kinds,
            runs: self.runs,
        }
    }
}

/// Bound on one size against one server.
const LIMIT: Duration = Duration::from_secs(240);

/// The servers, in the order of the first run.
const SERVERS: [Kind; 2] = [Kind::Wspipe, Kind::Nchan];

/// Runs every size against both servers once (run number `run`).
pub async fn run(suite: &Suite, programs: &Programs, run: usize, results: &mut Results) {
    let sweep = suite.sweep(("8. channels", "subscribers"), &SERVERS);
    sweep
        .run(run, results, |kind, n| {
            let plan = suite.plan(n, suite.parallel);
            async move { one(kind, programs, &plan).await }
        })
        .await;
}

/// A scenario that runs every size against every one of `kinds`, each on a
/// fresh server, the order rotated between runs (8 and 9).
pub struct Sweep<'a> {
    /// "N. name", as the progress lines and notes show it.
    pub title: &'a str,
    /// What a size counts ("subscribers", "clients").
    pub unit: &'a str,
    pub sizes: &'a [usize],
    pub kinds: &'a [Kind],
    pub runs: usize,
}

impl Sweep<'_> {
    /// Every size against every kind once (run number `run`): `one(kind,
    /// size)` measures, its figures and notes go into `results`.
    pub async fn run<F, Fut>(&self, run: usize, results: &mut Results, mut one: F)
    where
        F: FnMut(Kind, usize) -> Fut,
        Fut: Future<Output = Result<channels::Outcome, String>>,
    {
        let (title, unit) = (self.title, self.unit);
        for &n in self.sizes {
            let mut order = self.kinds.to_vec();
            order.rotate_left(run % self.kinds.len().max(1));
            for kind in order {
                let runs = self.runs;
                let name = kind.name();
                eprintln!("[{title}] run {}/{runs}: {n} {unit}, {name}", run + 1);
                let scenario = format!("{title}, {n} {unit}");
                match one(kind, n).await {
                    Ok((columns, notes)) => {
                        for (column, figures) in columns {
                            results.record(column, run, runs, &figures);
                        }
                        for note in notes {
                            eprintln!("    note: {note}");
                            let run = run + 1;
                            results
                                .notes
                                .push(format!("{scenario}, {name} run {run}: {note}"));
                        }
                    }
                    Err(msg) => {
                        eprintln!("    ERROR: {msg}");
                        if msg.contains("CHECK FAILED") {
                            results.check_failed = true;
                        }
                        results.errors.push((scenario, kind, run + 1, msg));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// `outcome` under a hard time `limit`, its error (with the server log's
/// last lines) as one message.
pub async fn bounded(
    limit: Duration,
    outcome: impl Future<Output = Result<channels::Outcome, (anyhow::Error, String)>>,
) -> Result<channels::Outcome, String> {
    match tokio::time::timeout(limit, outcome).await {
        Err(_) => Err(format!("hard time limit of {limit:?} reached")),
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err((e, tail))) if tail.is_empty() => Err(format!("{e:#}")),
        Ok(Err((e, tail))) => Err(format!("{e:#}\n  server log (last lines):\n    {tail}")),
    }
}

/// One size against one server, in a scratch directory of its own, under
/// [`LIMIT`].
async fn one(kind: Kind, programs: &Programs, plan: &Plan) -> Result<channels::Outcome, String> {
    let scratch = sys::Scratch::new("channels").map_err(|e| format!("scratch directory: {e}"))?;
    let dir: &Path = scratch.path();
    bounded(LIMIT, channels::run(kind, programs, plan, dir)).await
}

/// The rows of one size of a scenario that runs sizes (8, 9).
pub struct SizeRows<'a> {
    pub rows: &'a mut Vec<Row>,
    scenario: String,
    metric: fn(Figure, u32) -> Metric,
    n: usize,
}

impl<'a> SizeRows<'a> {
    /// `title` ("8. channels") and what a size counts ("subscriber").
    pub fn new(
        rows: &'a mut Vec<Row>,
        (title, unit): (&str, &str),
        n: usize,
        metric: fn(Figure, u32) -> Metric,
    ) -> SizeRows<'a> {
        let plural = if n == 1 { "" } else { "s" };
        let scenario = format!("{title} ({n} {unit}{plural}, 64-byte messages)");
        SizeRows {
            rows,
            scenario,
            metric,
            n,
        }
    }

    pub fn row(&mut self, figure: Figure, label: String, better: Better) {
        self.rows.push(Row {
            metric: (self.metric)(figure, self.n as u32),
            scenario: self.scenario.clone(),
            label,
            better,
        })
    }
}

/// The report's rows for scenario 8, per size.
pub fn rows(suite: &Suite) -> Vec<Row> {
    let mut rows = Vec::new();
    for &n in &suite.sizes {
        let plan = suite.plan(n, 1);
        let mut size = SizeRows::new(&mut rows, ("8. channels", "subscriber"), n, Metric::Channel);
        let mut row = |figure, label, better| size.row(figure, label, better);
        let acked = format!(
            "(a) deliveries/s, each publish acknowledged before the next ({} messages)",
            plan.messages
        );
        row(Figure::Acked, acked, Better::Higher);
        let cpu = "(a) server CPU per delivery (µs)".to_string();
        row(Figure::AckedCpu, cpu, Better::Lower);
        let pipelined = format!(
            "(a') deliveries/s, {} publishes in flight ({} messages)",
            channels::WINDOW,
            plan.messages
        );
        row(Figure::Pipelined, pipelined, Better::Higher);
        let cpu = "(a') server CPU per delivery (µs)".to_string();
        row(Figure::PipelinedCpu, cpu, Better::Lower);
        let paced = format!(
            "at {} messages/s for {} s",
            crate::report::num(plan.rate),
            suite.paced_secs
        );
        row(
            Figure::P50,
            format!("(b) publish to delivery p50 (µs) {paced}"),
            Better::Lower,
        );
        row(
            Figure::P99,
            format!("(b) publish to delivery p99 (µs) {paced}"),
            Better::Lower,
        );
        if n >= 100 {
            let label = "(c) server memory per idle subscriber (KiB of PSS)".to_string();
            row(Figure::IdleKib, label, Better::Lower);
        }
    }
    rows
}

/// What the columns of scenario 8 are.
pub const FOOTNOTE: &str =
    "\n³ For 8, every size runs on a fresh server. wspipe: `wspipe --pubsub \
     --publish 127.0.0.1:PORT --control SOCKET`, subscribers on `/bench`; \"HTTP publish\" is \
     `POST /bench` on one keep-alive connection, as nchan's column; \"control socket\" is the \
     same server and run publishing with `{\"cmd\":\"publish\"}` requests instead. nchan: Debian's \
     nginx with libnginx-mod-nchan, two workers, `nchan_subscriber websocket` and \
     `nchan_publisher http` locations (the nginx.conf is in docs/benchmarks.md). (a) counts from \
     the first publish until every subscriber had every message; (b) is the time from just \
     before a publish was sent until a subscriber read it, over every subscriber and message; \
     CPU per delivery is the server's user + system time (nginx: master and workers) over \
     the phase divided by the deliveries; (c) is the growth of the server's PSS (nginx: master and workers) from before the first \
     subscriber to all of them connected, divided by their number. Every subscriber must get \
     every message once and in order, and every publish answer must count every subscriber, or \
     the run fails. The subscribers run in the bench's process on the same 2 cores as the \
     server, for both servers alike.\n";
