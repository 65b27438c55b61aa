//! 7. Fan-out: one producer, N subscribers.
//!
//! - wspipe: every client's child is `cat` (it writes nothing, as the
//!   clients send nothing), so everything a client receives came through
//!   wspipe's injection path. The bench speaks the control protocol itself
//!   (newline-delimited JSON on the Unix socket): M `broadcast` requests,
//!   each sent once the previous one was answered. Then K more through
//!   `wspipe ctl broadcast` as a process, one exec per message, the way a
//!   PHP script would do it.
//! - websocketd has no broadcast. The usual way to fan out with it: every
//!   client's child follows a shared file with `tail -F`, and the producer
//!   appends one line per message.
//!
//! Both: time from the first send until every client has had every
//! message. Every client must get every message exactly once and in order;
//! anything else fails the run.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, line, Ws};
use crate::control::{Control, Send};
use crate::scenarios::{check_failed, next_data, Figures, Metric};
use crate::server::Server;
use crate::sys;

/// Bound on connecting every client.
const CONNECT_LIMIT: Duration = Duration::from_secs(60);

/// Bound on the server having every session (wspipe: registered for
/// broadcasts; websocketd: one child each).
const READY_LIMIT: Duration = Duration::from_secs(15);

/// Bound on one phase: sending every message and every client receiving it.
const PHASE_LIMIT: Duration = Duration::from_secs(60);

/// Bound on one `wspipe ctl` process (it has its own 30 s socket timeouts).
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// After the last message, how long each client watches for an extra one.
const LINGER: Duration = Duration::from_millis(300);

/// How the producer reaches the clients.
pub enum Producer {
    /// wspipe: `broadcast` requests on the control socket, then `cli_messages`
    /// executions of `cli ctl --socket SOCKET broadcast MESSAGE`.
    Control {
        socket: PathBuf,
        cli: PathBuf,
        cli_messages: usize,
    },
    /// websocketd: every child runs `tail -F file`; the producer appends one
    /// line per message.
    TailFile { file: PathBuf },
}

/// The counts.
pub struct Plan {
    pub clients: usize,
    pub messages: usize,
    /// Handshakes in flight while connecting.
    pub parallel: usize,
}

/// The child command of websocketd's sessions: `tail` following `file`
/// from its start (the file is new and empty for each run, so this is
/// `tail -n0 -F` without the race of a tail that starts after the first
/// line was appended), under `setpriv --pdeathsig KILL` so the tails die
/// with websocketd even if the bench is killed.
pub fn tail_command(file: &std::path::Path) -> Vec<String> {
    vec![
        "setpriv".into(),
        "--pdeathsig".into(),
        "KILL".into(),
        "tail".into(),
        "-n".into(),
        "+1".into(),
        "-F".into(),
        file.display().to_string(),
    ]
}

/// What a subscriber reports.
pub(crate) enum Event {
    /// Every message of the phase is in.
    Done {
        phase: usize,
        at: Instant,
    },
    /// Channels: the subscriber has seen a probe (it is a member).
    Joined,
    Failed(anyhow::Error),
}

/// How one batch of messages is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// wspipe: one `broadcast` request at a time, each sent once the
    /// previous one was answered.
    Sequential,
    /// wspipe: every request written at once on a fresh control connection,
    /// the answers read as they come.
    Pipelined,
    /// wspipe: one `wspipe ctl broadcast` process per message.
    Cli,
    /// websocketd: one appended line per message.
    Append,
}

/// Most messages a phase may send: the pipelined phase puts them all on
/// one control connection, which wspipe limits to 2000 requests a second.
pub const MAX_MESSAGES: usize = 2000;

