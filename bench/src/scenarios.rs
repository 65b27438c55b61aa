//! The scenarios. Each one talks to one server, is bounded in count and in
//! time (every wait has a deadline; the caller adds a hard limit on the
//! whole run), checks what comes back, and returns its figures.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::client::{self, connect, line, Pattern, Ws};
use crate::server::Server;
use crate::sys;

/// Bound on waiting for any single echo.
const ECHO_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on a close handshake plus the server dropping the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on receiving what is still in flight once sending stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Every figure a scenario can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    LatencyP50,
    LatencyP99,
    LatencyMax,
    LatencyCpu,
    EchoRate,
    EchoCpu,
    ChurnRate,
    ChurnCpu,
    SpawnRateSequential,
    StormConnected,
    StormSeconds,
    StormRssPerConn,
    StormChildren,
    BinaryRate,
    BinaryBigWindow,
    BackpressureGrowth,
    BackpressureDelivered,
    FanOutDeliveries,
    FanOutProducerRate,
    FanOutLag,
    FanOutPipelined,
    FanOutCliRate,
    FanOutChecked,
    /// 8: a channel figure at a number of subscribers.
    Channel(crate::channels::Figure, u32),
    /// 9: a shared-process figure at a number of clients.
    Shared(crate::channels::Figure, u32),
    /// 10: a scale-out figure (one subscriber count per run).
    ScaleOut(crate::scaleout::Figure),
}

pub type Figures = Vec<(Metric, f64)>;

/// A check on the data failed (as opposed to a timeout or a refused
/// connection): the bench must fail loudly.
#[derive(Debug)]
pub struct CheckFailed(pub String);

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CHECK FAILED: {}", self.0)
    }
}

impl std::error::Error for CheckFailed {}

/// The echo stopped coming back while data was still in flight.
#[derive(Debug)]
pub struct Stalled {
    pub echoed: u64,
    pub sent: u64,
    pub after: Duration,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stalled: nothing came back for {:?} with {} of {} bytes echoed",
            self.after, self.echoed, self.sent
        )
    }
}

impl std::error::Error for Stalled {}

pub(crate) fn check_failed(msg: String) -> anyhow::Error {
    anyhow::Error::new(CheckFailed(msg))
}

/// The next data message (pings and pongs skipped), within `limit`.
pub(crate) async fn next_data<S>(stream: &mut S, limit: Duration) -> anyhow::Result<Message>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| anyhow!("no message within {limit:?}"))?;
        match next {
            None => bail!("connection dropped"),
            Some(Err(e)) => return Err(e).context("reading"),
            Some(Ok(Message::Close(frame))) => bail!("server closed: {frame:?}"),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(msg)) => return Ok(msg),
        }
    }
}

/// Sends our close frame and waits (bounded) for the server to finish the
/// handshake and drop the connection (TCP end of file): a session is over
/// for the client only once the server has let go of it.
pub(crate) async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
        let mut buf = [0u8; 256];
        while let Ok(1..) = ws.get_mut().read(&mut buf).await {}
    })
    .await;
}

