//! Scenario 8, channels: one publisher, N subscribers of one channel, no
//! process per client: `wspipe --pubsub` against nginx's nchan module.
//!
//! For each size, a fresh server; N WebSocket subscribers join the channel
//! and stay idle while the server's memory is read (PSS of the server and
//! its children, before and after, per subscriber); then numbered 64-byte
//! messages go out in phases:
//!
//! - (a) acknowledged: each publish sent once the previous one was answered
//!   (HTTP POST on one keep-alive connection, both servers; wspipe also
//!   through its control socket). Deliveries/s = N × messages / time from
//!   the first publish until every subscriber had every message.
//! - (a') pipelined (wspipe's control socket): up to [`WINDOW`] publishes in
//!   flight on one connection, as `wspipe ctl publish CHANNEL -` does.
//! - (b) paced: a fixed publish rate; each message carries the time it was
//!   sent, and every subscriber records publish-to-delivery latency.
//!
//! Every subscriber must get every message exactly once and in order;
//! anything else fails the run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::control::{Control, Send};
use crate::fanout::{connect_all, wait_phase, Event};
use crate::feed::{self, message, sent_now, Columns, Feed, PHASE_LIMIT, PROBE, READY_LIMIT};
use crate::http_publish::HttpPublisher;
use crate::nchan;
use crate::scenarios::{check_failed, close, Metric};
use crate::server::{self, Kind, Programs, Server, Spec};
use crate::sys;

/// The channel on wspipe (a client on `/bench` joins `/bench`).
pub(crate) const CHANNEL: &str = "/bench";

/// Pipelined publishes in flight at once.
pub const WINDOW: usize = 256;

/// Bound on closing the subscribers.
const CLOSE_LIMIT: Duration = Duration::from_secs(30);

/// Fastest paced rate (messages/s), whatever the size.
const MAX_RATE: f64 = 1000.0;

/// What the channel figures are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Figure {
    /// (a): deliveries/s, each publish acknowledged before the next.
    Acked,
    /// (a'): deliveries/s, [`WINDOW`] publishes in flight.
    Pipelined,
    /// (a) and (a'): server CPU per delivery, µs.
    AckedCpu,
    PipelinedCpu,
    /// (b): publish-to-delivery latency, µs.
    P50,
    P99,
    /// Server memory per idle subscriber, KiB.
    IdleKib,
}

/// The counts for one size.
#[derive(Debug, Clone)]
pub struct Plan {
    pub subscribers: usize,
    /// (a) and (a'): messages per phase.
    pub messages: usize,
    /// (b): messages/s, and for how long.
    pub rate: f64,
    pub paced_secs: f64,
    /// Handshakes in flight while connecting.
    pub parallel: usize,
}

impl Plan {
    /// `deliveries` per acknowledged phase and `paced` deliveries/s, spread
    /// over `n` subscribers (at least 20 messages, at most 20,000; at most
    /// [`MAX_RATE`] messages/s).
    pub fn new(n: usize, deliveries: usize, paced: f64, secs: f64, parallel: usize) -> Plan {
        Plan {
            subscribers: n,
            messages: (deliveries / n.max(1)).clamp(20, 20_000),
            rate: (paced / n.max(1) as f64).clamp(1.0, MAX_RATE),
            paced_secs: secs,
            parallel,
        }
    }

    pub fn paced_count(&self) -> usize {
        (self.rate * self.paced_secs).ceil().max(1.0) as usize
    }
}

/// How one phase publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AckedHttp,
    AckedControl,
    PipelinedControl,
    PacedHttp,
    PacedControl,
}

impl Phase {
    /// The report column and figure of this phase.
    fn column(self, server: Kind) -> Kind {
        match self {
            Phase::AckedHttp | Phase::PacedHttp => server,
            _ => Kind::WspipeControl,
        }
    }

    fn paced(self) -> bool {
        matches!(self, Phase::PacedHttp | Phase::PacedControl)
    }
}

/// Figures per report column, and notes.
pub type Outcome = (Columns, Vec<String>);

/// One size against one server: starts it (in `scratch`), runs every
/// phase, stops it.
pub async fn run(
    kind: Kind,
    programs: &Programs,
    plan: &Plan,
    scratch: &Path,
) -> Result<Outcome, (anyhow::Error, String)> {
    let publish_port = server::free_port().map_err(|e| (e, String::new()))?;
    let socket = scratch.join("control.sock");
    let server = match kind {
        Kind::Wspipe => {
            let spec = Spec {
                control: Some(socket.clone()),
                args: vec![
                    "--pubsub".into(),
                    "--publish".into(),
                    format!("127.0.0.1:{publish_port}"),
                ],
                ..Spec::text(&[])
            };
            Server::start(kind, programs, &spec).await
        }
        Kind::Nchan => match &programs.nginx {
            Some(nginx) => nchan::start(nginx, scratch).await,
            None => Err(anyhow!("no nginx (scripts/bench.sh installs it)")),
        },
        other => Err(anyhow!("{} has no channels", other.name())),
    }
    .map_err(|e| (e, String::new()))?;
    let target = Target {
        kind,
        ws_path: match kind {
            Kind::Nchan => nchan::SUBSCRIBE_PATH,
            _ => CHANNEL,
        },
        publish_path: match kind {
            Kind::Nchan => nchan::PUBLISH_PATH,
            _ => CHANNEL,
        },
        publish_port: match kind {
            Kind::Nchan => server.port,
            _ => publish_port,
        },
        control: (kind == Kind::Wspipe).then_some(socket),
    };
    let outcome = measure(&server, &target, plan).await;
    let tail = server.log_tail();
    server.stop().await;
    outcome.map_err(|e| {
        let lines: Vec<&str> = tail.lines().collect();
        (e, lines[lines.len().saturating_sub(5)..].join("\n    "))
    })
}

