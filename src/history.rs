//! `--history N`: the last N messages of each channel, numbered, so that a
//! client that reconnects with `?since=SEQ` gets what it missed first,
//! then the live stream, with no gap and no duplicate.
//!
//! Each channel's history has a sequence (1, 2, 3... per channel) and an
//! [`Epoch`]: a name for this run of the sequence. A channel's history
//! goes when nothing was published to it (or resumed from it) for
//! `--history-ttl`, or when the memory bound evicts it; a new one starts
//! with a new epoch and seq 1. So a client that brings `epoch=E` learns
//! whether its SEQ still means what it meant ([`Catchup::recovered`]),
//! and is told so in-band with `--history-ids`, never left to guess.
//!
//! Publishing and catching up take the same lock, and the caller delivers
//! inside it ([`History::publish`], [`History::join`]): a message is
//! either in the replay or live, never both, never neither.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Uri};
use tokio_tungstenite::tungstenite::Message;

pub use crate::config::{HistoryFlags as Settings, MAX_HISTORY as MAX_DEPTH};
use crate::hub::{ChannelName, MEMBER_QUEUE};

/// Most bytes one channel's history holds, for the same reason: a replay
/// fits the queue's byte bound, with room for the notice.
const CHANNEL_BYTES: usize = MEMBER_QUEUE.bytes - 4096;

/// Most bytes all histories hold together; past it, the channels
/// published to least recently lose theirs (their epoch ends).
pub const MEMORY: usize = 64 << 20;

/// The name of one run of a channel's sequence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// A name no earlier run had: the clock in nanoseconds, and a counter
    /// for two made in the same one.
    fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Epoch(format!("{nanos:x}{:02x}", n % 256).into())
    }

    /// An epoch a client sent back.
    pub fn from_client(text: &str) -> Self {
        Epoch(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a reconnecting client was: it has every message up to `since`
/// (0: none) of the run `epoch`, if it says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub since: u64,
    pub epoch: Option<Epoch>,
}

/// Why a client's resume position cannot be read: its handshake gets 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPosition {
    #[error("since={0:?}: give the number of the last message seen (0: none)")]
    Since(String),
    #[error("Last-Event-ID {0:?}: give the number of the last message seen")]
    LastEventId(String),
    #[error("epoch={0:?}: give the epoch the server announced (letters and digits)")]
    Epoch(String),
    #[error("epoch= needs since=")]
    EpochAlone,
}

impl Position {
    /// A handshake's position: `?since=SEQ[&epoch=E]`, or a
    /// `Last-Event-ID: SEQ` header (the form EventSource reconnects
    /// send); `None` for a client that brings none.
    pub fn of_request(uri: &Uri, headers: &HeaderMap) -> Result<Option<Self>, BadPosition> {
        let param = |name: &str| {
            uri.query()?
                .split('&')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        };
        let epoch = param("epoch")
            .map(|e| {
                let ok =
                    !e.is_empty() && e.len() <= 64 && e.bytes().all(|b| b.is_ascii_alphanumeric());
                ok.then(|| Epoch::from_client(e))
                    .ok_or_else(|| BadPosition::Epoch(e.chars().take(64).collect()))
            })
            .transpose()?;
        let since = if let Some(since) = param("since") {
            since
                .parse()
                .map_err(|_| BadPosition::Since(since.chars().take(32).collect()))?
        } else if let Some(id) = headers.get("last-event-id") {
            let text = id.to_str().unwrap_or_default().trim();
            text.parse()
                .map_err(|_| BadPosition::LastEventId(text.chars().take(32).collect()))?
        } else if epoch.is_some() {
            return Err(BadPosition::EpochAlone);
        } else {
            return Ok(None);
        };
        Ok(Some(Position { since, epoch }))
    }
}

/// What a joining client gets before the live stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Catchup {
    /// With `--history-ids`: `epoch<TAB>E` when the client's position was
    /// covered (or it brought none), `reset<TAB>E` when it was not.
    pub notice: Option<Message>,
    /// The messages after its position, oldest first, as published.
    pub replay: Vec<Message>,
    /// False when messages the client had not seen are gone (trimmed,
    /// expired, or from another epoch): it should start afresh.
    pub recovered: bool,
}

/// What the histories hold (`ctl stats`, `--metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Channels with a history (an epoch), messages held or not.
    pub channels: u64,
    pub messages: u64,
    /// Payload bytes held, ids included.
    pub bytes: u64,
}

/// The histories of all channels.
#[derive(Debug)]
pub struct History {
    settings: Settings,
    store: Mutex<Store>,
}

