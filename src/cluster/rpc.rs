//! Requests between instances, through Redis: how `ctl` reaches a
//! connection on another instance (`crate::control::remote` decides what
//! to ask; this layer only carries it).
//!
//! ```text
//!  asker                                   Redis                      owner
//!  ask(NAME, body) -- PUBLISH wspipe-ctl:NAME {seq, reply, body} --> Answer
//!        <------- PUBLISH wspipe-ctl-reply:ASKER:NONCE {seq, body} ----+
//! ```
//!
//! Every instance SUBSCRIBEs on one dedicated connection to its request
//! channel and to a reply channel of its own run (the nonce keeps a
//! restarted instance from getting its predecessor's answers). A body is
//! opaque here. Every ask is bounded: at most [`MAX_PENDING`] in flight,
//! each waits at most the caller's timeout; every answer is bounded: at
//! most [`MAX_SERVING`] requests of other instances are served at once,
//! more are dropped (their askers time out, which is what an instance that
//! is too busy to answer looks like anyway).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Semaphore};

use super::{Settings, RECONNECT, TIMEOUT};
use crate::backoff::Backoff;
use crate::shutdown::Shutdown;

/// Asks of ours waiting for an answer at once; more are refused.
pub const MAX_PENDING: usize = 1024;

/// Requests of other instances served at once; more are dropped.
pub const MAX_SERVING: usize = 64;

/// Longest request or answer taken from Redis, in bytes: a `list` of a
/// big instance fits; a stranger's flood does not.
pub const MAX_BODY: usize = 64 << 20;

/// The request channel of instance `name`.
pub fn request_channel(name: &str) -> String {
    format!("wspipe-ctl:{name}")
}

/// What serves other instances' requests here.
pub trait Answer: Send + Sync + 'static {
    /// The answer to `body` (what [`Rpc::ask`] was given elsewhere).
    fn answer(&self, body: String) -> Pin<Box<dyn Future<Output = String> + Send>>;
    /// What this instance registers about itself (JSON), refreshed with
    /// every heartbeat.
    fn presence(&self) -> String;
}

/// A handle on this instance's requests; clones are cheap.
#[derive(Clone)]
pub struct Rpc(Arc<Inner>);

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc").field("name", &self.0.name).finish()
    }
}

struct Inner {
    name: String,
    client: redis::Client,
    reply: String,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<String>>>,
    /// Set once the control layer is built (it needs the registry);
    /// requests that come before are dropped.
    answer: OnceLock<Arc<dyn Answer>>,
    /// The connection asks and answers are published on, made when first
    /// needed and again after a failure.
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    serving: Arc<Semaphore>,
}

#[derive(Serialize, Deserialize)]
struct Ask {
    seq: u64,
    reply: String,
    body: String,
}

#[derive(Serialize, Deserialize)]
struct Reply {
    seq: u64,
    body: String,
}

/// Why an ask got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AskError {
    /// Too many asks in flight.
    Busy,
    /// Redis could not take it.
    Redis(String),
    /// No answer within the bound.
    TimedOut,
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AskError::Busy => f.write_str("too many requests to other instances in flight"),
            AskError::Redis(e) => write!(f, "redis: {e}"),
            AskError::TimedOut => f.write_str("no answer in time"),
        }
    }
}

impl Rpc {
    /// Starts the subscriber task (tracked by `shutdown`). Needs a tokio
    /// runtime; a Redis that is down delays nothing.
    pub fn start(settings: &Settings, shutdown: &Shutdown) -> Self {
        let name = settings.instance.as_str().to_owned();
        let reply = format!("wspipe-ctl-reply:{name}:{:016x}", super::nonce());
        let rpc = Rpc(Arc::new(Inner {
            name,
            client: settings.target.client().clone(),
            reply,
            next: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            answer: OnceLock::new(),
            conn: tokio::sync::Mutex::new(None),
            serving: Arc::new(Semaphore::new(MAX_SERVING)),
        }));
        shutdown.spawn(listen(rpc.clone(), shutdown.clone()));
        shutdown.spawn(super::presence::heartbeat(rpc.clone(), shutdown.clone()));
        rpc
    }

    /// Who answers the other instances' requests (the first one set).
    pub fn answer_with(&self, answer: Arc<dyn Answer>) {
        let _ = self.0.answer.set(answer);
    }

