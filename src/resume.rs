//! `--history` with `--redis`: delivering numbered messages from Redis to
//! local members, and catching up clients that join with a position, with
//! no gap and no duplicate.
//!
//! A joining client is not a member of its channel at once: it is
//! *pending*. Its instance runs the resume script (`cluster::stream`),
//! which reads, atomically, what the client missed (up to the last seq L
//! Redis gave) and publishes a fence. Redis hands this instance's
//! subscriber everything numbered before the read (seq <= L) before the
//! fence, and everything after it after, so:
//!
//! - numbered messages before the fence are not the client's (it gets
//!   them from the replay);
//! - those after the fence are buffered for it (bounded);
//! - once both the read and the fence are in, under one lock with the
//!   delivery of numbered messages, the client becomes a member and gets
//!   the notice, the replay, then the buffer (only seq > L), in order.
//!
//! A read that fails (Redis away) or a fence that does not come within
//! `cluster::TIMEOUT` (the subscription is down) ends the wait: the
//! client becomes a member and is told `reset` (with epoch `0` when Redis
//! could not even be read), with a log line.
//!
//! Live members are followed too. Numbered messages of a channel come
//! here in seq order, so a seq that skips some (the subscription dropped
//! and missed them, while another instance numbered them) is a gap every
//! live member has. With `--history-ids` they are closed with 1012
//! ([`Eviction::Missed`]) before the message that showed it, so that
//! their reconnect with `since=` (the last seq they saw) gets the gap
//! from the history; without ids they cannot resume, and the gap is
//! logged.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use crate::cluster::stream::{HistoryLink, Resumed, Resumes};
use crate::cluster::TIMEOUT;
use crate::history::{with_id, Position};
use crate::hub::{ChannelName, Delivery, Hub, MEMBER_QUEUE};
use crate::session::Eviction;

/// The epoch a client is told when Redis could not be read: no real epoch
/// is `0`, so its next resume is a reset too, as it should be.
pub const UNKNOWN_EPOCH: &str = "0";

/// Numbered delivery and catch-up for this instance.
#[derive(Debug)]
pub struct Resumer {
    hub: Arc<Hub>,
    /// `--history-ids`.
    ids: bool,
    pending: Mutex<HashMap<ChannelName, Vec<Pending>>>,
    /// Where each channel's numbered messages are here: the epoch they
    /// last came with, to tell live members when it changes (Redis lost
    /// its data, or the history expired), and the last seq, to see a
    /// gap. At most [`STREAMS`] channels, then forgotten.
    streams: Mutex<HashMap<ChannelName, Stream>>,
    tokens: AtomicU64,
    /// Publishes served to local members only, un-numbered, while Redis
    /// could not number them.
    unnumbered: AtomicU64,
    /// The un-numbered fallback was logged in this outage.
    told: AtomicBool,
}

/// A client waiting for its catch-up.
#[derive(Debug)]
struct Pending {
    token: u64,
    /// Set once our fence came through: numbered messages are the
    /// client's from then on.
    fence: Option<oneshot::Sender<()>>,
    buffer: VecDeque<(u64, Message)>,
    /// The buffer lost messages to its bound: the client is told reset.
    overflowed: bool,
}

/// The catch-up of one client, put together.
struct Owed {
    notice: Option<Message>,
    messages: Vec<Message>,
}

