//! Scenario 10, scale-out (issue 15): N subscribers of one `--pubsub`
//! channel, spread round-robin over wspipe instances, and one publisher on
//! the first instance, in three configurations, each on fresh servers:
//!
//! - one instance without Redis: the local baseline;
//! - one instance with `--redis`: every publish also goes out to Redis and
//!   comes back to be dropped (the instance knows its own), so this is what
//!   Redis costs an instance that serves everyone itself;
//! - three instances with `--redis` on one Redis: two thirds of the
//!   deliveries cross Redis.
//!
//! Scenario 8's messages and subscribers (feed.rs, channels.rs), in two
//! phases:
//!
//! - (a) windowed: message k is published once at most [`WINDOW`] messages'
//!   deliveries are outstanding, counted where they land, at the
//!   subscribers: a publish answer counts only the publishing instance's
//!   members, so it cannot pace a publisher whose members are elsewhere.
//!   Publishes go through the first instance's control socket in
//!   pipelined chunks of [`CHUNK`].
//! - (b) paced: a fixed publish rate, each message stamped with its send
//!   time; every subscriber records publish-to-delivery latency.
//!
//! Every subscriber must get every message once and in order, every
//! publish answer must count the publishing instance's members, and no
//! instance may count a cross-instance message dropped; anything else fails
//! the run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::channels::{close_all, wait_members, Outcome, Plan, CHANNEL};
use crate::control::{bool_field, number_field, Control, Send};
use crate::fanout::{connect_all, wait_phase};
use crate::feed::{self, message, sent_now, Columns, Feed, Joining, Pacer, Progress};
use crate::feed::{PHASE_LIMIT, PROBE, READY_LIMIT};
use crate::scenarios::{check_failed, Metric};
use crate::server::{Kind, Programs, Server, Spec};
use crate::{redis, sys};

/// The configurations, in the order of the first run.
pub const CONFIGS: [Kind; 3] = [Kind::ScaleLocal, Kind::ScaleRedis1, Kind::ScaleRedis3];

/// Messages' worth of deliveries outstanding at most in the windowed
/// phase (scenario 8's pipelined window).
pub const WINDOW: usize = crate::channels::WINDOW;

/// Publishes written at once in the windowed phase: small against
/// [`WINDOW`], so the window, not the chunk, sets the pace.
pub const CHUNK: usize = 32;

/// What the scale-out figures are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Figure {
    /// (a): deliveries/s with [`WINDOW`] messages outstanding.
    Windowed,
    /// (a): CPU per delivery of every wspipe instance together, µs.
    WindowedCpu,
    /// (a): CPU of redis-server per message published, µs (Redis works
    /// per message: one `PUBLISH` in, one copy out per instance).
    WindowedRedisCpu,
    /// (b): publish-to-delivery latency, µs, over every subscriber.
    P50,
    P99,
    /// (b): the same over the members of the other instances only (what
    /// crossed Redis); none with one instance.
    RemoteP50,
    RemoteP99,
}

/// How many instances `config` runs, and whether on Redis.
fn shape(config: Kind) -> anyhow::Result<(usize, bool)> {
    match config {
        Kind::ScaleLocal => Ok((1, false)),
        Kind::ScaleRedis1 => Ok((1, true)),
        Kind::ScaleRedis3 => Ok((3, true)),
        other => bail!("{} is not a configuration of scenario 10", other.name()),
    }
}

/// One wspipe instance and its control connection.
struct Instance {
    server: Server,
    control: Control,
}

/// What one configuration runs: its instances, and Redis if it has one.
struct Deployment {
    instances: Vec<Instance>,
    redis: Option<Server>,
}

