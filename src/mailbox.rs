//! A small bounded queue for the rare requests a session receives (close,
//! kill, abort), costing one small allocation and no buffer while empty.
//!
//! tokio's mpsc channel allocates a block of 32 slots up front: for
//! requests that come once in a session's life, that is most of the
//! per-connection memory budget. A [`Mailbox`] is a `VecDeque` behind a
//! mutex (which allocates only when something is posted) and a `Notify`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The queued items and what they weigh.
struct Queue<T> {
    items: VecDeque<T>,
    /// The sum of the items' weights.
    bytes: usize,
}

struct Inner<T> {
    queue: Mutex<Queue<T>>,
    /// What an item weighs, for [`Bound::bytes`].
    weigh: fn(&T) -> usize,
    /// Signalled when an item is queued.
    ready: Notify,
    /// Signalled when an item is taken (room for a waiting poster).
    room: Notify,
    /// Set when the receiving end is dropped.
    closed: AtomicBool,
    capacity: usize,
    /// Items dropped by evicting posts, for the counters.
    evicted: AtomicU64,
    /// Posters waiting in `post_timeout` for room, so tests can tell that
    /// a poster really waited rather than found room at once.
    #[cfg(test)]
    waiting: std::sync::atomic::AtomicUsize,
}

impl<T> Inner<T> {
    fn queue(&self) -> MutexGuard<'_, Queue<T>> {
        // Every critical section is a single push or pop: poison is moot.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a post was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostError {
    /// The receiver is gone.
    Closed,
    /// The queue is full.
    Full,
}

/// The sending side; cheap to clone.
pub struct Poster<T>(Arc<Inner<T>>);

/// The receiving side.
pub struct Mailbox<T>(Arc<Inner<T>>);

/// The bounds of an evicting post: past either, the oldest items go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub items: usize,
    pub bytes: usize,
}

/// A mailbox holding at most `capacity` undelivered items (for
/// [`Poster::post`] and [`Poster::post_timeout`]).
pub fn mailbox<T>(capacity: usize) -> (Poster<T>, Mailbox<T>) {
    mailbox_weighed(capacity, |_| 0)
}

/// Like [`mailbox`], with items weighed for [`Poster::post_evicting`].
pub fn mailbox_weighed<T>(capacity: usize, weigh: fn(&T) -> usize) -> (Poster<T>, Mailbox<T>) {
    let inner = Arc::new(Inner {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            bytes: 0,
        }),
        weigh,
        ready: Notify::new(),
        room: Notify::new(),
        closed: AtomicBool::new(false),
        capacity,
        evicted: AtomicU64::new(0),
        #[cfg(test)]
        waiting: std::sync::atomic::AtomicUsize::new(0),
    });
    (Poster(inner.clone()), Mailbox(inner))
}

impl<T> Clone for Poster<T> {
    fn clone(&self) -> Self {
        Poster(self.0.clone())
    }
}

impl<T> std::fmt::Debug for Poster<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Poster")
    }
}

impl<T> std::fmt::Debug for Mailbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailbox")
    }
}

impl<T> Poster<T> {
    /// Queues `item` and wakes the receiver.
    pub fn post(&self, item: T) -> Result<(), PostError> {
        self.try_post(item).map_err(|(e, _)| e)
    }

    /// Like [`post`](Self::post), handing the item back on failure.
    pub fn try_post(&self, item: T) -> Result<(), (PostError, T)> {
        if self.0.closed.load(Ordering::Acquire) {
            return Err((PostError::Closed, item));
        }
        {
            let mut queue = self.0.queue();
            if queue.items.len() >= self.0.capacity {
                return Err((PostError::Full, item));
            }
            queue.bytes += (self.0.weigh)(&item);
            queue.items.push_back(item);
        }
        // notify_one stores a permit when nobody waits: no lost wake-up.
        self.0.ready.notify_one();
        Ok(())
    }

