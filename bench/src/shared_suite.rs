//! Scenario 9 in the bench's run: every size in every mode (`--shared
//! cat`, `--pubsub`, `cat` per connection), each on a fresh server, the
//! order rotated between runs; its rows and its footnote in the report.

use std::time::Duration;

use crate::channel_suite::{bounded, SizeRows, Suite};
use crate::channels::Figure;
use crate::report::{num, Better, Results, Row};
use crate::scenarios::Metric;
use crate::server::Programs;
use crate::shared::{self, MODES, WINDOW};

/// Bound on one size in one mode.
const LIMIT: Duration = Duration::from_secs(240);

/// Runs every size in every mode once (run number `run`).
pub async fn run(suite: &Suite, programs: &Programs, run: usize, results: &mut Results) {
    let sweep = suite.sweep(("9. shared process", "clients"), &MODES);
    sweep
        .run(run, results, |mode, n| {
            let plan = suite.plan(n, suite.parallel);
            async move { bounded(LIMIT, shared::run(mode, programs, &plan)).await }
        })
        .await;
}

/// The report's rows for scenario 9, per size.
pub fn rows(suite: &Suite) -> Vec<Row> {
    let mut rows = Vec::new();
    for &n in &suite.sizes {
        let plan = suite.plan(n, 1);
        let title = ("9. shared process", "client");
        let mut size = SizeRows::new(&mut rows, title, n, Metric::Shared);
        let mut row = |figure, label, better| size.row(figure, label, better);
        let m = plan.messages;
        let acked = format!("(a) deliveries/s, next message once all had one ({m} messages)");
        row(Figure::Acked, acked, Better::Higher);
        let cpu = "(a) server CPU per delivery (µs)".to_string();
        row(Figure::AckedCpu, cpu, Better::Lower);
        let pipelined = format!("(a') deliveries/s, {WINDOW} messages in flight ({m} messages)");
        row(Figure::Pipelined, pipelined, Better::Higher);
        let cpu = "(a') server CPU per delivery (µs)".to_string();
        row(Figure::PipelinedCpu, cpu, Better::Lower);
        let paced = format!("at {} messages/s for {} s", num(plan.rate), plan.paced_secs);
        let p50 = format!("(b) send to delivery p50 (µs) {paced}");
        row(Figure::P50, p50, Better::Lower);
        let p99 = format!("(b) send to delivery p99 (µs) {paced}");
        row(Figure::P99, p99, Better::Lower);
        if n >= 100 {
            let label = "(c) server memory per idle client (KiB of PSS, children included)";
            row(Figure::IdleKib, label.to_string(), Better::Lower);
        }
    }
    rows
}

/// What the columns of scenario 9 are.
pub const FOOTNOTE: &str =
    "\n⁴ For 9, every size and mode runs on a fresh wspipe, all on one channel of N clients. \
     `--shared cat`: one `cat` for the endpoint; client 0 sends each message, `cat` echoes it \
     and wspipe publishes the line to every client (client 0 too). `--pubsub`: no process; \
     client 0 sends each message on `/bench`, which publishes it to every member (client 0 \
     too). `cat` per connection: the bench writes each message to every client's socket, one \
     after the other, and each client's own `cat` echoes it (N children; each delivery is one \
     message in and one out). (a) sends message k+1 once every client had message k; (a') \
     once at most 256 messages' worth of deliveries are outstanding; both count from the \
     first send until every client had every message. (b) is the time from just before a \
     message was written (per connection: its copy to that client) until the client read it. \
     CPU per delivery is the user + system time of wspipe and its children over the phase \
     divided by the deliveries; (c) is the growth of their PSS from before the first client to \
     all of them connected and probed, per client (per connection: a `cat` each included). \
     Every client must get every message once and in order, or the run fails. The clients \
     run in the bench's process on the same cores as the server.\n";
