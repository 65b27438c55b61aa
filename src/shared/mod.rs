//! Shared children (`--shared`): one process per endpoint, for every client
//! of that endpoint.
//!
//! An endpoint is one program: the COMMAND (every path), or one script
//! under `--dir`, keyed by its resolved path. Its child is started by its
//! first client, through the same [`session::spawn`] as any child, and is
//! ended like a session child (stdin closed, then the `--closems`
//! escalation) when its last client leaves; the next client starts a fresh
//! one.
//!
//! Output goes through the hub: each line the child writes is published to
//! the endpoint's channel (named by its SCRIPT_NAME: `/` for a COMMAND),
//! of which every client of the endpoint is a member. So a slow client gets
//! the channels' policy (its oldest queued lines dropped, or a close with
//! `--channel-overflow close`) and never holds up the child or the others.
//! Input goes the other way through one bounded queue per child ([`input`]):
//! a client message that finds it full is dropped and counted, never
//! waited for.
//!
//! A child that exits while clients are connected takes them along: each
//! gets the lines the child wrote, then the close code the per-connection
//! bridge gives that exit status ([`crate::bridge::close_for_exit`]). With
//! `--shared-restart` it is started again instead, after an exponential
//! [`RESTART`] backoff, and its clients stay; with `--shared-keep` it is not ended
//! when its last client leaves, but serves (and is restarted) for the
//! server's lifetime.
//!
//! With `--shared-ids` the lines carry client ids (the session ids `ctl
//! list` shows): a client message reaches stdin as `ID<TAB>text`, a client
//! joining or leaving as `join<TAB>ID` or `leave<TAB>ID`, and an output
//! line whose text before its first TAB is a decimal number goes to that
//! client alone ([`output::address`]), if it is a client of this child;
//! else it is dropped and counted. A restarted child first reads a join
//! for every client still there, so it knows whom it serves.
//!
//! The sessions themselves are child-less ([`crate::pubsub::run`]); a
//! [`Membership`] is what ties one to its endpoint, and is their
//! [`Inbox`].

mod child;
mod input;
mod output;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::backoff::Policy;
use crate::bus::Bus;
use crate::config::{Mode, SharedFlags};
use crate::env::Var;
use crate::frames::Kind;
use crate::hub::ChannelName;
use crate::mailbox::Poster;
use crate::pubsub::Inbox;
use crate::route::Resolved;
use crate::session::{Refusal, SessionCtl};
use crate::shutdown::Shutdown;

/// How `--shared-restart` waits before starting an endpoint's child again:
/// 100 ms, doubling up to 10 s while it keeps dying, back to 100 ms once
/// one has served 10 s (a rare crash of a long-lived child is followed by
/// a quick restart).
pub const RESTART: Policy = Policy {
    first: Duration::from_millis(100),
    max: Duration::from_secs(10),
    stable: Duration::from_secs(10),
};
use child::{Program, Started};
use input::Input;

/// What every shared child is run with, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How messages cross its stdin and stdout (`--binary`, `--framed`).
    pub mode: Mode,
    /// Longest line read from the child before it is cut (`--maxlinesize`).
    pub max_line: usize,
    /// `--closems`: the grace before each step of the escalation.
    pub close_grace: Duration,
    /// `--shared-ids`, `--shared-restart`, `--shared-keep`.
    pub flags: SharedFlags,
}

/// The shared children of a server, by endpoint; a cheap handle.
#[derive(Debug, Clone)]
pub struct Shared(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// The endpoints whose child is serving clients now.
    endpoints: Mutex<HashMap<PathBuf, Entry>>,
    /// Held while a child is being started, so that clients arriving at
    /// once start one child, not one each.
    starting: tokio::sync::Mutex<()>,
    /// Where output lines are published.
    bus: Bus,
    shutdown: Shutdown,
    options: Options,
    /// Children alive (started and not yet reaped), ending ones included.
    alive: AtomicU64,
    /// Children started again after one exited (`--shared-restart`).
    restarts: AtomicU64,
    /// Client messages dropped because a child's input queue was full,
    /// since start.
    dropped: Arc<AtomicU64>,
    /// Addressed output lines dropped (`--shared-ids`): no client of the
    /// child had that id, or it was no id.
    unaddressed: AtomicU64,
    /// Tells one child's entry from the next one's at the same endpoint.
    generations: AtomicU64,
}