fn expect_text(msg: &Message, want: &str, index: u64) -> anyhow::Result<()> {
    match msg {
        Message::Text(t) if t.as_str() == want => Ok(()),
        Message::Text(t) => Err(check_failed(format!(
            "echo #{index}: expected {want:?}, got {:?}",
            t.as_str()
        ))),
        other => Err(check_failed(format!(
            "echo #{index}: expected text, got {other:?}"
        ))),
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// 1. One connection, `count` sequential round trips (after a short
///    warm-up): p50, p99 and max in microseconds.
pub async fn latency(server: &Server, count: usize) -> anyhow::Result<Figures> {
    // A small read buffer: tungstenite zero-fills the whole buffer before
    // every read, and its default 128 KiB cost the client ~9 µs per round
    // trip, the same for every server, which flattened the ratios.
    let mut ws = connect(server.port, Some(client::small_config())).await?;
    let warmup = (count / 10).clamp(1, 200);
    let mut samples = Vec::with_capacity(count);
    let mut cpu_before = None;
    for i in 0..(warmup + count) as u64 {
        let msg = line(i);
        let t = Instant::now();
        ws.send(Message::Text(msg.as_str().into())).await?;
        let got = next_data(&mut ws, ECHO_TIMEOUT).await?;
        let dt = t.elapsed();
        expect_text(&got, &msg, i)?;
        if i as usize + 1 == warmup {
            cpu_before = server.cpu_time();
        }
        if i >= warmup as u64 {
            samples.push(dt);
        }
    }
    let cpu_after = server.cpu_time();
    close(ws).await;
    samples.sort();
    let mut figures = vec![
        (Metric::LatencyP50, micros(percentile(&samples, 50.0))),
        (Metric::LatencyP99, micros(percentile(&samples, 99.0))),
        (
            Metric::LatencyMax,
            micros(*samples.last().expect("count > 0")),
        ),
    ];
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        figures.push((
            Metric::LatencyCpu,
            micros(b.saturating_sub(a)) / count as f64,
        ));
    }
    Ok(figures)
}

/// 2. One connection, up to `window` 64-byte messages in flight, for
///    `secs`: echoes per second. Every echo is checked, in order.
pub async fn throughput(server: &Server, secs: f64, window: usize) -> anyhow::Result<Figures> {
    let ws = connect(server.port, None).await?;
    let cpu_before = server.cpu_time();
    let (mut sink, mut stream) = ws.split();
    let credits = Semaphore::new(window);
    let sent = AtomicU64::new(0);
    let writer_done = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);

    let writer = async {
        let mut seq = 0u64;
        while Instant::now() < deadline {
            match tokio::time::timeout_at(deadline.into(), credits.acquire()).await {
                Ok(Ok(permit)) => permit.forget(),
                _ => break,
            }
            sink.feed(Message::Text(line(seq).into())).await?;
            seq += 1;
            // Whatever else the window allows goes out in the same write.
            for _ in 0..63 {
                let Ok(permit) = credits.try_acquire() else {
                    break;
                };
                permit.forget();
                sink.feed(Message::Text(line(seq).into())).await?;
                seq += 1;
            }
            sink.flush().await?;
            sent.store(seq, Ordering::Release);
        }
        writer_done.store(true, Ordering::Release);
        anyhow::Ok(())
    };
    let reader = async {
        let hard = deadline + DRAIN_TIMEOUT;
        let (mut got, mut counted, mut counted_at) = (0u64, 0u64, start);
        loop {
            if writer_done.load(Ordering::Acquire) && got == sent.load(Ordering::Acquire) {
                break;
            }
            if Instant::now() > hard {
                bail!(
                    "only {got} of {} echoes came back",
                    sent.load(Ordering::Acquire)
                );
            }
            // Short waits, so the end of the writer is noticed.
            let Ok(next) = tokio::time::timeout(Duration::from_millis(20), stream.next()).await
            else {
                continue;
            };
            let msg = match next {
                None => bail!("connection dropped after {got} echoes"),
                Some(msg) => msg.context("reading")?,
            };
            match msg {
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Close(f) => bail!("server closed after {got} echoes: {f:?}"),
                msg => expect_text(&msg, &line(got), got)?,
            }
            got += 1;
            credits.add_permits(1);
            let now = Instant::now();
            if now <= deadline {
                (counted, counted_at) = (got, now);
            }
        }
        anyhow::Ok((counted, counted_at, got))
    };
    let ((), (counted, counted_at, total)) = tokio::try_join!(writer, reader)?;
    let cpu_after = server.cpu_time();
    if let Ok(ws) = sink.reunite(stream) {
        close(ws).await;
    }
    let elapsed = counted_at.duration_since(start).as_secs_f64();
    if counted == 0 || elapsed <= 0.0 {
        bail!("no echo came back in {secs} s");
    }
    let mut figures = vec![(Metric::EchoRate, counted as f64 / elapsed)];
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        figures.push((Metric::EchoCpu, micros(b.saturating_sub(a)) / total as f64));
    }
    Ok(figures)
}

/// One short session: connect, one echo, close.
async fn one_session(port: u16, i: u64) -> anyhow::Result<()> {
    let mut ws = connect(port, Some(client::small_config())).await?;
    let msg = line(i);
    ws.send(Message::Text(msg.as_str().into())).await?;
    let got = next_data(&mut ws, ECHO_TIMEOUT).await?;
    expect_text(&got, &msg, i)?;
    close(ws).await;
    Ok(())
}