    /// Queues `item` without ever waiting: past `bound` the oldest items
    /// are dropped to make room (the newest always stays). Returns how many
    /// were dropped. For messages a slow receiver may miss rather than hold
    /// up the sender.
    pub fn post_evicting(&self, item: T, bound: Bound) -> Result<u64, PostError> {
        if self.0.closed.load(Ordering::Acquire) {
            return Err(PostError::Closed);
        }
        let mut evicted = 0;
        {
            let mut queue = self.0.queue();
            queue.bytes += (self.0.weigh)(&item);
            queue.items.push_back(item);
            while queue.items.len() > 1
                && (queue.items.len() > bound.items || queue.bytes > bound.bytes)
            {
                if let Some(old) = queue.items.pop_front() {
                    queue.bytes -= (self.0.weigh)(&old);
                    evicted += 1;
                }
            }
        }
        if evicted > 0 {
            self.0.evicted.fetch_add(evicted, Ordering::Relaxed);
        }
        self.0.ready.notify_one();
        Ok(evicted)
    }

    /// Queues `item` if the queue stays within `bound`; never waits.
    pub fn post_within(&self, item: T, bound: Bound) -> Result<(), PostError> {
        if self.0.closed.load(Ordering::Acquire) {
            return Err(PostError::Closed);
        }
        {
            let mut queue = self.0.queue();
            let weight = (self.0.weigh)(&item);
            let fits = queue.items.len() < bound.items
                && (queue.items.is_empty() || queue.bytes + weight <= bound.bytes);
            if !fits {
                return Err(PostError::Full);
            }
            queue.bytes += weight;
            queue.items.push_back(item);
        }
        self.0.ready.notify_one();
        Ok(())
    }

    /// Items evicting posts have dropped so far.
    pub fn evicted(&self) -> u64 {
        self.0.evicted.load(Ordering::Relaxed)
    }

    /// True once the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// Posts, waiting up to `timeout` for room in a full mailbox.
    pub async fn post_timeout(
        &self,
        mut item: T,
        timeout: std::time::Duration,
    ) -> Result<(), PostError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a take (or the receiver's
            // drop) in between wakes us.
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_post(item) {
                Err((PostError::Full, back)) => item = back,
                other => return other.map_err(|(e, _)| e),
            }
            #[cfg(test)]
            let _waiting = Waiting::new(&self.0.waiting);
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(PostError::Full);
            }
        }
    }

    /// How many posters are waiting for room right now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.0.waiting.load(Ordering::SeqCst)
    }
}

/// Counts a poster as waiting for as long as it lives, including when the
/// waiting future is dropped (a cancelled `post_timeout`).
#[cfg(test)]
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

#[cfg(test)]
impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

