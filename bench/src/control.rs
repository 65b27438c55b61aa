//! A client of wspipe's control socket (newline-delimited JSON on a Unix
//! socket), as the fan-out and channel scenarios use it: one request at a
//! time, or many written at once with the answers read as they come.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::scenarios::check_failed;

/// Bound on one control request (a broadcast waits up to 2 s for full
/// queues).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on the control socket appearing after the server said it is up.
const SOCKET_LIMIT: Duration = Duration::from_secs(15);

/// A connection to wspipe's control socket.
pub struct Control {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    buf: String,
}

impl Control {
    /// Connects, waiting (bounded) for the socket to appear: wspipe binds
    /// it just after it logs the "serving on" line the bench waits for.
    pub async fn connect(socket: &Path) -> anyhow::Result<Control> {
        let deadline = Instant::now() + SOCKET_LIMIT;
        let stream = loop {
            match UnixStream::connect(socket).await {
                Ok(stream) => break stream,
                Err(e)
                    if Instant::now() < deadline
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                        ) =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("control socket {}", socket.display()))
                }
            }
        };
        let (r, w) = stream.into_split();
        Ok(Control {
            reader: BufReader::new(r),
            writer: w,
            buf: String::new(),
        })
    }

    /// One request line, one response line.
    pub async fn call(&mut self, request: &str) -> anyhow::Result<Reply> {
        let exchange = async {
            self.writer.write_all(request.as_bytes()).await?;
            self.writer.write_all(b"\n").await?;
            self.buf.clear();
            let n = (&mut self.reader)
                .take(1 << 20)
                .read_line(&mut self.buf)
                .await?;
            anyhow::ensure!(n > 0, "control socket closed");
            anyhow::Ok(Reply::parse(&self.buf))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("no control reply within {REQUEST_TIMEOUT:?}"))?
            .context("control request")
    }

    /// Live sessions (`stats`).
    pub async fn connections(&mut self) -> anyhow::Result<u64> {
        let reply = self.call(r#"{"cmd":"stats"}"#).await?;
        match (reply.ok, reply.connections) {
            (true, Some(c)) => Ok(c),
            _ => bail!("stats: unexpected reply {:?}", self.buf.trim()),
        }
    }

    /// Sends `msg` (message number `seq`); it must reach all `n` sessions.
    /// Retries while rate limited; returns how many times it was.
    pub async fn send(
        &mut self,
        how: Send<'_>,
        msg: &str,
        seq: usize,
        n: usize,
        deadline: Instant,
    ) -> anyhow::Result<usize> {
        let request = how.request(msg);
        let mut limited = 0;
        loop {
            let reply = self.call(&request).await?;
            if reply.kind.as_deref() == Some("rate_limited") && Instant::now() < deadline {
                limited += 1;
                continue;
            }
            how.check(&reply, &self.buf, seq, n)?;
            return Ok(limited);
        }
    }

    /// Sends every message of `batch` (numbered from `first`): all requests
    /// written at once, the answers read meanwhile. Each must reach all `n`
    /// sessions.
    pub async fn pipelined(
        &mut self,
        how: Send<'_>,
        batch: &[String],
        first: usize,
        n: usize,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let mut requests = String::new();
        for msg in batch {
            requests.push_str(&how.request(msg));
            requests.push('\n');
        }
        let (reader, writer, buf) = (&mut self.reader, &mut self.writer, &mut self.buf);
        let write = async {
            writer.write_all(requests.as_bytes()).await?;
            anyhow::Ok(())
        };
        let read = async {
            for j in first..first + batch.len() {
                buf.clear();
                let got = reader.take(1 << 20).read_line(buf).await?;
                anyhow::ensure!(got > 0, "control socket closed after {} answers", j - first);
                let reply = Reply::parse(buf);
                if reply.kind.as_deref() == Some("rate_limited") {
                    bail!("{} #{j} rate limited", how.name());
                }
                how.check(&reply, buf, j, n)?;
            }
            anyhow::Ok(())
        };
        let both = async { tokio::try_join!(write, read) };
        tokio::time::timeout_at(deadline.into(), both)
            .await
            .map_err(|_| anyhow!("pipelined {}s unanswered by the deadline", how.name()))??;
        Ok(())
    }

    /// The `stats` answer as it came (scale-out reads its Redis fields
    /// with [`number_field`] and [`bool_field`]).
    pub async fn stats_line(&mut self) -> anyhow::Result<String> {
        let reply = self.call(r#"{"cmd":"stats"}"#).await?;
        if !reply.ok {
            bail!("stats: unexpected reply {:?}", self.buf.trim());
        }
        Ok(self.buf.trim().to_string())
    }

    /// Members of `channel` (`channels`; 0 if it does not exist yet).
    pub async fn members(&mut self, channel: &str) -> anyhow::Result<u64> {
        let reply = self.call(r#"{"cmd":"channels"}"#).await?;
        if !reply.ok {
            bail!("channels: unexpected reply {:?}", self.buf.trim());
        }
        Ok(channel_members(&self.buf, channel).unwrap_or(0))
    }
}

/// How a message goes out through the control socket.
#[derive(Debug, Clone, Copy)]
pub enum Send<'a> {
    /// `broadcast`: to every session (answer: delivered, failed).
    Broadcast,
    /// `publish` to a channel (answer: delivered, dropped).
    Publish(&'a str),
}

impl Send<'_> {
    fn name(self) -> &'static str {
        match self {
            Send::Broadcast => "broadcast",
            Send::Publish(_) => "publish",
        }
    }

    fn request(self, msg: &str) -> String {
        match self {
            Send::Broadcast => format!(r#"{{"cmd":"broadcast","message":{}}}"#, json_string(msg)),
            Send::Publish(channel) => format!(
                r#"{{"cmd":"publish","channel":{},"message":{}}}"#,
                json_string(channel),
                json_string(msg)
            ),
        }
    }

    /// The answer to message `seq` (its text `line`) says it reached all
    /// `n` sessions.
    fn check(self, reply: &Reply, line: &str, seq: usize, n: usize) -> anyhow::Result<()> {
        if !reply.ok {
            bail!("{} #{seq} refused: {}", self.name(), line.trim());
        }
        let lost = match self {
            Send::Broadcast => reply.failed,
            Send::Publish(_) => reply.dropped,
        };
        if reply.delivered != Some(n as u64) || lost != Some(0) {
            return Err(check_failed(format!(
                "{} #{seq} did not reach every client: {} (clients: {n})",
                self.name(),
                line.trim()
            )));
        }
        Ok(())
    }
}

/// The `members` of `channel` in a `channels` answer.
fn channel_members(line: &str, channel: &str) -> Option<u64> {
    let key = format!("\"name\":{},\"members\":", json_string(channel));
    let at = line.find(&key)? + key.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The fields of a control response the bench uses.
#[derive(Debug, Default, PartialEq)]
pub struct Reply {
    ok: bool,
    kind: Option<String>,
    delivered: Option<u64>,
    failed: Option<u64>,
    dropped: Option<u64>,
    connections: Option<u64>,
}

impl Reply {
    /// Reads the fields out of one response line. The responses are flat
    /// apart from `stats` and `sessions`, whose keys the bench does not
    /// share with the top level, so looking for `"key":` is enough.
    pub fn parse(line: &str) -> Reply {
        let number = |key: &str| number_field(line, key);
        let kind = line.find("\"kind\":\"").and_then(|at| {
            let rest = &line[at + 8..];
            rest.find('"').map(|end| rest[..end].to_string())
        });
        Reply {
            ok: line.contains("\"ok\":true"),
            kind,
            delivered: number("delivered"),
            failed: number("failed"),
            dropped: number("dropped"),
            connections: number("connections"),
        }
    }
}

/// The number after the first `"key":` in a response line.
pub fn number_field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = line[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The boolean after the first `"key":` in a response line.
pub fn bool_field(line: &str, key: &str) -> Option<bool> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = line[at..].trim_start();
    if rest.starts_with("true") {
        Some(true)
    } else if rest.starts_with("false") {
        Some(false)
    } else {
        None
    }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::line;

    #[test]
    fn replies_are_read() {
        let r = Reply::parse(r#"{"ok":true,"delivered":1000,"failed":0}"#);
        assert_eq!(
            r,
            Reply {
                ok: true,
                delivered: Some(1000),
                failed: Some(0),
                ..Reply::default()
            }
        );
        let r = Reply::parse(
            r#"{"ok":true,"stats":{"connections":12,"connections_total":340,"refused_total":2}}"#,
        );
        assert_eq!(r.connections, Some(12));
        let r = Reply::parse(
            r#"{"ok":false,"error":"too many requests; slow down","kind":"rate_limited"}"#,
        );
        assert!(!r.ok);
        assert_eq!(r.kind.as_deref(), Some("rate_limited"));
        assert_eq!(r.delivered, None);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(json_string(&line(7)), format!("\"{}\"", line(7)));
    }

    #[test]
    fn redis_fields_are_read() {
        let line = r#"{"ok":true,"stats":{"connections":3,"redis_connected":true,"redis_dropped_total":0,"redis_received_total":42}}"#;
        assert_eq!(bool_field(line, "redis_connected"), Some(true));
        assert_eq!(number_field(line, "redis_dropped_total"), Some(0));
        assert_eq!(number_field(line, "redis_received_total"), Some(42));
        assert_eq!(bool_field(line, "missing"), None);
        assert_eq!(
            bool_field(r#"{"redis_connected":false}"#, "redis_connected"),
            Some(false)
        );
    }

    #[test]
    fn members_are_read() {
        let line = r#"{"ok":true,"channels":[{"name":"/a","members":3,"published":1,"dropped":0},{"name":"/bench","members":1000,"published":0,"dropped":0}]}"#;
        assert_eq!(channel_members(line, "/bench"), Some(1000));
        assert_eq!(channel_members(line, "/a"), Some(3));
        assert_eq!(channel_members(line, "/b"), None);
    }
}
