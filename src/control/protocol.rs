//! The control protocol: newline-delimited JSON over a Unix socket.
//!
//! One request per line, one response per line, in order. Every request is
//! an object with a `cmd` field; every response has `ok`, and on failure
//! `error` (a sentence) and `kind` (a stable word for programs). The format
//! is documented in docs/control.md so that any language can speak it.

use serde::{Deserialize, Serialize};

/// Largest request line accepted, in bytes (a message to send included).
pub const MAX_REQUEST: usize = 1024 * 1024;

/// A request from a control client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Live sessions, optionally only those on one URL path.
    List {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// With `--redis`: gathered from every live instance.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        all: bool,
    },
    /// A message to one session's client.
    Send {
        id: u64,
        message: String,
        /// With `--redis`: the instance that has it (`NAME` of `NAME:42`);
        /// without, this one first, then the others.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
    },
    /// A message to every session's client (or those on one path).
    Broadcast {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// Close one session's socket (and so end its child).
    Close {
        id: u64,
        /// With `--redis`: the instance that has it (`NAME` of `NAME:42`);
        /// without, this one first, then the others.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,

        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// End one session's child, or the shared child of an endpoint (its
    /// SCRIPT_NAME), with the signal escalation: give exactly one of `id`
    /// and `endpoint`.
    Kill {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        /// With `--redis`: the instance that has it (`NAME` of `NAME:42`);
        /// without, this one first, then the others.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
    },
    /// A message to every member of a channel (never waits for a slow one).
    Publish { channel: String, message: String },
    /// Make a session a member of a channel.
    Subscribe {
        id: u64,
        channel: String,
        /// With `--redis`: the instance that has it (`NAME` of `NAME:42`);
        /// without, this one first, then the others.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
    },
    /// Take a session out of a channel.
    Unsubscribe {
        id: u64,
        channel: String,
        /// With `--redis`: the instance that has it (`NAME` of `NAME:42`);
        /// without, this one first, then the others.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
    },
    /// Every channel with its counters.
    Channels {
        /// With `--redis`: gathered from every live instance.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        all: bool,
    },
    /// Turn this connection into a stream of events (one JSON object per
    /// line): sessions opening and closing, channels joined and left, and
    /// with `publishes` every publish.
    Watch {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        publishes: bool,
    },
    /// Server-wide counters.
    Stats {
        /// With `--redis`: gathered from every live instance.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        all: bool,
    },
    /// With `--redis`: the live instances (registered with a heartbeat).
    Instances {},
    /// Stop accepting (every listener closes), let live sessions run until
    /// they end or `timeout` seconds pass, then shut down and exit 0.
    Drain {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<u64>,
    },
}

/// How long `drain` lets live sessions run when the request names no
/// `timeout`.
pub const DRAIN_TIMEOUT: u64 = 60;

/// Stable error kinds, for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be parsed or is invalid.
    BadRequest,
    /// No live session has that id.
    NotFound,
    /// The session did not take the message in time (its client is slow).
    Busy,
    /// Too many requests on this connection; slow down.
    RateLimited,
}

/// One live session, as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: u64,
    pub remote: String,
    pub path: String,
    /// What serves it: a program of its own (`process`), the channel alone
    /// (`pubsub`) or a program shared by its endpoint's clients (`shared`).
    pub kind: SessionKind,
    /// Its child's pid, the shared one for `shared` (`null` for `pubsub`).
    pub pid: Option<u32>,
    /// Start time, seconds since the Unix epoch.
    pub started: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The channels it is a member of.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Published messages it lost because its client read too slowly.
    #[serde(default)]
    pub dropped: u64,
    /// With `--redis`: the instance it is on (its id there is `id`; people
    /// see `instance:id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// What serves a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// A child process per connection.
    Process,
    /// No process: a channel endpoint (`--pubsub`).
    Pubsub,
    /// One process for every client of the endpoint (`--shared`).
    Shared,
}

/// One channel, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEntry {
    pub name: String,
    pub members: u64,
    /// Messages published to it since it came to be (it goes when its last
    /// member leaves).
    pub published: u64,
    /// Queued messages its members lost to newer ones (slow clients).
    pub dropped: u64,
    /// With `channels --all`: the instance these counters are of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// One live instance, as `instances` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub name: String,
    /// Its listening addresses, as configured.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Start time, seconds since the Unix epoch.
    pub started: u64,
    /// Live connections at its last heartbeat.
    pub connections: u64,
}

/// One instance's counters, in `stats --all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStats {
    pub instance: String,
    pub stats: Stats,
}

