//! The task that owns one shared child: it runs the output pump, the input
//! writer and the stderr log side by side, watches for the child's exit,
//! its last client leaving and server shutdown, then ends the child the way
//! a per-connection session ends its own, reaps it, and closes whatever
//! clients are left with the code its exit status calls for.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use nix::sys::signal::Signal;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::{input, output, Link, Shared};
use crate::bridge::{close_for_exit, frame};
use crate::mailbox::Mailbox;
use crate::process::{Child, Spawned};
use crate::session::stderr::log_stderr;
use crate::session::SessionCtl;

/// A started shared child's task, before it runs.
pub(super) struct Task {
    pub shared: Shared,
    /// Its endpoint, and which of that endpoint's children it is.
    pub key: PathBuf,
    pub generation: u64,
    pub link: Arc<Link>,
    /// Its `--maxforks` slot, held until it is reaped.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Why a child stopped serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// It exited on its own.
    Exited,
    /// It closed its stdout: no client can get anything from it any more.
    OutputEnded,
    /// Its last client left.
    Detached,
    /// The server is shutting down (its clients are being closed with 1001).
    Shutdown,
}

impl Task {
    /// Serves until the child exits or is no longer wanted, ends and reaps
    /// it, and closes its remaining clients.
    pub(super) async fn run(self, spawned: Spawned, queue: Mailbox<Bytes>) {
        let Spawned {
            mut child,
            stdin,
            stdout,
            stderr,
        } = spawned;
        let options = self.shared.0.options;
        let why = {
            let stop = CancellationToken::new();
            let writer = input::write(stdin, queue, &stop);
            let deliver = |line| {
                self.shared
                    .deliver(&self.key, self.generation, &self.link.channel, line)
            };
            let output = output::pump(stdout, options.max_line, &stop, deliver);
            let id = format!("shared:{}", self.link.pid);
            let stderr_log = async {
                log_stderr(stderr, &id, options.max_line).await;
                // Done: never a reason to wake the loop.
                std::future::pending::<()>().await
            };
            tokio::pin!(writer, output, stderr_log);
            let why = self
                .serve(&child, &mut writer, &mut output, &mut stderr_log)
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
        drop(self.permit);
        self.shared.0.alive.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(
            pid = self.link.pid,
            endpoint = %self.link.channel,
            exit = %exit,
            dropped_input = self.link.input.dropped(),
            "shared child ended"
        );
        let clients = self.shared.remove(&self.key, self.generation);
        if matches!(why, Why::Exited | Why::OutputEnded) {
            let (code, reason) = close_for_exit(exit, signalled.is_some());
            close_all(clients.into_values(), code, &reason);
        }
    }

    /// Waits for the first reason to stop serving.
    async fn serve<W, O, E>(
        &self,
        child: &Child,
        writer: &mut W,
        output: &mut O,
        stderr_log: &mut E,
    ) -> Why
    where
        W: std::future::Future<Output = ()> + Unpin,
        O: std::future::Future<Output = ()> + Unpin,
        E: std::future::Future<Output = ()> + Unpin,
    {
        let exit = child.exited();
        tokio::pin!(exit);
        let mut writing = true;
        let shutdown = &self.shared.0.shutdown;
        loop {
            tokio::select! {
                () = &mut exit => return Why::Exited,
                () = &mut *output => return Why::OutputEnded,
                () = self.link.detached.cancelled() => return Why::Detached,
                () = shutdown.cancelled() => return Why::Shutdown,
                // The child closed its stdin: it may still write.
                () = &mut *writer, if writing => writing = false,
                () = &mut *stderr_log => {}
            }
        }
    }
}

/// Closes every client with the code for the child's exit, once what is
/// queued for it (the child's last lines) has gone out.
fn close_all(
    clients: impl Iterator<Item = crate::mailbox::Poster<SessionCtl>>,
    code: CloseCode,
    reason: &str,
) {
    for control in clients {
        // Full only if a close is pending already; closed if it has ended.
        let _ = control.post(SessionCtl::Drain(frame(code, reason)));
    }
}
