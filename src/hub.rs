//! Channels: one message to many sessions' sockets.
//!
//! A channel is named by a path (`/room`). Every session is a member of
//! the channel of its URL path from the moment it is registered, and can be
//! made a member of others (`wspipe ctl subscribe`). Publishing a message to
//! a channel hands it to every member's queue of messages for its client
//! (the same queue `wspipe ctl send` uses, so a published message goes out
//! between the child's lines, never inside one), in publish order: publishes
//! are serialised, so every member sees the same order.
//!
//! A publish never waits: a member whose queue is full (its client reads
//! slowly) loses its oldest queued message to make room, and the loss is
//! counted. A member that keeps up gets every message, once, in order. The
//! message is built once; members share its bytes.
//!
//! A channel exists while it has members: the last one to leave takes it,
//! and its counters, away, so clients connecting to ever new paths cannot
//! grow the hub without bound.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_tungstenite::tungstenite::Message;

use crate::config::Overflow;
use crate::events::{Event, Events};
use crate::mailbox::{Bound, PostError, Poster};
use crate::session::{Eviction, SessionCtl};

/// Longest channel name, in bytes.
pub const MAX_CHANNEL: usize = 1024;

/// What a member's queue holds before published messages are dropped,
/// oldest first. Far more than one pipelined burst of publishes outruns a
/// reading client by; the payloads are shared by every member, so a slow
/// member costs its slots (a few dozen bytes each) and at most this many
/// payload bytes kept alive.
pub const MEMBER_QUEUE: Bound = Bound {
    items: 1024,
    bytes: 1 << 20,
};

/// A valid channel name: a path (`/` first), at most [`MAX_CHANNEL`] bytes,
/// no control characters and no query (`?`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelName(Arc<str>);

/// Why a string is not a channel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a channel name is a path: it starts with '/'")]
    NotAPath,
    #[error("a channel name is at most 1024 bytes")]
    TooLong,
    #[error("a channel name has no control characters and no '?'")]
    BadCharacter,
}

impl ChannelName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        if !name.starts_with('/') {
            return Err(NameError::NotAPath);
        }
        if name.len() > MAX_CHANNEL {
            return Err(NameError::TooLong);
        }
        if name.chars().any(|c| c.is_control() || c == '?') {
            return Err(NameError::BadCharacter);
        }
        Ok(ChannelName(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ChannelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Members whose queue took the message.
    pub delivered: u64,
    /// Older queued messages its members lost for it.
    pub dropped: u64,
}

impl Delivery {
    /// Counts what one member's offer did.
    fn count(&mut self, offer: Offer) {
        match offer {
            Offer::Taken => self.delivered += 1,
            Offer::TakenDropping(n) => {
                self.delivered += 1;
                self.dropped += n;
            }
            Offer::Refused => self.dropped += 1,
            Offer::Gone => {}
        }
    }
}

/// One channel, as `wspipe ctl channels` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub name: ChannelName,
    pub members: u64,
    /// Messages published to it since it came to be.
    pub published: u64,
    /// Queued messages its members lost to newer ones.
    pub dropped: u64,
}

/// What one member did with a published message.
enum Offer {
    Taken,
    /// Taken, its oldest `n` queued messages dropped for it.
    TakenDropping(u64),
    /// Not taken: the client is too slow and is being closed.
    Refused,
    /// The session is ending.
    Gone,
}

/// No session with that id is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotPresent;

#[derive(Debug, Default)]
struct Channel {
    members: BTreeSet<u64>,
    published: u64,
    dropped: u64,
}

#[derive(Debug)]
struct Member {
    /// The session's queue of messages for its client.
    poster: Poster<Message>,
    /// Its supervisor's requests, to close a client too slow for
    /// [`Overflow::Close`], or one that missed messages
    /// ([`Hub::evict_members`]).
    control: Poster<SessionCtl>,
    /// Asked to close: it gets no more messages.
    closing: bool,
    /// The channels it is in, so that leaving is cheap. A vector: most
    /// sessions are in one or two, and a set's first node would cost a
    /// few hundred bytes per session.
    channels: Vec<ChannelName>,
}