/// Runs the scenario against `server`: figures and a note.
pub async fn fanout(
    server: &Server,
    plan: &Plan,
    producer: &Producer,
) -> anyhow::Result<(Figures, Option<String>)> {
    let n = plan.clients;
    let pid = server.pid().context("fan-out needs a server process")?;
    if plan.messages > MAX_MESSAGES {
        bail!("at most {MAX_MESSAGES} messages");
    }
    // The bench holds a socket per client; the server a socket and (wspipe)
    // three pipes per session.
    let need = 5 * n as u64 + 100;
    let have = sys::nofile_soft();
    if have < need {
        bail!("{n} clients need an open files limit of about {need}; it is {have}");
    }
    let phases: Vec<(Phase, usize)> = match producer {
        Producer::Control { cli_messages, .. } => vec![
            (Phase::Sequential, plan.messages),
            (Phase::Pipelined, plan.messages),
            (Phase::Cli, *cli_messages),
        ],
        Producer::TailFile { .. } => vec![(Phase::Append, plan.messages)],
    };
    let phases: Vec<(Phase, usize)> = phases.into_iter().filter(|p| p.1 > 0).collect();
    let ends: Arc<[usize]> = phases
        .iter()
        .scan(0, |end, p| {
            *end += p.1;
            Some(*end)
        })
        .collect();
    let total = ends.last().copied().unwrap_or(0);
    let msgs: Arc<Vec<String>> = Arc::new((0..total as u64).map(line).collect());

    // Control connection first: a server that cannot take it fails early.
    let mut control = match producer {
        Producer::Control { socket, .. } => Some(Control::connect(socket).await?),
        Producer::TailFile { .. } => None,
    };

    let conns = connect_all(server.port, "/", n, plan.parallel).await?;

    // Every session must be known to the server before the first message:
    // wspipe registers a session for broadcasts only after its 101 went out.
    let ready_deadline = Instant::now() + READY_LIMIT;
    match control.as_mut() {
        Some(c) => loop {
            let live = c.connections().await?;
            if live == n as u64 {
                break;
            }
            if live > n as u64 {
                bail!("the server has {live} sessions, the bench opened {n}");
            }
            if Instant::now() >= ready_deadline {
                bail!("only {live} of {n} sessions registered after {READY_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        },
        None => loop {
            let children = sys::children_of(pid);
            if children >= n {
                break;
            }
            if Instant::now() >= ready_deadline {
                bail!("only {children} of {n} children started after {READY_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        },
    }

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut subscribers = JoinSet::new();
    for (index, ws) in conns.into_iter().enumerate() {
        let sub = subscriber(ws, index, msgs.clone(), ends.clone(), events_tx.clone());
        subscribers.spawn(sub);
    }
    drop(events_tx);

    let mut figures = Vec::new();
    let mut notes = Vec::new();
    let mut first = 0;
    for (i, &(phase, count)) in phases.iter().enumerate() {
        let batch = &msgs[first..first + count];
        let start = Instant::now();
        let deadline = start + PHASE_LIMIT;
        match (phase, producer) {
            (Phase::Sequential, _) => {
                let c = control.as_mut().context("no control connection")?;
                let mut times = Vec::with_capacity(count);
                let mut rate_limited = 0;
                for (j, msg) in batch.iter().enumerate() {
                    let t = Instant::now();
                    rate_limited += c.send(Send::Broadcast, msg, first + j, n, deadline).await?;
                    times.push(t.elapsed());
                }
                times.sort();
                notes.push(format!(
                    "one request at a time: answered in {:.2} ms (median), {:.1} ms (slowest)",
                    times[times.len() / 2].as_secs_f64() * 1e3,
                    times[times.len() - 1].as_secs_f64() * 1e3
                ));
                if rate_limited > 0 {
                    notes.push(format!(
                        "{rate_limited} request(s) rate limited and retried"
                    ));
                }
            }
            (Phase::Pipelined, Producer::Control { socket, .. }) => {
                // A fresh connection: its rate window holds only these.
                let mut c = Control::connect(socket).await?;
                c.pipelined(Send::Broadcast, batch, first, n, deadline)
                    .await?;
            }
            (Phase::Cli, Producer::Control { socket, cli, .. }) => {
                let (socket, cli, batch) = (socket.clone(), cli.clone(), batch.to_vec());
                let took =
                    tokio::task::spawn_blocking(move || cli_broadcasts(&cli, &socket, &batch, n))
                        .await
                        .context("ctl task")??;
                figures.push((Metric::FanOutCliRate, count as f64 / took.as_secs_f64()));
            }
            (Phase::Append, Producer::TailFile { file }) => {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(file)
                    .with_context(|| format!("open {}", file.display()))?;
                for msg in batch {
                    // One write(2) per message, as a script appending a line.
                    let mut rec = Vec::with_capacity(msg.len() + 1);
                    rec.extend_from_slice(msg.as_bytes());
                    rec.push(b'\n');
                    f.write_all(&rec).context("append")?;
                }
            }
            (phase, _) => bail!("{phase:?} does not apply to this server"),
        }
        let sent_at = Instant::now();
        let delivered_at = wait_phase(&mut events, i, n, deadline).await?;
        let deliveries = (n * count) as f64 / delivered_at.duration_since(start).as_secs_f64();
        match phase {
            Phase::Sequential | Phase::Append => {
                let lag = delivered_at.saturating_duration_since(sent_at);
                let taken = count as f64 / sent_at.duration_since(start).as_secs_f64();
                figures.push((Metric::FanOutDeliveries, deliveries));
                figures.push((Metric::FanOutLag, lag.as_secs_f64() * 1e3));
                figures.push((Metric::FanOutProducerRate, taken));
            }
            Phase::Pipelined => figures.push((Metric::FanOutPipelined, deliveries)),
            Phase::Cli => {}
        }
        first += count;
    }

    if let Producer::TailFile { .. } = producer {
        // Every tail is following by now (it has printed every line).
        let tails = sys::child_pids(pid);
        let inotify = tails.iter().filter(|&&p| sys::uses_inotify(p)).count();
        if inotify < tails.len() {
            let limit = sys::sysctl("fs/inotify/max_user_instances").unwrap_or("?".into());
            notes.push(format!(
                "{inotify} of {} tails use inotify; the other {} poll the file every second \
                 (GNU tail's default -s 1; fs.inotify.max_user_instances = {limit} per user)",
                tails.len(),
                tails.len() - inotify
            ));
        }
    }

    // Exactly once: each subscriber watched for an extra message; then close.
    let conns = crate::feed::join_all(&mut subscribers).await?;
    figures.push((Metric::FanOutChecked, 1.0));
    drop(control);
    crate::channels::close_all(conns).await;
    if !server.wait_children_gone(Duration::from_secs(10)).await {
        notes.push(format!(
            "{} children still there 10 s after the clients closed (the server stop kills them)",
            server.children()
        ));
    }
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    Ok((figures, note))
}

/// Connects `n` clients, at most `parallel` handshakes at a time. All must
/// connect.
pub(crate) async fn connect_all(
    port: u16,
    path: &str,
    n: usize,
    parallel: usize,
) -> anyhow::Result<Vec<Ws>> {
    let path: Arc<str> = Arc::from(path);
    let gate = Arc::new(Semaphore::new(parallel));
    let mut attempts = JoinSet::new();
    for _ in 0..n {
        let (gate, path) = (gate.clone(), path.clone());
        attempts.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            client::connect_path(port, &path, Some(client::small_config())).await
        });
    }
    let deadline = tokio::time::Instant::now() + CONNECT_LIMIT;
    let mut conns = Vec::with_capacity(n);
    loop {
        match tokio::time::timeout_at(deadline, attempts.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok(Ok(ws)))) => conns.push(ws),
            Ok(Some(Ok(Err(e)))) => {
                return Err(e.context(format!("client {} of {n}", conns.len() + 1)))
            }
            Ok(Some(Err(e))) => bail!("connect task: {e}"),
            Err(_) => bail!(
                "only {} of {n} clients connected in {CONNECT_LIMIT:?}",
                conns.len()
            ),
        }
    }
    Ok(conns)
}

/// One client: reads every message of every phase, checks each one, reports
/// the end of each phase, then watches for an extra message.
async fn subscriber(
    mut ws: Ws,
    index: usize,
    msgs: Arc<Vec<String>>,
    ends: Arc<[usize]>,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<Ws> {
    let total = msgs.len();
    let mut next = 0;
    for (phase, &end) in ends.iter().enumerate() {
        while next < end {
            // Bounded; the phase deadline of the caller comes first.
            let got = next_data(&mut ws, PHASE_LIMIT)
                .await
                .and_then(|msg| expect_message(&msg, &msgs[next], next, index));
            if let Err(e) = got {
                let e = e.context(format!("client {index}, after {next} of {total} messages"));
                let _ = events.send(Event::Failed(e));
                bail!("client {index} failed (reported)");
            }
            next += 1;
        }
        let _ = events.send(Event::Done {
            phase,
            at: Instant::now(),
        });
    }
    linger(&mut ws, index, LINGER).await?;
    Ok(ws)
}

/// After a client's last message: watches it for `limit`, and fails on any
/// data message (a duplicate or an extra) or a dropped connection.
pub(crate) async fn linger<S>(ws: &mut S, index: usize, limit: Duration) -> anyhow::Result<()>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Ok(()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
            Ok(Some(Ok(Message::Text(t)))) => {
                return Err(check_failed(format!(
                    "client {index}: a message after the last one: {:?}",
                    t.as_str()
                )))
            }
            Ok(Some(Ok(other))) => bail!("client {index}: after the last message: {other:?}"),
            Ok(Some(Err(e))) => {
                return Err(anyhow!(e).context(format!("client {index}, after the last message")))
            }
            Ok(None) => bail!("client {index}: connection dropped after the last message"),
        }
    }
}

/// Message `seq` must be exactly `want` (not a duplicate, not a later one).
fn expect_message(msg: &Message, want: &str, seq: usize, client: usize) -> anyhow::Result<()> {
    match msg {
        Message::Text(t) if t.as_str() == want => Ok(()),
        Message::Text(t) => Err(check_failed(format!(
            "client {client}: message #{seq} should be {want:?}, got {:?}",
            t.as_str()
        ))),
        other => Err(check_failed(format!(
            "client {client}: message #{seq}: expected text, got {other:?}"
        ))),
    }
}

/// Waits until all `n` clients report the end of `phase`; the time the
/// last one did.
pub(crate) async fn wait_phase(
    events: &mut mpsc::UnboundedReceiver<Event>,
    phase: usize,
    n: usize,
    deadline: Instant,
) -> anyhow::Result<Instant> {
    let mut done = 0;
    let mut last = None::<Instant>;
    while done < n {
        match tokio::time::timeout_at(deadline.into(), events.recv()).await {
            Err(_) => bail!(
                "only {done} of {n} clients had every message of phase {} within {PHASE_LIMIT:?}",
                phase + 1
            ),
            Ok(None) => bail!("the subscribers ended early"),
            Ok(Some(Event::Failed(e))) => return Err(e),
            Ok(Some(Event::Joined)) => {}
            Ok(Some(Event::Done { phase: p, at })) => {
                if p != phase {
                    bail!(
                        "a client finished phase {} during phase {}",
                        p + 1,
                        phase + 1
                    );
                }
                done += 1;
                last = Some(last.map_or(at, |l| l.max(at)));
            }
        }
    }
    last.ok_or_else(|| anyhow!("no clients"))
}

/// Runs `cli ctl --socket SOCKET broadcast MESSAGE` once per message, one
/// after the other; the time they took. Each must report `n` clients.
fn cli_broadcasts(
    cli: &std::path::Path,
    socket: &std::path::Path,
    msgs: &[String],
    n: usize,
) -> anyhow::Result<Duration> {
    use std::process::{Command, Stdio};
    let want = format!("delivered to {n} client(s)");
    let start = Instant::now();
    for (j, msg) in msgs.iter().enumerate() {
        let mut child = Command::new(cli)
            .arg("ctl")
            .arg("--socket")
            .arg(socket)
            .arg("broadcast")
            .arg(msg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run wspipe ctl")?;
        let limit = Instant::now() + CLI_TIMEOUT;
        // Its output is one short line, which fits the pipe: poll for the
        // exit, so a hung client cannot hold the bench.
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!("wspipe ctl broadcast #{j} still running after {CLI_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !status.success() || stdout.trim() != want {
            return Err(check_failed(format!(
                "wspipe ctl broadcast #{j}: {status}, stdout {:?}, stderr {:?} (want {want:?})",
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that sends `lines` on one connection and holds it open; the
    /// subscriber's verdict on them, expecting messages 0..`expect`.
    async fn judge(lines: Vec<u64>, expect: usize) -> anyhow::Result<()> {
        use futures_util::SinkExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut ws = tokio_tungstenite::accept_async(tcp).await?;
            for i in lines {
                ws.send(Message::Text(line(i).into())).await?;
            }
            tokio::time::sleep(LINGER * 2).await;
            anyhow::Ok(())
        });
        let ws = client::connect(port, None).await?;
        let msgs = Arc::new((0..expect as u64).map(line).collect::<Vec<_>>());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ends: Arc<[usize]> = Arc::from(vec![expect]);
        let verdict = subscriber(ws, 0, msgs, ends, tx).await.map(drop);
        server.abort();
        match rx.recv().await {
            Some(Event::Failed(e)) => Err(e),
            _ => verdict,
        }
    }

    fn is_check_failure(r: &anyhow::Result<()>) -> bool {
        r.as_ref()
            .err()
            .is_some_and(|e| e.downcast_ref::<crate::scenarios::CheckFailed>().is_some())
    }

    #[tokio::test]
    async fn subscribers_fail_loudly() {
        judge(vec![0, 1, 2], 3).await.unwrap();
        // Missing, out of order, duplicated, one too many.
        assert!(is_check_failure(&judge(vec![0, 2], 3).await));
        assert!(is_check_failure(&judge(vec![1, 0, 2], 3).await));
        assert!(is_check_failure(&judge(vec![0, 0, 1, 2], 3).await));
        assert!(is_check_failure(&judge(vec![0, 1, 2, 2], 3).await));
    }

    #[test]
    fn tail_follows_from_the_start() {
        let cmd = tail_command(std::path::Path::new("/tmp/x/feed"));
        assert_eq!(
            cmd,
            [
                "setpriv",
                "--pdeathsig",
                "KILL",
                "tail",
                "-n",
                "+1",
                "-F",
                "/tmp/x/feed"
            ]
        );
    }
}