    /// Who answers, once set.
    pub fn answerer(&self) -> Option<Arc<dyn Answer>> {
        self.0.answer.get().cloned()
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Sends `body` to instance `to` and waits up to `within` for its
    /// answer.
    pub async fn ask(&self, to: &str, body: String, within: Duration) -> Result<String, AskError> {
        let seq = self.0.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.lock_pending();
            if pending.len() >= MAX_PENDING {
                return Err(AskError::Busy);
            }
            pending.insert(seq, tx);
        }
        // Forgotten on every way out, the answer or not.
        let _forget = Forget(self, seq);
        let ask = Ask {
            seq,
            reply: self.0.reply.clone(),
            body,
        };
        let payload = serde_json::to_string(&ask).map_err(|e| AskError::Redis(e.to_string()))?;
        let deadline = Instant::now() + within;
        let channel = request_channel(to);
        let published = tokio::time::timeout(within, self.publish(&channel, payload));
        match published.await {
            Err(_) => return Err(AskError::TimedOut),
            Ok(Err(e)) => return Err(AskError::Redis(e.to_string())),
            Ok(Ok(0)) => return Err(AskError::TimedOut), // nobody subscribed
            Ok(Ok(_)) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => Err(AskError::TimedOut),
        }
    }

    /// PUBLISH on the shared connection (made again after a failure);
    /// returns how many subscribers got it.
    pub async fn publish(&self, channel: &str, payload: String) -> Result<u64, RedisError> {
        let mut conn = self.connection().await?;
        let sent = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async::<u64>(&mut conn)
            .await;
        if sent.is_err() {
            *self.0.conn.lock().await = None;
        }
        sent
    }

    /// The shared connection, made if there is none.
    pub async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut slot = self.0.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let conn = self
            .0
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the shared connection after a failure seen elsewhere.
    pub async fn reset(&self) {
        *self.0.conn.lock().await = None;
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<String>>> {
        // Poison is moot: the map stays consistent at every step.
        self.0.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One message on our subscription: a request to serve or an answer.
    fn take(&self, msg: &redis::Msg) {
        let payload = msg.get_payload_bytes();
        if payload.len() > MAX_BODY {
            return;
        }
        if msg.get_channel_name() == self.0.reply {
            if let Ok(reply) = serde_json::from_slice::<Reply>(payload) {
                if let Some(tx) = self.lock_pending().remove(&reply.seq) {
                    let _ = tx.send(reply.body);
                }
            }
            return;
        }
        let Ok(ask) = serde_json::from_slice::<Ask>(payload) else {
            tracing::debug!("redis: ignored a control request that is not wspipe's");
            return;
        };
        // Answers go only to reply channels: a stranger cannot make us
        // publish on the channels clients read.
        if !ask.reply.starts_with("wspipe-ctl-reply:") {
            return;
        }
        let (Some(answer), Ok(permit)) = (
            self.0.answer.get().cloned(),
            self.0.serving.clone().try_acquire_owned(),
        ) else {
            return;
        };
        let rpc = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let body = answer.answer(ask.body).await;
            let reply = Reply { seq: ask.seq, body };
            let Ok(payload) = serde_json::to_string(&reply) else {
                return;
            };
            let sent = tokio::time::timeout(TIMEOUT, rpc.publish(&ask.reply, payload)).await;
            if !matches!(sent, Ok(Ok(_))) {
                tracing::debug!("redis: could not answer a control request of another instance");
            }
        });
    }
}

struct Forget<'a>(&'a Rpc, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.lock_pending().remove(&self.1);
    }
}

/// The subscriber: made again with backoff while Redis is away (asks
/// then time out; local control is untouched).
async fn listen(rpc: Rpc, shutdown: Shutdown) {
    let mut backoff = Backoff::new(RECONNECT);
    loop {
        let since = Instant::now();
        let session = async {
            let mut pubsub = tokio::time::timeout(TIMEOUT, rpc.0.client.get_async_pubsub())
                .await
                .map_err(|_| timed_out())??;
            pubsub.subscribe(request_channel(&rpc.0.name)).await?;
            pubsub.subscribe(&rpc.0.reply).await?;
            let (mut sink, mut stream) = pubsub.split();
            let mut ping = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    msg = stream.next() => match msg {
                        Some(msg) => rpc.take(&msg),
                        None => return Err::<(), RedisError>(timed_out()),
                    },
                    _ = ping.tick() => {
                        match tokio::time::timeout(TIMEOUT, sink.ping::<redis::Value>()).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => return Err(e),
                            Err(_) => return Err(timed_out()),
                        }
                    }
                }
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            ended = session => {
                if let Err(e) = ended {
                    // The channel links log outages; this one only notes it.
                    tracing::debug!("redis: control subscription lost: {e}");
                }
            }
        }
        let wait = backoff.after(since.elapsed());
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {TIMEOUT:?}"),
    ))
}