impl Resumer {
    pub fn new(hub: Arc<Hub>, ids: bool) -> Self {
        Resumer {
            hub,
            ids,
            pending: Mutex::default(),
            streams: Mutex::default(),
            tokens: AtomicU64::new(1),
            unnumbered: AtomicU64::new(0),
            told: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ChannelName, Vec<Pending>>> {
        // Every critical section leaves the map consistent: poison is moot.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes counted by [`Resumer::unnumbered`].
    pub fn unnumbered_total(&self) -> u64 {
        self.unnumbered.load(Ordering::Relaxed)
    }

    /// `message` on `channel`, numbered through Redis (delivered here
    /// when it comes back), or, when the history connection is down,
    /// served to local members at once with seq 0 (`0<TAB>` with
    /// `--history-ids`: not in any history), and counted.
    pub fn publish(&self, link: &HistoryLink, channel: &ChannelName, message: Message) -> Delivery {
        if link.publish(channel.as_str(), &message) {
            self.told.store(false, Ordering::Relaxed);
            // Delivered when Redis passes it back: none yet.
            return Delivery::default();
        }
        self.unnumbered.fetch_add(1, Ordering::Relaxed);
        if !self.told.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "history: Redis cannot number publishes now; they go to local members only, \
                 un-numbered (seq 0), counted in history_unnumbered_total"
            );
        }
        let message = if self.ids {
            with_id(0, message)
        } else {
            message
        };
        self.hub.publish(channel, message)
    }

    /// Catches session `id` up on `channel` from `position` (`None`: a new
    /// client) in the background: it becomes a member once its catch-up
    /// is queued.
    pub fn join(
        self: &Arc<Self>,
        link: &HistoryLink,
        id: u64,
        channel: &ChannelName,
        position: Option<&Position>,
    ) {
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        let (fence, fenced) = oneshot::channel();
        self.lock()
            .entry(channel.clone())
            .or_default()
            .push(Pending {
                token,
                fence: Some(fence),
                buffer: VecDeque::new(),
                overflowed: false,
            });
        let this = self.clone();
        let link = link.clone();
        let channel = channel.clone();
        let since = position.map(|p| p.since);
        let epoch = position.and_then(|p| p.epoch.as_ref().map(|e| e.as_str().to_owned()));
        tokio::spawn(async move {
            let read = link
                .resume(channel.as_str(), since, epoch.as_deref(), token)
                .await;
            let fenced = match &read {
                Ok(_) => tokio::time::timeout(TIMEOUT, fenced)
                    .await
                    .is_ok_and(|r| r.is_ok()),
                Err(_) => false,
            };
            this.complete(id, token, &channel, read, fenced);
        });
    }

    /// Ends the wait of `token`: member of `channel`, with what it is owed.
    fn complete(
        &self,
        id: u64,
        token: u64,
        channel: &ChannelName,
        read: Result<Resumed, redis::RedisError>,
        fenced: bool,
    ) {
        let mut pending = self.lock();
        let Some(list) = pending.get_mut(channel) else {
            return;
        };
        let Some(at) = list.iter().position(|p| p.token == token) else {
            return;
        };
        let waiter = list.swap_remove(at);
        if list.is_empty() {
            pending.remove(channel);
        }
        let owed = match read {
            Ok(resumed) => {
                // The read may be the first to see a new run (Redis lost
                // its data): the members already here are told now.
                let flow = self.note(channel, &resumed.epoch, resumed.last, Seen::Read);
                if flow == Flow::NewEpoch && self.ids {
                    let notice = format!("reset\t{}", resumed.epoch);
                    self.hub.publish(channel, Message::text(notice));
                }
                if !fenced {
                    tracing::warn!(
                        id,
                        "history: resume on {channel}: the Redis subscription did not confirm within {TIMEOUT:?}; client told reset"
                    );
                }
                self.owed(resumed, waiter, fenced)
            }
            Err(e) => {
                tracing::warn!(
                    id,
                    "history: cannot read the history of {channel} from Redis ({e}); client told reset (epoch {UNKNOWN_EPOCH})"
                );
                Owed {
                    notice: self.notice(false, UNKNOWN_EPOCH),
                    messages: Vec::new(),
                }
            }
        };
        // Subscribed and caught up under the lock the numbered delivery
        // takes: the next numbered message finds it a member.
        if self.hub.subscribe(id, channel).is_ok() {
            self.hub
                .replay_to(channel, id, owed.notice.into_iter().chain(owed.messages));
        }
    }

    /// The notice, the replay and the buffer (seq > the read's last),
    /// bounded by one member queue (oldest dropped, then told reset).
    fn owed(&self, resumed: Resumed, waiter: Pending, fenced: bool) -> Owed {
        let mut recovered = resumed.recovered && fenced && !waiter.overflowed;
        let last = resumed.last;
        let mut all: VecDeque<(u64, Message)> = resumed.entries.into();
        all.extend(waiter.buffer.into_iter().filter(|(seq, _)| *seq > last));
        let mut bytes: usize = all.iter().map(|(_, m)| m.len() + 24).sum();
        let room = MEMBER_QUEUE.bytes - 4096;
        while all.len() >= MEMBER_QUEUE.items || bytes > room {
            let Some((_, m)) = all.pop_front() else {
                break;
            };
            bytes -= m.len() + 24;
            recovered = false;
        }
        let messages = all
            .into_iter()
            .map(|(seq, m)| if self.ids { with_id(seq, m) } else { m })
            .collect();
        Owed {
            notice: self.notice(recovered, &resumed.epoch),
            messages,
        }
    }

    fn notice(&self, recovered: bool, epoch: &str) -> Option<Message> {
        let word = if recovered { "epoch" } else { "reset" };
        self.ids.then(|| Message::text(format!("{word}\t{epoch}")))
    }
}

/// Most numbered messages buffered for one pending client: what its
/// queue holds.
const BUFFER: usize = MEMBER_QUEUE.items;

/// Most channels whose stream is followed; past it the map starts afresh
/// (an epoch change or a gap right then goes untold to live members;
/// their next resume is still told).
const STREAMS: usize = 65_536;

/// Where one channel's numbered messages are here.
#[derive(Debug)]
struct Stream {
    epoch: Arc<str>,
    last: u64,
}

/// How a seq came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// A numbered message, delivered to live members.
    Message,
    /// The last seq a resume read found: no gap can be told from it (the
    /// messages before it may still be on their way).
    Read,
}

