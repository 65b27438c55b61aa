//! What `wspipe ctl` adds for several instances (`--redis`): the
//! `NAME:ID` form of a connection id, and how `--all` and `instances`
//! answers are shown to people.

use std::fmt;
use std::str::FromStr;

use super::protocol::{ChannelEntry, InstanceInfo, Response};
use super::render;

/// A connection: `42` (this instance first, then the others) or
/// `NAME:42` (on instance NAME; a name may hold `:` itself, as the
/// default `host:8080` does, so the id is what follows the last one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnId {
    pub instance: Option<String>,
    pub id: u64,
}

impl FromStr for ConnId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a connection id (42 or INSTANCE:42)");
        if let Ok(id) = s.parse() {
            return Ok(ConnId { instance: None, id });
        }
        let (name, id) = s.rsplit_once(':').ok_or_else(bad)?;
        let id = id.parse().map_err(|_| bad())?;
        if name.is_empty() {
            return Err(bad());
        }
        Ok(ConnId {
            instance: Some(name.to_owned()),
            id,
        })
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.instance {
            Some(name) => write!(f, "{name}:{}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

/// Which instances answered a `--all` request, for people.
pub fn answered_text(response: &Response) -> String {
    let mut text = String::new();
    if let Some(answered) = &response.answered {
        text.push_str(&format!("answered: {}\n", answered.join(", ")));
    }
    if let Some(missing) = response.unanswered.as_ref().filter(|m| !m.is_empty()) {
        text.push_str(&format!("no answer from: {}\n", missing.join(", ")));
    }
    if let Some(why) = &response.unreachable {
        text.push_str(&format!("other instances not asked: {why}\n"));
    }
    text
}

/// `channels --all` as a table: one row per channel and instance.
pub fn channels_table(channels: &[ChannelEntry]) -> String {
    let header = ["INSTANCE", "CHANNEL", "MEMBERS", "PUBLISHED", "DROPPED"];
    let rows: Vec<[String; 5]> = channels
        .iter()
        .map(|c| {
            [
                c.instance.clone().unwrap_or_else(|| "-".into()),
                c.name.clone(),
                c.members.to_string(),
                c.published.to_string(),
                c.dropped.to_string(),
            ]
        })
        .collect();
    render::aligned(&header, &rows)
}

/// `stats --all`: each instance's counters under its name.
pub fn stats_text(response: &Response) -> String {
    let mut text = String::new();
    for each in response.all_stats.as_deref().unwrap_or_default() {
        text.push_str(&format!("[{}]\n", each.instance));
        text.push_str(&render::stats_text(&each.stats));
    }
    text
}

/// `instances` as a table.
pub fn instances_table(instances: &[InstanceInfo], now: u64) -> String {
    let header = ["INSTANCE", "LISTEN", "AGE", "CONNECTIONS"];
    let rows: Vec<[String; 4]> = instances
        .iter()
        .map(|i| {
            [
                i.name.clone(),
                if i.listen.is_empty() {
                    "-".into()
                } else {
                    i.listen.join(",")
                },
                format!("{}s", now.saturating_sub(i.started)),
                i.connections.to_string(),
            ]
        })
        .collect();
    render::aligned(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_or_qualified_by_the_last_colon() {
        let plain: ConnId = "42".parse().unwrap();
        assert_eq!(
            plain,
            ConnId {
                instance: None,
                id: 42
            }
        );
        let named: ConnId = "web1:8080:7".parse().unwrap();
        assert_eq!(named.instance.as_deref(), Some("web1:8080"));
        assert_eq!(named.id, 7);
        assert_eq!(named.to_string(), "web1:8080:7");
        for bad in ["", ":7", "a:", "a:b", "-1", "x"] {
            assert!(bad.parse::<ConnId>().is_err(), "{bad}");
        }
    }
}