#[derive(Debug, Default)]
struct Inner {
    channels: BTreeMap<ChannelName, Channel>,
    members: HashMap<u64, Member>,
    /// Since start, over every channel (they outlive the channels).
    totals: Totals,
}

/// The hub's counters, for `ctl stats` and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Channels now.
    pub channels: u64,
    /// Memberships now (a session in two channels counts twice).
    pub members: u64,
    /// Messages published since start (to members or not).
    pub published: u64,
    /// Copies handed to members' queues since start.
    pub delivered: u64,
    /// Queued messages slow members lost since start.
    pub dropped: u64,
}

impl Totals {
    /// Counts one published message and what it did.
    fn add(&mut self, delivery: Delivery) {
        self.published += 1;
        self.delivered += delivery.delivered;
        self.dropped += delivery.dropped;
    }
}

/// All channels and their members.
#[derive(Debug, Default)]
pub struct Hub {
    inner: Mutex<Inner>,
    /// What a full member queue does (`--channel-overflow`).
    overflow: Overflow,
    /// Joins, leaves and publishes, for `wspipe ctl watch`.
    events: Events,
}

/// A session's presence in the hub: while it lives the session can be
/// subscribed to channels; dropping it leaves them all.
#[derive(Debug)]
pub struct Presence {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        if let Some(member) = inner.members.remove(&self.id) {
            for name in &member.channels {
                inner.remove_from(name, self.id);
            }
        }
    }
}

impl Inner {
    fn remove_from(&mut self, name: &ChannelName, id: u64) -> bool {
        let Some(channel) = self.channels.get_mut(name) else {
            return false;
        };
        let removed = channel.members.remove(&id);
        if channel.members.is_empty() {
            self.channels.remove(name);
        }
        removed
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent before it can
        // panic (a post never panics): poison is moot.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn new(overflow: Overflow, events: Events) -> Self {
        Hub {
            inner: Mutex::default(),
            overflow,
            events,
        }
    }

    /// Makes session `id` present, delivering to `poster`; `control`
    /// reaches its supervisor.
    pub fn enter(
        self: &Arc<Self>,
        id: u64,
        poster: Poster<Message>,
        control: Poster<SessionCtl>,
    ) -> Presence {
        let member = Member {
            poster,
            control,
            closing: false,
            channels: Vec::new(),
        };
        self.lock().members.insert(id, member);
        Presence {
            hub: self.clone(),
            id,
        }
    }

    /// Adds session `id` to `channel`; false if it was a member already.
    pub fn subscribe(&self, id: u64, channel: &ChannelName) -> Result<bool, NotPresent> {
        let mut inner = self.lock();
        let member = inner.members.get_mut(&id).ok_or(NotPresent)?;
        if member.channels.contains(channel) {
            return Ok(false);
        }
        member.channels.push(channel.clone());
        let entry = inner.channels.entry(channel.clone()).or_default();
        entry.members.insert(id);
        self.events.emit(|| Event::Subscribe {
            id,
            channel: channel.to_string(),
        });
        Ok(true)
    }

    /// Takes session `id` out of `channel`; false if it was not in it.
    pub fn unsubscribe(&self, id: u64, channel: &ChannelName) -> Result<bool, NotPresent> {
        let mut inner = self.lock();
        let member = inner.members.get_mut(&id).ok_or(NotPresent)?;
        let Some(at) = member.channels.iter().position(|c| c == channel) else {
            return Ok(false);
        };
        member.channels.remove(at);
        inner.remove_from(channel, id);
        self.events.emit(|| Event::Unsubscribe {
            id,
            channel: channel.to_string(),
        });
        Ok(true)
    }

    /// Hands `message` to every member of `channel`, never waiting.
    pub fn publish(&self, channel: &ChannelName, message: Message) -> Delivery {
        let mut guard = self.lock();
        let Inner {
            channels,
            members,
            totals,
        } = &mut *guard;
        let mut delivery = Delivery::default();
        // A channel with no members is not there: delivered to none.
        if let Some(ch) = channels.get_mut(channel) {
            for id in &ch.members {
                let Some(member) = members.get_mut(id) else {
                    continue;
                };
                delivery.count(self.offer(member, &message));
            }
            ch.published += 1;
            ch.dropped += delivery.dropped;
        }
        totals.add(delivery);
        self.events.emit(|| Event::Publish {
            channel: channel.to_string(),
            delivered: delivery.delivered,
            dropped: delivery.dropped,
        });
        delivery
    }

