//! Exponential waits between attempts at something that keeps failing: a
//! `--shared-restart` child that dies at once, a Redis that is down. A
//! failing thing costs a few attempts a minute rather than a loop, and one
//! that ran a good while before it failed is tried again quickly: the
//! wait is reset once an attempt has lasted [`Policy::stable`].

use std::time::Duration;

/// The shape of the waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The first wait, and the wait after an attempt that ran `stable`.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// An attempt that ran at least this long was no failure loop: the
    /// next wait is `first` again.
    pub stable: Duration,
}

/// The waits of one series of attempts.
#[derive(Debug)]
pub struct Backoff {
    policy: Policy,
    /// The wait before the next attempt, unless the last one ran long.
    next: Duration,
}

impl Backoff {
    pub fn new(policy: Policy) -> Self {
        Backoff {
            policy,
            next: policy.first,
        }
    }

    /// The wait before trying again after an attempt that ran for `ran`
    /// (zero for one that failed at once), doubling each time.
    pub fn after(&mut self, ran: Duration) -> Duration {
        if ran >= self.policy.stable {
            self.next = self.policy.first;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.policy.max);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        first: Duration::from_millis(100),
        max: Duration::from_secs(10),
        stable: Duration::from_secs(10),
    };

    #[test]
    fn waits_double_up_to_the_cap_and_start_over_after_a_stable_run() {
        let mut b = Backoff::new(POLICY);
        let quick = Duration::from_millis(5);
        let waits: Vec<u128> = (0..10).map(|_| b.after(quick).as_millis()).collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert_eq!(b.after(POLICY.stable), POLICY.first, "it ran a while");
        assert_eq!(b.after(Duration::ZERO), POLICY.first * 2);
    }
}
