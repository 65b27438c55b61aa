//! The `--maxforks` limit, which SIGHUP may change while children run.
//!
//! One semaphore for the server's life, so that every live child holds a
//! permit of it whatever the limit was when it started: "unlimited" is
//! simply very many permits. Raising the limit adds permits. Lowering it
//! forgets the free permits it can at once and, for the rest, parks a task
//! that takes permits as children end and forgets them: until it has them
//! all, no new child is admitted, so live children over a new lower limit
//! stay and new ones wait (429) until the count is under it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// Permits standing for "no limit" (tokio's `add_permits` panics above
/// `Semaphore::MAX_PERMITS`).
const UNLIMITED: usize = Semaphore::MAX_PERMITS >> 1;

#[derive(Debug)]
pub struct Forks {
    slots: Arc<Semaphore>,
    /// The permits the current limit stands for.
    total: Mutex<usize>,
}

/// Every `--maxforks` slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForksExhausted;

fn permits(limit: Option<usize>) -> usize {
    limit.unwrap_or(UNLIMITED).min(UNLIMITED)
}

impl Forks {
    /// `limit`: most live children; `None` is unlimited.
    pub fn new(limit: Option<usize>) -> Self {
        let total = permits(limit);
        Forks {
            slots: Arc::new(Semaphore::new(total)),
            total: Mutex::new(total),
        }
    }

    /// A slot for one child, held until it is reaped.
    pub fn try_acquire(&self) -> Result<OwnedSemaphorePermit, ForksExhausted> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ForksExhausted)
    }

    /// A new limit, for new children; live ones are left alone. Must run on
    /// the runtime (lowering may park a task).
    pub fn set_limit(&self, limit: Option<usize>) {
        let new = permits(limit);
        let mut total = self.total.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut *total, new);
        if new > old {
            self.slots.add_permits(new - old);
            return;
        }
        let mut owed = old - new;
        owed -= self.slots.forget_permits(owed);
        while owed > 0 {
            // acquire_many takes a u32.
            let chunk = owed.min(u32::MAX as usize);
            owed -= chunk;
            park(self.slots.clone().acquire_many_owned(chunk as u32));
        }
    }
}

/// Takes permits as they come back, and forgets them. Polled once here,
/// so that it is in the semaphore's queue before any child can end: a
/// task spawned would only queue when first run, and a slot freed before
/// that would go to a new child.
fn park(taking: impl Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send + 'static) {
    let mut taking = Box::pin(taking);
    let mut cx = Context::from_waker(Waker::noop());
    match taking.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(taken)) => taken.forget(),
        Poll::Ready(Err(_)) => {} // closed: never, the semaphore is ours
        Poll::Pending => {
            // Polled again by the task, with its own waker.
            tokio::spawn(async move {
                if let Ok(taken) = taking.await {
                    taken.forget();
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lowering_waits_for_children_to_end_and_raising_is_at_once() {
        let forks = Forks::new(Some(3));
        let a = forks.try_acquire().unwrap();
        let b = forks.try_acquire().unwrap();
        forks.set_limit(Some(1));
        // Two live over a limit of one: they stay, a third is refused.
        assert_eq!(forks.try_acquire().unwrap_err(), ForksExhausted);
        drop(a);
        assert!(forks.try_acquire().is_err(), "one live: still at the limit");
        drop(b);
        let c = forks.try_acquire().unwrap();
        assert!(forks.try_acquire().is_err());
        forks.set_limit(Some(2));
        let _d = forks.try_acquire().unwrap();
        assert!(forks.try_acquire().is_err());
        forks.set_limit(None);
        let _many: Vec<_> = (0..100).map(|_| forks.try_acquire().unwrap()).collect();
        drop(c);
    }

    #[tokio::test]
    async fn a_limit_after_unlimited_counts_the_live_children() {
        let forks = Forks::new(None);
        let _live: Vec<_> = (0..3).map(|_| forks.try_acquire().unwrap()).collect();
        forks.set_limit(Some(2));
        assert!(forks.try_acquire().is_err());
        forks.set_limit(Some(4));
        let _one = forks.try_acquire().unwrap();
        assert!(forks.try_acquire().is_err());
    }
}
