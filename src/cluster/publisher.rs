//! The publisher: empties the outbox into Redis as pipelined batches of
//! PUBLISH, in order, over one connection ([`super::pump`] has the loop,
//! its batching and what a failure loses).

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Pipeline, PushInfo, PushKind, RedisError};
use tokio_util::sync::CancellationToken;

use super::link::Link;
use super::pump::{self, Sender};
use super::{Counters, Outgoing, TIMEOUT};
use crate::mailbox::Mailbox;
use crate::shutdown::Shutdown;

/// Runs until shutdown.
pub(super) async fn run(
    client: redis::Client,
    outbox: Mailbox<Outgoing>,
    link: Arc<Link>,
    counters: Arc<Counters>,
    shutdown: Shutdown,
) {
    pump::run(
        client,
        outbox,
        Arc::new(Publisher { link, counters }),
        shutdown,
    )
    .await;
}

/// Sends each message with one PUBLISH.
struct Publisher {
    link: Arc<Link>,
    counters: Arc<Counters>,
}

impl Sender for Publisher {
    type Item = Outgoing;
    type Conn = MultiplexedConnection;

    async fn connect(
        &self,
        client: &redis::Client,
    ) -> Result<(MultiplexedConnection, CancellationToken), RedisError> {
        connect(client).await
    }

    fn redis(conn: &mut MultiplexedConnection) -> &mut MultiplexedConnection {
        conn
    }

    fn add(&self, batch: &mut Pipeline, _: &MultiplexedConnection, out: Outgoing) {
        batch
            .cmd("PUBLISH")
            .arg(out.channel)
            .arg(out.payload)
            .ignore();
    }

    fn link(&self) -> &Link {
        &self.link
    }

    fn counters(&self) -> &Counters {
        &self.counters
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
