//! The task that owns an endpoint's shared child: it runs the output pump,
//! the input writer and the stderr log side by side, watches for the
//! child's exit, `ctl kill`, its last client leaving and server shutdown,
//! then ends the child the way a per-connection session ends its own and
//! reaps it. With `--shared-restart` a child that exited (or was killed)
//! is started again after a backoff, its clients kept; otherwise whatever
//! clients are left are closed with the code its exit status calls for.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::input::{self, Piece};
use super::output::{self, PumpEnd};
use super::{child_env, Link, Running, Shared};
use crate::backoff::Backoff;
use crate::bridge::{close_for_exit, frame};
use crate::env::Var;
use crate::frames::FrameError;
use crate::mailbox::{Mailbox, Poster};
use crate::process::{Child, Exit, SpawnSpec, Spawned};
use crate::route::Resolved;
use crate::session::stderr::log_stderr;
use crate::session::{self, Refusal, SessionCtl};

/// What an endpoint's child is started from, each time.
#[derive(Debug)]
pub(super) struct Program {
    program: PathBuf,
    args: Vec<OsString>,
    /// The server's base environment and the child's own variables.
    env: Vec<Var>,
}

impl Program {
    pub(super) fn new(resolved: &Resolved, base_env: &[Var]) -> Self {
        let mut env = base_env.to_vec();
        env.extend(child_env(&resolved.script_name));
        Program {
            program: resolved.program.clone(),
            args: resolved.args.clone(),
            env,
        }
    }

    /// Starts one child (refused as any spawn is: 503/500).
    pub(super) async fn spawn(&self) -> Result<Spawned, Refusal> {
        session::spawn::spawn(&SpawnSpec {
            program: &self.program,
            args: &self.args,
            env: [self.env.as_slice(), &[]],
            dir: None,
        })
        .await
    }
}

/// A child just started, and what `ctl kill` cancels to end it.
pub(super) struct Started {
    spawned: Spawned,
    kill: CancellationToken,
}

impl Started {
    pub(super) fn new(spawned: Spawned) -> Self {
        Started {
            spawned,
            kill: CancellationToken::new(),
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.spawned.child.pid()
    }

    /// As the registry lists it.
    pub(super) fn running(&self) -> Running {
        Running {
            pid: self.pid(),
            kill: self.kill.clone(),
        }
    }
}

/// An endpoint's task, before it runs.
pub(super) struct Task {
    pub shared: Shared,
    /// Its endpoint, and which of that endpoint's entries it serves.
    pub key: PathBuf,
    pub generation: u64,
    pub link: Arc<Link>,
    pub program: Program,
    /// Its `--maxforks` slot, held until its last child is reaped.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Why a child stopped serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// It exited on its own.
    Exited,
    /// It closed its stdout: no client can get anything from it any more.
    OutputEnded,
    /// `--framed`: it wrote something that is not a frame.
    Broken(FrameError),
    /// `ctl kill` asked it to end.
    Killed,
    /// Its last client left.
    Detached,
    /// The server is shutting down (its clients are being closed with 1001).
    Shutdown,
}

/// How one child ended.
#[derive(Debug, Clone, Copy)]
struct Ended {
    why: Why,
    exit: Exit,
    /// We signalled it (it did not exit of its own accord).
    signalled: bool,
}

impl Ended {
    /// The close its clients get when it is not restarted; `None` when
    /// they are not closed for it (they left, or the server is closing
    /// them).
    fn close(&self) -> Option<(CloseCode, String)> {
        match self.why {
            Why::Exited | Why::OutputEnded | Why::Killed => {
                Some(close_for_exit(self.exit, self.signalled))
            }
            Why::Broken(e) => Some((CloseCode::Error, e.to_string())),
            Why::Detached | Why::Shutdown => None,
        }
    }
}

impl Task {
    /// Serves the endpoint until its child is no longer wanted or exits
    /// for good; then closes the clients left.
    pub(super) async fn run(mut self, first: Started, mut queue: Mailbox<Piece>) {
        let mut backoff = Backoff::new(super::RESTART);
        let mut next = (first, Vec::new());
        let ended = loop {
            let (started, first_lines) = next;
            let since = Instant::now();
            let ended = self.serve_one(started, &mut queue, first_lines).await;
            self.shared.stopped(&self.key, self.generation);
            if !self.restarts_after(ended.why) {
                break ended;
            }
            match self.restart(&mut backoff, since.elapsed()).await {
                Some(restarted) => next = restarted,
                None => break ended,
            }
        };
        // Its slot is free before a new client can find the endpoint
        // without a child and start one.
        drop(self.permit.take());
        let clients = self.shared.remove(&self.key, self.generation);
        if let Some((code, reason)) = ended.close() {
            close_all(clients, code, &reason);
        }
    }

    /// Whether a child that stopped for `why` is started again.
    fn restarts_after(&self, why: Why) -> bool {
        let wanted = matches!(
            why,
            Why::Exited | Why::OutputEnded | Why::Broken(_) | Why::Killed
        );
        self.shared.0.options.flags.restart
            && wanted
            && !self.link.detached.is_cancelled()
            && !self.shared.0.shutdown.is_shutting_down()
    }