/// Where one server takes subscribers and publishes.
struct Target {
    kind: Kind,
    ws_path: &'static str,
    publish_path: &'static str,
    publish_port: u16,
    /// wspipe's control socket.
    control: Option<std::path::PathBuf>,
}

/// The publishers of one run.
struct Publishers {
    http: HttpPublisher,
    control: Option<Control>,
}

async fn measure(server: &Server, target: &Target, plan: &Plan) -> anyhow::Result<Outcome> {
    let n = plan.subscribers;
    let pid = server.pid().context("no server process")?;
    feed::check_nofile(&format!("{n} subscribers"), n as u64 + 100)?;
    let mut publishers = Publishers {
        http: connect_http(target.publish_port).await?,
        control: match &target.control {
            Some(socket) => Some(Control::connect(socket).await?),
            None => None,
        },
    };
    let before = sys::tree_pss_kib(pid).context("server memory")?;
    let conns = connect_all(server.port, target.ws_path, n, plan.parallel).await?;

    let phases: &[Phase] = match target.kind {
        Kind::Nchan => &[Phase::AckedHttp, Phase::PacedHttp],
        _ => &[
            Phase::AckedHttp,
            Phase::AckedControl,
            Phase::PipelinedControl,
            Phase::PacedHttp,
            Phase::PacedControl,
        ],
    };
    let counts: Vec<usize> = phases
        .iter()
        .map(|p| match p.paced() {
            true => plan.paced_count(),
            false => plan.messages,
        })
        .collect();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let feed = Feed {
        ends: feed::ends(&counts),
        timed: phases.iter().map(|p| p.paced()).collect(),
        events: events_tx,
        progress: None,
    };
    let mut subscribers = JoinSet::new();
    for (index, ws) in conns.into_iter().enumerate() {
        subscribers.spawn(feed::subscriber(ws, index, feed.clone()));
    }
    drop(feed);
    if target.kind == Kind::Wspipe {
        let control = publishers.control.as_mut().context("no control socket")?;
        wait_members(control, CHANNEL, n).await?;
    }
    let counted = probe_until_joined(&mut publishers, target, &mut events, n).await?;
    let idle = feed::per_client_kib(pid, before, n)?;

    let mut columns: Columns = Vec::new();
    let mut notes = Vec::new();
    if counted != Some(n as u64) {
        notes.push(format!(
            "{n} subscribers all had a probe, but the publish answer counted {counted:?}"
        ));
    }
    let mut first = 0;
    for (i, (&phase, &count)) in phases.iter().zip(&counts).enumerate() {
        let start = Instant::now();
        let cpu_before = sys::tree_cpu_time(pid);
        let deadline = start + PHASE_LIMIT;
        let seqs = first..first + count;
        let lag = publish(&mut publishers, target, phase, plan, seqs, deadline).await?;
        if let Some(lag) = lag {
            notes.push(lag);
        }
        let done = wait_phase(&mut events, i, n, deadline).await?;
        if !phase.paced() {
            let deliveries = (n * count) as f64;
            let rate = deliveries / done.duration_since(start).as_secs_f64();
            let (figure, cpu) = match phase {
                Phase::PipelinedControl => (Figure::Pipelined, Figure::PipelinedCpu),
                _ => (Figure::Acked, Figure::AckedCpu),
            };
            let column = phase.column(target.kind);
            push(&mut columns, column, figure, n, rate);
            if let Some(us) = feed::cpu_per(pid, cpu_before, deliveries) {
                push(&mut columns, column, cpu, n, us);
            }
        }
        first += count;
    }
    if n >= 100 {
        push(&mut columns, target.kind, Figure::IdleKib, n, idle);
    }

    let (conns, mut latencies) = feed::join_subscribers(&mut subscribers, phases.len()).await?;
    for (i, &phase) in phases.iter().enumerate() {
        let Some((p50, p99)) = feed::p50_p99(&mut latencies[i]).filter(|_| phase.paced()) else {
            continue;
        };
        let column = phase.column(target.kind);
        push(&mut columns, column, Figure::P50, n, p50);
        push(&mut columns, column, Figure::P99, n, p99);
    }
    drop(publishers);
    close_all(conns).await;
    Ok((columns, notes))
}