impl Deployment {
    /// Starts Redis (if `config` has it), then the instances, each on it;
    /// everything in `scratch`. What is started before a failure is killed
    /// when dropped.
    async fn start(config: Kind, programs: &Programs, scratch: &Path) -> anyhow::Result<Self> {
        let (count, with_redis) = shape(config)?;
        let redis = match with_redis {
            false => None,
            true => {
                let bin = programs
                    .redis
                    .as_ref()
                    .context("no redis-server (scripts/bench.sh installs it)")?;
                Some(redis::start(bin, scratch).await.context("redis-server")?)
            }
        };
        let mut instances = Vec::with_capacity(count);
        for i in 0..count {
            let socket = scratch.join(format!("control-{i}.sock"));
            let mut args = vec!["--pubsub".to_string()];
            if let Some(r) = &redis {
                args.extend(["--redis".into(), redis::url(r.port)]);
                args.extend(["--instance".into(), format!("bench{i}")]);
            }
            let spec = Spec {
                control: Some(socket.clone()),
                args,
                ..Spec::text(&[])
            };
            let server = Server::start(Kind::Wspipe, programs, &spec)
                .await
                .with_context(|| format!("instance {i}"))?;
            let control = Control::connect(&socket).await?;
            instances.push(Instance { server, control });
        }
        Ok(Deployment { instances, redis })
    }

    fn pids(&self) -> Vec<u32> {
        self.instances
            .iter()
            .filter_map(|i| i.server.pid())
            .collect()
    }

    /// CPU time of every instance together (in clock ticks, as the other
    /// scenarios count), and of Redis (to the nanosecond: it does little).
    fn cpu(&self) -> (Option<Duration>, Option<Duration>) {
        let wspipe: Option<Duration> = self.pids().into_iter().map(sys::tree_cpu_time).sum();
        let redis = self.redis.as_ref().and_then(Server::pid);
        let redis = redis.and_then(sys::cpu_time_precise);
        (wspipe, redis)
    }

    /// The last lines of every log, each named.
    fn tails(&self) -> String {
        let mut lines = Vec::new();
        let named = self.instances.iter().enumerate().map(|(i, inst)| {
            let name = format!("instance {i}");
            (name, inst.server.log_tail())
        });
        let redis_log = self
            .redis
            .iter()
            .map(|r| ("redis".to_string(), r.log_tail()));
        for (name, tail) in named.chain(redis_log) {
            let all: Vec<&str> = tail.lines().collect();
            for line in &all[all.len().saturating_sub(3)..] {
                lines.push(format!("[{name}] {line}"));
            }
        }
        lines.join("\n    ")
    }

    async fn stop(self) {
        for inst in self.instances {
            drop(inst.control);
            inst.server.stop().await;
        }
        if let Some(redis) = self.redis {
            redis.stop().await;
        }
    }
}

/// One configuration: starts it (in `scratch`), measures, stops it.
pub async fn run(
    config: Kind,
    programs: &Programs,
    plan: &Plan,
    scratch: &Path,
) -> Result<Outcome, (anyhow::Error, String)> {
    let mut deployment = Deployment::start(config, programs, scratch)
        .await
        .map_err(|e| (e, String::new()))?;
    let outcome = measure(&mut deployment, config, plan).await;
    let tails = deployment.tails();
    deployment.stop().await;
    outcome.map_err(|e| (e, tails))
}

/// How many of `n` subscribers instance `j` of `k` gets when subscriber
/// `i` goes to instance `i % k`.
fn share(n: usize, k: usize, j: usize) -> usize {
    n / k + usize::from(j < n % k)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Windowed,
    Paced,
}

const PHASES: [Phase; 2] = [Phase::Windowed, Phase::Paced];