/// 3. `count` sessions (connect, one echo, close), `parallel` at a time:
///    sessions per second.
pub async fn churn(
    server: &Server,
    count: usize,
    parallel: usize,
    limit: Duration,
) -> anyhow::Result<Figures> {
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
    let failed = Arc::new(AtomicUsize::new(0));
    let cpu_before = server.cpu_time();
    let start = Instant::now();
    let deadline = start + limit;
    let mut workers = JoinSet::new();
    for _ in 0..parallel {
        let (next, ok, failed, first_error) = (
            next.clone(),
            ok.clone(),
            failed.clone(),
            first_error.clone(),
        );
        let port = server.port;
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() >= deadline {
                    break;
                }
                match one_session(port, i as u64).await {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = server.cpu_time();
    let ok = ok.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let first = first_error.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(e) = first {
        return Err(e.context(format!(
            "{failed} of {} sessions failed ({:.0} ok/s)",
            ok + failed,
            ok as f64 / elapsed
        )));
    }
    if ok < count {
        bail!("only {ok} of {count} sessions in {limit:?}");
    }
    let mut figures = vec![(Metric::ChurnRate, ok as f64 / elapsed)];
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        figures.push((Metric::ChurnCpu, micros(b.saturating_sub(a)) / ok as f64));
    }
    Ok(figures)
}

/// 3, ceiling: how fast this machine can spawn and reap `/bin/true`, from
/// `threads` threads at once (`count` in all, bounded by `limit`).
pub fn spawn_rate(count: usize, threads: usize, limit: Duration) -> anyhow::Result<f64> {
    use std::process::{Command, Stdio};
    let done = AtomicUsize::new(0);
    let start = Instant::now();
    let deadline = start + limit;
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    for _ in 0..per_thread {
                        if Instant::now() >= deadline {
                            break;
                        }
                        let status = Command::new("/bin/true")
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()
                            .context("spawn /bin/true")?;
                        anyhow::ensure!(status.success(), "/bin/true: {status}");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow!("spawn thread panicked"))?)
    })?;
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// 4. `count` concurrent connections, each holding a `cat` child (proved by
///    one echo), at most `parallel` handshakes in flight: time to connect
///    all, and the server's RSS growth per connection.
pub async fn storm(
    server: &Server,
    count: usize,
    parallel: usize,
    limit: Duration,
) -> anyhow::Result<(Figures, Option<String>)> {
    let pid = server.pid().context("storm needs a server process")?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = sys::vm_rss_kib(pid).context("read server VmRSS")?;
    let gate = Arc::new(Semaphore::new(parallel));
    let mut attempts = JoinSet::new();
    let start = Instant::now();
    let port = server.port;
    for i in 0..count as u64 {
        let gate = gate.clone();
        attempts.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let mut ws = connect(port, Some(client::small_config())).await?;
            let msg = line(i);
            ws.send(Message::Text(msg.as_str().into())).await?;
            let got = next_data(&mut ws, ECHO_TIMEOUT).await?;
            expect_text(&got, &msg, i)?;
            anyhow::Ok(ws)
        });
    }
    let deadline = tokio::time::Instant::now() + limit;
    let mut conns = Vec::with_capacity(count);
    let mut first_error = None;
    let mut last_ok = start;
    loop {
        match tokio::time::timeout_at(deadline, attempts.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok(Ok(ws)))) => {
                conns.push(ws);
                last_ok = Instant::now();
            }
            Ok(Some(Ok(Err(e)))) => {
                if e.downcast_ref::<CheckFailed>().is_some() {
                    return Err(e);
                }
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Ok(Some(Err(e))) => {
                first_error.get_or_insert_with(|| format!("task: {e}"));
            }
            Err(_) => {
                first_error.get_or_insert_with(|| format!("not all connected in {limit:?}"));
                attempts.abort_all();
                break;
            }
        }
    }
    let connect_secs = last_ok.duration_since(start).as_secs_f64();
    // Let the server settle (children started, buffers allocated).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = sys::vm_rss_kib(pid).context("read server VmRSS")?;
    let children = sys::children_of(pid);
    let connected = conns.len();
    let mut figures = vec![
        (Metric::StormConnected, connected as f64),
        (Metric::StormChildren, children as f64),
        (Metric::StormSeconds, connect_secs),
    ];
    if connected > 0 {
        let per_conn = (after as f64 - before as f64) / connected as f64;
        figures.push((Metric::StormRssPerConn, per_conn));
    }
    // Close everything (bounded), and let the server reap its children.
    let mut closing = JoinSet::new();
    for ws in conns {
        closing.spawn(close(ws));
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while closing.join_next().await.is_some() {}
    })
    .await;
    closing.abort_all();
    server.wait_children_gone(Duration::from_secs(30)).await;
    let note = first_error.map(|e| format!("{connected} of {count} connected; first error: {e}"));
    Ok((figures, note))
}

