//! The open-files budget: how many sessions the descriptor limit allows.
//!
//! Each WebSocket session holds [`FDS_PER_SESSION`] descriptors, so the
//! limit on open files, not memory, is what usually caps concurrent
//! sessions. wspipe lifts its soft limit to the hard one at start and says
//! at once when `--maxforks` promises more sessions than that allows, so
//! the administrator learns about `ulimit -n` from the log line, not from
//! 503s under load.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors one session holds: its socket, the child's stdin, stdout
/// and stderr pipes, and the pidfd that reports the child's exit.
pub const FDS_PER_SESSION: u64 = 5;

/// Descriptors the server holds on its own (stdio, epoll, wakers, signal
/// pipe, listeners, control and metrics sockets): measured at 12 to 15.
const OWN_FDS: u64 = 16;

/// Headroom asked for on top of the sessions: handshakes and CGI requests
/// in progress, control clients, files being served.
const HEADROOM: u64 = 100;

/// Lifts the soft limit on open files to the hard limit. The hard limit
/// is the administrator's (`ulimit -Hn`, systemd's `LimitNOFILE=`) and is
/// left alone.
pub fn raise_nofile() {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// About how many sessions fit in `nofile` descriptors.
pub fn session_capacity(nofile: u64) -> u64 {
    nofile.saturating_sub(OWN_FDS) / FDS_PER_SESSION
}

/// The open-files limit to ask for to hold `sessions` at once.
pub fn nofile_needed(sessions: u64) -> u64 {
    sessions
        .saturating_mul(FDS_PER_SESSION)
        .saturating_add(HEADROOM)
}

/// Logs the budget once the server is up (not before: a start that fails
/// stays a one-line error): a warning when `--maxforks` exceeds it,
/// otherwise one informational line.
pub fn report(max_forks: Option<usize>) {
    let Ok((nofile, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let capacity = session_capacity(nofile);
    match max_forks.map(|n| n as u64) {
        Some(forks) if forks > capacity => tracing::warn!(
            "--maxforks {forks} exceeds what the open files limit {nofile} allows \
             (about {capacity} sessions, {FDS_PER_SESSION} descriptors each); \
             raise it to at least {} (ulimit -n, LimitNOFILE=)",
            nofile_needed(forks)
        ),
        _ => tracing::info!(
            "open files limit {nofile}: room for about {capacity} sessions \
             ({FDS_PER_SESSION} descriptors each)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_matches_what_the_server_reached() {
        // Measured: with a limit of 20,000 the server held 3,997 sessions.
        let capacity = session_capacity(20_000);
        assert!((3_990..=3_997).contains(&capacity), "{capacity}");
        assert_eq!(session_capacity(10), 0);
    }

    #[test]
    fn needed_limit_covers_the_sessions_and_the_server() {
        for sessions in [1, 100, 5_000, 100_000] {
            let needed = nofile_needed(sessions);
            assert!(session_capacity(needed) >= sessions, "{sessions}");
        }
        assert_eq!(nofile_needed(5_000), 25_100);
        assert_eq!(nofile_needed(u64::MAX), u64::MAX);
    }
}
