//! What happens to sessions and channels, for `wspipe ctl watch`: one
//! broadcast of events that any number of watchers follow.
//!
//! Sending never waits and costs nothing when nobody watches. A watcher
//! that falls more than [`BACKLOG`] events behind loses the oldest and is
//! told how many (`{"event":"lost","count":N}`): a slow watcher never
//! slows a session.

use serde::Serialize;
use tokio::sync::broadcast;

/// Events a watcher may fall behind by before it loses some.
pub const BACKLOG: usize = 1024;

/// One thing that happened, as a watcher gets it (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// A session began (its upgrade was answered).
    Open {
        id: u64,
        path: String,
        remote: String,
        /// `process`, `pubsub` or `shared`.
        kind: &'static str,
    },
    /// A session ended.
    Close {
        id: u64,
        path: String,
        /// The close code sent or received, if any.
        code: Option<u16>,
        duration_ms: u64,
        cause: &'static str,
    },
    /// A session joined a channel.
    Subscribe { id: u64, channel: String },
    /// A session left a channel (not told for every channel of a session
    /// that ends: its `close` says it left them all).
    Unsubscribe { id: u64, channel: String },
    /// A message was published (only to watchers that asked).
    Publish {
        channel: String,
        delivered: u64,
        dropped: u64,
    },
    /// This watcher fell behind and missed this many events.
    Lost { count: u64 },
}

/// The sending side; clones share the one broadcast.
#[derive(Debug, Clone)]
pub struct Events(broadcast::Sender<Event>);

impl Default for Events {
    fn default() -> Self {
        Events(broadcast::channel(BACKLOG).0)
    }
}

impl Events {
    /// Tells every watcher; `make` runs only if someone watches.
    pub fn emit(&self, make: impl FnOnce() -> Event) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send(make());
        }
    }

    /// A new watcher, from now on.
    pub fn watch(&self) -> Watcher {
        Watcher(self.0.subscribe())
    }
}

/// One watcher's view of the events.
#[derive(Debug)]
pub struct Watcher(broadcast::Receiver<Event>);

impl Watcher {
    /// The next event (a `Lost` one if this watcher fell behind); `None`
    /// once no sender is left.
    pub async fn next(&mut self) -> Option<Event> {
        match self.0.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(count)) => Some(Event::Lost { count }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_see_what_happens_after_they_start_and_learn_what_they_lost() {
        let events = Events::default();
        let mut built = 0;
        events.emit(|| {
            built += 1;
            Event::Lost { count: 0 }
        });
        assert_eq!(built, 0, "nothing is built for nobody");
        let mut watcher = events.watch();
        for id in 0..(BACKLOG as u64 + 10) {
            events.emit(|| Event::Subscribe {
                id,
                channel: "/a".into(),
            });
        }
        assert_eq!(watcher.next().await, Some(Event::Lost { count: 10 }));
        assert_eq!(
            watcher.next().await,
            Some(Event::Subscribe {
                id: 10,
                channel: "/a".into()
            })
        );
        let line = serde_json::to_string(&Event::Close {
            id: 3,
            path: "/a".into(),
            code: Some(1000),
            duration_ms: 5,
            cause: "client closed",
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"event":"close","id":3,"path":"/a","code":1000,"duration_ms":5,"cause":"client closed"}"#
        );
    }
}
