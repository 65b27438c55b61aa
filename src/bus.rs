//! Publishing, on one instance or across several: the [`Bus`] hands a
//! message to the local members through the hub at once, then, with
//! `--redis`, forwards it to the other instances ([`crate::cluster`]),
//! whose messages it hands to the hub in turn. The hub knows nothing of
//! Redis and the cluster nothing of the hub; this layer wires the two.
//!
//! Every publish path goes through [`Bus::publish`]: a `--pubsub`
//! client's message, a `--shared` child's line, HTTP `--publish`, `ctl
//! publish`. Publishes are serialised here across the hub and the
//! forward, so the other instances see this instance's messages in the
//! order its own members did.
//!
//! With `--history` and `--redis` a publish is numbered in Redis first and
//! every instance, this one included, delivers it when it comes back
//! ([`crate::resume`]): one numbering for all, so a client resumes
//! anywhere.

use std::sync::{Arc, Mutex};

use tokio_tungstenite::tungstenite::Message;

use crate::cluster::{self, Cluster, Deliver, InstanceName};
use crate::config::HistoryFlags;
use crate::history::{History, Position};
use crate::hub::{ChannelName, Delivery, Hub};
use crate::resume::Resumer;
use crate::shutdown::Shutdown;

/// The channels of this instance, and of its peers with `--redis`; a
/// cheap handle.
#[derive(Debug, Clone)]
pub struct Bus(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    hub: Arc<Hub>,
    cluster: Option<Cluster>,
    /// `--history` without `--redis`: each publish is numbered and kept
    /// here, and a joining client catches up.
    history: Option<History>,
    /// `--history` with `--redis`: numbered in Redis, delivered from
    /// there ([`crate::resume`]).
    resumer: Option<Arc<Resumer>>,
    /// Held across the local publish and the forward (only with a
    /// cluster), so both see one order.
    order: Mutex<()>,
}

/// Messages from other instances, to the local members.
struct ToHub(Arc<Hub>);

impl Deliver for ToHub {
    fn deliver(&self, channel: &str, message: Message) {
        // Another instance checked the name; one that did not (or a
        // stranger on Redis) is ignored.
        if let Ok(channel) = ChannelName::parse(channel) {
            self.0.publish(&channel, message);
        }
    }
}

impl Bus {
    /// A bus for this instance alone.
    pub fn local(hub: Arc<Hub>) -> Self {
        Self::local_with_history(hub, None)
    }

    /// A bus for this instance alone, with `--history` if given.
    pub fn local_with_history(hub: Arc<Hub>, history: Option<History>) -> Self {
        Bus(Arc::new(Inner {
            hub,
            cluster: None,
            history,
            resumer: None,
            order: Mutex::new(()),
        }))
    }

    /// A bus shared with the other instances on `settings`' Redis, with
    /// `--history` kept there if given; starts its tasks (so needs a tokio
    /// runtime). Messages of other instances longer than `largest` bytes
    /// are dropped (and counted).
    pub fn clustered(
        hub: Arc<Hub>,
        settings: &cluster::Settings,
        largest: usize,
        history: Option<HistoryFlags>,
        shutdown: &Shutdown,
    ) -> Self {
        let resumer = history.map(|h| Arc::new(Resumer::new(hub.clone(), h.ids)));
        let numbered = history.zip(resumer.clone()).map(|(h, r)| {
            let settings = cluster::stream::Settings {
                depth: h.depth,
                ttl_secs: h.ttl.as_secs().max(1),
            };
            (settings, r as Arc<dyn cluster::stream::Resumes>)
        });
        let cluster = Cluster::start_with_history(
            settings,
            largest,
            Arc::new(ToHub(hub.clone())),
            numbered,
            shutdown,
        );
        Bus(Arc::new(Inner {
            hub,
            cluster: Some(cluster),
            history: None,
            resumer,
            order: Mutex::new(()),
        }))
    }

