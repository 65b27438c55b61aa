//! The publisher task: empties the outbox into Redis, in order, over one
//! connection, as pipelined batches of PUBLISH.
//!
//! A batch whose sending fails (the connection broke, Redis answered an
//! error, or no answer came within [`TIMEOUT`]) is counted as dropped and
//! not sent again: Redis may have passed some of it on already, and a
//! message twice is worse than a message lost across instances (local
//! members had it anyway). Then the connection is made again, with
//! backoff, while the outbox keeps taking publishes up to its bound.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, RedisError};
use tokio_util::sync::CancellationToken;

use super::link::Link;
use super::{Counters, Outgoing, RECONNECT, TIMEOUT};
use crate::backoff::Backoff;
use crate::mailbox::Mailbox;
use crate::shutdown::Shutdown;

/// Most messages in one pipelined batch: enough to carry a burst in a few
/// round trips, few enough that one failure loses little.
const BATCH: usize = 256;

/// Runs until shutdown.
pub(super) async fn run(
    client: redis::Client,
    mut outbox: Mailbox<Outgoing>,
    link: Arc<Link>,
    counters: Arc<Counters>,
    shutdown: Shutdown,
) {
    let mut backoff = Backoff::new(RECONNECT);
    loop {
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return,
            attempt = connect(&client) => attempt,
        };
        let ran = match attempt {
            Err(e) => {
                link.failed(&e);
                std::time::Duration::ZERO
            }
            Ok((mut conn, gone)) => {
                link.connected();
                let since = Instant::now();
                match serve(&mut conn, &gone, &mut outbox, &counters, &shutdown).await {
                    Ok(()) => return,
                    Err(e) => link.lost(&e),
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

/// A connection that answered a PING (so a password we lack shows here,
/// as `NOAUTH`, not at the first publish), and the token the redis crate
/// cancels when it sees the connection close.
pub(super) async fn connect(
    client: &redis::Client,
) -> Result<(MultiplexedConnection, CancellationToken), RedisError> {
    let gone = CancellationToken::new();
    let tell = gone.clone();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_push_sender(move |info: PushInfo| {
            if info.kind == PushKind::Disconnection {
                tell.cancel();
            }
            Ok::<(), std::convert::Infallible>(())
        });
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("PING").query_async::<()>(&mut conn).await?;
    Ok((conn, gone))
}

fn closed() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the server closed the connection",
    ))
}

/// Sends batches as they come until shutdown (`Ok`, once the outbox is
/// empty) or a failure.
///
/// A connection that closes while idle (Redis restarted between two
/// publishes) is noticed through `gone` before anything is taken from
/// the outbox: the next publish waits for the new connection instead of
/// being lost on the dead one.
async fn serve(
    conn: &mut MultiplexedConnection,
    gone: &CancellationToken,
    outbox: &mut Mailbox<Outgoing>,
    counters: &Counters,
    shutdown: &Shutdown,
) -> Result<(), RedisError> {
    loop {
        tokio::select! {
            // What is queued goes out before the task ends: a publish just
            // before a restart still reaches the other instances (each
            // batch is bounded by TIMEOUT, and publishes stop as the
            // sessions end).
            biased;
            () = gone.cancelled() => return Err(closed()),
            () = outbox.ready() => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        if gone.is_cancelled() {
            return Err(closed());
        }
        send_batch(conn, outbox, counters).await?;
    }
}

/// Sends up to [`BATCH`] queued messages in one round trip.
async fn send_batch(
    conn: &mut MultiplexedConnection,
    outbox: &mut Mailbox<Outgoing>,
    counters: &Counters,
) -> Result<(), RedisError> {
    let mut pipe = redis::pipe();
    let mut count = 0u64;
    while count < BATCH as u64 {
        let Some(out) = outbox.try_recv() else {
            break;
        };
        pipe.cmd("PUBLISH")
            .arg(out.channel)
            .arg(out.payload)
            .ignore();
        count += 1;
    }
    if count == 0 {
        return Ok(());
    }
    match pipe.query_async::<()>(conn).await {
        Ok(()) => {
            counters.published.fetch_add(count, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            counters.lost(count);
            Err(e)
        }
    }
}
