//! What the channel (8) and shared-process (9) scenarios have in common:
//! numbered, timestamped 64-byte messages, the subscriber that checks every
//! one of them (once, in order) and times the paced ones, readiness by
//! probe messages, and the percentiles of what the subscribers measured.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::Stream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::client::LINE_LEN;
use crate::fanout::{linger, Event};
use crate::scenarios::{check_failed, next_data, Figures, Metric};
use crate::server::Kind;

/// What probes say (never a numbered message).
pub const PROBE: &str = "probe";

/// Bound on every subscriber having had a probe.
pub const READY_LIMIT: Duration = Duration::from_secs(30);

/// Bound on one phase: publishing and every subscriber receiving.
pub const PHASE_LIMIT: Duration = Duration::from_secs(60);

/// After the last message, how long each subscriber watches for another.
pub const LINGER: Duration = Duration::from_millis(300);

/// The bench's clock: nanoseconds since it was first read.
pub fn sent_now() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Message `seq`, sent at `nanos`: 64 bytes, `SEQ NANOS ` then padding.
pub fn message(seq: usize, nanos: u64) -> String {
    let mut s = format!("{seq:010} {nanos:019} ");
    while s.len() < LINE_LEN {
        s.push('x');
    }
    s
}

/// The sequence number and send time in a message.
fn parse(text: &str) -> Option<(usize, u64)> {
    let mut fields = text.split(' ');
    let seq = fields.next()?.parse().ok()?;
    let nanos = fields.next()?.parse().ok()?;
    (text.len() == LINE_LEN).then_some((seq, nanos))
}

/// The end (exclusive message number) of each phase, from their counts.
pub fn ends(counts: &[usize]) -> Arc<[usize]> {
    counts
        .iter()
        .scan(0, |end, c| {
            *end += c;
            Some(*end)
        })
        .collect()
}

/// Numbered messages read by all subscribers together, for publishers that
/// wait for deliveries (scenario 9 acknowledges a message once every client
/// had it); and whether a subscriber failed, so such a wait ends at once.
#[derive(Default)]
pub struct Progress {
    delivered: AtomicUsize,
    failed: AtomicBool,
    changed: Notify,
}