    /// Hands `message` to member `id` of `channel` alone, never waiting,
    /// as a publish would (the same overflow policy, counted as one
    /// published message of one delivery, but told to no watcher: it is
    /// one client's). `None`, with nothing counted, when `id` is not a
    /// member of `channel`.
    pub fn publish_to(&self, channel: &ChannelName, id: u64, message: Message) -> Option<Delivery> {
        self.deliver_to(channel, id, [message], true)
    }

    /// Queues `messages` for member `id` of `channel` alone, in order, as
    /// a publish would offer them (the same overflow policy), counting the
    /// deliveries but no publish: what a client missed, replayed from a
    /// channel's history. False when `id` is not a member.
    pub fn replay_to(
        &self,
        channel: &ChannelName,
        id: u64,
        messages: impl IntoIterator<Item = Message>,
    ) -> bool {
        self.deliver_to(channel, id, messages, false).is_some()
    }

    /// Offers `messages` to member `id` of `channel`; with `published`,
    /// they count as one published message.
    fn deliver_to(
        &self,
        channel: &ChannelName,
        id: u64,
        messages: impl IntoIterator<Item = Message>,
        published: bool,
    ) -> Option<Delivery> {
        let mut guard = self.lock();
        let Inner {
            channels,
            members,
            totals,
        } = &mut *guard;
        let ch = channels
            .get_mut(channel)
            .filter(|ch| ch.members.contains(&id))?;
        let member = members.get_mut(&id)?;
        let mut delivery = Delivery::default();
        for message in messages {
            delivery.count(self.offer(member, &message));
        }
        ch.dropped += delivery.dropped;
        if published {
            ch.published += 1;
            totals.add(delivery);
        } else {
            totals.delivered += delivery.delivered;
            totals.dropped += delivery.dropped;
        }
        Some(delivery)
    }

    /// Offers one member the message, as the overflow policy says.
    fn offer(&self, member: &mut Member, message: &Message) -> Offer {
        if member.closing {
            return Offer::Refused;
        }
        match self.overflow {
            Overflow::Drop => match member.poster.post_evicting(message.clone(), MEMBER_QUEUE) {
                Ok(0) => Offer::Taken,
                Ok(n) => Offer::TakenDropping(n),
                Err(_) => Offer::Gone,
            },
            Overflow::Close => match member.poster.post_within(message.clone(), MEMBER_QUEUE) {
                Ok(()) => Offer::Taken,
                Err(PostError::Full) => {
                    member.closing = true;
                    // Full only if a close is pending already.
                    let _ = member.control.post(SessionCtl::Evicted(Eviction::TooSlow));
                    Offer::Refused
                }
                Err(PostError::Closed) => Offer::Gone,
            },
        }
    }

    /// Asks every member of `channel` to close, for `why`; from now on
    /// they get no message of any channel. Returns how many were asked.
    pub fn evict_members(&self, channel: &ChannelName, why: Eviction) -> usize {
        let mut guard = self.lock();
        let Inner {
            channels, members, ..
        } = &mut *guard;
        let Some(ch) = channels.get(channel) else {
            return 0;
        };
        let mut asked = 0;
        for id in &ch.members {
            let Some(member) = members.get_mut(id) else {
                continue;
            };
            if !member.closing {
                member.closing = true;
                // Full only if a close is pending already.
                let _ = member.control.post(SessionCtl::Evicted(why));
                asked += 1;
            }
        }
        asked
    }

    /// The counters now.
    pub fn totals(&self) -> Totals {
        let inner = self.lock();
        Totals {
            channels: inner.channels.len() as u64,
            members: inner
                .channels
                .values()
                .map(|c| c.members.len() as u64)
                .sum(),
            ..inner.totals
        }
    }

