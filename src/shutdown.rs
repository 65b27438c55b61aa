//! Graceful shutdown: one token every long-lived task watches, and one
//! tracker of every task the server starts, so that the server can wait for
//! all of them before it exits (mini-redis's `Shutdown`, plus the tracker).
//!
//! A shutdown may begin with a drain (`wspipe ctl drain`): every accept
//! loop stops, so the listeners close and a new instance can take their
//! ports and paths, while live sessions go on until they end or the
//! drain's bound passes; then the shutdown proper.
//!
//! Every task goes through [`Shutdown::spawn`]: a task spawned any other way
//! would outlive the shutdown, cut off mid-answer when the runtime drops.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// A cheap handle: clones share the token and the tracker.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Cancelled when shutdown begins; every loop selects on it.
    token: CancellationToken,
    /// Every connection, session and listener task.
    tasks: TaskTracker,
    /// Cancelled when accepting stops: at a drain, or with `token` (its
    /// parent).
    accepting: CancellationToken,
    /// How long a drain waits for live sessions; set once, by the drain.
    drain_bound: Arc<OnceLock<Duration>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let token = CancellationToken::new();
        Shutdown {
            accepting: token.child_token(),
            token,
            tasks: TaskTracker::new(),
            drain_bound: Arc::default(),
        }
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Begins a drain: accepting stops; live sessions may go on for up to
    /// `bound`. False if a drain or the shutdown had begun already.
    pub fn drain(&self, bound: Duration) -> bool {
        if self.accepting.is_cancelled() || self.drain_bound.set(bound).is_err() {
            return false;
        }
        self.accepting.cancel();
        true
    }

    /// Resolves with the drain's bound once a drain has begun (never if
    /// the shutdown begins without one).
    pub async fn drain_requested(&self) -> Duration {
        self.accepting.cancelled().await;
        match self.drain_bound.get() {
            Some(bound) => *bound,
            // Accepting stopped for the shutdown proper: no drain.
            None => std::future::pending().await,
        }
    }

    /// Resolves once no new connection is to be accepted (a drain, or the
    /// shutdown).
    pub fn accepting_stopped(&self) -> WaitForCancellationFuture<'_> {
        self.accepting.cancelled()
    }

    /// Runs `task` on the runtime, tracked: shutdown waits for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Resolves once shutdown has begun.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Begins shutdown and waits up to `limit` for every tracked task to
    /// end; false if some were still running then.
    pub async fn finish(&self, limit: Duration) -> bool {
        self.token.cancel();
        self.tasks.close();
        tokio::time::timeout(limit, self.tasks.wait()).await.is_ok()
    }

    /// Tasks still running (for tests and the shutdown report).
    pub fn running(&self) -> usize {
        self.tasks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_stops_accepting_once_and_the_shutdown_stops_it_too() {
        let shutdown = Shutdown::new();
        assert!(shutdown.drain(Duration::from_secs(3)));
        assert!(!shutdown.drain(Duration::from_secs(9)), "once");
        shutdown.accepting_stopped().await;
        assert_eq!(shutdown.drain_requested().await, Duration::from_secs(3));
        assert!(!shutdown.is_shutting_down(), "sessions go on");

        let plain = Shutdown::new();
        assert!(plain.finish(Duration::from_secs(1)).await);
        plain.accepting_stopped().await;
        assert!(!plain.drain(Duration::from_secs(1)), "too late to drain");
        let never = tokio::time::timeout(Duration::from_millis(20), plain.drain_requested());
        assert!(never.await.is_err(), "no drain was asked for");
    }

    #[tokio::test]
    async fn finish_waits_for_tracked_tasks_that_watch_the_token() {
        let shutdown = Shutdown::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s = shutdown.clone();
        shutdown.spawn(async move {
            s.cancelled().await;
            let _ = tx.send(());
        });
        assert_eq!(shutdown.running(), 1);
        assert!(shutdown.finish(Duration::from_secs(10)).await);
        assert!(rx.await.is_ok(), "the task saw the shutdown and ended");
        assert_eq!(shutdown.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn finish_gives_up_at_its_limit() {
        let shutdown = Shutdown::new();
        shutdown.spawn(std::future::pending());
        assert!(!shutdown.finish(Duration::from_secs(1)).await);
        assert_eq!(shutdown.running(), 1);
    }
}
