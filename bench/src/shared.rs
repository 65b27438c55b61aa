//! Scenario 9, shared process: N clients, each message reaching all of
//! them, three ways, each on a fresh wspipe:
//!
//! - `wspipe --shared cat`: one `cat` for every client. Client 0 sends the
//!   message, `cat` echoes it, and the line goes to every client (the
//!   sender too) through the endpoint's channel.
//! - `wspipe --pubsub`: no process. Client 0 sends the message on the
//!   channel endpoint, which publishes it to every member (the sender too):
//!   the same shape without the child.
//! - `wspipe cat`: a `cat` per client. The bench writes the message to
//!   every client's socket and each `cat` echoes its own copy: N children,
//!   N inputs for N deliveries.
//!
//! Phases, the same for all three: (a) acknowledged, message k+1 sent once
//! every client had message k; (a') pipelined, message k sent once at most
//! [`WINDOW`] messages' worth of deliveries are outstanding; (b) paced, a
//! fixed rate, each message stamped with its send time. Before them, the
//! server tree's memory per idle client (PSS, after a probe reached every
//! client). Every client must get every message once and in order.

use std::time::Instant;

use anyhow::{bail, Context};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::channels::{close_all, Figure, Outcome, Plan};
use crate::client::Ws;
use crate::fanout::{connect_all, wait_phase, Event};
use crate::feed::{self, message, sent_now, Columns, Feed, Joining, Pacer, Progress};
use crate::feed::{PHASE_LIMIT, PROBE};
use crate::scenarios::Metric;
use crate::server::{Kind, Programs, Server, Spec};
use crate::sys;

/// Messages in flight in the pipelined phase (as scenario 8's).
pub const WINDOW: usize = crate::channels::WINDOW;

/// The modes, in the order of the first run.
pub const MODES: [Kind; 3] = [Kind::Shared, Kind::Pubsub, Kind::PerConnection];

/// How one phase sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Acked,
    Pipelined,
    Paced,
}

const PHASES: [Phase; 3] = [Phase::Acked, Phase::Pipelined, Phase::Paced];

/// What wspipe runs for `mode`, and the path its clients take.
fn spec(mode: Kind) -> anyhow::Result<(Spec, &'static str)> {
    match mode {
        Kind::Shared => Ok((
            Spec {
                args: vec!["--shared".into()],
                ..Spec::text(&["cat"])
            },
            "/",
        )),
        Kind::Pubsub => Ok((
            Spec {
                args: vec!["--pubsub".into()],
                ..Spec::text(&[])
            },
            "/bench",
        )),
        Kind::PerConnection => Ok((Spec::text(&["cat"]), "/")),
        other => bail!("{} is not a mode of scenario 9", other.name()),
    }
}

/// One size in one mode: starts wspipe, measures, stops it.
pub async fn run(
    mode: Kind,
    programs: &Programs,
    plan: &Plan,
) -> Result<Outcome, (anyhow::Error, String)> {
    let (spec, path) = spec(mode).map_err(|e| (e, String::new()))?;
    let server = Server::start(Kind::Wspipe, programs, &spec)
        .await
        .map_err(|e| (e, String::new()))?;
    let outcome = measure(&server, mode, path, plan).await;
    let tail = server.log_tail();
    server.stop().await;
    outcome.map_err(|e| {
        let lines: Vec<&str> = tail.lines().collect();
        (e, lines[lines.len().saturating_sub(5)..].join("\n    "))
    })
}

type Sink = SplitSink<Ws, Message>;
type Reader = SplitStream<Ws>;

/// Who writes the messages: client 0 (a shared process, a channel), or
/// every client (a process each).
struct Sender {
    sinks: Vec<Sink>,
    every_client: bool,
}

impl Sender {
    /// Message `seq`, stamped with the time just before each write.
    async fn send(&mut self, seq: usize) -> anyhow::Result<()> {
        self.write(|| message(seq, sent_now())).await
    }

    async fn write(&mut self, text: impl Fn() -> String) -> anyhow::Result<()> {
        let count = if self.every_client {
            self.sinks.len()
        } else {
            1
        };
        for (i, sink) in self.sinks.iter_mut().take(count).enumerate() {
            let msg = Message::Text(text().into());
            sink.send(msg)
                .await
                .with_context(|| format!("client {i}: send"))?;
        }
        Ok(())
    }
}