impl Progress {
    fn delivered_one(&self) {
        self.delivered.fetch_add(1, Ordering::Release);
        self.changed.notify_one();
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// Waits until `count` numbered messages were read in all, a subscriber
    /// failed, or `deadline`.
    pub async fn wait(&self, count: usize, deadline: Instant) -> anyhow::Result<()> {
        loop {
            // Created before the check: a notification in between is kept.
            let changed = self.changed.notified();
            if self.failed.load(Ordering::Acquire) {
                bail!("a subscriber failed");
            }
            let have = self.delivered.load(Ordering::Acquire);
            if have >= count {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline.into(), changed)
                .await
                .is_err()
            {
                bail!("only {have} of {count} deliveries within {PHASE_LIMIT:?}");
            }
        }
    }
}

/// What every subscriber of one run expects, and where it reports.
#[derive(Clone)]
pub struct Feed {
    /// The end of each phase (see [`ends`]).
    pub ends: Arc<[usize]>,
    /// Whether each phase is timed (its latencies are kept).
    pub timed: Arc<[bool]>,
    pub events: mpsc::UnboundedSender<Event>,
    pub progress: Option<Arc<Progress>>,
}

impl Feed {
    fn failed(&self, e: anyhow::Error) {
        if let Some(p) = &self.progress {
            p.fail();
        }
        let _ = self.events.send(Event::Failed(e));
    }
}

/// A subscriber's stream, and what it measured: per phase, the latency of
/// each message of a timed phase (µs).
pub type Finished<S> = (S, Vec<Vec<u32>>);

/// One subscriber: a probe first (then it is a member), every message of
/// every phase, checked; then a watch for an extra message.
pub async fn subscriber<S>(mut ws: S, index: usize, feed: Feed) -> anyhow::Result<Finished<S>>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut latencies = vec![Vec::new(); feed.ends.len()];
    // The first probe: a member now. Later ones (sent until every
    // subscriber had one) are skipped below.
    match next_data(&mut ws, READY_LIMIT).await {
        Ok(Message::Text(t)) if t.as_str() == PROBE => {
            let _ = feed.events.send(Event::Joined);
        }
        Ok(other) => {
            let e = check_failed(format!("subscriber {index}: {other:?} before any probe"));
            feed.failed(e);
            bail!("subscriber {index} failed (reported)");
        }
        Err(e) => {
            feed.failed(e.context(format!("subscriber {index}")));
            bail!("subscriber {index} failed (reported)");
        }
    }
    let mut next = 0;
    for (phase, &end) in feed.ends.iter().enumerate() {
        let timed = feed.timed[phase];
        if timed {
            latencies[phase].reserve(end - next);
        }
        while next < end {
            let got = match next_data(&mut ws, PHASE_LIMIT).await {
                Ok(Message::Text(t)) if next == 0 && t.as_str() == PROBE => continue,
                got => got.and_then(|msg| expect(&msg, next, index)),
            };
            match got {
                Ok(sent) if timed => {
                    let us = sent_now().saturating_sub(sent) / 1000;
                    latencies[phase].push(us.min(u32::MAX as u64) as u32);
                }
                Ok(_) => {}
                Err(e) => {
                    feed.failed(e.context(format!("subscriber {index}, after {next} messages")));
                    bail!("subscriber {index} failed (reported)");
                }
            }
            if let Some(p) = &feed.progress {
                p.delivered_one();
            }
            next += 1;
        }
        let at = Instant::now();
        let _ = feed.events.send(Event::Done { phase, at });
    }
    linger(&mut ws, index, LINGER).await?;
    Ok((ws, latencies))
}

/// Message number `seq` must be next; its send time.
fn expect(msg: &Message, seq: usize, index: usize) -> anyhow::Result<u64> {
    let Message::Text(t) = msg else {
        return Err(check_failed(format!(
            "subscriber {index}: message #{seq}: expected text, got {msg:?}"
        )));
    };
    match parse(t.as_str()) {
        Some((got, sent)) if got == seq => Ok(sent),
        _ => Err(check_failed(format!(
            "subscriber {index}: message #{seq} expected, got {:?}",
            t.as_str()
        ))),
    }
}

/// Readiness by probes: the caller sends a probe, then [`Joining::round`]
/// counts the subscribers that had their first one, until all `n` did
/// (bounded by [`READY_LIMIT`]).
pub struct Joining {
    joined: usize,
    n: usize,
    deadline: Instant,
}

impl Joining {
    pub fn new(n: usize) -> Joining {
        let deadline = Instant::now() + READY_LIMIT;
        Joining {
            joined: 0,
            n,
            deadline,
        }
    }

    /// Counts joins for 100 ms (a probe's round): true once every
    /// subscriber joined; fails on a subscriber's failure or at the
    /// deadline.
    pub async fn round(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<Event>,
    ) -> anyhow::Result<bool> {
        let until = tokio::time::Instant::now() + Duration::from_millis(100);
        while self.joined < self.n {
            match tokio::time::timeout_at(until, events.recv()).await {
                Err(_) => break,
                Ok(None) => bail!("the subscribers ended early"),
                Ok(Some(Event::Joined)) => self.joined += 1,
                Ok(Some(Event::Failed(e))) => return Err(e),
                Ok(Some(Event::Done { .. })) => bail!("a subscriber finished before the start"),
            }
        }
        let (joined, n) = (self.joined, self.n);
        if joined < n && Instant::now() >= self.deadline {
            bail!("only {joined} of {n} subscribers had a probe after {READY_LIMIT:?}");
        }
        Ok(joined == n)
    }
}

