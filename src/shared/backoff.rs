//! How long `--shared-restart` waits before starting an endpoint's child
//! again: exponential, so that a child that dies at once (a typo in its
//! script, a missing file) costs a few spawns a minute rather than a spawn
//! loop, and reset once a child has served for a while, so that a rare
//! crash of a long-lived child is followed by a quick restart.

use std::time::Duration;

/// The first wait, and the wait after a child that ran for [`STABLE`].
pub const FIRST: Duration = Duration::from_millis(100);

/// The longest wait: clients wait at most this long for a child that keeps
/// failing to come back.
pub const MAX: Duration = Duration::from_secs(10);

/// A child that ran at least this long was no crash loop: the next wait is
/// [`FIRST`] again.
pub const STABLE: Duration = Duration::from_secs(10);

/// The waits of one endpoint's restarts.
#[derive(Debug)]
pub(super) struct Backoff {
    /// The wait before the next start, unless the last child ran long.
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST }
    }
}

impl Backoff {
    /// The wait before starting again after a child that ran for `ran`
    /// (zero for one that could not be started), doubling each time.
    pub(super) fn after(&mut self, ran: Duration) -> Duration {
        if ran >= STABLE {
            self.next = FIRST;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(MAX);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_start_over_after_a_stable_run() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(5);
        let waits: Vec<u128> = (0..10).map(|_| b.after(quick).as_millis()).collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert_eq!(b.after(STABLE), FIRST, "it served a while: no crash loop");
        assert_eq!(b.after(Duration::ZERO), FIRST * 2);
    }
}
