//! Child processes: spawn, watch, signal, reap.
//!
//! Each child runs in a process group of its own, so a signal reaches a
//! script's own subprocesses too. Exit is observed through a pidfd (or, where
//! the kernel refuses pidfds, SIGCHLD plus `waitid(WNOWAIT)`) *without*
//! reaping: while the exited leader is a zombie its pid, and so the group
//! id, cannot be reused, which makes a final `killpg(SIGKILL)` of leftover
//! grandchildren safe. Only then is the child reaped. Every [`Child`] is
//! reaped exactly once; dropping one unreaped kills its group and reaps it.

use std::ffi::OsString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use crate::env::Var;

/// How a child that should stop is closed in on: each signal goes to its
/// process group after waiting this multiple of the grace (`--closems`)
/// since the previous step.
pub const ESCALATION: [(Signal, f32); 3] = [
    (Signal::SIGINT, 1.0),
    (Signal::SIGTERM, 1.5),
    (Signal::SIGKILL, 2.5),
];

/// What to run.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    pub program: &'a std::path::Path,
    pub args: &'a [OsString],
    /// Constant variables first, request variables after (later wins).
    pub env: [&'a [Var]; 2],
    /// The working directory, when not wspipe's own (CGI scripts run in
    /// their own directory). `program` must then be an absolute path.
    pub dir: Option<&'a std::path::Path>,
}

/// A running child and its three pipes.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    pub stdin: pipe::Sender,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

/// How we learn that the child has exited, without reaping it.
#[derive(Debug)]
enum ExitWatch {
    Pidfd(AsyncFd<OwnedFd>),
    Sigchld,
}

/// A child process (the leader of its own process group).
#[derive(Debug)]
pub struct Child {
    inner: std::process::Child,
    pgid: Pid,
    watch: ExitWatch,
    /// Set once reaped (or found not reapable); the pid must not be
    /// signalled afterwards.
    status: Option<Exit>,
}