    /// Hands `message` to every member of `channel` here, never waiting,
    /// and queues it for the other instances. What the answer counts is
    /// local: the other instances' members are not known here.
    pub fn publish(&self, channel: &ChannelName, message: Message) -> Delivery {
        let hub = &self.0.hub;
        let Some(cluster) = &self.0.cluster else {
            return match &self.0.history {
                Some(history) => history.publish(channel, message, |m| hub.publish(channel, m)),
                None => hub.publish(channel, message),
            };
        };
        if let (Some(resumer), Some(link)) = (&self.0.resumer, cluster.history()) {
            return resumer.publish(link, channel, message);
        }
        // Poison is moot: nothing is guarded but the order.
        let _order = self.0.order.lock().unwrap_or_else(|e| e.into_inner());
        cluster.forward(channel.as_str(), &message);
        self.0.hub.publish(channel, message)
    }

    /// Makes session `id` a member of `channel`, the one its stream comes
    /// on. With `--history` it first gets what it missed since
    /// `position` (and with `--history-ids` the epoch notice), queued
    /// before any later publish; returns whether what it missed was all
    /// still there (`None` without history).
    pub fn join(
        &self,
        id: u64,
        channel: &ChannelName,
        position: Option<&Position>,
    ) -> Option<bool> {
        let hub = &self.0.hub;
        let remote = self.0.cluster.as_ref().and_then(Cluster::history);
        if let (Some(resumer), Some(link)) = (&self.0.resumer, remote) {
            // Caught up in the background: whether it all was, is logged.
            resumer.join(link, id, channel, position);
            return None;
        }
        let Some(history) = &self.0.history else {
            let _ = hub.subscribe(id, channel);
            return None;
        };
        Some(history.join(channel, position, |catchup| {
            let _ = hub.subscribe(id, channel);
            let owed = catchup.notice.into_iter().chain(catchup.replay);
            hub.replay_to(channel, id, owed);
            catchup.recovered
        }))
    }

    /// Whether `--history` is on.
    pub fn keeps_history(&self) -> bool {
        self.0.history.is_some() || self.0.resumer.is_some()
    }

    /// With `--history` and `--redis`: publishes served un-numbered to
    /// local members only because Redis could not number them.
    pub fn history_unnumbered(&self) -> Option<u64> {
        self.0.resumer.as_ref().map(|r| r.unnumbered_total())
    }

    /// What the histories hold, with `--history`.
    pub fn history_stats(&self) -> Option<crate::history::Stats> {
        self.0.history.as_ref().map(History::stats)
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.0.hub
    }

    /// This instance's name, with `--redis`.
    pub fn instance(&self) -> Option<&InstanceName> {
        self.0.cluster.as_ref().map(Cluster::instance)
    }

    /// The Redis counters, with `--redis`.
    pub fn cluster_stats(&self) -> Option<cluster::Stats> {
        self.0.cluster.as_ref().map(Cluster::stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::{mailbox, mailbox_weighed};

    #[test]
    fn a_local_bus_publishes_through_the_hub() {
        let hub = Arc::new(Hub::default());
        let (poster, mut rx) = mailbox_weighed(8, |m: &Message| m.len());
        let (control, _) = mailbox(1);
        let _presence = hub.enter(1, poster, control);
        let room = ChannelName::parse("/room").unwrap();
        hub.subscribe(1, &room).unwrap();
        let bus = Bus::local(hub.clone());
        assert_eq!(bus.publish(&room, Message::text("hi")).delivered, 1);
        assert_eq!(rx.try_recv(), Some(Message::text("hi")));
        assert!(bus.cluster_stats().is_none());
        assert!(bus.instance().is_none());
    }

    #[test]
    fn messages_from_other_instances_reach_local_members_and_bad_names_nobody() {
        let hub = Arc::new(Hub::default());
        let (poster, mut rx) = mailbox_weighed(8, |m: &Message| m.len());
        let (control, _) = mailbox(1);
        let _presence = hub.enter(1, poster, control);
        hub.subscribe(1, &ChannelName::parse("/room").unwrap())
            .unwrap();
        let to_hub = ToHub(hub.clone());
        to_hub.deliver("/room", Message::binary(vec![1u8, 2]));
        to_hub.deliver("no-slash", Message::text("x"));
        assert_eq!(rx.try_recv(), Some(Message::binary(vec![1u8, 2])));
        assert_eq!(rx.try_recv(), None);
    }
}