async fn measure(d: &mut Deployment, config: Kind, plan: &Plan) -> anyhow::Result<Outcome> {
    let n = plan.subscribers;
    let k = d.instances.len();
    feed::check_nofile(&format!("{n} subscribers"), n as u64 + 100)?;
    if d.redis.is_some() {
        wait_connected(&mut d.instances).await?;
    }
    let counts: Vec<usize> = PHASES
        .iter()
        .map(|&p| match p {
            Phase::Windowed => plan.messages,
            Phase::Paced => plan.paced_count(),
        })
        .collect();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let progress = std::sync::Arc::new(Progress::default());
    let feed = Feed {
        ends: feed::ends(&counts),
        timed: PHASES.iter().map(|&p| p == Phase::Paced).collect(),
        events: events_tx,
        progress: Some(progress.clone()),
    };
    // The publishing instance's members apart from the others', whose
    // messages cross Redis: their latencies are told apart.
    let (mut here, mut elsewhere) = (JoinSet::new(), JoinSet::new());
    for (j, inst) in d.instances.iter_mut().enumerate() {
        let subscribers = if j == 0 { &mut here } else { &mut elsewhere };
        let mine = share(n, k, j);
        let conns = connect_all(inst.server.port, CHANNEL, mine, plan.parallel)
            .await
            .with_context(|| format!("instance {j}"))?;
        for (m, ws) in conns.into_iter().enumerate() {
            subscribers.spawn(feed::subscriber(ws, m * k + j, feed.clone()));
        }
        wait_members(&mut inst.control, CHANNEL, mine)
            .await
            .with_context(|| format!("instance {j}"))?;
    }
    drop(feed);
    // The first instance publishes; its answers count its own members.
    let local = share(n, k, 0);
    let publisher = &mut d.instances[0].control;
    // A probe reaches the other instances' members only once their
    // instance subscribed to the channel in Redis: probes until all had one.
    let mut joining = Joining::new(n);
    loop {
        let deadline = Instant::now() + READY_LIMIT;
        let probe = Send::Publish(CHANNEL);
        publisher.send(probe, PROBE, 0, local, deadline).await?;
        if joining.round(&mut events).await? {
            break;
        }
    }

    let mut columns: Columns = Vec::new();
    let mut notes = Vec::new();
    let mut first = 0;
    for (i, (&phase, &count)) in PHASES.iter().zip(&counts).enumerate() {
        let start = Instant::now();
        let (cpu_before, redis_before) = d.cpu();
        let deadline = start + PHASE_LIMIT;
        let seqs = first..first + count;
        let publisher = &mut d.instances[0].control;
        let sent = match phase {
            Phase::Windowed => windowed(publisher, &progress, seqs, (n, local), deadline)
                .await
                .map(|()| None),
            Phase::Paced => paced(publisher, plan, seqs, local, deadline).await,
        };
        match sent {
            Err(e) => return Err(feed::reported_failure(&mut events).unwrap_or(e)),
            Ok(Some(note)) => notes.push(note),
            Ok(None) => {}
        }
        let done = wait_phase(&mut events, i, n, deadline).await?;
        if phase == Phase::Windowed {
            let deliveries = (n * count) as f64;
            let rate = deliveries / done.duration_since(start).as_secs_f64();
            push(&mut columns, config, Figure::Windowed, rate);
            let (cpu_after, redis_after) = d.cpu();
            if let Some(us) = per_delivery(cpu_before, cpu_after, deliveries) {
                push(&mut columns, config, Figure::WindowedCpu, us);
            }
            if let Some(us) = per_delivery(redis_before, redis_after, count as f64) {
                push(&mut columns, config, Figure::WindowedRedisCpu, us);
            }
        }
        first += count;
    }
    let paced = PHASES.len() - 1;
    let (mut conns, mut all) = feed::join_subscribers(&mut here, PHASES.len()).await?;
    let (others, mut remote) = feed::join_subscribers(&mut elsewhere, PHASES.len()).await?;
    conns.extend(others);
    all[paced].extend_from_slice(&remote[paced]);
    if let Some((p50, p99)) = feed::p50_p99(&mut all[paced]) {
        push(&mut columns, config, Figure::P50, p50);
        push(&mut columns, config, Figure::P99, p99);
    }
    if let Some((p50, p99)) = feed::p50_p99(&mut remote[paced]) {
        push(&mut columns, config, Figure::RemoteP50, p50);
        push(&mut columns, config, Figure::RemoteP99, p99);
    }
    if d.redis.is_some() {
        nothing_dropped(&mut d.instances).await?;
    }
    close_all(conns).await;
    Ok((columns, notes))
}

fn push(columns: &mut Columns, config: Kind, figure: Figure, value: f64) {
    feed::push(columns, config, Metric::ScaleOut(figure), value);
}

