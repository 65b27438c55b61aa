//! How `wspipe ctl` prints a successful answer: tables and text for
//! people, JSON for programs.

use std::time::{SystemTime, UNIX_EPOCH};

use super::across;
use super::client::{fail, Failure};
use super::protocol::Response;
use super::render;

/// How to show a successful response.
pub(super) enum Output {
    Nothing,
    Table,
    Json,
    Shared {
        json: bool,
    },
    Stats {
        json: bool,
    },
    Broadcast,
    Channels {
        json: bool,
    },
    /// `--all --json`: the whole answer (entries and who answered).
    AllJson,
    /// `--all` for people: `inner`, then who answered.
    All(Box<Output>),
    Instances {
        json: bool,
    },
}

/// `--all`: the whole answer as JSON, or `output` and who answered.
pub(super) fn gathered(all: bool, json: bool, output: Output) -> Output {
    match (all, json) {
        (false, _) => output,
        (true, true) => Output::AllJson,
        (true, false) => Output::All(Box::new(output)),
    }
}

impl Output {
    pub(super) fn print(&self, response: &Response) -> Result<(), Failure> {
        let sessions = response.sessions.as_deref().unwrap_or_default();
        match self {
            Output::Nothing => {}
            Output::Json => print_json(sessions),
            Output::Table => {
                print!("{}", render::table(sessions, now()));
                if let Some(children) = response.shared.as_deref().filter(|c| !c.is_empty()) {
                    print!("\n{}", render::shared_table(children, now()));
                }
            }
            Output::Shared { json } => {
                let children = response.shared.as_deref().unwrap_or_default();
                json_or(*json, children, || render::shared_table(children, now()));
            }
            Output::Stats { json } => {
                if let Some(stats) = &response.stats {
                    json_or(*json, stats, || render::stats_text(stats));
                }
            }
            Output::Channels { json } => {
                let channels = response.channels.as_deref().unwrap_or_default();
                json_or(*json, channels, || render::channels_table(channels));
            }
            Output::AllJson => print_json(response),
            Output::All(inner) => {
                match &**inner {
                    Output::Stats { .. } => print!("{}", across::stats_text(response)),
                    Output::Channels { .. } => {
                        let channels = response.channels.as_deref().unwrap_or_default();
                        print!("{}", across::channels_table(channels));
                    }
                    other => other.print(response)?,
                }
                print!("{}", across::answered_text(response));
            }
            Output::Instances { json } => {
                let instances = response.instances.as_deref().unwrap_or_default();
                json_or(*json, instances, || {
                    across::instances_table(instances, now())
                });
            }
            Output::Broadcast => {
                let delivered = response.delivered.unwrap_or(0);
                let failed = response.failed.unwrap_or(0);
                println!("delivered to {delivered} client(s)");
                if failed > 0 {
                    return Err(fail(
                        1,
                        format!("{failed} client(s) did not take the message in time"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `value` as pretty JSON, one document.
fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// `value` as JSON with `--json`, else the text `render` makes of it.
fn json_or<T: serde::Serialize + ?Sized>(json: bool, value: &T, render: impl FnOnce() -> String) {
    if json {
        print_json(value);
    } else {
        print!("{}", render());
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
