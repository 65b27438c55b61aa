//! Scenario 10 in the bench's run: every configuration (1 instance without
//! Redis, 1 with, 3 on one Redis), each on fresh servers, the order rotated
//! between runs; its rows and its footnote in the report.

use std::time::Duration;

use crate::channel_suite::{bounded, Suite};
use crate::report::{num, Better, Results, Row};
use crate::scaleout::{self, Figure, CONFIGS, WINDOW};
use crate::scenarios::Metric;
use crate::server::Programs;
use crate::sys;

/// Bound on one configuration.
const LIMIT: Duration = Duration::from_secs(240);

/// "N. name", as progress lines, notes and the report show it.
const TITLE: &str = "10. scale-out";

/// Runs every configuration once (run number `run`). `suite.sizes` holds
/// the one subscriber count.
pub async fn run(suite: &Suite, programs: &Programs, run: usize, results: &mut Results) {
    let sweep = suite.sweep((TITLE, "subscribers"), &CONFIGS);
    sweep
        .run(run, results, |config, n| {
            let plan = suite.plan(n, suite.parallel);
            async move {
                let scratch =
                    sys::Scratch::new("scaleout").map_err(|e| format!("scratch directory: {e}"))?;
                let outcome = scaleout::run(config, programs, &plan, scratch.path());
                bounded(LIMIT, outcome).await
            }
        })
        .await;
}

/// The report's rows for scenario 10.
pub fn rows(suite: &Suite) -> Vec<Row> {
    let mut rows = Vec::new();
    for &n in &suite.sizes {
        let plan = suite.plan(n, 1);
        let scenario = format!(
            "{TITLE} ({n} subscribers round-robin over the instances, 64-byte messages, \
             publisher on the first instance)"
        );
        let mut row = |figure, label: String, better| {
            rows.push(Row {
                metric: Metric::ScaleOut(figure),
                scenario: scenario.clone(),
                label,
                better,
            })
        };
        let m = plan.messages;
        let windowed = format!("(a) deliveries/s, {WINDOW} messages outstanding ({m} messages)");
        row(Figure::Windowed, windowed, Better::Higher);
        let cpu = "(a) wspipe CPU per delivery, all instances (µs)".to_string();
        row(Figure::WindowedCpu, cpu, Better::Lower);
        let redis = "(a) redis-server CPU per message published (µs)".to_string();
        row(Figure::WindowedRedisCpu, redis, Better::Lower);
        let paced = format!("at {} messages/s for {} s", num(plan.rate), plan.paced_secs);
        let p50 = format!("(b) publish to delivery p50 (µs) {paced}");
        row(Figure::P50, p50, Better::Lower);
        let p99 = format!("(b) publish to delivery p99 (µs) {paced}");
        row(Figure::P99, p99, Better::Lower);
        let p50 = "(b) p50 (µs), members of the other instances only (through Redis)";
        row(Figure::RemoteP50, p50.to_string(), Better::Lower);
        let p99 = "(b) p99 (µs), members of the other instances only (through Redis)";
        row(Figure::RemoteP99, p99.to_string(), Better::Lower);
    }
    rows
}

/// What the columns of scenario 10 are.
pub const FOOTNOTE: &str =
    "\n⁵ For 10, every configuration runs on fresh servers: `wspipe --pubsub --control SOCKET` \
     (no Redis); the same with `--redis redis://127.0.0.1:PORT --instance bench0`; three such \
     instances (`bench0`..`bench2`) on one redis-server. The redis-server is the bench's own \
     (loopback, a port of its own, `--save \"\" --appendonly no`, fresh for each configuration). \
     Subscriber i joins `/bench` on instance i mod 3; the publisher is the first instance's \
     control socket. (a) publishes message k once at most 256 messages' deliveries are \
     outstanding (counted at the subscribers), in pipelined chunks of 32, and counts from the \
     first publish until every subscriber had every message; CPU per delivery is the user + \
     system time over the phase of all wspipe instances together, divided by the deliveries; \
     redis-server's is its threads' run time (`/proc/PID/task/*/schedstat`, to the nanosecond) \
     over the phase divided by the messages published. (b) is the time from just before a publish was sent until a subscriber \
     read it, over every subscriber and message, and over the members of the two instances that \
     do not publish only. Every subscriber must get every message once \
     and in order, every answer must count the first instance's members and no instance may \
     count a cross-instance message dropped, or the run fails. Ratios are to the instance \
     without Redis. Everything, Redis and the subscribers included, shares the same cores.\n";