/// 5. Binary messages of `size` bytes through `cat` for `secs`, at most
///    `window` bytes in flight: echoed MB/s (10^6 bytes). The echo may come
///    back in other chunks; every byte is checked against the pattern. If
///    nothing comes back for `stall` while bytes are in flight, the run ends
///    with [`Stalled`].
pub async fn binary(
    server: &Server,
    secs: f64,
    size: usize,
    window: usize,
    stall: Duration,
) -> anyhow::Result<Figures> {
    let ws = connect(server.port, None).await?;
    let (mut sink, mut stream) = ws.split();
    let pattern = Pattern::new();
    let credits = Semaphore::new(window.max(size));
    let sent = AtomicU64::new(0);
    let writer_done = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);

    let writer = async {
        let mut offset = 0u64;
        while Instant::now() < deadline {
            let take = credits.acquire_many(size as u32);
            match tokio::time::timeout_at(deadline.into(), take).await {
                Ok(Ok(permit)) => permit.forget(),
                _ => break,
            }
            let data = Bytes::copy_from_slice(pattern.at(offset, size));
            sink.send(Message::Binary(data)).await?;
            offset += size as u64;
            sent.store(offset, Ordering::Release);
        }
        writer_done.store(true, Ordering::Release);
        anyhow::Ok(())
    };
    let reader = async {
        let hard = deadline + DRAIN_TIMEOUT;
        let (mut got, mut counted, mut counted_at) = (0u64, 0u64, start);
        let mut progress_at = start;
        loop {
            let now = Instant::now();
            let in_flight = sent.load(Ordering::Acquire) - got;
            if writer_done.load(Ordering::Acquire) && in_flight == 0 {
                break;
            }
            if in_flight == 0 {
                progress_at = now;
            } else if now.duration_since(progress_at) > stall {
                return Err(anyhow::Error::new(Stalled {
                    echoed: got,
                    sent: sent.load(Ordering::Acquire),
                    after: stall,
                }));
            }
            if now > hard {
                bail!(
                    "only {got} of {} bytes came back",
                    sent.load(Ordering::Acquire)
                );
            }
            let Ok(next) = tokio::time::timeout(Duration::from_millis(20), stream.next()).await
            else {
                continue;
            };
            let data = match next {
                None => bail!("connection dropped after {got} bytes"),
                Some(msg) => match msg.context("reading")? {
                    Message::Binary(data) => data,
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                    Message::Close(f) => bail!("server closed after {got} bytes: {f:?}"),
                    Message::Text(t) => {
                        return Err(check_failed(format!(
                            "text message in binary mode at byte {got}: {:?}",
                            t.as_str().chars().take(40).collect::<String>()
                        )))
                    }
                },
            };
            if let Some(bad) = pattern.check(got, &data) {
                return Err(check_failed(format!("echoed byte {bad} is wrong")));
            }
            got += data.len() as u64;
            progress_at = Instant::now();
            if got > sent.load(Ordering::Acquire) {
                return Err(check_failed(format!(
                    "{got} bytes echoed but only {} sent",
                    sent.load(Ordering::Acquire)
                )));
            }
            credits.add_permits(data.len());
            let now = Instant::now();
            if now <= deadline {
                (counted, counted_at) = (got, now);
            }
        }
        anyhow::Ok((counted, counted_at))
    };
    let ((), (counted, counted_at)) = tokio::try_join!(writer, reader)?;
    if let Ok(ws) = sink.reunite(stream) {
        close(ws).await;
    }
    let elapsed = counted_at.duration_since(start).as_secs_f64();
    if counted == 0 || elapsed <= 0.0 {
        bail!("no echo came back in {secs} s");
    }
    Ok(vec![(Metric::BinaryRate, counted as f64 / elapsed / 1e6)])
}

/// Width of the numbered lines of the backpressure scenario.
pub const SEQ_WIDTH: usize = 100;

/// The backpressure child: `seq` printing 1..=lines, zero-padded to
/// [`SEQ_WIDTH`] characters, as fast as the pipe takes them.
pub fn seq_command(lines: u64) -> Vec<String> {
    vec![
        "seq".into(),
        "-f".into(),
        format!("%0{SEQ_WIDTH}.0f"),
        "1".into(),
        lines.to_string(),
    ]
}

