//! Clients of `--history --history-ids` channels, shared by
//! tests/history.rs and tests/redis_history.rs.

use std::time::Duration;

use super::{connect, connect_with, next_text, send_text, Ws};

/// The epoch of an `epoch<TAB>E` (or `reset<TAB>E`) notice, after
/// checking it is the `word` one.
pub fn notice(text: &str, word: &str) -> String {
    let (got, epoch) = text.split_once('\t').expect("a notice");
    assert_eq!(got, word, "{text}");
    epoch.to_owned()
}

/// `SEQ<TAB>BODY`, split.
pub fn split_seq(text: &str) -> (u64, String) {
    let (seq, body) = text.split_once('\t').expect("SEQ<TAB>");
    (seq.parse().expect("a seq"), body.to_owned())
}

/// `m1`, `m2`... for the numbers of `range`.
pub fn bodies(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

/// A `--pubsub` client that publishes, each message once the one before
/// came back numbered (the sender is a member: it gets its own).
pub struct Publisher {
    ws: Ws,
    /// How many it sent, and how many of those came back.
    pub sent: u64,
    pub back: u64,
}

impl Publisher {
    /// Connected to `url`, its epoch notice read.
    pub async fn connect(url: &str) -> Publisher {
        let mut ws = connect(url).await;
        notice(&next_text(&mut ws).await, "epoch");
        Publisher {
            ws,
            sent: 0,
            back: 0,
        }
    }

    /// Sends `text`, without waiting for it to come back.
    pub async fn send(&mut self, text: &str) {
        send_text(&mut self.ws, text).await;
        self.sent += 1;
    }

    /// Waits for the next of what it sent to come back (when it is the
    /// channel's only publisher); its seq.
    pub async fn came_back(&mut self) -> u64 {
        let seq = split_seq(&next_text(&mut self.ws).await).0;
        self.back += 1;
        seq
    }

    /// How many it sent are still on their way.
    pub fn on_the_way(&self) -> u64 {
        self.sent - self.back
    }

    /// Publishes `text`; the number it came back with.
    pub async fn publish(&mut self, text: &str) -> u64 {
        self.send(text).await;
        loop {
            let got = next_text(&mut self.ws).await;
            if got.split_once('\t').is_some_and(|(_, body)| body == text) {
                self.back += 1;
                return split_seq(&got).0;
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Publishes `texts` from a `--pubsub` client of `url`, one after the
/// other (see [`Publisher`]).
pub async fn publish_all(url: &str, texts: &[String]) {
    let mut publisher = Publisher::connect(url).await;
    for text in texts {
        publisher.publish(text).await;
    }
    publisher.close().await;
}

/// [`publish_all`] of `m1`, `m2`... for `range` ([`bodies`]), in a task
/// of its own.
pub fn spawn_publish_all(
    url: String,
    range: std::ops::RangeInclusive<u32>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { publish_all(&url, &bodies(range)).await })
}

/// A client's place in a stream of `SEQ<TAB>mSEQ` messages (as
/// [`bodies`] publishes them): what it saw, and the one epoch it was told.
#[derive(Debug, Default)]
pub struct Reader {
    pub seen: Vec<u64>,
    pub epoch: Option<String>,
}

impl Reader {
    /// The last seq seen (0: none).
    pub fn last(&self) -> u64 {
        self.seen.last().copied().unwrap_or(0)
    }

    /// The query that resumes from here: `?since=LAST&epoch=E`, or
    /// `?since=0` before any epoch was told.
    pub fn resume_query(&self) -> String {
        match &self.epoch {
            Some(e) => format!("?since={}&epoch={e}", self.last()),
            None => format!("?since={}", self.last()),
        }
    }

    /// Reads the `epoch<TAB>E` notice a (re)connection starts with: the
    /// same epoch every time.
    pub async fn joined(&mut self, ws: &mut Ws) {
        let got = notice(&next_text(ws).await, "epoch");
        assert_eq!(self.epoch.get_or_insert(got.clone()), &got, "one epoch");
    }

    /// Takes one `SEQ<TAB>mSEQ` message; its seq.
    pub fn take(&mut self, text: &str) -> u64 {
        let (seq, body) = split_seq(text);
        assert_eq!(body, format!("m{seq}"), "{text}");
        self.seen.push(seq);
        seq
    }

    /// One short visit on a (re)connection: its notice, up to `n`
    /// messages (fewer if `total` comes first), then it closes.
    pub async fn visit(&mut self, mut ws: Ws, n: usize, total: u32) {
        self.joined(&mut ws).await;
        for _ in 0..n {
            if self.take(&next_text(&mut ws).await) == u64::from(total) {
                break;
            }
        }
        let _ = ws.close(None).await;
    }

    /// Short visits ([`Reader::visit`], `per_visit` messages each) until
    /// `total`, the n-th (from 0) on `url(n, QUERY)`, QUERY being
    /// [`Reader::resume_query`]; how many.
    pub async fn visits(
        &mut self,
        total: u32,
        per_visit: usize,
        url: impl Fn(usize, &str) -> String,
    ) -> usize {
        let mut n = 0;
        while !self.done(total) {
            let ws = connect(&url(n, &self.resume_query())).await;
            self.visit(ws, per_visit, total).await;
            n += 1;
        }
        n
    }

    /// Connects again to `url` (`ws://HOST/CHANNEL`) from here, as a
    /// client whose connection ended should: with [`Reader::resume_query`]
    /// (or, `by_header`, a `Last-Event-ID: LAST` header instead), and a
    /// failed handshake retried a few times after a short backoff (50 ms,
    /// doubling). The connection (its notice not read yet) and how many
    /// attempts failed.
    pub async fn reconnect(&self, url: &str, by_header: bool) -> (Ws, u32) {
        let last = self.last().to_string();
        let mut backoff = Duration::from_millis(50);
        let mut failed = 0;
        loop {
            let attempt = if by_header {
                connect_with(url, &[("Last-Event-ID", &last)]).await
            } else {
                connect_with(&format!("{url}{}", self.resume_query()), &[]).await
            };
            match attempt {
                Ok(ws) => return (ws, failed),
                Err(e) if failed < 6 => {
                    eprintln!("reconnect to {url} from {last} failed ({e}); again in {backoff:?}");
                    failed += 1;
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) => panic!(
                    "reconnect to {url} from {last}: {failed} attempts failed, the last: {e}"
                ),
            }
        }
    }

    /// Whether it has seen `total`, the last message.
    pub fn done(&self, total: u32) -> bool {
        self.last() == u64::from(total)
    }
}

/// Asserts that `seen` is 1 to `total`, each once, in order; a failure
/// names the first difference, not the whole list.
pub fn assert_each_once_in_order(seen: &[u64], total: u32) {
    let wrong = (1..=u64::from(total))
        .zip(seen)
        .find(|(want, got)| want != *got);
    assert_eq!(wrong, None, "(expected, got) at the first difference");
    assert_eq!(seen.len(), total as usize);
}