/// What a seq says of a channel's stream here.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Flow {
    /// The next seq (or the first, a repeat, or a read's) of the run
    /// followed.
    InOrder,
    /// A new run of the numbers: another epoch.
    NewEpoch,
    /// Messages from `first` to `last` never came here.
    Gap { first: u64, last: u64 },
}

impl Resumer {
    /// Follows `channel`'s stream to `seq` of `epoch`.
    fn note(&self, channel: &ChannelName, epoch: &str, seq: u64, seen: Seen) -> Flow {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let Some(stream) = streams.get_mut(channel) else {
            if streams.len() >= STREAMS {
                streams.clear();
            }
            let epoch = epoch.into();
            streams.insert(channel.clone(), Stream { epoch, last: seq });
            return Flow::InOrder;
        };
        if &*stream.epoch != epoch {
            *stream = Stream {
                epoch: epoch.into(),
                last: seq,
            };
            return Flow::NewEpoch;
        }
        if seen == Seen::Read {
            // The live stream here may not have reached it yet.
            return Flow::InOrder;
        }
        let expected = stream.last + 1;
        stream.last = stream.last.max(seq);
        if seq > expected {
            return Flow::Gap {
                first: expected,
                last: seq - 1,
            };
        }
        Flow::InOrder
    }

    /// Live members of `channel` missed `first..=last`: with ids they are
    /// closed to resume (before the message that showed the gap, which
    /// they will get from the history too). Logged for a channel with
    /// members here only: every instance follows every channel.
    fn missed(&self, channel: &ChannelName, first: u64, last: u64) {
        if !self.ids {
            let members = self.hub.members_of(channel);
            if members > 0 {
                tracing::warn!(
                    "history: messages {first}-{last} of {channel} did not come here (the Redis \
                     subscription dropped); its {members} live member(s) miss them (without \
                     --history-ids they cannot resume)"
                );
            }
            return;
        }
        let asked = self.hub.evict_members(channel, Eviction::Missed);
        if asked == 0 {
            return;
        }
        tracing::warn!(
            "history: messages {first}-{last} of {channel} did not come here (the Redis \
             subscription dropped); closing its {asked} live member(s) with 1012 to resume \
             with since="
        );
    }
}

