//! systemd, or any service manager that speaks its protocols: listening
//! sockets passed in (socket activation: `LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`), and the state told back over `NOTIFY_SOCKET`
//! (`READY=1` once serving, `STOPPING=1` on shutdown, `WATCHDOG=1` every
//! half `WatchdogSec`). Without a service manager all of it is nothing:
//! no sockets passed, and notifications go nowhere.
//!
//! Socket activation lets a unit bind port 80 without root (systemd binds
//! it) and keeps the listen queue across a restart: connections that
//! arrive while wspipe restarts wait in the kernel instead of being
//! refused.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use sd_notify::NotifyState;

/// A listening socket the service manager passed in.
#[derive(Debug)]
pub struct Passed {
    pub fd: OwnedFd,
    /// Its `FileDescriptorName=` (systemd's default is the unit's name).
    pub name: String,
}

/// Takes the sockets passed to this process, if any, and removes
/// `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES` from the environment:
/// they describe this process, never one it starts. The descriptors are
/// close-on-exec, so no child inherits them either.
///
/// Must be called before any thread is started (it changes the
/// environment), and once: the descriptors become owned here.
pub fn take_listen_fds() -> std::io::Result<Vec<Passed>> {
    // SAFETY: called from main before the runtime or any other thread
    // exists (see above), so nothing reads the environment meanwhile.
    let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }?;
    Ok(fds
        .map(|(raw, name)| Passed {
            // SAFETY: the service manager passed these descriptors to this
            // process (LISTEN_PID is ours) and nothing else owns them.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            name,
        })
        .collect())
}

/// Tells the service manager that wspipe serves, with a status line for
/// `systemctl status`.
pub fn ready(status: &str) {
    tell(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new status line for `systemctl status`.
pub fn status(status: &str) {
    tell(&[NotifyState::Status(status)]);
}

/// Tells the service manager that wspipe is shutting down.
pub fn stopping() {
    tell(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// How often to tell the watchdog that wspipe is alive, when the unit has
/// `WatchdogSec=`: twice per period, as sd_watchdog_enabled(3) advises.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|period| !period.is_zero())
        .map(|period| period / 2)
}

/// One `WATCHDOG=1`.
pub fn keepalive() {
    tell(&[NotifyState::Watchdog]);
}

fn tell(state: &[NotifyState]) {
    // Without NOTIFY_SOCKET this does nothing and succeeds; a failure to
    // reach a socket that was named is worth a line, not an exit.
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}
