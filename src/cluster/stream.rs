//! `--history` with `--redis`: each channel's history is a Redis stream
//! (`wspipe-history:/room`) and its numbering a Redis counter
//! (`wspipe-seq:/room`) with an epoch (`wspipe-epoch:/room`), so that a
//! message has the same number on every instance and a client can resume
//! on any of them.
//!
//! Each publish runs [`PUBLISH_SCRIPT`] (atomic in Redis): it numbers the
//! message, keeps it in the stream (`MAXLEN ~ N`), refreshes the keys'
//! TTL (`--history-ttl`) and PUBLISHes it, numbered ([`super::numbered`]),
//! to every instance, this one included. A resume runs [`RESUME_SCRIPT`]:
//! it reads what the client missed and PUBLISHes a fence, which tells the
//! subscriber of the instance that asked when everything numbered before
//! the read has come through (see `crate::resume`).
//!
//! An epoch key that is missing (expired, or Redis lost its data) is made
//! anew by whichever script runs first, and the counter and stream go
//! with the old one: numbering restarts at 1 under a new epoch, and a
//! client that brings the old epoch is told `reset`.
//!
//! One task sends the publishes, in order, as pipelined EVALSHA batches
//! over one connection, which resumes share. While that connection is
//! down [`HistoryLink::publish`] refuses (the caller serves local members
//! un-numbered); messages it took wait in a bounded outbox, whose oldest
//! go (counted as dropped) when Redis is slow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;
use redis::{Pipeline, RedisError};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::codec::{self, Origin};
use super::link::Link;
use super::numbered;
use super::pump;
use super::{Counters, OUTBOX};
use crate::mailbox::Poster;
use crate::shutdown::Shutdown;

/// Numbers, keeps and publishes one message.
/// KEYS: seq, epoch, stream.
/// ARGV: a new epoch (used if none), ttl, depth, header, body, pub/sub
/// channel.
pub const PUBLISH_SCRIPT: &str = r"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[1], KEYS[3])
end
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], string.format('0-%d', seq), 'm', ARGV[5])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
redis.call('PUBLISH', ARGV[6], ARGV[4] .. string.format('%d', seq) .. '\t' .. epoch .. '\t' .. ARGV[5])
return seq
";

/// Reads what a client missed and publishes a fence after it.
/// KEYS: seq, epoch, stream.
/// ARGV: a new epoch (used if none), ttl, since (-1: a new client),
/// depth, the client's epoch ('' if none), the fence, pub/sub channel.
/// Returns {epoch, fresh, recovered, last, entries}.
pub const RESUME_SCRIPT: &str = r"
local fresh = 0
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  fresh = 1
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[1], KEYS[3])
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local depth = tonumber(ARGV[4])
local oldest = last + 1
local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
if first[1] then oldest = tonumber(string.sub(first[1][1], 3)) end
if oldest < last - depth + 1 then oldest = last - depth + 1 end
local since = tonumber(ARGV[3])
local from = since + 1
local ok = 1
if since < 0 then
  from = last + 1
elseif ARGV[5] ~= '' and ARGV[5] ~= epoch then
  ok = 0
  from = oldest
elseif since == 0 then
  from = oldest
elseif since > last or from < oldest then
  ok = 0
  from = oldest
end
local entries = {}
if from <= last then
  entries = redis.call('XRANGE', KEYS[3], string.format('0-%d', from), '+', 'COUNT', depth)
end
redis.call('PUBLISH', ARGV[7], ARGV[6])
return {epoch, fresh, ok, last, entries}
";

/// `--history N` and `--history-ttl`, as Redis takes them.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub depth: usize,
    pub ttl_secs: u64,
}

/// Where numbered messages and fences from Redis go (`crate::resume`).
/// Called from the subscriber task; must not wait.
pub trait Resumes: Send + Sync + 'static {
    /// A numbered message of `channel`, this instance's own included.
    fn numbered(&self, channel: &str, seq: u64, epoch: &str, message: Message);
    /// The fence of this instance's resume `token` on `channel`.
    fn fenced(&self, channel: &str, token: u64);
}

/// What a resume read found.
#[derive(Debug)]
pub struct Resumed {
    pub epoch: String,
    /// The epoch was made by this read: Redis had no history of the
    /// channel (never published to, expired, or lost).
    pub fresh: bool,
    /// Everything after the client's position is in `entries`.
    pub recovered: bool,
    /// The seq of the last message numbered before the read.
    pub last: u64,
    /// What the client is owed, oldest first.
    pub entries: Vec<(u64, Message)>,
}

/// The handle on the history connection; clones are cheap.
#[derive(Debug, Clone)]
pub struct HistoryLink(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    outbox: Poster<Job>,
    /// The working connection, `None` while down; resumes clone it.
    conn: Mutex<Option<Conn>>,
    link: Arc<Link>,
    settings: Settings,
    origin: Origin,
    header: Vec<u8>,
    counters: Arc<Counters>,
    /// Makes each new epoch of this instance unlike the last.
    epochs: AtomicU64,
}

/// A working connection and the SHA1s its Redis gave the scripts.
#[derive(Debug, Clone)]
struct Conn {
    conn: MultiplexedConnection,
    publish_sha: Arc<str>,
    resume_sha: Arc<str>,
}

/// One message to number.
#[derive(Debug)]
struct Job {
    channel: String,
    body: Vec<u8>,
}

/// The scripts' KEYS. The pub/sub channel goes in ARGV: it is not a key,
/// and an ACL user then needs only a channel right on `wspipe:*`, no key
/// right.
fn keys(channel: &str) -> [String; 3] {
    [
        format!("wspipe-seq:{channel}"),
        format!("wspipe-epoch:{channel}"),
        format!("wspipe-history:{channel}"),
    ]
}