fn push(columns: &mut Columns, kind: Kind, figure: Figure, n: usize, value: f64) {
    feed::push(columns, kind, Metric::Channel(figure, n as u32), value);
}

/// Closes every connection, each with a close handshake, all within
/// [`CLOSE_LIMIT`].
pub(crate) async fn close_all(conns: Vec<crate::client::Ws>) {
    let mut closing = JoinSet::new();
    for ws in conns {
        closing.spawn(close(ws));
    }
    let _ = tokio::time::timeout(CLOSE_LIMIT, async {
        while closing.join_next().await.is_some() {}
    })
    .await;
    closing.abort_all();
}

/// The HTTP publisher, waiting (bounded) for the port: wspipe binds its
/// publish listener next to the WebSocket one.
async fn connect_http(port: u16) -> anyhow::Result<HttpPublisher> {
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        match HttpPublisher::connect(port).await {
            Ok(p) => return Ok(p),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits until wspipe counts `n` members of `channel` (`channels` on the
/// control socket): then every publish must reach all of them. With
/// `--redis`, the members of this instance (what its publish answers count).
pub(crate) async fn wait_members(
    control: &mut Control,
    channel: &str,
    n: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        let members = control.members(channel).await?;
        if members == n as u64 {
            return Ok(());
        }
        if members > n as u64 {
            bail!("the server counts {members} subscribers, the bench opened {n}");
        }
        if Instant::now() >= deadline {
            bail!("only {members} of {n} subscribers counted after {READY_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes probes (over HTTP) until every subscriber has had one: then
/// each is a member, whatever the server counts. (nchan's own count is
/// not always right: with two workers it sometimes leaves out one
/// worker's subscribers for good.) What the last probe's answer counted.
async fn probe_until_joined(
    p: &mut Publishers,
    target: &Target,
    events: &mut mpsc::UnboundedReceiver<Event>,
    n: usize,
) -> anyhow::Result<Option<u64>> {
    let mut joining = feed::Joining::new(n);
    loop {
        let answer = p.http.publish(target.publish_path, PROBE).await?;
        if joining.round(events).await? {
            return Ok(answer.reached);
        }
    }
}

/// Publishes messages `seqs` the way `phase` does; a note if the paced
/// publisher could not keep its rate.
async fn publish(
    p: &mut Publishers,
    target: &Target,
    phase: Phase,
    plan: &Plan,
    seqs: std::ops::Range<usize>,
    deadline: Instant,
) -> anyhow::Result<Option<String>> {
    let n = plan.subscribers;
    let mut pacer = feed::Pacer::new(plan.rate);
    if phase == Phase::PipelinedControl {
        let control = p.control.as_mut().context("no control socket")?;
        let first = seqs.start;
        let batch: Vec<String> = seqs.map(|s| message(s, sent_now())).collect();
        for (k, chunk) in batch.chunks(WINDOW).enumerate() {
            let seq = first + k * WINDOW;
            control
                .pipelined(Send::Publish(CHANNEL), chunk, seq, n, deadline)
                .await?;
        }
        return Ok(None);
    }
    for (k, seq) in seqs.enumerate() {
        if phase.paced() {
            pacer.wait(k).await;
        }
        if Instant::now() >= deadline {
            bail!("publishing took longer than {PHASE_LIMIT:?}");
        }
        let msg = message(seq, sent_now());
        match phase {
            Phase::AckedHttp | Phase::PacedHttp => {
                let answer = p.http.publish(target.publish_path, &msg).await?;
                // wspipe counts the subscribers it delivered to: every one.
                // (nchan's count is not reliable, see probe_until_joined;
                // its subscribers' checks are what counts.)
                if target.kind == Kind::Wspipe && answer.reached != Some(n as u64) {
                    return Err(check_failed(format!(
                        "publish #{seq}: the answer counts {:?} subscribers of {n}: {}",
                        answer.reached,
                        answer.body.trim()
                    )));
                }
            }
            _ => {
                let control = p.control.as_mut().context("no control socket")?;
                control
                    .send(Send::Publish(CHANNEL), &msg, seq, n, deadline)
                    .await?;
            }
        }
    }
    Ok(pacer.note(&format!("{n} subscribers, {phase:?}: the publisher")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_spread_the_deliveries() {
        let p = Plan::new(1000, 500_000, 100_000.0, 3.0, 256);
        assert_eq!((p.messages, p.rate, p.paced_count()), (500, 100.0, 300));
        let p = Plan::new(1, 500_000, 100_000.0, 3.0, 256);
        assert_eq!((p.messages, p.rate), (20_000, MAX_RATE));
        let p = Plan::new(10_000, 500_000, 100_000.0, 0.5, 256);
        assert_eq!((p.messages, p.rate, p.paced_count()), (50, 10.0, 5));
    }
}
