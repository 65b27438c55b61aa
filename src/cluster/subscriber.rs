//! The subscriber task: one PSUBSCRIBE to every wspipe channel, each
//! message from another instance handed to the [`Deliver`] in the order
//! Redis sent it; our own are dropped (our members had them directly).
//! With `--history`, numbered messages (ours too: nobody had them before
//! Redis numbered them) and our fences go to the [`Resumes`] instead.
//!
//! A subscribed connection that goes quiet may be dead (a Redis that was
//! stopped, a network that drops packets): it is PINGed every
//! [`PING_EVERY`] and counts as lost if no answer comes within
//! [`TIMEOUT`]. It is made again with backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::RedisError;

use super::codec::{self, Origin};
use super::link::Link;
use super::numbered;
use super::stream::Resumes;
use super::{Counters, Deliver, RECONNECT, TIMEOUT};
use crate::backoff::Backoff;
use crate::shutdown::Shutdown;

/// How often a quiet subscription is checked.
const PING_EVERY: Duration = Duration::from_secs(5);

/// What the task works with.
pub(super) struct Task {
    pub client: redis::Client,
    pub origin: Origin,
    /// Longest message handed on, in bytes.
    pub largest: usize,
    pub deliver: Arc<dyn Deliver>,
    pub link: Arc<Link>,
    pub counters: Arc<Counters>,
    /// A message we could not read was logged already.
    pub garbled: AtomicBool,
    /// A message too big was logged already.
    pub oversized: AtomicBool,
    /// `--history`: where numbered messages and fences go.
    pub resumes: Option<Arc<dyn Resumes>>,
}

/// Runs until shutdown.
pub(super) async fn run(task: Task, shutdown: Shutdown) {
    let mut backoff = Backoff::new(RECONNECT);
    let warned = AtomicBool::new(false);
    loop {
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return,
            attempt = subscribe(&task.client) => attempt,
        };
        let ran = match attempt {
            Err(e) => {
                task.link.failed(&e);
                Duration::ZERO
            }
            Ok((sink, stream)) => {
                task.link.connected();
                let since = Instant::now();
                match task.listen(sink, stream, &warned, &shutdown).await {
                    Ok(()) => return,
                    Err(e) => task.link.lost(&e),
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

/// A connection subscribed to every wspipe channel.
async fn subscribe(client: &redis::Client) -> Result<(PubSubSink, PubSubStream), RedisError> {
    let within = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(codec::PATTERN).await?;
        Ok(pubsub.split())
    };
    tokio::time::timeout(TIMEOUT, within)
        .await
        .unwrap_or_else(|_| Err(timed_out("connecting")))
}

fn timed_out(what: &str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer: {what} took over {TIMEOUT:?}"),
    ))
}

fn closed() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the server closed the connection",
    ))
}

impl Task {
    /// Hands messages on until shutdown (`Ok`) or the connection is lost.
    ///
    /// Between the socket and this loop the redis crate keeps an unbounded
    /// queue of its own; it stays short because handing a message on never
    /// waits (the hub's publish drops or closes for slow members), so this
    /// loop drains it as fast as Redis can fill it.
    async fn listen(
        &self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        warned: &AtomicBool,
        shutdown: &Shutdown,
    ) -> Result<(), RedisError> {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                msg = stream.next() => match msg {
                    Some(msg) => self.take(&msg, warned),
                    None => return Err(closed()),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(_) => return Err(timed_out("a PING")),
                    }
                }
            }
        }
    }

    /// One message from Redis: delivered if it is another instance's.
    fn take(&self, msg: &redis::Msg, warned: &AtomicBool) {
        let Some(channel) = codec::channel_of(msg.get_channel_name()) else {
            return;
        };
        let payload = msg.get_payload_bytes();
        match payload.first() {
            Some(&numbered::NUMBERED) => return self.take_numbered(channel, payload),
            Some(&numbered::FENCE) => return self.take_fence(channel, payload),
            _ => {}
        }
        let decoded = match codec::decode(payload) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.counters.lost(1);
                // Once: a stranger publishing on our channels must not
                // flood the log.
                if !self.garbled.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "redis: dropped a message on {channel:?} that is not wspipe's ({e}); further ones are only counted"
                    );
                }
                return;
            }
        };
        if decoded.nonce == self.origin.nonce {
            return;
        }
        if decoded.message.len() > self.largest {
            self.counters.lost(1);
            if !self.oversized.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "redis: dropped a message of {} bytes from instance {:?} on {channel:?}: \
                     this instance takes at most {} (--maxframesize, --maxlinesize); further ones are only counted",
                    decoded.message.len(),
                    decoded.name,
                    self.largest
                );
            }
            return;
        }
        if decoded.name == self.origin.name.as_str() && !warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "redis: another instance is also named {:?}: give each its own --instance",
                decoded.name
            );
        }
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        self.deliver.deliver(channel, decoded.message);
    }

    /// A numbered message: every instance's, its own included, to the
    /// resumes; without `--history` here, another instance's is
    /// delivered plainly (an instance configured without it still hears
    /// those configured with it).
    fn take_numbered(&self, channel: &str, payload: &[u8]) {
        let decoded = match numbered::decode(payload) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.counters.lost(1);
                if !self.garbled.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "redis: dropped a numbered message on {channel:?} that does not parse ({e}); further ones are only counted"
                    );
                }
                return;
            }
        };
        if decoded.message.len() > self.largest {
            self.counters.lost(1);
            return;
        }
        match &self.resumes {
            Some(resumes) => {
                if decoded.nonce != self.origin.nonce {
                    self.counters.received.fetch_add(1, Ordering::Relaxed);
                }
                resumes.numbered(channel, decoded.seq, decoded.epoch, decoded.message);
            }
            None if decoded.nonce != self.origin.nonce => {
                self.counters.received.fetch_add(1, Ordering::Relaxed);
                self.deliver.deliver(channel, decoded.message);
            }
            None => {}
        }
    }

    /// A fence: ours to the resumes, others' ignored.
    fn take_fence(&self, channel: &str, payload: &[u8]) {
        let (Some(resumes), Ok((nonce, token))) = (&self.resumes, numbered::decode_fence(payload))
        else {
            return;
        };
        if nonce == self.origin.nonce {
            resumes.fenced(channel, token);
        }
    }
}