impl HistoryLink {
    /// Starts the history task (tracked by `shutdown`).
    pub(super) fn start(
        client: redis::Client,
        settings: Settings,
        origin: Origin,
        link: Arc<Link>,
        counters: Arc<Counters>,
        shutdown: &Shutdown,
    ) -> Self {
        let (outbox, queue) = crate::mailbox::mailbox_weighed(OUTBOX.items, |j: &Job| j.body.len());
        let shared = Arc::new(Shared {
            outbox,
            conn: Mutex::new(None),
            link,
            settings,
            header: numbered::header(&origin),
            origin,
            counters,
            epochs: AtomicU64::new(0),
        });
        shutdown.spawn(pump::run(client, queue, shared.clone(), shutdown.clone()));
        HistoryLink(shared)
    }

    /// Whether publishes can be numbered now.
    pub fn is_up(&self) -> bool {
        self.0.link.is_up()
    }

    /// Queues `message` to be numbered and published on `channel`; false
    /// (nothing queued) while the connection is down. Never waits: a full
    /// outbox loses its oldest message, counted as dropped.
    pub fn publish(&self, channel: &str, message: &Message) -> bool {
        if !self.is_up() {
            return false;
        }
        let Some(body) = numbered::body(message) else {
            // Control frames are never published: nothing to number.
            return true;
        };
        let job = Job {
            channel: channel.to_owned(),
            body,
        };
        match self.0.outbox.post_evicting(job, OUTBOX) {
            Ok(evicted) => {
                self.0.counters.lost(evicted);
                true
            }
            // Closed only once the task has ended, at shutdown.
            Err(_) => false,
        }
    }

    /// Reads what a client at `since` (`None`: a new client) of `epoch`
    /// missed on `channel`, and fences the read with `token`.
    pub async fn resume(
        &self,
        channel: &str,
        since: Option<u64>,
        epoch: Option<&str>,
        token: u64,
    ) -> Result<Resumed, RedisError> {
        let conn = self
            .0
            .conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(Conn {
            mut conn,
            resume_sha,
            ..
        }) = conn
        else {
            return Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the history connection to Redis is down",
            )));
        };
        let s = &self.0;
        let since = since.map_or(-1, i128::from);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&*resume_sha).arg(3).arg(&keys(channel)[..]);
        cmd.arg(s.new_epoch())
            .arg(s.settings.ttl_secs)
            .arg(since.to_string())
            .arg(s.settings.depth)
            .arg(epoch.unwrap_or(""))
            .arg(numbered::fence(s.origin.nonce, token))
            .arg(codec::redis_channel(channel));
        type Reply = (String, i64, i64, i64, Vec<(String, Vec<Vec<u8>>)>);
        let (epoch, fresh, ok, last, raw): Reply = cmd.query_async(&mut conn).await?;
        let entries = raw
            .into_iter()
            .filter_map(|(id, fields)| {
                let seq = id.strip_prefix("0-")?.parse().ok()?;
                let body = fields.get(1)?;
                numbered::message_of(body).ok().map(|m| (seq, m))
            })
            .collect();
        Ok(Resumed {
            epoch,
            fresh: fresh == 1,
            recovered: ok == 1,
            last: u64::try_from(last).unwrap_or(0),
            entries,
        })
    }

    /// This instance's nonce (fences carry it).
    pub fn nonce(&self) -> u64 {
        self.0.origin.nonce
    }
}

impl Shared {
    /// An epoch no other run had: the clock, this instance's nonce and a
    /// counter (letters and digits, as clients send it back).
    fn new_epoch(&self) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let n = self.epochs.fetch_add(1, Ordering::Relaxed);
        format!("{nanos:x}{:x}{n:x}", self.origin.nonce & 0xffff_ffff)
    }
}

/// A connection with both scripts loaded (a Redis that restarted lost
/// them; a `NOSCRIPT` later breaks the connection, which loads them
/// again).
async fn connect(client: &redis::Client) -> Result<(Conn, CancellationToken), RedisError> {
    let (conn, gone) = super::publisher::connect(client).await?;
    let load = |script: &'static str| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(script)
                .query_async::<String>(&mut conn)
                .await
        }
    };
    let publish_sha = load(PUBLISH_SCRIPT).await?.into();
    let resume_sha = load(RESUME_SCRIPT).await?.into();
    Ok((
        Conn {
            conn,
            publish_sha,
            resume_sha,
        },
        gone,
    ))
}

impl pump::Sender for Shared {
    type Item = Job;
    type Conn = Conn;

    async fn connect(
        &self,
        client: &redis::Client,
    ) -> Result<(Conn, CancellationToken), RedisError> {
        connect(client).await
    }

    fn redis(conn: &mut Conn) -> &mut MultiplexedConnection {
        &mut conn.conn
    }

    /// Numbers the message: a batch that fails is counted as dropped and
    /// not sent again, as Redis may have numbered some of it already (at
    /// most once).
    fn add(&self, batch: &mut Pipeline, conn: &Conn, job: Job) {
        batch
            .cmd("EVALSHA")
            .arg(&*conn.publish_sha)
            .arg(3)
            .arg(&keys(&job.channel)[..])
            .arg(self.new_epoch())
            .arg(self.settings.ttl_secs)
            .arg(self.settings.depth)
            .arg(&self.header)
            .arg(job.body)
            .arg(codec::redis_channel(&job.channel))
            .ignore();
    }

    fn link(&self) -> &Link {
        &self.link
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Resumes borrow the working connection.
    fn serving(&self, conn: Option<&Conn>) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = conn.cloned();
    }
}