/// A fixed send rate: message `k` of a phase is due `k / rate` seconds
/// after it started; how late the sender fell, at worst.
pub struct Pacer {
    start: Instant,
    rate: f64,
    late: Duration,
}

impl Pacer {
    pub fn new(rate: f64) -> Pacer {
        Pacer {
            start: Instant::now(),
            rate,
            late: Duration::ZERO,
        }
    }

    /// Sleeps until message `k` is due (or notes how late it is).
    pub async fn wait(&mut self, k: usize) {
        let due = self.start + Duration::from_secs_f64(k as f64 / self.rate);
        let now = Instant::now();
        match due.checked_duration_since(now) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => self.late = self.late.max(now - due),
        }
    }

    /// A note if `who` could not keep the rate. A scheduling hiccup is not
    /// worth one; a sender that cannot keep up is.
    pub fn note(&self, who: &str) -> Option<String> {
        let slack = Duration::from_secs_f64(1.0 / self.rate).max(Duration::from_millis(10));
        (self.late > slack).then(|| {
            format!(
                "{who} fell {:.1} ms behind its {} messages/s",
                self.late.as_secs_f64() * 1e3,
                self.rate
            )
        })
    }
}

/// The first failure a subscriber reported, if any is waiting: the real
/// cause when a publisher gave up because one failed.
pub fn reported_failure(events: &mut mpsc::UnboundedReceiver<Event>) -> Option<anyhow::Error> {
    while let Ok(event) = events.try_recv() {
        if let Event::Failed(e) = event {
            return Some(e);
        }
    }
    None
}

/// Waits (bounded) for every subscriber to finish: their streams, and the
/// latencies of each of `phases` phases over all of them.
pub async fn join_subscribers<S: 'static>(
    subscribers: &mut JoinSet<anyhow::Result<Finished<S>>>,
    phases: usize,
) -> anyhow::Result<(Vec<S>, Vec<Vec<u32>>)> {
    let finished = join_all(subscribers).await?;
    let mut streams = Vec::with_capacity(finished.len());
    let mut latencies: Vec<Vec<u32>> = vec![Vec::new(); phases];
    for (ws, lat) in finished {
        streams.push(ws);
        for (phase, l) in lat.into_iter().enumerate() {
            latencies[phase].extend(l);
        }
    }
    Ok((streams, latencies))
}

/// What every subscriber returned, once each has watched [`LINGER`] for an
/// extra message (bounded); the first failure otherwise.
pub async fn join_all<T: 'static>(
    subscribers: &mut JoinSet<anyhow::Result<T>>,
) -> anyhow::Result<Vec<T>> {
    let mut all = Vec::with_capacity(subscribers.len());
    let deadline = tokio::time::Instant::now() + LINGER + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, subscribers.join_next()).await {
            Err(_) => bail!("subscribers did not finish"),
            Ok(None) => return Ok(all),
            Ok(Some(Err(e))) => bail!("subscriber task: {e}"),
            Ok(Some(Ok(Err(e)))) => return Err(e),
            Ok(Some(Ok(Ok(t)))) => all.push(t),
        }
    }
}

/// p50 and p99 of `l` (sorted in place); none if it is empty.
pub fn p50_p99(l: &mut [u32]) -> Option<(f64, f64)> {
    if l.is_empty() {
        return None;
    }
    l.sort_unstable();
    let at = |q: f64| l[((l.len() - 1) as f64 * q).round() as usize] as f64;
    Some((at(0.50), at(0.99)))
}

/// Figures per report column.
pub type Columns = Vec<(Kind, Figures)>;

/// Adds one figure to `kind`'s column.
pub fn push(columns: &mut Columns, kind: Kind, metric: Metric, value: f64) {
    match columns.iter_mut().find(|(k, _)| *k == kind) {
        Some((_, figures)) => figures.push((metric, value)),
        None => columns.push((kind, vec![(metric, value)])),
    }
}

