//! How `wspipe ctl` shows answers to people: aligned tables and
//! `key: value` lines (`--json` prints the protocol's own objects instead).

use super::protocol::{ChannelEntry, SessionInfo, SharedChild, Stats};

/// A pid, or "-" when there is none.
fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "-".to_owned(), |p| p.to_string())
}

/// The sessions as an aligned table for people.
pub fn table(sessions: &[SessionInfo], now: u64) -> String {
    let header = [
        "ID",
        "REMOTE",
        "PATH",
        "PID",
        "AGE",
        "MSG_IN",
        "MSG_OUT",
        "BYTES_IN",
        "BYTES_OUT",
        "DROPPED",
    ];
    let rows: Vec<[String; 10]> = sessions
        .iter()
        .map(|s| {
            [
                // With --redis, ids are per instance: `NAME:42`.
                match &s.instance {
                    Some(name) => format!("{name}:{}", s.id),
                    None => s.id.to_string(),
                },
                s.remote.clone(),
                s.path.clone(),
                pid_text(s.pid),
                format!("{}s", now.saturating_sub(s.started)),
                s.messages_in.to_string(),
                s.messages_out.to_string(),
                s.bytes_in.to_string(),
                s.bytes_out.to_string(),
                s.dropped.to_string(),
            ]
        })
        .collect();
    aligned(&header, &rows)
}

/// Rows under a header, each column as wide as its widest cell.
pub(super) fn aligned<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells.zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Shared children as an aligned table for people ("-" for the pid of one
/// waiting to be restarted).
pub fn shared_table(children: &[SharedChild], now: u64) -> String {
    let header = ["ENDPOINT", "PID", "MEMBERS", "RESTARTS", "AGE"];
    let rows: Vec<[String; 5]> = children
        .iter()
        .map(|c| {
            [
                c.endpoint.clone(),
                pid_text(c.pid),
                c.members.to_string(),
                c.restarts.to_string(),
                format!("{}s", now.saturating_sub(c.started)),
            ]
        })
        .collect();
    aligned(&header, &rows)
}

/// Channels as an aligned table for people.
pub fn channels_table(channels: &[ChannelEntry]) -> String {
    let header = ["CHANNEL", "MEMBERS", "PUBLISHED", "DROPPED"];
    let rows: Vec<[String; 4]> = channels
        .iter()
        .map(|c| {
            [
                c.name.clone(),
                c.members.to_string(),
                c.published.to_string(),
                c.dropped.to_string(),
            ]
        })
        .collect();
    aligned(&header, &rows)
}

pub fn stats_text(s: &Stats) -> String {
    let rows = [
        ("connections", s.connections),
        ("connections_total", s.connections_total),
        ("refused_total", s.refused_total),
        ("auth_refused_total", s.auth_refused_total),
        ("messages_in", s.messages_in),
        ("messages_out", s.messages_out),
        ("bytes_in", s.bytes_in),
        ("bytes_out", s.bytes_out),
        ("uptime_seconds", s.uptime_seconds),
        ("channels", s.channels),
        ("channel_members", s.channel_members),
        ("published_total", s.published_total),
        ("delivered_total", s.delivered_total),
        ("dropped_total", s.dropped_total),
        ("shared_children", s.shared_children),
        ("shared_input_dropped_total", s.shared_input_dropped_total),
        (
            "shared_unaddressed_dropped_total",
            s.shared_unaddressed_dropped_total,
        ),
        ("shared_restarts_total", s.shared_restarts_total),
    ];
    let mut text: String = rows.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    if let Some(name) = &s.redis_instance {
        text.push_str(&format!("redis_instance: {name}\n"));
    }
    if let Some(up) = s.redis_connected {
        text.push_str(&format!("redis_connected: {up}\n"));
    }
    // Shown only with the flag that makes them mean something.
    let optional = [
        ("history_channels", s.history_channels),
        ("history_messages", s.history_messages),
        ("history_bytes", s.history_bytes),
        ("redis_published_total", s.redis_published_total),
        ("redis_received_total", s.redis_received_total),
        ("redis_dropped_total", s.redis_dropped_total),
        ("history_unnumbered_total", s.history_unnumbered_total),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            text.push_str(&format!("{k}: {v}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let s = SessionInfo {
            id: 12,
            remote: "127.0.0.1:5000".into(),
            path: "/chat".into(),
            kind: super::super::protocol::SessionKind::Process,
            pid: Some(4242),
            started: 100,
            messages_in: 1,
            messages_out: 2,
            bytes_in: 3,
            bytes_out: 4,
            channels: vec!["/chat".into()],
            dropped: 0,
            instance: None,
        };
        let t = table(std::slice::from_ref(&s), 130);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID  REMOTE          PATH"));
        assert!(lines[1].starts_with("12  127.0.0.1:5000  /chat  4242  30s"));
        // With --redis the id names its instance.
        let named = SessionInfo {
            instance: Some("web1".into()),
            ..s
        };
        assert!(table(&[named], 130)
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("web1:12  "));
    }

    #[test]
    fn shared_children_show_a_dash_while_restarting() {
        let child = |endpoint: &str, pid| SharedChild {
            endpoint: endpoint.into(),
            pid,
            members: 3,
            restarts: 2,
            started: 100,
        };
        let t = shared_table(&[child("/", Some(77)), child("/bot.sh", None)], 160);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ENDPOINT  PID  MEMBERS  RESTARTS  AGE");
        assert_eq!(lines[1], "/         77   3        2         60s");
        assert_eq!(lines[2], "/bot.sh   -    3        2         60s");
    }
}
