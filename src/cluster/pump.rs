//! The sending loop the publisher and the history task share: connect
//! (with backoff after a failure), then empty a bounded outbox into Redis
//! in order, as pipelined batches over one connection, until shutdown.
//!
//! A batch whose sending fails (the connection broke, Redis answered an
//! error, or no answer came within the connection's response timeout) is
//! counted as dropped and not sent again: Redis may have passed some of
//! it on already, and a message twice is worse than a message lost across
//! instances (local members had it anyway). Then the connection is made
//! again, with backoff, while the outbox keeps taking messages up to its
//! bound.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{Pipeline, RedisError};
use tokio_util::sync::CancellationToken;

use super::link::Link;
use super::{Counters, RECONNECT};
use crate::backoff::Backoff;
use crate::mailbox::Mailbox;
use crate::shutdown::Shutdown;

/// Most messages in one pipelined batch: enough to carry a burst in a few
/// round trips, few enough that one failure loses little.
const BATCH: usize = 256;

/// What one pump sends, and how.
pub(super) trait Sender: Send + Sync + 'static {
    /// What the outbox holds.
    type Item: Send + 'static;
    /// A working connection, with whatever it carries besides (the
    /// history's script hashes).
    type Conn: Send + 'static;

    /// A connection that answered (so a password we lack shows now, not
    /// at the first send), and the token cancelled when it closes.
    fn connect(
        &self,
        client: &redis::Client,
    ) -> impl Future<Output = Result<(Self::Conn, CancellationToken), RedisError>> + Send;

    /// The Redis connection inside `conn`.
    fn redis(conn: &mut Self::Conn) -> &mut MultiplexedConnection;

    /// Appends the command(s) that send `item` to the batch.
    fn add(&self, batch: &mut Pipeline, conn: &Self::Conn, item: Self::Item);

    /// The link state whose log lines and flag this pump drives.
    fn link(&self) -> &Link;

    /// Where sent and dropped messages are counted.
    fn counters(&self) -> &Counters;

    /// Told when `conn` starts serving and (`None`) when it stops, for a
    /// sender that lends its connection to others.
    fn serving(&self, _conn: Option<&Self::Conn>) {}
}

/// Runs until shutdown.
pub(super) async fn run<S: Sender>(
    client: redis::Client,
    mut outbox: Mailbox<S::Item>,
    sender: Arc<S>,
    shutdown: Shutdown,
) {
    let mut backoff = Backoff::new(RECONNECT);
    loop {
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return,
            attempt = sender.connect(&client) => attempt,
        };
        let ran = match attempt {
            Err(e) => {
                sender.link().failed(&e);
                Duration::ZERO
            }
            Ok((mut conn, gone)) => {
                sender.serving(Some(&conn));
                sender.link().connected();
                let since = Instant::now();
                let served = serve(&*sender, &mut conn, &gone, &mut outbox, &shutdown).await;
                sender.serving(None);
                match served {
                    Ok(()) => return,
                    Err(e) => sender.link().lost(&e),
                }
                since.elapsed()
            }
        };
        let wait = backoff.after(ran);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends batches as they come until shutdown (`Ok`, once the outbox is
/// empty) or a failure.
///
/// A connection that closes while idle (Redis restarted between two
/// messages) is noticed through `gone` before anything is taken from the
/// outbox: the next message waits for the new connection instead of
/// being lost on the dead one.
async fn serve<S: Sender>(
    sender: &S,
    conn: &mut S::Conn,
    gone: &CancellationToken,
    outbox: &mut Mailbox<S::Item>,
    shutdown: &Shutdown,
) -> Result<(), RedisError> {
    loop {
        tokio::select! {
            // What is queued goes out before the task ends: a publish just
            // before a restart still reaches the other instances (each
            // batch is bounded by the response timeout, and publishes stop
            // as the sessions end).
            biased;
            () = gone.cancelled() => return Err(closed()),
            () = outbox.ready() => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        if gone.is_cancelled() {
            return Err(closed());
        }
        send_batch(sender, conn, outbox).await?;
    }
}

fn closed() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the server closed the connection",
    ))
}

/// Sends up to [`BATCH`] queued messages in one round trip.
async fn send_batch<S: Sender>(
    sender: &S,
    conn: &mut S::Conn,
    outbox: &mut Mailbox<S::Item>,
) -> Result<(), RedisError> {
    let mut batch = redis::pipe();
    let mut count = 0u64;
    while count < BATCH as u64 {
        let Some(item) = outbox.try_recv() else {
            break;
        };
        sender.add(&mut batch, conn, item);
        count += 1;
    }
    if count == 0 {
        return Ok(());
    }
    match batch.query_async::<()>(S::redis(conn)).await {
        Ok(()) => {
            let counters = sender.counters();
            counters.published.fetch_add(count, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            sender.counters().lost(count);
            Err(e)
        }
    }
}