#[derive(Debug, Default)]
struct Store {
    channels: HashMap<ChannelName, Record>,
    /// Channels by when they were last touched (a tick, unique), oldest
    /// first: what expiry and eviction take.
    by_touch: BTreeMap<u64, ChannelName>,
    tick: u64,
    bytes: usize,
}

#[derive(Debug)]
struct Record {
    epoch: Epoch,
    /// The seq the next message gets.
    next: u64,
    entries: VecDeque<(u64, Message)>,
    bytes: usize,
    touched: u64,
    touched_at: Instant,
}

impl History {
    pub fn new(settings: Settings) -> Self {
        History {
            settings,
            store: Mutex::default(),
        }
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// What is held now.
    pub fn stats(&self) -> Stats {
        let store = self.lock();
        Stats {
            channels: store.channels.len() as u64,
            messages: store
                .channels
                .values()
                .map(|r| r.entries.len() as u64)
                .sum(),
            bytes: store.bytes as u64,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // Every critical section leaves the maps consistent before it can
        // panic: poison is moot.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers `message` as the next of `channel`, keeps it, and hands
    /// what the clients get (with its id, with `--history-ids`) to
    /// `deliver`, under the lock.
    pub fn publish<R>(
        &self,
        channel: &ChannelName,
        message: Message,
        deliver: impl FnOnce(Message) -> R,
    ) -> R {
        let now = Instant::now();
        let mut store = self.lock();
        store.expire(now, self.settings.ttl);
        let record = store.touch(channel, now);
        let seq = record.next;
        record.next += 1;
        let message = if self.settings.ids {
            with_id(seq, message)
        } else {
            message
        };
        let size = message.len();
        record.entries.push_back((seq, message.clone()));
        record.bytes += size;
        let freed = record.trim(self.settings.depth);
        store.bytes = store.bytes + size - freed;
        store.evict(channel);
        deliver(message)
    }

    /// For a client joining `channel` from `position` (`None`: a new
    /// client): runs `join` with what it is owed, under the lock, so that
    /// `join` can subscribe the client and queue the catch-up before any
    /// later publish.
    pub fn join<R>(
        &self,
        channel: &ChannelName,
        position: Option<&Position>,
        join: impl FnOnce(Catchup) -> R,
    ) -> R {
        let now = Instant::now();
        let mut store = self.lock();
        store.expire(now, self.settings.ttl);
        let record = store.touch(channel, now);
        let catchup = record.catchup(position, self.settings.ids);
        join(catchup)
    }
}

impl Store {
    /// The record of `channel`, made if need be, now the most recent.
    fn touch(&mut self, channel: &ChannelName, now: Instant) -> &mut Record {
        self.tick += 1;
        let tick = self.tick;
        let record = self
            .channels
            .entry(channel.clone())
            .or_insert_with(|| Record {
                epoch: Epoch::new(),
                next: 1,
                entries: VecDeque::new(),
                bytes: 0,
                touched: 0,
                touched_at: now,
            });
        self.by_touch.remove(&record.touched);
        record.touched = tick;
        record.touched_at = now;
        self.by_touch.insert(tick, channel.clone());
        record
    }

    /// Drops the histories idle for longer than `ttl`.
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some((_, name)) = self.by_touch.first_key_value() {
            let idle = self
                .channels
                .get(name)
                .is_some_and(|r| now.duration_since(r.touched_at) > ttl);
            if !idle {
                break;
            }
            self.remove_oldest();
        }
    }

    /// Drops the least recently touched histories (never `keep`'s) until
    /// all fit in [`MEMORY`].
    fn evict(&mut self, keep: &ChannelName) {
        while self.bytes > MEMORY {
            if self
                .by_touch
                .first_key_value()
                .is_none_or(|(_, n)| n == keep)
            {
                break;
            }
            self.remove_oldest();
        }
    }

    fn remove_oldest(&mut self) {
        if let Some((_, name)) = self.by_touch.pop_first() {
            if let Some(record) = self.channels.remove(&name) {
                self.bytes -= record.bytes;
            }
        }
    }
}

impl Record {
    /// Drops the oldest messages past `depth` or the byte bound; returns
    /// the bytes freed.
    fn trim(&mut self, depth: usize) -> usize {
        let mut freed = 0;
        while self.entries.len() > depth || self.bytes > CHANNEL_BYTES {
            let Some((_, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            freed += old.len();
        }
        freed
    }

    fn catchup(&self, position: Option<&Position>, ids: bool) -> Catchup {
        let oldest = self.entries.front().map_or(self.next, |(seq, _)| *seq);
        let last = self.next - 1;
        let (since, recovered) = match position {
            None => (last, true),
            Some(p) if p.epoch.as_ref().is_some_and(|e| *e != self.epoch) => (0, false),
            Some(p) if p.since == 0 => (0, true),
            Some(p) if p.since > last || p.since + 1 < oldest => (0, false),
            Some(p) => (p.since, true),
        };
        let replay = self
            .entries
            .iter()
            .filter(|(seq, _)| *seq > since)
            .map(|(_, m)| m.clone())
            .collect();
        let notice = ids.then(|| {
            let word = if recovered { "epoch" } else { "reset" };
            Message::text(format!("{word}\t{}", self.epoch.as_str()))
        });
        Catchup {
            notice,
            replay,
            recovered,
        }
    }
}

/// `message` with `SEQ<TAB>` in front (bytes of a binary one).
pub fn with_id(seq: u64, message: Message) -> Message {
    match message {
        Message::Text(text) => Message::text(format!("{seq}\t{}", text.as_str())),
        Message::Binary(data) => {
            let prefix = format!("{seq}\t");
            let mut out = BytesMut::with_capacity(prefix.len() + data.len());
            out.put_slice(prefix.as_bytes());
            out.put_slice(&data);
            Message::Binary(Bytes::from(out))
        }
        other => other,
    }
}

// A whole replay, and the notice before it, fit in one member's queue, so
// catching up never drops.
const _: () = assert!(MAX_DEPTH < MEMBER_QUEUE.items);

#[cfg(test)]
mod tests {
    use super::*;

    fn history(depth: usize, ids: bool) -> History {
        History::new(Settings {
            depth,
            ttl: Duration::from_secs(60),
            ids,
        })
    }

    fn room() -> ChannelName {
        ChannelName::parse("/room").unwrap()
    }

    fn publish(h: &History, text: &str) -> Message {
        h.publish(&room(), Message::text(text.to_owned()), |m| m)
    }

    fn texts(messages: &[Message]) -> Vec<String> {
        messages
            .iter()
            .map(|m| m.to_text().unwrap().to_owned())
            .collect()
    }

    fn catchup(h: &History, position: Option<Position>) -> Catchup {
        h.join(&room(), position.as_ref(), |c| c)
    }

    fn epoch_of(c: &Catchup) -> Epoch {
        let notice = c.notice.as_ref().unwrap().to_text().unwrap();
        Epoch::from_client(notice.split_once('\t').unwrap().1)
    }

    #[test]
    fn messages_are_numbered_per_channel_and_a_resume_gets_what_it_missed() {
        let h = history(10, true);
        let fresh = catchup(&h, None);
        assert!(fresh.replay.is_empty() && fresh.recovered);
        let epoch = epoch_of(&fresh);
        assert_eq!(publish(&h, "a").to_text().unwrap(), "1\ta");
        publish(&h, "b");
        publish(&h, "c");
        let other = ChannelName::parse("/other").unwrap();
        let first = h.publish(&other, Message::text("x"), |m| m);
        assert_eq!(first.to_text().unwrap(), "1\tx");

        let at = |since| Position {
            since,
            epoch: Some(epoch.clone()),
        };
        let c = catchup(&h, Some(at(1)));
        assert_eq!(texts(&c.replay), ["2\tb", "3\tc"]);
        assert!(c.recovered);
        assert_eq!(
            c.notice.unwrap().to_text().unwrap(),
            format!("epoch\t{}", epoch.as_str())
        );
        assert!(catchup(&h, Some(at(3))).replay.is_empty());
        assert_eq!(catchup(&h, Some(at(0))).replay.len(), 3);
        // Without an epoch the seq is trusted as far as it can be.
        let bare = catchup(
            &h,
            Some(Position {
                since: 2,
                epoch: None,
            }),
        );
        assert_eq!(texts(&bare.replay), ["3\tc"]);
    }

    #[test]
    fn a_position_history_cannot_cover_is_reset_never_silently_skipped() {
        let h = history(2, true);
        let epoch = epoch_of(&catchup(&h, None));
        for text in ["a", "b", "c", "d"] {
            publish(&h, text);
        }
        // Held: 3 and 4. A client at 1 missed 2 for good.
        let c = catchup(
            &h,
            Some(Position {
                since: 1,
                epoch: Some(epoch.clone()),
            }),
        );
        assert!(!c.recovered);
        assert_eq!(texts(&c.replay), ["3\tc", "4\td"]);
        assert!(c.notice.unwrap().to_text().unwrap().starts_with("reset\t"));
        // At 2 it missed nothing that is gone.
        let c = catchup(
            &h,
            Some(Position {
                since: 2,
                epoch: Some(epoch),
            }),
        );
        assert!(c.recovered);
        // Another epoch, or a seq from the future: reset, everything held.
        let stranger = Some(Epoch::from_client("elsewhere"));
        let c = catchup(
            &h,
            Some(Position {
                since: 3,
                epoch: stranger,
            }),
        );
        assert!(!c.recovered && c.replay.len() == 2);
        let c = catchup(
            &h,
            Some(Position {
                since: 99,
                epoch: None,
            }),
        );
        assert!(!c.recovered && c.replay.len() == 2);
    }

    #[test]
    fn idle_histories_expire_with_their_epoch_and_memory_is_bounded() {
        let h = History::new(Settings {
            depth: 5,
            ttl: Duration::ZERO,
            ids: false,
        });
        publish(&h, "a");
        let first = h.lock().channels[&room()].epoch.clone();
        std::thread::sleep(Duration::from_millis(2));
        // Expired before this publish: a new run, seq 1 again.
        publish(&h, "b");
        let store = h.lock();
        let record = &store.channels[&room()];
        assert_ne!(record.epoch, first);
        assert_eq!(record.entries.front().unwrap().0, 1);
        drop(store);

        let h = history(MAX_DEPTH, false);
        let big = "x".repeat(64 * 1024);
        for i in 0..1100 {
            let channel = ChannelName::parse(&format!("/c{i}")).unwrap();
            for _ in 0..2 {
                h.publish(&channel, Message::text(big.clone()), |_| ());
            }
        }
        assert!(h.stats().bytes <= MEMORY as u64);
        let store = h.lock();
        assert!(store.bytes <= MEMORY, "{}", store.bytes);
        let held: usize = store.channels.values().map(|r| r.bytes).sum();
        assert_eq!(held, store.bytes);
        assert!(store
            .channels
            .contains_key(&ChannelName::parse("/c1099").unwrap()));
        assert!(!store
            .channels
            .contains_key(&ChannelName::parse("/c0").unwrap()));
    }

    #[test]
    fn a_position_comes_from_the_query_or_last_event_id() {
        let of = |uri: &str, last: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(id) = last {
                headers.insert("last-event-id", id.parse().unwrap());
            }
            Position::of_request(&uri.parse().unwrap(), &headers)
        };
        let at = |since, epoch: Option<&str>| {
            Ok(Some(Position {
                since,
                epoch: epoch.map(Epoch::from_client),
            }))
        };
        assert_eq!(of("/room", None), Ok(None));
        assert_eq!(of("/room?x=1&since=7", None), at(7, None));
        assert_eq!(of("/room?since=7&epoch=ab12", None), at(7, Some("ab12")));
        assert_eq!(of("/room", Some(" 12 ")), at(12, None));
        assert_eq!(of("/room?since=3", Some("12")), at(3, None));
        assert!(matches!(
            of("/room?since=x", None),
            Err(BadPosition::Since(_))
        ));
        assert!(matches!(
            of("/room?since=-1", None),
            Err(BadPosition::Since(_))
        ));
        assert!(matches!(
            of("/room", Some("abc")),
            Err(BadPosition::LastEventId(_))
        ));
        assert!(matches!(
            of("/room?since=1&epoch=a%20b", None),
            Err(BadPosition::Epoch(_))
        ));
        assert_eq!(of("/room?epoch=ab", None), Err(BadPosition::EpochAlone));
    }

    #[test]
    fn a_replay_fits_one_member_queue() {
        let h = history(MAX_DEPTH, true);
        let big = "y".repeat(100 * 1024);
        for _ in 0..20 {
            publish(&h, &big);
        }
        for _ in 0..2000 {
            publish(&h, "small");
        }
        let c = catchup(
            &h,
            Some(Position {
                since: 0,
                epoch: None,
            }),
        );
        let bytes: usize = c.replay.iter().map(Message::len).sum();
        assert!(c.replay.len() < MEMBER_QUEUE.items);
        assert!(bytes + c.notice.unwrap().len() <= MEMBER_QUEUE.bytes);
        // Binary messages get their id as bytes.
        let h = history(3, true);
        let m = h.publish(&room(), Message::binary(vec![0u8, 1]), |m| m);
        assert_eq!(m.into_data().as_ref(), b"1\t\x00\x01");
    }
}
