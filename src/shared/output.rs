//! A shared child's stdout to its endpoint's channel: each line (split as
//! for a per-connection child, cut at `--maxlinesize`) is published, so it
//! reaches every client through the hub's bounded, never-waiting fan-out.
//! Publishing never waits, so the child is read as fast as it writes,
//! whatever its clients do.

use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

use crate::bridge::ChildOutput;
use crate::config::Mode;
use crate::hub::{ChannelName, Hub};

/// Publishes the child's lines to `channel` until its stdout ends or
/// `stop` is cancelled (then not one more line goes out: a fresh child may
/// already be publishing to the same channel). Owns stdout: returning
/// closes it.
pub(super) async fn pump(
    stdout: pipe::Receiver,
    hub: &Hub,
    channel: &ChannelName,
    max_line: usize,
    stop: &CancellationToken,
) {
    let mut out = ChildOutput::new(stdout, Mode::Text, max_line);
    loop {
        while let Some(message) = out.next_message() {
            if stop.is_cancelled() {
                return;
            }
            hub.publish(channel, message);
        }
        if out.eof {
            return;
        }
        tokio::select! {
            _ = out.pipe.readable() => out.read(),
            () = stop.cancelled() => return,
        }
    }
}