impl Resumes for Resumer {
    fn numbered(&self, channel: &str, seq: u64, epoch: &str, message: Message) {
        // Another instance checked the name; one that did not (or a
        // stranger on Redis) is ignored.
        let Ok(channel) = ChannelName::parse(channel) else {
            return;
        };
        let out = if self.ids {
            with_id(seq, message.clone())
        } else {
            message.clone()
        };
        let mut pending = self.lock();
        if let Some(list) = pending.get_mut(&channel) {
            for waiter in list.iter_mut().filter(|p| p.fence.is_none()) {
                if waiter.buffer.len() == BUFFER {
                    waiter.buffer.pop_front();
                    waiter.overflowed = true;
                }
                waiter.buffer.push_back((seq, message.clone()));
            }
        }
        match self.note(&channel, epoch, seq, Seen::Message) {
            // A new run of the numbers: live members are told, as
            // resumers are (with --history-ids), before its first message.
            Flow::NewEpoch if self.ids => {
                self.hub
                    .publish(&channel, Message::text(format!("reset\t{epoch}")));
            }
            Flow::Gap { first, last } => self.missed(&channel, first, last),
            _ => {}
        }
        // Under the lock: a client that completes now is either a member
        // before this or has it in its buffer, never both.
        self.hub.publish(&channel, out);
        drop(pending);
    }