/// One endpoint's serving child, as the registry holds it. An entry lives
/// from its first client's join until its task ends for good (restarts
/// included) or its last client leaves.
#[derive(Debug)]
struct Entry {
    generation: u64,
    link: Arc<Link>,
    /// Its clients, by session id.
    members: HashMap<u64, Member>,
    /// The process serving now; `None` while a restart waits out its
    /// backoff.
    running: Option<Running>,
    /// Times its child was started again.
    restarts: u64,
    /// When its first child started.
    started: SystemTime,
}

/// One client, as its endpoint's entry knows it.
#[derive(Debug)]
struct Member {
    /// How to close it when the child exits.
    control: Poster<SessionCtl>,
    /// Its join was told (`--shared-ids`): a restarted child hears it again,
    /// and its leave is told.
    announced: bool,
}

/// The process an endpoint's child is now.
#[derive(Debug)]
struct Running {
    pid: u32,
    /// Cancelled by `ctl kill`: the child is ended with the escalation.
    kill: CancellationToken,
}

/// What a child's task and its clients share.
#[derive(Debug)]
struct Link {
    /// Where its output is published.
    channel: ChannelName,
    /// Its stdin's queue.
    input: Input,
    /// Cancelled when its last client leaves: the child is to end.
    detached: CancellationToken,
}

/// How a shared child is started for the first client of its endpoint.
pub struct Start<'a> {
    /// The program, as the request's path resolved it.
    pub resolved: &'a Resolved,
    /// The server's base environment (see [`child_env`] for the rest).
    pub base_env: &'a [Var],
    /// Takes a `--maxforks` slot for the child; asked only when one starts.
    pub permit: &'a (dyn Fn() -> Result<Option<OwnedSemaphorePermit>, Refusal> + Sync),
}

/// A session's place among the clients of a shared child: while it lives
/// the session is a client; dropping it leaves (the last to leave ends the
/// child, unless `--shared-keep`). Client messages given to it go to the
/// child's stdin.
#[derive(Debug)]
pub struct Membership {
    shared: Shared,
    key: PathBuf,
    generation: u64,
    id: u64,
    link: Arc<Link>,
}

/// One shared child, as `ctl list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// Its endpoint: the SCRIPT_NAME, which is also its channel.
    pub endpoint: String,
    /// `None` while a restart waits out its backoff.
    pub pid: Option<u32>,
    pub members: usize,
    pub restarts: u64,
    /// When the endpoint's first child started.
    pub started: SystemTime,
}

/// Why `ctl kill ENDPOINT` found nothing to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KillError {
    #[error("no shared child serves that endpoint")]
    NotFound,
    #[error("the endpoint's child is being restarted")]
    Restarting,
}