/// Server-wide counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Live sessions (each has one child).
    pub connections: u64,
    /// Sessions opened since start.
    pub connections_total: u64,
    /// Upgrades refused (limits, origin, paths, spawn failures).
    pub refused_total: u64,
    /// Requests refused by authentication (`--basic-auth`), since start.
    #[serde(default)]
    pub auth_refused_total: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub uptime_seconds: u64,
    /// Channels now.
    #[serde(default)]
    pub channels: u64,
    /// Channel memberships now.
    #[serde(default)]
    pub channel_members: u64,
    /// Messages published to channels since start.
    #[serde(default)]
    pub published_total: u64,
    /// Copies of them handed to members since start.
    #[serde(default)]
    pub delivered_total: u64,
    /// Copies slow members lost since start.
    #[serde(default)]
    pub dropped_total: u64,
    /// Shared children alive now (`--shared`).
    #[serde(default)]
    pub shared_children: u64,
    /// Client messages dropped since start because a shared child's input
    /// queue was full (it read its stdin too slowly).
    #[serde(default)]
    pub shared_input_dropped_total: u64,
    /// Output lines of `--shared-ids` children dropped since start because
    /// they addressed no client of theirs (an unknown id, one that left,
    /// one of another endpoint, or no number).
    #[serde(default)]
    pub shared_unaddressed_dropped_total: u64,
    /// Shared children started again after one exited (`--shared-restart`),
    /// since start.
    #[serde(default)]
    pub shared_restarts_total: u64,
    /// With `--redis`: this instance's name (`--instance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_instance: Option<String>,
    /// With `--history`: channels with a history, the messages and bytes
    /// they hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_channels: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_messages: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_bytes: Option<u64>,
    /// With `--redis`: both connections to Redis are up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_connected: Option<bool>,
    /// With `--redis`: messages of ours Redis took, since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_published_total: Option<u64>,
    /// With `--redis`: messages of other instances handed to members here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_received_total: Option<u64>,
    /// With `--redis`: cross-instance messages lost (the outbox was full
    /// during an outage, a send failed, or a payload was unreadable or too
    /// long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_dropped_total: Option<u64>,
    /// With `--history` and `--redis`: publishes served un-numbered to
    /// local members only, because Redis could not number them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_unnumbered_total: Option<u64>,
}

/// One endpoint's shared child (`--shared`), as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedChild {
    /// Its endpoint's SCRIPT_NAME (also the channel its output goes to).
    pub endpoint: String,
    /// `null` while a restart waits out its backoff.
    pub pid: Option<u32>,
    /// Its clients now.
    pub members: u64,
    /// Times it was started again (`--shared-restart`).
    pub restarts: u64,
    /// When the endpoint's first child started, seconds since the Unix
    /// epoch.
    pub started: u64,
}

/// A response; fields that do not apply are left out.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<SessionInfo>>,
    /// List: the shared children (`--shared`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<Vec<SharedChild>>,
    /// Broadcast and publish: clients that got the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
    /// Publish: of those, clients that lost an older queued message for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// Channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<ChannelEntry>>,
    /// Broadcast: clients that did not take it in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    /// `stats --all`: each instance's counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_stats: Option<Vec<InstanceStats>>,
    /// `instances`: the live ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceInfo>>,
    /// `--all`: the instances that answered in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<Vec<String>>,
    /// `--all`: the live instances that did not (or, with Redis away,
    /// why none could be asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unanswered: Option<Vec<String>>,
    /// `--all` with Redis away: why no other instance could be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

impl Response {
    /// A bare success.
    pub fn ok() -> Self {
        Response {
            ok: true,
            ..Default::default()
        }
    }

    /// A failure.
    pub fn error(kind: ErrorKind, error: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(error.into()),
            kind: Some(kind),
            ..Default::default()
        }
    }
}

/// Parses one request line.
pub fn parse_request(line: &str) -> Result<Request, String> {
    serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let cases = [
            r#"{"cmd":"list"}"#,
            r#"{"cmd":"list","path":"/chat"}"#,
            r#"{"cmd":"send","id":3,"message":"hi"}"#,
            r#"{"cmd":"broadcast","message":"hi"}"#,
            r#"{"cmd":"close","id":3,"code":4000,"reason":"bye"}"#,
            r#"{"cmd":"kill","id":3}"#,
            r#"{"cmd":"kill","endpoint":"/chat.sh"}"#,
            r#"{"cmd":"stats"}"#,
            r#"{"cmd":"drain"}"#,
            r#"{"cmd":"drain","timeout":30}"#,
            r#"{"cmd":"publish","channel":"/room","message":"hi"}"#,
            r#"{"cmd":"subscribe","id":3,"channel":"/room"}"#,
            r#"{"cmd":"unsubscribe","id":3,"channel":"/room"}"#,
            r#"{"cmd":"channels"}"#,
            r#"{"cmd":"channels","all":true}"#,
            r#"{"cmd":"list","all":true}"#,
            r#"{"cmd":"stats","all":true}"#,
            r#"{"cmd":"instances"}"#,
            r#"{"cmd":"send","id":3,"message":"hi","instance":"web1:8080"}"#,
            r#"{"cmd":"kill","id":3,"instance":"a"}"#,
            r#"{"cmd":"watch"}"#,
            r#"{"cmd":"watch","publishes":true}"#,
        ];
        for line in cases {
            let req = parse_request(line).unwrap();
            assert_eq!(serde_json::to_string(&req).unwrap(), line);
        }
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        for line in [
            "",
            "{",
            "[]",
            r#"{"cmd":"nope"}"#,
            r#"{"cmd":"send","id":-1,"message":"x"}"#,
            r#"{"cmd":"stats","extra":1}"#,
        ] {
            assert!(parse_request(line).is_err(), "{line}");
        }
    }

    #[test]
    fn errors_carry_a_kind() {
        let json =
            serde_json::to_string(&Response::error(ErrorKind::NotFound, "no session 9")).unwrap();
        assert_eq!(
            json,
            r#"{"ok":false,"error":"no session 9","kind":"not_found"}"#
        );
    }
}

