//! What every pump that writes to a WebSocket shares (the child's
//! outbound direction and the channel session): the `--pingms` timer and
//! the one step that feeds the socket or flushes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use crate::session::SessionStats;

/// `--pingms`: a ping every period; a client that has not answered the
/// previous one by the next tick is gone.
#[derive(Debug)]
pub(crate) struct Pinger {
    timer: Option<Interval>,
    /// A ping went out and its pong has not been seen yet.
    awaiting: bool,
}

/// The client did not answer the last ping in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MissedPong;

impl Pinger {
    pub(crate) fn new(period: Option<Duration>) -> Self {
        let timer = period.map(|period| {
            let mut timer = tokio::time::interval_at(Instant::now() + period, period);
            timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
            timer
        });
        Pinger {
            timer,
            awaiting: false,
        }
    }

    /// Waits for the next tick (never, without pings); then a ping is due,
    /// unless the last one went unanswered. `pong` is set by the reading
    /// side when a pong comes. Cancel-safe.
    pub(crate) async fn tick(&mut self, pong: &AtomicBool) -> Result<(), MissedPong> {
        match self.timer.as_mut() {
            Some(timer) => {
                timer.tick().await;
            }
            None => std::future::pending().await,
        }
        if self.awaiting && !pong.swap(false, Ordering::Relaxed) {
            return Err(MissedPong);
        }
        pong.store(false, Ordering::Relaxed);
        self.awaiting = true;
        Ok(())
    }
}

/// Once the socket has room, feeds it `pending` (true); with nothing
/// pending, flushes it (false). Messages are fed back to back and flushed
/// once none is left, so a burst costs few system calls and a lone message
/// goes out at once. Cancel-safe: the message is taken only when the
/// socket takes it. Text and binary messages are counted as sent.
pub(crate) async fn feed_or_flush<K>(
    sink: &mut K,
    pending: &mut Option<Message>,
    stats: &SessionStats,
) -> Result<bool, K::Error>
where
    K: Sink<Message> + Unpin,
{
    std::future::poll_fn(|cx| {
        if pending.is_some() {
            sink.poll_ready_unpin(cx)
        } else {
            sink.poll_flush_unpin(cx)
        }
    })
    .await?;
    let Some(msg) = pending.take() else {
        return Ok(false);
    };
    if msg.is_text() || msg.is_binary() {
        stats.count_out(msg.len());
    }
    sink.start_send_unpin(msg)?;
    Ok(true)
}