impl Shared {
    pub fn new(bus: Bus, shutdown: Shutdown, options: Options) -> Self {
        Shared(Arc::new(Inner {
            endpoints: Mutex::default(),
            starting: tokio::sync::Mutex::new(()),
            bus,
            shutdown,
            options,
            alive: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            dropped: Arc::default(),
            unaddressed: AtomicU64::new(0),
            generations: AtomicU64::new(1),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PathBuf, Entry>> {
        // Every critical section is a few map operations that cannot
        // panic halfway: poison is moot.
        self.0.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes session `id` a client of the child of `start`'s endpoint,
    /// starting the child if the endpoint has none; `control` is how the
    /// session is closed when the child exits. Refused as any spawn is
    /// (503/500), when `--maxforks` has no slot (429), or when the
    /// endpoint's SCRIPT_NAME cannot name a channel (400).
    pub async fn join(
        &self,
        start: Start<'_>,
        id: u64,
        control: Poster<SessionCtl>,
    ) -> Result<Membership, Refusal> {
        let key = start.resolved.program.clone();
        if let Some(m) = self.try_join(&key, id, &control) {
            return Ok(m);
        }
        let _starting = self.0.starting.lock().await;
        // Another client may have started it while we waited.
        if let Some(m) = self.try_join(&key, id, &control) {
            return Ok(m);
        }
        let channel = ChannelName::parse(&start.resolved.script_name)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        let permit = (start.permit)()?;
        let program = Program::new(start.resolved, start.base_env);
        let spawned = program.spawn().await?;
        let (input, queue) = Input::new(self.0.dropped.clone());
        let link = Arc::new(Link {
            channel,
            input,
            detached: CancellationToken::new(),
        });
        let generation = self.0.generations.fetch_add(1, Ordering::Relaxed);
        self.0.alive.fetch_add(1, Ordering::Relaxed);
        let first = Started::new(spawned);
        tracing::info!(pid = first.pid(), endpoint = %link.channel, "shared child started");
        // Its first client is in from the start: a child that exits at
        // once still has it to tell.
        let entry = Entry {
            generation,
            link: link.clone(),
            members: HashMap::from([(id, Member::new(control))]),
            running: Some(first.running()),
            restarts: 0,
            started: SystemTime::now(),
        };
        self.lock().insert(key.clone(), entry);
        let task = child::Task {
            shared: self.clone(),
            key: key.clone(),
            generation,
            link: link.clone(),
            program,
            permit,
        };
        self.0.shutdown.spawn(task.run(first, queue));
        Ok(Membership {
            shared: self.clone(),
            key,
            generation,
            id,
            link,
        })
    }

    /// Joins the endpoint's child if it has one.
    fn try_join(&self, key: &Path, id: u64, control: &Poster<SessionCtl>) -> Option<Membership> {
        let mut endpoints = self.lock();
        let entry = endpoints.get_mut(key)?;
        entry.members.insert(id, Member::new(control.clone()));
        Some(Membership {
            shared: self.clone(),
            key: key.to_owned(),
            generation: entry.generation,
            id,
            link: entry.link.clone(),
        })
    }

    /// Runs `f` on the entry of child `generation` at `key`, if it is still
    /// the endpoint's.
    fn with_entry<T>(
        &self,
        key: &Path,
        generation: u64,
        f: impl FnOnce(&mut Entry) -> T,
    ) -> Option<T> {
        let mut endpoints = self.lock();
        endpoints
            .get_mut(key)
            .filter(|entry| entry.generation == generation)
            .map(f)
    }

    /// Takes the entry of child `generation` at `key` out of the registry,
    /// if it is still there; returns its clients.
    fn remove(&self, key: &Path, generation: u64) -> Vec<Poster<SessionCtl>> {
        let mut endpoints = self.lock();
        match endpoints.get(key) {
            Some(entry) if entry.generation == generation => endpoints
                .remove(key)
                .map(|e| e.members.into_values().map(|m| m.control).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Records that the endpoint's child was started again as `running`;
    /// returns what it must read first: with `--shared-ids`, a join for
    /// every client whose join its predecessor was told.
    fn restarted(&self, key: &Path, generation: u64, running: Running) -> Vec<u8> {
        self.0.restarts.fetch_add(1, Ordering::Relaxed);
        let ids = self.0.options.flags.ids;
        self.with_entry(key, generation, |entry| {
            entry.running = Some(running);
            entry.restarts += 1;
            let mut told: Vec<u64> = entry
                .members
                .iter()
                .filter(|(_, m)| m.announced)
                .map(|(id, _)| *id)
                .collect();
            told.sort_unstable();
            let mut first = Vec::new();
            for id in told.into_iter().filter(|_| ids) {
                first.extend_from_slice(event_line(Event::Join, id).as_bytes());
                first.push(b'\n');
            }
            first
        })
        .unwrap_or_default()
    }

    /// Records that the endpoint's child is gone (until it is restarted).
    fn stopped(&self, key: &Path, generation: u64) {
        self.with_entry(key, generation, |entry| entry.running = None);
    }

    /// Hands one output line of child `generation` at `key` on: to every
    /// client, or with `--shared-ids` to the one it addresses, if that is
    /// a client of this child (else it is dropped and counted).
    fn deliver(&self, key: &Path, generation: u64, channel: &ChannelName, line: Message) {
        if !self.0.options.flags.ids {
            self.0.bus.publish(channel, line);
            return;
        }
        let delivered = match output::address(line) {
            output::Address::All(line) => {
                self.0.bus.publish(channel, line);
                return;
            }
            output::Address::To(id, line) => {
                let client = self
                    .with_entry(key, generation, |entry| entry.members.contains_key(&id))
                    .unwrap_or(false);
                client && self.0.bus.hub().publish_to(channel, id, line).is_some()
            }
            output::Address::Nobody => false,
        };
        if !delivered {
            self.0.unaddressed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ends the child serving `endpoint` (its SCRIPT_NAME) with the signal
    /// escalation, as `ctl kill` does a session's; returns its pid. What
    /// follows is what follows any exit: its clients are closed, or with
    /// `--shared-restart` it is started again.
    pub fn kill(&self, endpoint: &str) -> Result<u32, KillError> {
        let endpoints = self.lock();
        let entry = endpoints
            .values()
            .find(|entry| entry.link.channel.as_str() == endpoint)
            .ok_or(KillError::NotFound)?;
        let running = entry.running.as_ref().ok_or(KillError::Restarting)?;
        running.kill.cancel();
        Ok(running.pid)
    }

    /// Every endpoint's child, by endpoint.
    pub fn list(&self) -> Vec<ChildInfo> {
        let mut children: Vec<ChildInfo> = self
            .lock()
            .values()
            .map(|entry| ChildInfo {
                endpoint: entry.link.channel.as_str().to_owned(),
                pid: entry.running.as_ref().map(|r| r.pid),
                members: entry.members.len(),
                restarts: entry.restarts,
                started: entry.started,
            })
            .collect();
        children.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        children
    }

    /// The pid now serving each client (by session id): a restart changes
    /// it.
    pub fn member_pids(&self) -> HashMap<u64, u32> {
        let endpoints = self.lock();
        let mut pids = HashMap::new();
        for entry in endpoints.values() {
            if let Some(running) = &entry.running {
                pids.extend(entry.members.keys().map(|id| (*id, running.pid)));
            }
        }
        pids
    }

    /// Output lines of `--shared-ids` children dropped since start because
    /// they addressed no client of theirs.
    pub fn unaddressed(&self) -> u64 {
        self.0.unaddressed.load(Ordering::Relaxed)
    }

    /// Shared children alive now (those being ended included).
    pub fn children(&self) -> u64 {
        self.0.alive.load(Ordering::Relaxed)
    }

    /// Shared children started again after one exited, since start.
    pub fn restarts(&self) -> u64 {
        self.0.restarts.load(Ordering::Relaxed)
    }

    /// Client messages dropped since start because a shared child's input
    /// queue was full.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl Member {
    fn new(control: Poster<SessionCtl>) -> Self {
        Member {
            control,
            announced: false,
        }
    }
}

/// A client coming or going, as a `--shared-ids` child is told.
#[derive(Debug, Clone, Copy)]
enum Event {
    Join,
    Leave,
}

/// The line a `--shared-ids` child reads for `event` (without its newline).
fn event_line(event: Event, id: u64) -> String {
    let word = match event {
        Event::Join => "join",
        Event::Leave => "leave",
    };
    format!("{word}\t{id}")
}

impl Membership {
    /// The pid of the shared child serving it now (`None` while a restart
    /// waits).
    pub fn pid(&self) -> Option<u32> {
        self.shared
            .with_entry(&self.key, self.generation, |entry| {
                entry.running.as_ref().map(|r| r.pid)
            })
            .flatten()
    }

    /// Tells a `--shared-ids` child that this client joined: once it is a
    /// member of [`channel`](Self::channel), so that what the child answers
    /// reaches it. (The first client's join is the first line the child
    /// reads.)
    pub fn announce(&self) {
        let ids = self.shared.0.options.flags.ids;
        self.shared.with_entry(&self.key, self.generation, |entry| {
            let Some(member) = entry.members.get_mut(&self.id) else {
                return;
            };
            member.announced = true;
            // While a restart waits, the next child hears it with the rest.
            if ids && entry.running.is_some() {
                let line = event_line(Event::Join, self.id);
                self.link.input.take(Kind::Text, Bytes::from(line));
            }
        });
    }

    /// The endpoint's channel, which the child's output is published to.
    pub fn channel(&self) -> &ChannelName {
        &self.link.channel
    }
}

impl Inbox for Membership {
    fn take(&self, kind: Kind, data: Bytes) {
        if self.shared.0.options.flags.ids {
            // (Text mode: every message is a line.)
            self.link.input.take(kind, tagged(self.id, &data));
        } else {
            self.link.input.take(kind, data);
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let options = self.shared.0.options;
        let mut endpoints = self.shared.lock();
        let Some(entry) = endpoints.get_mut(&self.key) else {
            return;
        };
        if entry.generation != self.generation {
            return; // its child has gone; this entry is a newer one's
        }
        let Some(member) = entry.members.remove(&self.id) else {
            return;
        };
        if entry.members.is_empty() && !options.flags.keep {
            // Out of the registry at once, so that the next client starts
            // a fresh child rather than join one that is ending. (The last
            // one's leave is the end of stdin.)
            endpoints.remove(&self.key);
            self.link.detached.cancel();
        } else if options.flags.ids && member.announced && entry.running.is_some() {
            let line = event_line(Event::Leave, self.id);
            self.link.input.take(Kind::Text, Bytes::from(line));
        }
    }
}

/// A client message as a `--shared-ids` child reads it: `ID<TAB>text`.
/// A message with newlines in it is several lines, as in text mode, each
/// tagged: a client cannot make a line that looks like another client's,
/// or like a join or a leave.
fn tagged(id: u64, data: &[u8]) -> Bytes {
    let id = id.to_string();
    let lines = data.iter().filter(|b| **b == b'\n').count() + 1;
    let mut out = Vec::with_capacity(data.len() + lines * (id.len() + 1));
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(id.as_bytes());
        out.push(b'\t');
        out.extend_from_slice(line);
    }
    Bytes::from(out)
}

/// A shared child's own variables, on top of the server's base environment
/// (PATH, `--passenv`, SERVER_SOFTWARE, WSPIPE_CONTROL...): the endpoint's
/// SCRIPT_NAME and WSPIPE_CHANNEL, its channel's name (the same). Nothing
/// from the request that started it: the child serves every client, so no
/// one client's address, headers or query is its business.
pub fn child_env(script_name: &str) -> Vec<Var> {
    vec![
        ("SCRIPT_NAME".into(), script_name.into()),
        ("WSPIPE_CHANNEL".into(), script_name.into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::mailbox;

    type Permit = Result<Option<OwnedSemaphorePermit>, Refusal>;

    fn shared() -> Shared {
        let options = Options {
            mode: Mode::Text,
            max_line: 1024,
            close_grace: Duration::from_millis(50),
            flags: SharedFlags::default(),
        };
        Shared::new(
            Bus::local(Arc::new(crate::hub::Hub::default())),
            Shutdown::new(),
            options,
        )
    }

    /// Starting `resolved` with no `--maxforks` limit.
    fn unlimited_start(resolved: &Resolved) -> Start<'_> {
        fn unlimited() -> Permit {
            Ok(None)
        }
        Start {
            resolved,
            base_env: &[],
            permit: &unlimited,
        }
    }

    fn cat() -> Resolved {
        Resolved {
            program: "/bin/cat".into(),
            args: Vec::new(),
            script_name: "/".into(),
            path_info: String::new(),
        }
    }

    async fn wait_children(shared: &Shared, n: u64) {
        let reached = async {
            while shared.children() != n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), reached)
            .await
            .expect("children reaped");
    }

    #[test]
    fn every_line_of_a_client_message_carries_its_sender() {
        assert_eq!(&tagged(7, b"hi")[..], b"7\thi");
        assert_eq!(&tagged(7, b"")[..], b"7\t");
        assert_eq!(&tagged(12, b"a\tb")[..], b"12\ta\tb");
        assert_eq!(&tagged(7, b"hi\njoin\t5\n")[..], b"7\thi\n7\tjoin\t5\n7\t");
    }

    #[tokio::test]
    async fn clients_share_one_child_until_the_last_leaves() {
        let shared = shared();
        let resolved = cat();
        let start = || unlimited_start(&resolved);
        let (control, _requests) = mailbox(4);
        let a = shared.join(start(), 1, control.clone()).await.unwrap();
        let b = shared.join(start(), 2, control.clone()).await.unwrap();
        assert_eq!(a.pid(), b.pid());
        assert_eq!(shared.children(), 1);
        drop(a);
        assert!(!b.link.detached.is_cancelled(), "one client is left");
        let (first, first_pid) = (b.link.clone(), b.pid());
        assert!(first_pid.is_some());
        drop(b);
        assert!(first.detached.is_cancelled(), "the last one left");
        assert!(shared.lock().is_empty(), "out of the registry at once");
        let c = shared.join(start(), 3, control).await.unwrap();
        assert_ne!(c.pid(), first_pid, "a fresh child");
        wait_children(&shared, 1).await;
        drop(c);
        wait_children(&shared, 0).await;
    }

    #[tokio::test]
    async fn a_client_of_a_child_that_went_never_takes_its_successor_away() {
        let shared = shared();
        let resolved = cat();
        let start = || unlimited_start(&resolved);
        let (control, _requests) = mailbox(4);
        let old = shared.join(start(), 1, control.clone()).await.unwrap();
        // As when its child exits: the entry goes, the client lingers.
        let clients = shared.remove(&resolved.program, old.generation);
        assert_eq!(clients.len(), 1);
        old.link.detached.cancel(); // (and the child really goes)
        let new = shared.join(start(), 2, control).await.unwrap();
        assert_ne!(new.generation, old.generation);
        drop(old);
        assert!(!new.link.detached.is_cancelled());
        assert_eq!(shared.lock().len(), 1, "the successor stays");
        drop(new);
        wait_children(&shared, 0).await;
    }

    #[tokio::test]
    async fn no_slot_no_child() {
        let shared = shared();
        let resolved = cat();
        let permit = || -> Permit { Err(Refusal::new(StatusCode::TOO_MANY_REQUESTS, "full")) };
        let start = Start {
            resolved: &resolved,
            base_env: &[],
            permit: &permit,
        };
        let (control, _requests) = mailbox(4);
        let refused = shared.join(start, 1, control).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(shared.children(), 0);
        assert!(shared.lock().is_empty());
    }
}