    fn fenced(&self, channel: &str, token: u64) {
        let Ok(channel) = ChannelName::parse(channel) else {
            return;
        };
        let mut pending = self.lock();
        let waiter = pending
            .get_mut(&channel)
            .and_then(|list| list.iter_mut().find(|p| p.token == token));
        if let Some(fence) = waiter.and_then(|w| w.fence.take()) {
            let _ = fence.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::{mailbox, mailbox_weighed, Mailbox};
    use crate::session::SessionCtl;

    fn room() -> ChannelName {
        ChannelName::parse("/room").unwrap()
    }

    /// A resumer whose hub has session 1 present (in no channel yet).
    fn setup() -> (Arc<Resumer>, Mailbox<Message>, crate::hub::Presence) {
        let hub = Arc::new(Hub::default());
        let (poster, rx) = mailbox_weighed(2048, |m: &Message| m.len());
        let (control, _) = mailbox(1);
        let presence = hub.enter(1, poster, control);
        (Arc::new(Resumer::new(hub, true)), rx, presence)
    }

    fn pending(r: &Resumer, token: u64) -> oneshot::Receiver<()> {
        let (fence, fenced) = oneshot::channel();
        r.lock().entry(room()).or_default().push(Pending {
            token,
            fence: Some(fence),
            buffer: VecDeque::new(),
            overflowed: false,
        });
        fenced
    }

    fn drain(rx: &mut Mailbox<Message>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv())
            .map(|m| m.to_text().unwrap().to_owned())
            .collect()
    }

    fn read(last: u64, from: u64, recovered: bool) -> Resumed {
        Resumed {
            epoch: "e1".into(),
            fresh: false,
            recovered,
            last,
            entries: (from..=last)
                .map(|s| (s, Message::text(format!("m{s}"))))
                .collect(),
        }
    }

    #[test]
    fn before_the_fence_is_the_replay_s_after_it_the_buffer_s_never_both() {
        let (r, mut rx, _presence) = setup();
        let mut fenced = pending(&r, 7);
        // Numbered before the read: not the client's (the replay has them).
        r.numbered("/room", 3, "e1", Message::text("m3"));
        r.fenced("/room", 99);
        assert!(fenced.try_recv().is_err(), "another token's fence");
        r.fenced("/room", 7);
        assert!(fenced.try_recv().is_ok());
        // After the fence: buffered (the read saw up to 4, so 4 is a
        // duplicate and goes).
        r.numbered("/room", 4, "e1", Message::text("m4"));
        r.numbered("/room", 5, "e1", Message::text("m5"));
        assert!(drain(&mut rx).is_empty(), "not a member yet");
        r.complete(1, 7, &room(), Ok(read(4, 2, true)), true);
        assert_eq!(
            drain(&mut rx),
            ["epoch\te1", "2\tm2", "3\tm3", "4\tm4", "5\tm5"]
        );
        assert!(r.lock().is_empty(), "nothing left pending");
        // A member now: live.
        r.numbered("/room", 6, "e1", Message::text("m6"));
        assert_eq!(drain(&mut rx), ["6\tm6"]);
    }

    #[test]
    fn no_fence_or_no_read_or_an_overflow_is_a_reset() {
        let (r, mut rx, _presence) = setup();
        let _fenced = pending(&r, 1);
        r.complete(1, 1, &room(), Ok(read(2, 1, true)), false);
        assert_eq!(drain(&mut rx), ["reset\te1", "1\tm1", "2\tm2"]);

        let (r, mut rx, _presence) = setup();
        let _fenced = pending(&r, 1);
        let down = redis::RedisError::from(std::io::Error::other("down"));
        r.complete(1, 1, &room(), Err(down), false);
        assert_eq!(drain(&mut rx), [format!("reset\t{UNKNOWN_EPOCH}")]);

        let (r, mut rx, _presence) = setup();
        let _fenced = pending(&r, 1);
        r.fenced("/room", 1);
        for seq in 1..=(BUFFER as u64 + 5) {
            r.numbered("/room", seq, "e1", Message::text("x"));
        }
        r.complete(1, 1, &room(), Ok(read(0, 1, true)), true);
        let got = drain(&mut rx);
        assert_eq!(got[0], "reset\te1");
        assert!(got.len() <= MEMBER_QUEUE.items, "{}", got.len());
    }

    #[test]
    fn a_skipped_seq_is_a_gap_a_read_s_last_never_is() {
        let (r, _rx, _presence) = setup();
        let room = room();
        let note = |seq, seen| r.note(&room, "e1", seq, seen);
        assert_eq!(note(5, Seen::Read), Flow::InOrder);
        // Still on its way when the read was made: in order.
        assert_eq!(note(3, Seen::Message), Flow::InOrder);
        assert_eq!(note(6, Seen::Message), Flow::InOrder);
        assert_eq!(note(9, Seen::Message), Flow::Gap { first: 7, last: 8 });
        assert_eq!(note(20, Seen::Read), Flow::InOrder);
        assert_eq!(note(10, Seen::Message), Flow::InOrder);
        assert_eq!(r.note(&room, "e2", 1, Seen::Message), Flow::NewEpoch);
        assert_eq!(r.note(&room, "e2", 2, Seen::Message), Flow::InOrder);
    }

    #[test]
    fn with_ids_a_gap_closes_live_members_before_the_message_that_showed_it() {
        let hub = Arc::new(Hub::default());
        let (poster, mut rx) = mailbox_weighed(2048, |m: &Message| m.len());
        let (control, mut requests) = mailbox(1);
        let _presence = hub.enter(1, poster, control);
        let r = Resumer::new(hub.clone(), true);
        hub.subscribe(1, &room()).unwrap();
        r.numbered("/room", 1, "e1", Message::text("one"));
        r.numbered("/room", 2, "e1", Message::text("two"));
        assert!(requests.try_recv().is_none());
        r.numbered("/room", 5, "e1", Message::text("five"));
        assert!(matches!(
            requests.try_recv(),
            Some(SessionCtl::Evicted(Eviction::Missed))
        ));
        r.numbered("/room", 6, "e1", Message::text("six"));
        // It resumes from 2 and gets 3..6 from the history.
        assert_eq!(drain(&mut rx), ["1\tone", "2\ttwo"]);
    }
}
