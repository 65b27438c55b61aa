//! The health of one connection to Redis (the publisher's or the
//! subscriber's) and the log lines that tell an operator about it: one
//! line when it is lost, one when it is back, and for attempts to connect
//! that fail one error line per reason (repeats go to debug), so that a
//! long outage does not flood the log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Counters;

/// Which connection this is, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Publish,
    Subscribe,
    /// `--history`: numbering publishes and reading resumes.
    History,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Publish => "publish",
            Role::Subscribe => "subscribe",
            Role::History => "history",
        }
    }
}

/// One connection's state, shared with [`super::Cluster::stats`].
#[derive(Debug)]
pub(super) struct Link {
    role: Role,
    /// Where it connects, passwords hidden.
    target: String,
    up: AtomicBool,
    /// Up once at least: a later connect is a recovery.
    ever_up: AtomicBool,
    /// Failed attempts since it was last up; the first is logged as an
    /// error, the others at debug.
    failures: AtomicU64,
    /// Why the last attempt failed, to tell a new reason from a repeat.
    last_reason: std::sync::Mutex<String>,
    /// When it went down (or started), for the recovery line.
    down_since: std::sync::Mutex<Instant>,
    counters: Arc<Counters>,
}

impl Link {
    pub(super) fn new(role: Role, target: String, counters: Arc<Counters>) -> Self {
        Link {
            role,
            target,
            up: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            last_reason: std::sync::Mutex::default(),
            down_since: std::sync::Mutex::new(Instant::now()),
            counters,
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn outage(&self) -> Duration {
        self.down_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// An attempt to connect failed: an error line for the first failure
    /// of an outage, and for one whose reason differs from the last one's
    /// (Redis came back wanting a password); repeats at debug.
    pub(super) fn failed(&self, why: &redis::RedisError) {
        let role = self.role.as_str();
        let why = describe(why);
        let first = self.failures.fetch_add(1, Ordering::Relaxed) == 0;
        let changed = {
            let mut last = self.last_reason.lock().unwrap_or_else(|e| e.into_inner());
            let changed = *last != why;
            last.clone_from(&why);
            changed
        };
        if first || changed {
            tracing::error!(
                "redis: cannot connect ({role}) to {}: {why}; serving local members only, retrying with backoff",
                self.target,
            );
        } else {
            tracing::debug!("redis: still cannot connect ({role}): {why}");
        }
    }

    /// Connected (again).
    pub(super) fn connected(&self) {
        self.up.store(true, Ordering::Relaxed);
        let role = self.role.as_str();
        let retried = self.failures.swap(0, Ordering::Relaxed);
        if self.ever_up.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "redis connection recovered ({role}) after {:.1?}; {} cross-instance message(s) dropped so far",
                self.outage(),
                self.counters.dropped.load(Ordering::Relaxed)
            );
        } else if retried > 0 {
            tracing::info!(
                "redis connected ({role}) to {} after {retried} failed attempt(s)",
                self.target
            );
        } else {
            tracing::info!("redis connected ({role}) to {}", self.target);
        }
    }

    /// A working connection broke.
    pub(super) fn lost(&self, why: &redis::RedisError) {
        self.up.store(false, Ordering::Relaxed);
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        // The first failed attempt to connect again says why, once.
        self.failures.store(1, Ordering::Relaxed);
        self.last_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        tracing::warn!(
            "redis connection lost ({}): {}; local delivery goes on, cross-instance messages are buffered (bounded), then dropped",
            self.role.as_str(),
            describe(why)
        );
    }
}

/// An error as an operator reads it, on one line: what Redis said, or
/// what failed.
fn describe(e: &redis::RedisError) -> String {
    let text = one_line(&e.to_string());
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return format!("Redis refused the user or password of --redis ({text})");
    }
    if e.code() == Some("WRONGPASS") {
        return format!("Redis refused the user or password of --redis ({text})");
    }
    if e.code() == Some("NOAUTH") {
        return format!("Redis requires a password that --redis does not give ({text})");
    }
    if matches!(
        e.kind(),
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
    ) {
        return format!("the answer is not Redis protocol: is this a Redis port? ({text})");
    }
    if e.is_timeout() {
        return format!("timed out ({text})");
    }
    if e.is_connection_refusal() {
        return format!("connection refused ({text})");
    }
    text
}

/// What a peer sent may hold newlines: a log line is one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