    /// Waits out the backoff and starts the next child, retrying (with
    /// longer waits) while it cannot be started; `None` if it is no longer
    /// wanted meanwhile. Returns it with the lines it must read first.
    async fn restart(&self, backoff: &mut Backoff, ran: Duration) -> Option<(Started, Vec<u8>)> {
        let mut ran = ran;
        loop {
            let wait = backoff.after(ran);
            tracing::warn!(
                endpoint = %self.link.channel,
                wait_ms = wait.as_millis() as u64,
                "shared child stopped: restarting"
            );
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.link.detached.cancelled() => return None,
                () = self.shared.0.shutdown.cancelled() => return None,
            }
            match self.program.spawn().await {
                Ok(spawned) => {
                    self.shared.0.alive.fetch_add(1, Ordering::Relaxed);
                    let started = Started::new(spawned);
                    tracing::info!(pid = started.pid(), endpoint = %self.link.channel, "shared child restarted");
                    let first =
                        self.shared
                            .restarted(&self.key, self.generation, started.running());
                    return Some((started, first));
                }
                Err(refused) => {
                    tracing::error!(
                        endpoint = %self.link.channel,
                        reason = %refused.reason,
                        "shared child could not be restarted"
                    );
                    ran = Duration::ZERO;
                }
            }
        }
    }

    /// Serves one child until it exits or is no longer wanted, ends and
    /// reaps it.
    async fn serve_one(
        &self,
        started: Started,
        queue: &mut Mailbox<Piece>,
        first_lines: Vec<u8>,
    ) -> Ended {
        let Started { spawned, kill } = started;
        let Spawned {
            mut child,
            stdin,
            stdout,
            stderr,
        } = spawned;
        let options = self.shared.0.options;
        let pid = child.pid();
        let why = {
            let stop = CancellationToken::new();
            let writer = input::write(stdin, queue, first_lines, options.mode, &stop);
            let deliver = |line| {
                self.shared
                    .deliver(&self.key, self.generation, &self.link.channel, line)
            };
            let output = output::pump(stdout, options.mode, options.max_line, &stop, deliver);
            let id = format!("shared:{pid}");
            let stderr_log = async {
                log_stderr(stderr, &id, options.max_line).await;
                // Done: never a reason to wake the loop.
                std::future::pending::<()>().await
            };
            tokio::pin!(writer, output, stderr_log);
            let why = self
                .serve(&child, &kill, &mut writer, &mut output, &mut stderr_log)
                .await;
            if why == Why::Exited {
                // What it wrote before exiting still reaches its clients,
                // unless something it spawned holds stdout open: that is
                // asked to go, and cut off after the grace.
                child.kill_group(Signal::SIGTERM);
                let _ = tokio::time::timeout(options.close_grace, &mut output).await;
            }
            stop.cancel();
            why
            // The writer and the pump are dropped here: stdin and stdout
            // close, as a per-connection child's do when its client goes.
        };
        let (signalled, exit) = match why {
            Why::Exited => (None, child.reap().await),
            _ => child.terminate(options.close_grace).await,
        };
        self.shared.0.alive.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(
            pid,
            endpoint = %self.link.channel,
            exit = %exit,
            dropped_input = self.link.input.dropped(),
            "shared child ended"
        );
        Ended {
            why,
            exit,
            signalled: signalled.is_some(),
        }
    }

    /// Waits for the first reason to stop serving.
    async fn serve<W, O, E>(
        &self,
        child: &Child,
        kill: &CancellationToken,
        writer: &mut W,
        output: &mut O,
        stderr_log: &mut E,
    ) -> Why
    where
        W: std::future::Future<Output = ()> + Unpin,
        O: std::future::Future<Output = PumpEnd> + Unpin,
        E: std::future::Future<Output = ()> + Unpin,
    {
        let exit = child.exited();
        tokio::pin!(exit);
        let mut writing = true;
        let shutdown = &self.shared.0.shutdown;
        loop {
            tokio::select! {
                () = &mut exit => return Why::Exited,
                end = &mut *output => return match end {
                    PumpEnd::Broken(e) => Why::Broken(e),
                    PumpEnd::Eof | PumpEnd::Stopped => Why::OutputEnded,
                },
                () = kill.cancelled() => return Why::Killed,
                () = self.link.detached.cancelled() => return Why::Detached,
                () = shutdown.cancelled() => return Why::Shutdown,
                // Its input is done with (stop): it may still write.
                () = &mut *writer, if writing => writing = false,
                () = &mut *stderr_log => {}
            }
        }
    }
}

/// Closes every client with the code for the child's exit, once what is
/// queued for it (the child's last lines) has gone out.
fn close_all(clients: Vec<Poster<SessionCtl>>, code: CloseCode, reason: &str) {
    for control in clients {
        // Full only if a close is pending already; closed if it has ended.
        let _ = control.post(SessionCtl::Drain(frame(code, reason)));
    }
}