/// Property tests: no input line panics the parser, and every request
/// survives a trip through JSON.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> impl Strategy<Value = Request> {
        let text = || any::<String>();
        let opt_text = || prop::option::of(any::<String>());
        prop_oneof![
            (opt_text(), any::<bool>()).prop_map(|(path, all)| Request::List { path, all }),
            (any::<u64>(), text(), opt_text()).prop_map(|(id, message, instance)| {
                Request::Send {
                    id,
                    message,
                    instance,
                }
            }),
            (text(), opt_text()).prop_map(|(message, path)| Request::Broadcast { message, path }),
            (any::<u64>(), any::<Option<u16>>(), opt_text()).prop_map(|(id, code, reason)| {
                Request::Close {
                    id,
                    instance: None,
                    code,
                    reason,
                }
            }),
            (proptest::option::of(any::<u64>()), opt_text(), opt_text()).prop_map(
                |(id, endpoint, instance)| Request::Kill {
                    id,
                    endpoint,
                    instance,
                }
            ),
            any::<bool>().prop_map(|all| Request::Stats { all }),
            Just(Request::Instances {}),
            proptest::option::of(any::<u64>()).prop_map(|timeout| Request::Drain { timeout }),
            (text(), text()).prop_map(|(channel, message)| Request::Publish { channel, message }),
            (any::<u64>(), text()).prop_map(|(id, channel)| Request::Subscribe {
                id,
                channel,
                instance: None
            }),
            (any::<u64>(), text()).prop_map(|(id, channel)| Request::Unsubscribe {
                id,
                channel,
                instance: None
            }),
            any::<bool>().prop_map(|all| Request::Channels { all }),
            any::<bool>().prop_map(|publishes| Request::Watch { publishes }),
        ]
    }

    /// Lines that look like requests: JSON objects with a `cmd` and fields
    /// of the right and wrong types, sometimes truncated.
    fn json_ish() -> impl Strategy<Value = String> {
        let cmd = prop::sample::select(vec![
            "list",
            "send",
            "broadcast",
            "close",
            "kill",
            "stats",
            "publish",
            "subscribe",
            "unsubscribe",
            "channels",
            "watch",
            "instances",
            "LIST",
            "",
            "nope",
        ]);
        let key = prop::sample::select(vec![
            "cmd",
            "id",
            "message",
            "path",
            "code",
            "reason",
            "channel",
            "publishes",
            "instance",
            "all",
            "extra",
        ]);
        let val = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            Just("1e3".to_string()),
            Just("-0".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just("\"\\ud800\"".to_string()),
        ];
        (cmd, prop::collection::vec((key, val), 0..5), 0usize..200).prop_map(
            |(cmd, fields, cut)| {
                let mut line = format!("{{\"cmd\":\"{cmd}\"");
                for (k, v) in fields {
                    line.push_str(&format!(",\"{k}\":{v}"));
                }
                line.push('}');
                if cut < line.len() && line.is_char_boundary(cut) && cut % 3 == 0 {
                    line.truncate(cut);
                }
                line
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn parse_request_never_panics(line in any::<String>()) {
            let _ = parse_request(&line);
        }

        #[test]
        fn parsed_requests_round_trip(line in json_ish()) {
            if let Ok(req) = parse_request(&line) {
                let again = serde_json::to_string(&req).unwrap();
                prop_assert_eq!(parse_request(&again), Ok(req));
            }
        }

        #[test]
        fn requests_round_trip_through_json(req in request()) {
            let line = serde_json::to_string(&req).unwrap();
            prop_assert!(!line.contains('\n'), "one request per line");
            prop_assert_eq!(parse_request(&line), Ok(req));
        }
    }
}