#[cfg(test)]
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T> Mailbox<T> {
    /// The next item, waiting for one. Cancel-safe: an item is only
    /// removed when this returns it.
    pub async fn recv(&mut self) -> T {
        loop {
            if let Some(item) = self.try_recv() {
                return item;
            }
            self.0.ready.notified().await;
        }
    }

    /// Waits until an item is queued, taking none: for a receiver that
    /// must look elsewhere first when one comes. Cancel-safe.
    pub async fn ready(&self) {
        while self.is_empty() {
            self.0.ready.notified().await;
        }
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many items are queued.
    pub fn len(&self) -> usize {
        self.0.queue().items.len()
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        let item = {
            let mut queue = self.0.queue();
            let item = queue.items.pop_front();
            if let Some(item) = &item {
                queue.bytes -= (self.0.weigh)(item);
            }
            // After a burst beyond the usual bound, an idle receiver keeps
            // no big buffer.
            if queue.items.is_empty() && queue.items.capacity() > self.0.capacity {
                queue.items = VecDeque::new();
            }
            item
        };
        if item.is_some() {
            self.0.room.notify_waiters();
        }
        item
    }
}

impl<T> Drop for Mailbox<T> {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        // Posters waiting for room would otherwise sleep out their whole
        // timeout and report `Full` for a receiver that is gone. No poster
        // is missed: each takes its `Notified` before it checks `closed`,
        // and notify_waiters wakes every `Notified` taken before the call;
        // one taken after it sees `closed` set (the store comes first).
        self.0.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_up_to_capacity() {
        let (tx, mut rx) = mailbox(2);
        assert_eq!(tx.post(1), Ok(()));
        assert_eq!(tx.post(2), Ok(()));
        assert_eq!(tx.post(3), Err(PostError::Full));
        assert_eq!(rx.recv().await, 1);
        assert_eq!(rx.recv().await, 2);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tx.post(4).unwrap();
        assert_eq!(waiter.await.unwrap(), 4);
        assert_eq!(tx.post(5), Err(PostError::Closed));
    }

    /// Yields until `n` posters wait for room. Deterministic on the
    /// single-threaded test runtime: each yield lets every spawned poster
    /// run until it blocks. Panics if they never get there, e.g. because
    /// a poster found room (or an error) without waiting.
    async fn until_waiting<T>(tx: &Poster<T>, n: usize) {
        for _ in 0..100 {
            if tx.waiting() == n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{} posters waiting, expected {n}", tx.waiting());
    }

    #[tokio::test]
    async fn a_full_mailbox_makes_posters_wait_for_room() {
        let (tx, mut rx) = mailbox(1);
        tx.post(1).unwrap();
        let short = std::time::Duration::from_millis(20);
        assert_eq!(tx.post_timeout(2, short).await, Err(PostError::Full));
        let poster = tx.clone();
        let waiting = tokio::spawn(async move {
            poster
                .post_timeout(2, std::time::Duration::from_secs(10))
                .await
        });
        until_waiting(&tx, 1).await;
        assert_eq!(rx.recv().await, 1);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(tx.waiting(), 0);
        assert_eq!(rx.recv().await, 2);
    }

    #[tokio::test]
    async fn evicting_posts_never_wait_and_drop_the_oldest() {
        let (tx, mut rx) = mailbox_weighed(1, |s: &String| s.len());
        let bound = Bound {
            items: 3,
            bytes: 10,
        };
        // Past the mailbox's own capacity, up to the bound's.
        assert_eq!(tx.post_evicting("aaa".into(), bound), Ok(0));
        assert_eq!(tx.post_evicting("bbb".into(), bound), Ok(0));
        assert_eq!(tx.post_evicting("ccc".into(), bound), Ok(0));
        assert_eq!(tx.post_evicting("d".into(), bound), Ok(1), "four items");
        assert_eq!(tx.post_evicting("eeeeeee".into(), bound), Ok(2), "bytes");
        assert_eq!(tx.evicted(), 3);
        assert_eq!(rx.recv().await, "d");
        assert_eq!(rx.recv().await, "eeeeeee");
        assert!(rx.is_empty());
        // The newest stays even when it alone is over the bound.
        assert_eq!(tx.post_evicting("x".repeat(20), bound), Ok(0));
        assert_eq!(rx.recv().await.len(), 20);
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(
            tx.post_evicting("late".into(), bound),
            Err(PostError::Closed)
        );
    }

    #[test]
    fn bounded_posts_refuse_what_does_not_fit() {
        let (tx, mut rx) = mailbox_weighed(1, |s: &String| s.len());
        let bound = Bound { items: 2, bytes: 6 };
        assert_eq!(
            tx.post_within("x".repeat(10), bound),
            Ok(()),
            "one always fits"
        );
        assert_eq!(tx.post_within("y".into(), bound), Err(PostError::Full));
        assert_eq!(rx.try_recv().map(|s| s.len()), Some(10));
        assert_eq!(tx.post_within("abc".into(), bound), Ok(()));
        assert_eq!(tx.post_within("def".into(), bound), Ok(()));
        assert_eq!(tx.post_within("g".into(), bound), Err(PostError::Full));
    }

    #[tokio::test]
    async fn dropping_the_mailbox_fails_waiting_posters_at_once() {
        let (tx, rx) = mailbox(1);
        tx.post(1).unwrap();
        let patience = std::time::Duration::from_secs(10);
        let posters: Vec<_> = (0..2)
            .map(|i| {
                let poster = tx.clone();
                tokio::spawn(async move { poster.post_timeout(i, patience).await })
            })
            .collect();
        until_waiting(&tx, 2).await;
        drop(rx);
        // Far less than their patience: woken by the drop, not timed out.
        let soon = std::time::Duration::from_secs(1);
        for poster in posters {
            let result = tokio::time::timeout(soon, poster)
                .await
                .expect("a waiting poster was not woken by the drop");
            assert_eq!(result.unwrap(), Err(PostError::Closed));
        }
        assert_eq!(tx.waiting(), 0);
    }
}