/// CPU time between two readings per delivery (or message), µs.
fn per_delivery(before: Option<Duration>, after: Option<Duration>, n: f64) -> Option<f64> {
    Some(after?.saturating_sub(before?).as_secs_f64() * 1e6 / n)
}

/// Waits (bounded) until every instance has its Redis connections up
/// (`redis_connected` in `stats`, as tests/common/redis.rs waits): before
/// that, an instance serves its own members only.
async fn wait_connected(instances: &mut [Instance]) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_LIMIT;
    for (i, inst) in instances.iter_mut().enumerate() {
        loop {
            let stats = inst.control.stats_line().await?;
            if bool_field(&stats, "redis_connected") == Some(true) {
                break;
            }
            if Instant::now() >= deadline {
                bail!("instance {i} not connected to Redis after {READY_LIMIT:?}: {stats}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// No instance lost a cross-instance message (`redis_dropped_total`); the
/// subscribers' checks would catch a loss too, this names where it was.
async fn nothing_dropped(instances: &mut [Instance]) -> anyhow::Result<()> {
    for (i, inst) in instances.iter_mut().enumerate() {
        let stats = inst.control.stats_line().await?;
        match number_field(&stats, "redis_dropped_total") {
            Some(0) => {}
            Some(lost) => {
                return Err(check_failed(format!(
                    "instance {i} counts {lost} cross-instance message(s) dropped"
                )))
            }
            None => bail!("instance {i}: no redis_dropped_total in {stats}"),
        }
    }
    Ok(())
}

/// Publishes messages `seqs` in chunks of [`CHUNK`], each once at most
/// [`WINDOW`] messages' worth of deliveries to all `n` subscribers would be
/// outstanding with it; each answer must count the `local` members.
/// `progress` counts deliveries from message 0 on, so `seqs` must be the
/// first phase.
async fn windowed(
    control: &mut Control,
    progress: &Progress,
    seqs: std::ops::Range<usize>,
    (n, local): (usize, usize),
    deadline: Instant,
) -> anyhow::Result<()> {
    let seqs: Vec<usize> = seqs.collect();
    for chunk in seqs.chunks(CHUNK) {
        let (Some(&first), Some(&last)) = (chunk.first(), chunk.last()) else {
            continue;
        };
        progress
            .wait(n * (last + 1).saturating_sub(WINDOW), deadline)
            .await?;
        let batch: Vec<String> = chunk.iter().map(|&s| message(s, sent_now())).collect();
        control
            .pipelined(Send::Publish(CHANNEL), &batch, first, local, deadline)
            .await?;
    }
    Ok(())
}

/// Publishes messages `seqs` at the plan's rate, one request at a time;
/// a note if the publisher could not keep it.
async fn paced(
    control: &mut Control,
    plan: &Plan,
    seqs: std::ops::Range<usize>,
    local: usize,
    deadline: Instant,
) -> anyhow::Result<Option<String>> {
    let mut pacer = Pacer::new(plan.rate);
    for (k, seq) in seqs.enumerate() {
        pacer.wait(k).await;
        if Instant::now() >= deadline {
            bail!("publishing took longer than {PHASE_LIMIT:?}");
        }
        let msg = message(seq, sent_now());
        control
            .send(Send::Publish(CHANNEL), &msg, seq, local, deadline)
            .await?;
    }
    let n = plan.subscribers;
    Ok(pacer.note(&format!("{n} subscribers, paced: the publisher")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_shares_add_up() {
        assert_eq!(
            (0..3).map(|j| share(1000, 3, j)).collect::<Vec<_>>(),
            [334, 333, 333]
        );
        assert_eq!((0..3).map(|j| share(2, 3, j)).sum::<usize>(), 2);
        assert_eq!(share(1000, 1, 0), 1000);
    }

    #[test]
    fn configurations_have_their_shapes() {
        assert_eq!(shape(Kind::ScaleLocal).ok(), Some((1, false)));
        assert_eq!(shape(Kind::ScaleRedis3).ok(), Some((3, true)));
        assert!(shape(Kind::Wspipe).is_err());
    }
}