/// 6. The child writes `lines` lines as fast as it can; for `slow_secs` the
///    client reads slowly (10 ms pause every 64 messages) while the server's
///    VmRSS is sampled every 250 ms; then the rest is read at full speed and
///    checked to be complete and in order. Max RSS growth in KiB, and the
///    delivered fraction (1.0 = all, in order).
pub async fn backpressure(
    server: &Server,
    lines: u64,
    slow_secs: f64,
    drain_limit: Duration,
) -> anyhow::Result<(Figures, Option<String>)> {
    let pid = server
        .pid()
        .context("backpressure needs a server process")?;
    let mut ws = connect(server.port, None).await?;
    let mut expect = 1u64;
    let check = |msg: &Message, expect: u64| -> anyhow::Result<()> {
        let Message::Text(t) = msg else {
            return Err(check_failed(format!("line {expect}: not text: {msg:?}")));
        };
        let n: Option<u64> = t.as_str().parse().ok();
        if n != Some(expect) || t.len() != SEQ_WIDTH {
            return Err(check_failed(format!(
                "expected line {expect}, got {:?}",
                t.as_str().trim_start_matches('0')
            )));
        }
        Ok(())
    };
    // The stream has started once the first line is in.
    let first = next_data(&mut ws, ECHO_TIMEOUT).await?;
    check(&first, expect)?;
    expect += 1;
    let base = sys::vm_rss_kib(pid).context("read server VmRSS")?;
    let max_rss = AtomicU64::new(base);
    let slow_over = AtomicBool::new(false);
    let start = Instant::now();
    let slow_deadline = start + Duration::from_secs_f64(slow_secs);

    let sampler = async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while !slow_over.load(Ordering::Relaxed) && Instant::now() < slow_deadline {
            tick.tick().await;
            if let Some(rss) = sys::vm_rss_kib(pid) {
                max_rss.fetch_max(rss, Ordering::Relaxed);
            }
        }
    };
    let mut closed_with = None;
    let reader = async {
        let mut since_pause = 1;
        loop {
            if since_pause >= 64 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                since_pause = 0;
            }
            let now = Instant::now();
            let slow = now < slow_deadline;
            if !slow {
                slow_over.store(true, Ordering::Relaxed);
            }
            if now > slow_deadline + drain_limit {
                bail!("only {} of {lines} lines in the time limit", expect - 1);
            }
            let next = tokio::time::timeout(ECHO_TIMEOUT, ws.next())
                .await
                .map_err(|_| anyhow!("stalled after {} of {lines} lines", expect - 1))?;
            match next {
                None => {
                    closed_with = Some(End::Dropped("connection closed".into()));
                    break;
                }
                // Once every line is in, a dropped connection still
                // delivered everything; judged below.
                Some(Err(e)) if expect - 1 == lines => {
                    closed_with = Some(End::Dropped(e.to_string()));
                    break;
                }
                Some(Err(e)) => {
                    return Err(e).context(format!("after {} of {lines} lines", expect - 1))
                }
                Some(Ok(Message::Close(frame))) => {
                    closed_with = Some(End::Close(frame.map(|f| f.code)));
                    break;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(msg)) => {
                    check(&msg, expect)?;
                    expect += 1;
                    if slow {
                        since_pause += 1;
                    }
                }
            }
        }
        slow_over.store(true, Ordering::Relaxed);
        anyhow::Ok(())
    };
    let ((), read) = tokio::join!(sampler, reader);
    read?;
    let delivered = expect - 1;
    if delivered != lines {
        return Err(check_failed(format!(
            "incomplete: {delivered} of {lines} lines, then close {closed_with:?}"
        )));
    }
    let note = match closed_with {
        Some(End::Close(Some(CloseCode::Normal) | None)) => None,
        Some(End::Close(code)) => bail!("all lines came, then close code {code:?}"),
        Some(End::Dropped(how)) => Some(format!(
            "all {lines} lines came, then the connection ended without a close frame ({how})"
        )),
        None => bail!("the stream did not end"),
    };
    close(ws).await;
    let growth = max_rss.load(Ordering::Relaxed).saturating_sub(base);
    Ok((
        vec![
            (Metric::BackpressureGrowth, growth as f64),
            (
                Metric::BackpressureDelivered,
                delivered as f64 / lines as f64,
            ),
        ],
        note,
    ))
}

/// How the backpressure stream ended.
#[derive(Debug)]
enum End {
    Close(Option<CloseCode>),
    Dropped(String),
}

// 7. Fan-out is in its own module: crate::fanout.

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_micros(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_micros(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_micros(100));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_micros(1));
    }

    #[test]
    fn seq_command_is_plain_argv() {
        assert_eq!(seq_command(5), ["seq", "-f", "%0100.0f", "1", "5"]);
    }
}
