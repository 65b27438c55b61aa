//! Graceful shutdown: one token every long-lived task watches, and one
//! tracker of every task the server starts, so that the server can wait for
//! all of them before it exits (mini-redis's `Shutdown`, plus the tracker).
//!
//! Every task goes through [`Shutdown::spawn`]: a task spawned any other way
//! would outlive the shutdown, cut off mid-answer when the runtime drops.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// A cheap handle: clones share the token and the tracker.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled when shutdown begins; every loop selects on it.
    token: CancellationToken,
    /// Every connection, session and listener task.
    tasks: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
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