/// Opens `need` descriptors' worth of headroom, or says why not.
pub fn check_nofile(what: &str, need: u64) -> anyhow::Result<()> {
    let have = crate::sys::nofile_soft();
    if have < need {
        bail!("{what} need an open files limit of about {need}; it is {have}");
    }
    Ok(())
}

/// Server user + system CPU time (its process tree) since `before`, per
/// delivery, in µs.
pub fn cpu_per(pid: u32, before: Option<Duration>, deliveries: f64) -> Option<f64> {
    let after = crate::sys::tree_cpu_time(pid)?;
    Some(after.saturating_sub(before?).as_secs_f64() * 1e6 / deliveries)
}

/// The memory the server tree grew by, per client.
pub fn per_client_kib(pid: u32, before: u64, n: usize) -> anyhow::Result<f64> {
    let after = crate::sys::tree_pss_kib(pid).context("server memory")?;
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = message(42, 1_234_567_890);
        assert_eq!(m.len(), LINE_LEN);
        assert_eq!(parse(&m), Some((42, 1_234_567_890)));
        assert_eq!(parse("42 17"), None);
        assert_eq!(parse(&m.replace("0042", "00x2")), None);
    }

    #[test]
    fn ends_accumulate() {
        assert_eq!(&*ends(&[3, 0, 2]), &[3, 3, 5]);
    }

    #[test]
    fn percentiles_of_what_was_measured() {
        let mut l: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(p50_p99(&mut l), Some((51.0, 99.0)));
        assert_eq!(p50_p99(&mut []), None);
    }

    /// The verdict of a subscriber expecting messages 0..`expect` (one
    /// phase) on a connection that delivers a probe, then `seqs`, then
    /// stays open and quiet.
    async fn judge(seqs: &[usize], expect: usize) -> anyhow::Result<()> {
        use futures_util::stream::{self, StreamExt};
        let text = |t: String| Ok(Message::Text(t.into()));
        let msgs: Vec<Result<Message, WsError>> = std::iter::once(text(PROBE.into()))
            .chain(seqs.iter().map(|&s| text(message(s, sent_now()))))
            .collect();
        let ws = stream::iter(msgs).chain(stream::pending());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let progress = Arc::new(Progress::default());
        let feed = Feed {
            ends: ends(&[expect]),
            timed: Arc::from(vec![true]),
            events: tx,
            progress: Some(progress.clone()),
        };
        let verdict = subscriber(Box::pin(ws), 0, feed).await.map(drop);
        if verdict.is_ok() {
            assert_eq!(progress.delivered.load(Ordering::Acquire), expect);
        }
        match reported_failure(&mut rx) {
            Some(e) => Err(e),
            None => verdict,
        }
    }

    fn is_check_failure(r: anyhow::Result<()>) -> bool {
        r.err()
            .is_some_and(|e| e.downcast_ref::<crate::scenarios::CheckFailed>().is_some())
    }

    #[tokio::test]
    async fn subscribers_fail_loudly() {
        judge(&[0, 1, 2], 3).await.unwrap();
        // Missing, out of order, duplicated, one too many.
        assert!(is_check_failure(judge(&[0, 2], 3).await));
        assert!(is_check_failure(judge(&[1, 0, 2], 3).await));
        assert!(is_check_failure(judge(&[0, 0, 1, 2], 3).await));
        assert!(is_check_failure(judge(&[0, 1, 2, 2], 3).await));
    }

    #[tokio::test]
    async fn progress_ends_on_failure() {
        let p = Progress::default();
        p.delivered_one();
        let soon = Instant::now() + Duration::from_millis(50);
        p.wait(1, soon).await.unwrap();
        assert!(p.wait(2, soon).await.is_err());
        p.fail();
        let later = Instant::now() + Duration::from_secs(10);
        assert!(p.wait(2, later).await.is_err());
    }
}