/// Figures of one size in one mode.
async fn measure(server: &Server, mode: Kind, path: &str, plan: &Plan) -> anyhow::Result<Outcome> {
    let n = plan.subscribers;
    let pid = server.pid().context("no server process")?;
    // The bench's socket per client; per connection, the server's socket
    // and three pipes per child.
    feed::check_nofile(&format!("{n} clients"), 5 * n as u64 + 100)?;
    let before = sys::tree_pss_kib(pid).context("server memory")?;
    let conns = connect_all(server.port, path, n, plan.parallel).await?;
    let counts: Vec<usize> = PHASES
        .iter()
        .map(|&p| match p {
            Phase::Paced => plan.paced_count(),
            _ => plan.messages,
        })
        .collect();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let progress = Arc::new(Progress::default());
    let feed = Feed {
        ends: feed::ends(&counts),
        timed: PHASES.iter().map(|&p| p == Phase::Paced).collect(),
        events: events_tx,
        progress: Some(progress.clone()),
    };
    let mut sinks = Vec::with_capacity(n);
    let mut subscribers = JoinSet::new();
    for (index, ws) in conns.into_iter().enumerate() {
        let (sink, reader) = ws.split();
        sinks.push(sink);
        subscribers.spawn(feed::subscriber(reader, index, feed.clone()));
    }
    drop(feed);
    let every_client = mode == Kind::PerConnection;
    let mut sender = Sender {
        sinks,
        every_client,
    };
    probe_until_joined(&mut sender, &mut events, n).await?;
    let idle = feed::per_client_kib(pid, before, n)?;

    let mut columns: Columns = Vec::new();
    let mut notes = Vec::new();
    let mut first = 0;
    for (i, (&phase, &count)) in PHASES.iter().zip(&counts).enumerate() {
        let start = Instant::now();
        let cpu_before = sys::tree_cpu_time(pid);
        let deadline = start + PHASE_LIMIT;
        let seqs = first..first + count;
        let sent = drive(&mut sender, &progress, phase, plan, seqs, deadline).await;
        match sent {
            Err(e) => return Err(feed::reported_failure(&mut events).unwrap_or(e)),
            Ok(Some(note)) => notes.push(note),
            Ok(None) => {}
        }
        let done = wait_phase(&mut events, i, n, deadline).await?;
        if phase != Phase::Paced {
            let deliveries = (n * count) as f64;
            let rate = deliveries / done.duration_since(start).as_secs_f64();
            let (figure, cpu) = match phase {
                Phase::Pipelined => (Figure::Pipelined, Figure::PipelinedCpu),
                _ => (Figure::Acked, Figure::AckedCpu),
            };
            push(&mut columns, mode, figure, n, rate);
            if let Some(us) = feed::cpu_per(pid, cpu_before, deliveries) {
                push(&mut columns, mode, cpu, n, us);
            }
        }
        first += count;
    }
    if n >= 100 {
        push(&mut columns, mode, Figure::IdleKib, n, idle);
    }
    let (readers, mut latencies) = feed::join_subscribers(&mut subscribers, PHASES.len()).await?;
    let paced = PHASES.len() - 1;
    if let Some((p50, p99)) = feed::p50_p99(&mut latencies[paced]) {
        push(&mut columns, mode, Figure::P50, n, p50);
        push(&mut columns, mode, Figure::P99, n, p99);
    }
    close_all(reunite(readers, sender.sinks)?).await;
    Ok((columns, notes))
}

fn push(columns: &mut Columns, mode: Kind, figure: Figure, n: usize, value: f64) {
    feed::push(columns, mode, Metric::Shared(figure, n as u32), value);
}

/// Sends probes until every client has had one (each is then a member of
/// the endpoint's channel, or has its child).
async fn probe_until_joined(
    sender: &mut Sender,
    events: &mut mpsc::UnboundedReceiver<Event>,
    n: usize,
) -> anyhow::Result<()> {
    let mut joining = Joining::new(n);
    loop {
        sender.write(|| PROBE.to_string()).await?;
        if joining.round(events).await? {
            return Ok(());
        }
    }
}

/// Sends messages `seqs` the way `phase` does (the deliveries of every
/// earlier message are in: the phases run one after the other); a note if
/// the paced sender could not keep its rate.
async fn drive(
    sender: &mut Sender,
    progress: &Progress,
    phase: Phase,
    plan: &Plan,
    seqs: std::ops::Range<usize>,
    deadline: Instant,
) -> anyhow::Result<Option<String>> {
    let n = plan.subscribers;
    let mut pacer = Pacer::new(plan.rate);
    for (k, seq) in seqs.enumerate() {
        match phase {
            // Every client has every message before this one.
            Phase::Acked => progress.wait(n * seq, deadline).await?,
            // At most WINDOW messages' deliveries outstanding.
            Phase::Pipelined => {
                let want = n * (seq + 1).saturating_sub(WINDOW);
                progress.wait(want, deadline).await?;
            }
            Phase::Paced => pacer.wait(k).await,
        }
        if Instant::now() >= deadline {
            bail!("sending took longer than {PHASE_LIMIT:?}");
        }
        sender.send(seq).await?;
    }
    Ok(pacer.note(&format!("{n} clients, paced: the sender")))
}

/// The connections again, each reader with its own sink (the readers come
/// back in the order they finished), to close them properly.
fn reunite(readers: Vec<Reader>, mut sinks: Vec<Sink>) -> anyhow::Result<Vec<Ws>> {
    let mut conns = Vec::with_capacity(readers.len());
    for reader in readers {
        let i = sinks
            .iter()
            .position(|s| reader.is_pair_of(s))
            .context("a reader without its sink")?;
        let sink = sinks.swap_remove(i);
        conns.push(reader.reunite(sink).context("reunite")?);
    }
    Ok(conns)
}