    /// Every channel, by name.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.lock()
            .channels
            .iter()
            .map(|(name, ch)| ChannelInfo {
                name: name.clone(),
                members: ch.members.len() as u64,
                published: ch.published,
                dropped: ch.dropped,
            })
            .collect()
    }

    /// How many members `channel` has now.
    pub fn members_of(&self, channel: &ChannelName) -> usize {
        self.lock()
            .channels
            .get(channel)
            .map_or(0, |ch| ch.members.len())
    }

    /// The channels session `id` is in.
    pub fn channels_of(&self, id: u64) -> Vec<ChannelName> {
        self.lock()
            .members
            .get(&id)
            .map(|m| {
                let mut names = m.channels.clone();
                names.sort();
                names
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::{mailbox, mailbox_weighed, Mailbox};

    fn name(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }

    fn member(hub: &Arc<Hub>, id: u64, queue: usize) -> (Presence, Mailbox<Message>) {
        let (poster, rx) = mailbox_weighed(queue, |m: &Message| m.len());
        let (control, _) = mailbox(1);
        (hub.enter(id, poster, control), rx)
    }

    fn texts(rx: &mut Mailbox<Message>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv())
            .map(|m| m.into_text().unwrap().as_str().to_owned())
            .collect()
    }

    #[test]
    fn names_are_paths_without_control_characters_or_queries() {
        assert!(ChannelName::parse("/room").is_ok());
        assert!(ChannelName::parse("/").is_ok());
        assert_eq!(ChannelName::parse("room"), Err(NameError::NotAPath));
        assert_eq!(ChannelName::parse(""), Err(NameError::NotAPath));
        assert_eq!(ChannelName::parse("/a\0b"), Err(NameError::BadCharacter));
        assert_eq!(ChannelName::parse("/a?b=1"), Err(NameError::BadCharacter));
        assert_eq!(ChannelName::parse("/a\nb"), Err(NameError::BadCharacter));
        let long = format!("/{}", "x".repeat(MAX_CHANNEL));
        assert_eq!(ChannelName::parse(&long), Err(NameError::TooLong));
    }

    #[test]
    fn members_get_every_message_in_order_and_others_nothing() {
        let hub = Arc::new(Hub::default());
        let (_a, mut ra) = member(&hub, 1, 8);
        let (_b, mut rb) = member(&hub, 2, 8);
        let (_c, mut rc) = member(&hub, 3, 8);
        let room = name("/room");
        assert_eq!(hub.subscribe(1, &room), Ok(true));
        assert_eq!(hub.subscribe(2, &room), Ok(true));
        assert_eq!(hub.subscribe(2, &room), Ok(false), "once is enough");
        assert_eq!(hub.subscribe(3, &name("/other")), Ok(true));
        for m in ["one", "two", "three"] {
            let d = hub.publish(&room, Message::text(m));
            assert_eq!((d.delivered, d.dropped), (2, 0));
        }
        assert_eq!(texts(&mut ra), ["one", "two", "three"]);
        assert_eq!(texts(&mut rb), ["one", "two", "three"]);
        assert!(texts(&mut rc).is_empty());
        assert_eq!(
            hub.publish(&name("/nobody"), Message::text("x")),
            Delivery::default()
        );
    }

    #[test]
    fn publish_to_reaches_one_member_of_the_channel_only() {
        let hub = Arc::new(Hub::default());
        let (_a, mut ra) = member(&hub, 1, 8);
        let (_b, mut rb) = member(&hub, 2, 8);
        let (_c, mut rc) = member(&hub, 3, 8);
        let room = name("/room");
        hub.subscribe(1, &room).unwrap();
        hub.subscribe(2, &room).unwrap();
        hub.subscribe(3, &name("/other")).unwrap();
        let d = hub.publish_to(&room, 2, Message::text("for two"));
        assert_eq!(d.map(|d| (d.delivered, d.dropped)), Some((1, 0)));
        assert_eq!(
            hub.publish_to(&room, 3, Message::text("x")),
            None,
            "not in it"
        );
        assert_eq!(hub.publish_to(&room, 9, Message::text("x")), None, "no one");
        assert!(texts(&mut ra).is_empty());
        assert_eq!(texts(&mut rb), ["for two"]);
        assert!(texts(&mut rc).is_empty());
        assert_eq!(hub.totals().published, 1);
    }

    #[test]
    fn a_full_queue_loses_its_oldest_and_never_holds_up_the_others() {
        let hub = Arc::new(Hub::default());
        let (_slow, mut slow) = member(&hub, 1, 2);
        let (_fast, mut fast) = member(&hub, 2, 100);
        let room = name("/room");
        hub.subscribe(1, &room).unwrap();
        hub.subscribe(2, &room).unwrap();
        // The slow one never reads; the fast one reads as they come.
        let total = MEMBER_QUEUE.items + 10;
        let mut dropped = 0;
        let mut got = Vec::new();
        for i in 0..total {
            dropped += hub.publish(&room, Message::text(i.to_string())).dropped;
            got.extend(texts(&mut fast));
        }
        assert_eq!(dropped, 10);
        let kept = texts(&mut slow);
        assert_eq!(kept.len(), MEMBER_QUEUE.items);
        assert_eq!(kept[0], "10", "the oldest went first");
        assert_eq!(got.len(), total, "the reader lost nothing");
        let info = &hub.channels()[0];
        assert_eq!((info.published, info.dropped), (total as u64, 10));
        let t = hub.totals();
        assert_eq!((t.channels, t.members), (1, 2));
        assert_eq!(
            (t.published, t.delivered, t.dropped),
            (total as u64, 2 * total as u64, 10)
        );
    }

    #[test]
    fn with_the_close_policy_a_full_member_is_closed_and_gets_no_more() {
        let hub = Arc::new(Hub::new(Overflow::Close, Events::default()));
        let (poster, mut slow) = mailbox_weighed(1, |m: &Message| m.len());
        let (control, mut requests) = mailbox(4);
        let _presence = hub.enter(1, poster, control);
        let room = name("/room");
        hub.subscribe(1, &room).unwrap();
        let total = MEMBER_QUEUE.items + 5;
        let dropped: u64 = (0..total)
            .map(|i| hub.publish(&room, Message::text(i.to_string())).dropped)
            .sum();
        assert_eq!(dropped, 5);
        assert_eq!(
            texts(&mut slow).len(),
            MEMBER_QUEUE.items,
            "nothing evicted"
        );
        assert!(
            matches!(
                requests.try_recv(),
                Some(SessionCtl::Evicted(Eviction::TooSlow))
            ),
            "the session is asked to close"
        );
        assert!(requests.try_recv().is_none(), "asked once");
        hub.publish(&room, Message::text("later"));
        assert!(texts(&mut slow).is_empty(), "a closing member gets no more");
    }

    #[test]
    fn big_messages_are_bounded_by_bytes() {
        let hub = Arc::new(Hub::default());
        let (_slow, mut slow) = member(&hub, 1, 2);
        let room = name("/room");
        hub.subscribe(1, &room).unwrap();
        let big = "x".repeat(300 * 1024);
        for _ in 0..5 {
            hub.publish(&room, Message::text(big.as_str()));
        }
        assert_eq!(texts(&mut slow).len(), 3, "1 MiB holds three of 300 KiB");
    }

    #[test]
    fn leaving_takes_the_member_out_and_empty_channels_away() {
        let hub = Arc::new(Hub::default());
        let (a, _ra) = member(&hub, 1, 4);
        let (_b, _rb) = member(&hub, 2, 4);
        let (room, side) = (name("/room"), name("/side"));
        hub.subscribe(1, &room).unwrap();
        hub.subscribe(1, &side).unwrap();
        hub.subscribe(2, &room).unwrap();
        assert_eq!(hub.channels_of(1), [room.clone(), side.clone()]);
        assert_eq!(hub.unsubscribe(1, &side), Ok(true));
        assert_eq!(hub.unsubscribe(1, &side), Ok(false));
        assert_eq!(hub.channels().len(), 1, "/side had no one left");
        drop(a);
        assert_eq!(hub.subscribe(1, &room), Err(NotPresent));
        let infos = hub.channels();
        assert_eq!((infos.len(), infos[0].members), (1, 1));
        assert_eq!(hub.publish(&room, Message::text("x")).delivered, 1);
    }
}