/// Spawns a child with piped stdio, a clean environment and its own group.
pub fn spawn(spec: &SpawnSpec<'_>) -> io::Result<Spawned> {
    let mut cmd = std::process::Command::new(spec.program);
    cmd.args(spec.args)
        .env_clear()
        .envs(
            spec.env
                .iter()
                .flat_map(|vars| vars.iter().map(|(k, v)| (k, v))),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = spec.dir {
        // A relative program would be looked up from `dir` or from ours,
        // depending on the platform: callers pass absolute paths.
        debug_assert!(spec.program.is_absolute(), "{}", spec.program.display());
        cmd.current_dir(dir);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut inner = cmd.spawn()?;
    let pipes = (inner.stdin.take(), inner.stdout.take(), inner.stderr.take());
    let pid = inner.id() as i32;
    // From here on the child exists: an early return drops `child`, whose
    // Drop kills and reaps it.
    let mut child = Child {
        inner,
        pgid: Pid::from_raw(pid),
        watch: ExitWatch::Sigchld,
        status: None,
    };
    if let Ok(fd) = pidfd_open(pid) {
        // SAFETY: the AsyncFd takes ownership of the OwnedFd, which stays
        // open and unchanged until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        child.watch = ExitWatch::Pidfd(fd);
    }
    let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
        return Err(io::Error::other("child pipes missing"));
    };
    Ok(Spawned {
        stdin: pipe::Sender::from_owned_fd(OwnedFd::from(stdin))?,
        stdout: pipe::Receiver::from_owned_fd(OwnedFd::from(stdout))?,
        stderr: pipe::Receiver::from_owned_fd(OwnedFd::from(stderr))?,
        child,
    })
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call; on success it returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // pidfds are close-on-exec by default.
    // SAFETY: the fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// True if `pid` has exited (is a zombie), leaving it unreaped.
fn has_exited(pid: Pid) -> io::Result<bool> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(pid), flags) {
        Ok(WaitStatus::StillAlive) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

impl Child {
    /// The child's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// Resolves once the child has exited. Does not reap: the zombie keeps
    /// the group id reserved until [`reap`](Self::reap).
    pub async fn exited(&self) {
        match &self.watch {
            ExitWatch::Pidfd(fd) => {
                // A pidfd becomes readable when the process exits, and stays so.
                let _ = fd.readable().await.map(|mut guard| guard.retain_ready());
            }
            ExitWatch::Sigchld => {
                let mut sigchld =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
                        Ok(s) => s,
                        Err(_) => return std::future::pending().await,
                    };
                loop {
                    match has_exited(self.pgid) {
                        Ok(false) => {}
                        _ => return,
                    }
                    // SIGCHLD may coalesce; also poll now and then.
                    let _ = tokio::time::timeout(Duration::from_millis(250), sigchld.recv()).await;
                }
            }
        }
    }

    /// Sends `sig` to the child's whole process group (ignored once reaped or
    /// when the group is gone).
    pub fn kill_group(&self, sig: Signal) {
        if self.status.is_none() {
            let _ = killpg(self.pgid, sig);
        }
    }

    /// Kills whatever is left of the group and reaps the child, waiting for
    /// it to exit if it has not yet.
    pub async fn reap(&mut self) -> Exit {
        if let Some(exit) = self.status {
            return exit;
        }
        // The leader is usually a zombie already; if not (the caller gave up
        // waiting), SIGKILL ends it and whatever it spawned.
        self.kill_group(Signal::SIGKILL);
        self.exited().await;
        let status = match self.inner.try_wait() {
            Ok(Some(status)) => Ok(status),
            // Cannot happen after exited(); fall back to a blocking wait.
            _ => self.inner.wait(),
        };
        let exit = match status {
            Ok(status) => Exit::from(status),
            Err(e) => {
                // Reaped elsewhere (ECHILD) or refused: the status is lost.
                // Reporting success would close the socket with 1000.
                tracing::error!(pid = self.pid(), "cannot reap child: {e}");
                Exit::Unknown
            }
        };
        // Also after a failed wait: the pid may not be ours any more.
        self.status = Some(exit);
        exit
    }

    /// Closes in on a child that should stop, climbing [`ESCALATION`]
    /// (websocketd's 100/250/500 ms at the default 100 ms grace), all to the
    /// process group. Returns the signal that ended it, if one was needed,
    /// and how it ended.
    pub async fn terminate(&mut self, grace: Duration) -> (Option<Signal>, Exit) {
        let mut sent = None;
        for (sig, factor) in ESCALATION {
            if tokio::time::timeout(grace.mul_f32(factor), self.exited())
                .await
                .is_ok()
            {
                break;
            }
            self.kill_group(sig);
            sent = Some(sig);
        }
        (sent, self.reap().await)
    }

    /// How the child ended, read without reaping it (`None` while alive).
    pub fn peek_exit(&self) -> Option<Exit> {
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        if let Some(exit) = self.status {
            return Some(exit);
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(self.pgid), flags).ok()? {
            WaitStatus::Exited(_, code) => Some(Exit::Code(code)),
            WaitStatus::Signaled(_, sig, _) => Some(Exit::Signal(sig as i32)),
            _ => None,
        }
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this status code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
    /// Not known: waiting for the child failed.
    Unknown,
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(sig)) => Exit::Signal(sig),
            // Neither exited nor killed (stopped or continued): wait() does
            // not report those, but if it did, -1 would be made up.
            (None, None) => Exit::Unknown,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit status {code}"),
            Exit::Signal(sig) => match Signal::try_from(*sig) {
                Ok(s) => write!(f, "killed by {}", s.as_str()),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
            Exit::Unknown => f.write_str("exit status unknown"),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // Never leave a zombie or a stray group behind, even on a path that
        // forgot to reap (or a panic).
        let _ = killpg(self.pgid, Signal::SIGKILL);
        let pid = self.inner.id();
        let reap = move || {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), None);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(reap);
            }
            Err(_) => reap(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_reaped_elsewhere_has_an_unknown_exit_not_success() {
        let spec = SpawnSpec {
            program: std::path::Path::new("/bin/sh"),
            args: &["-c".into(), "exit 0".into()],
            env: [&[], &[]],
            dir: None,
        };
        let mut spawned = spawn(&spec).unwrap();
        let pid = Pid::from_raw(spawned.child.pid() as i32);
        // Reaped behind the Child's back: its own wait() then fails (ECHILD).
        let reaped = nix::sys::wait::waitpid(pid, None).unwrap();
        assert_eq!(reaped, nix::sys::wait::WaitStatus::Exited(pid, 0));
        let exit = spawned.child.reap().await;
        assert_eq!(exit, Exit::Unknown);
        assert_eq!(exit.to_string(), "exit status unknown");
        // Settled: asked again, the same answer, and no second wait.
        assert_eq!(spawned.child.reap().await, Exit::Unknown);
        assert_eq!(spawned.child.peek_exit(), Some(Exit::Unknown));
    }

    #[tokio::test]
    async fn reap_reports_the_real_status() {
        let spec = SpawnSpec {
            program: std::path::Path::new("/bin/sh"),
            args: &["-c".into(), "exit 3".into()],
            env: [&[], &[]],
            dir: None,
        };
        let mut spawned = spawn(&spec).unwrap();
        // reap() kills a child still running: let it exit first.
        spawned.child.exited().await;
        assert_eq!(spawned.child.reap().await, Exit::Code(3));
    }
}
