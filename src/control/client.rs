//! `wspipe ctl`: the control client for scripts (PHP `exec`, bash, cron).
//!
//! Exit codes ([`EXIT_STATUS`]): 0 done; 1 a target session was not found
//! or did not take the message; 2 usage error or refused request; 3 no
//! server at the socket. Errors are one line on stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::across::ConnId;
use super::output::{gathered, Output};
use super::protocol::{ErrorKind, Request, Response, MAX_REQUEST};

/// `wspipe ctl`'s exit statuses and what they mean (the man page prints
/// this table; docs/control.md says the same).
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (0, "Done."),
    (
        1,
        "The target connection does not exist, or did not take the message in time.",
    ),
    (2, "Usage error, or a request the server refused."),
    (3, "No server at the control socket."),
];

/// Control a running wspipe server through its control socket.
#[derive(Debug, Parser)]
#[command(name = "wspipe ctl", version)]
pub struct CtlCli {
    /// The control socket (default: $WSPIPE_CONTROL, set for every child).
    #[arg(long, short = 's', value_name = "PATH", env = "WSPIPE_CONTROL")]
    pub socket: Option<PathBuf>,

    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// List live connections, then the shared children (--shared) with
    /// their endpoint, pid, clients and restarts.
    List {
        /// Only connections on this URL path.
        #[arg(long)]
        path: Option<String>,
        /// Only the shared children.
        #[arg(long)]
        shared: bool,
        /// With --redis: from every live instance (says which answered).
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table (the connections, or with
        /// --shared the shared children).
        #[arg(long)]
        json: bool,
    },
    /// Send a message to one connection's client ("-" reads it from stdin).
    /// ID is 42 or, with --redis, INSTANCE:42.
    Send { id: ConnId, message: String },
    /// Send a message to every connection's client ("-" reads stdin).
    Broadcast {
        /// Only connections on this URL path.
        #[arg(long)]
        path: Option<String>,
        message: String,
    },
    /// Close one connection (its child is ended). ID: 42 or INSTANCE:42.
    Close {
        id: ConnId,
        /// Close code (1000, 1001, 1008, 3000-4999...).
        #[arg(long, default_value_t = 1000)]
        code: u16,
        /// Close reason (at most 123 bytes).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End one connection's child, or an endpoint's shared child (TARGET
    /// starting with "/": its SCRIPT_NAME, as `list` shows it), with
    /// SIGINT, SIGTERM, SIGKILL. ID: 42 or INSTANCE:42.
    Kill {
        #[arg(value_name = "ID|ENDPOINT")]
        target: String,
    },
    /// Server-wide counters.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// With --redis: from every live instance (says which answered).
        #[arg(long)]
        all: bool,
    },
    /// With --redis: the live instances (name, addresses, age,
    /// connections).
    Instances {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a message to every member of a channel ("-" reads stdin: each
    /// line is one message, all over one connection).
    Publish { channel: String, message: String },
    /// Make a connection (42 or INSTANCE:42) a member of a channel.
    Subscribe { id: ConnId, channel: String },
    /// Take a connection (42 or INSTANCE:42) out of a channel.
    Unsubscribe { id: ConnId, channel: String },
    /// Print events as they happen, one JSON object per line, until
    /// interrupted: connections opening and closing, channels joined and
    /// left.
    Watch {
        /// Also every publish.
        #[arg(long)]
        publishes: bool,
    },
    /// Stop accepting connections (every listener closes, so a new
    /// instance can take the port and socket paths), let live connections
    /// go on until they end or --timeout passes, then close the rest with
    /// 1001 and exit 0.
    Drain {
        /// Seconds live connections may go on.
        #[arg(long, value_name = "SECS", default_value_t = super::protocol::DRAIN_TIMEOUT)]
        timeout: u64,
        /// Return only once the server has exited.
        #[arg(long)]
        wait: bool,
    },
    /// List channels: members, messages published, messages dropped.
    Channels {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// With --redis: from every live instance (says which answered).
        #[arg(long)]
        all: bool,
    },
}

/// Why the client failed, with its exit code.
pub(super) struct Failure {
    code: u8,
    message: String,
}

pub(super) fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// Runs `wspipe ctl ARGS` (args start with "ctl").
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let cli = match CtlCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or_default();
            eprintln!(
                "wspipe ctl: {}",
                line.strip_prefix("error: ").unwrap_or(line)
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("wspipe ctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: CtlCli) -> Result<(), Failure> {
    let socket = cli.socket.ok_or_else(|| {
        fail(
            2,
            "no control socket: give --socket PATH or set WSPIPE_CONTROL",
        )
    })?;
    if let CtlCommand::Watch { publishes } = cli.command {
        return watch(&socket, publishes);
    }
    if let CtlCommand::Publish { channel, message } = &cli.command {
        if message == "-" {
            return publish_lines(&socket, channel);
        }
    }
    let wait = match cli.command {
        CtlCommand::Drain { timeout, wait } => wait.then_some(timeout),
        _ => None,
    };
    let (request, output) = request_for(cli.command)?;
    let (response, rest) = call_keeping(&socket, &request)?;
    if !response.ok {
        let code = match response.kind {
            Some(ErrorKind::NotFound | ErrorKind::Busy) => 1,
            _ => 2,
        };
        return Err(fail(
            code,
            response.error.unwrap_or_else(|| "request failed".into()),
        ));
    }
    if let Some(timeout) = wait {
        wait_for_exit(rest, timeout, &socket)?;
    }
    output.print(&response)
}

/// `drain --wait`: the server closes the connection as it exits; waits for
/// that, a little longer than the drain's bound plus the shutdown.
fn wait_for_exit(
    mut rest: impl BufRead,
    timeout: u64,
    socket: &std::path::Path,
) -> Result<(), Failure> {
    let mut sink = Vec::new();
    rest.read_to_end(&mut sink).map(|_| ()).map_err(|e| {
        fail(
            1,
            format!("{} still serving after {timeout} s: {e}", socket.display()),
        )
    })
}

fn request_for(command: CtlCommand) -> Result<(Request, Output), Failure> {
    Ok(match command {
        CtlCommand::List {
            path,
            shared,
            json,
            all,
        } => (
            Request::List { path, all },
            gathered(
                all,
                json,
                match (shared, json) {
                    (true, json) => Output::Shared { json },
                    (false, true) => Output::Json,
                    (false, false) => Output::Table,
                },
            ),
        ),
        CtlCommand::Send { id, message } => (
            Request::Send {
                id: id.id,
                instance: id.instance,
                message: message_arg(message)?,
            },
            Output::Nothing,
        ),
        CtlCommand::Broadcast { path, message } => (
            Request::Broadcast {
                message: message_arg(message)?,
                path,
            },
            Output::Broadcast,
        ),
        CtlCommand::Close { id, code, reason } => (
            Request::Close {
                id: id.id,
                instance: id.instance,
                code: Some(code),
                reason: Some(reason),
            },
            Output::Nothing,
        ),
        CtlCommand::Kill { target } => (kill_request(&target)?, Output::Nothing),
        CtlCommand::Stats { json, all } => (
            Request::Stats { all },
            gathered(all, json, Output::Stats { json }),
        ),
        CtlCommand::Instances { json } => (Request::Instances {}, Output::Instances { json }),
        CtlCommand::Publish { channel, message } => {
            (Request::Publish { channel, message }, Output::Broadcast)
        }
        CtlCommand::Subscribe { id, channel } => {
            let (id, instance) = (id.id, id.instance);
            (
                Request::Subscribe {
                    id,
                    channel,
                    instance,
                },
                Output::Nothing,
            )
        }
        CtlCommand::Unsubscribe { id, channel } => {
            let (id, instance) = (id.id, id.instance);
            (
                Request::Unsubscribe {
                    id,
                    channel,
                    instance,
                },
                Output::Nothing,
            )
        }
        CtlCommand::Channels { json, all } => (
            Request::Channels { all },
            gathered(all, json, Output::Channels { json }),
        ),
        CtlCommand::Drain { timeout, .. } => (
            Request::Drain {
                timeout: Some(timeout),
            },
            Output::Nothing,
        ),
        CtlCommand::Watch { publishes } => (Request::Watch { publishes }, Output::Nothing),
    })
}

/// `kill ID` or `kill /ENDPOINT`.
fn kill_request(target: &str) -> Result<Request, Failure> {
    if target.starts_with('/') {
        return Ok(Request::Kill {
            id: None,
            endpoint: Some(target.to_owned()),
            instance: None,
        });
    }
    match target.parse::<ConnId>() {
        Ok(id) => Ok(Request::Kill {
            id: Some(id.id),
            endpoint: None,
            instance: id.instance,
        }),
        Err(_) => Err(fail(
            2,
            format!("kill: {target:?} is neither a connection id nor an endpoint (/...)"),
        )),
    }
}

/// The message argument; "-" reads stdin (one trailing newline dropped).
fn message_arg(message: String) -> Result<String, Failure> {
    if message != "-" {
        return Ok(message);
    }
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_REQUEST as u64)
        .read_to_string(&mut text)
        .map_err(|e| fail(2, format!("cannot read the message from stdin: {e}")))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// `publish CHANNEL -`: one message per line of stdin, all over one
/// connection. Requests are written as lines come (pipelined: the server
/// answers them in order) while a thread reads the answers, so a stream
/// like `tail -F log | wspipe ctl publish /log -` costs one round trip per
/// message only in the server, never one process. Prints the totals.
fn publish_lines(socket: &std::path::Path, channel: &str) -> Result<(), Failure> {
    let no_server = |e: std::io::Error| fail(3, format!("no server at {}: {e}", socket.display()));
    let stream = UnixStream::connect(socket).map_err(no_server)?;
    let replies = stream.try_clone().map_err(no_server)?;
    let reader = std::thread::spawn(move || count_replies(replies));
    let mut writer = std::io::BufWriter::new(&stream);
    let mut sent = 0u64;
    let mut publish = |line: &[u8], writer: &mut std::io::BufWriter<&UnixStream>| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let request = Request::Publish {
            channel: channel.to_owned(),
            message: String::from_utf8_lossy(line).into_owned(),
        };
        let mut text = serde_json::to_string(&request).map_err(|e| fail(2, e.to_string()))?;
        text.push('\n');
        sent += 1;
        writer.write_all(text.as_bytes()).map_err(no_server)
    };
    // Whatever one read brings (a line from `tail -F`, a burst from a
    // file) is written, then flushed: a lone line goes out at once, a
    // burst in few system calls.
    let mut input = std::io::stdin().lock();
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(2, format!("cannot read stdin: {e}"))),
        };
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(end) = memchr::memchr(b'\n', &pending[start..]) {
            publish(&pending[start..start + end], &mut writer)?;
            start += end + 1;
        }
        pending.drain(..start);
        if pending.len() > MAX_REQUEST {
            return Err(fail(2, "a line on stdin is longer than 1 MiB"));
        }
        writer.flush().map_err(no_server)?;
    }
    if !pending.is_empty() {
        publish(&pending, &mut writer)?;
    }
    writer.flush().map_err(no_server)?;
    drop(writer);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let tally = reader
        .join()
        .map_err(|_| fail(3, "reading the answers failed"))?;
    if tally.answered < sent {
        return Err(fail(
            3,
            format!("the server answered {} of {sent} messages", tally.answered),
        ));
    }
    println!(
        "published {sent} message(s), delivered {} time(s)",
        tally.delivered
    );
    match tally.error {
        Some(error) => Err(fail(2, error)),
        None => Ok(()),
    }
}

/// `watch`: copies the event lines to stdout as they come, flushing each.
fn watch(socket: &std::path::Path, publishes: bool) -> Result<(), Failure> {
    let no_server = |e: std::io::Error| fail(3, format!("no server at {}: {e}", socket.display()));
    let mut stream = UnixStream::connect(socket).map_err(no_server)?;
    let mut line =
        serde_json::to_string(&Request::Watch { publishes }).map_err(|e| fail(2, e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(no_server)?;
    let mut lines = BufReader::new(stream).lines();
    let first = lines
        .next()
        .transpose()
        .map_err(no_server)?
        .ok_or_else(|| fail(3, "the server closed the connection"))?;
    let answer: Response = serde_json::from_str(&first)
        .map_err(|_| fail(3, format!("no valid reply from {}", socket.display())))?;
    if !answer.ok {
        return Err(fail(2, answer.error.unwrap_or_default()));
    }
    let mut out = std::io::stdout().lock();
    for line in lines {
        let Ok(line) = line else { break };
        // A closed stdout (`| head`) ends the watch.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Ok(())
}

/// What the answers to a stream of publishes said.
#[derive(Default)]
struct Tally {
    answered: u64,
    delivered: u64,
    /// The first error, if any.
    error: Option<String>,
}

fn count_replies(stream: UnixStream) -> Tally {
    let mut tally = Tally::default();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        tally.answered += 1;
        match serde_json::from_str::<Response>(&line) {
            Ok(r) if r.ok => tally.delivered += r.delivered.unwrap_or(0),
            Ok(r) => {
                tally.error.get_or_insert(r.error.unwrap_or_default());
            }
            Err(_) => {
                tally.error.get_or_insert("no valid reply".into());
            }
        }
    }
    tally
}

/// Sends one request and reads its response.
/// One request and its answer; returns the connection too, for what the
/// server may still say.
fn call_keeping(
    socket: &std::path::Path,
    request: &Request,
) -> Result<(Response, impl BufRead), Failure> {
    let no_server = |e: std::io::Error| fail(3, format!("no server at {}: {e}", socket.display()));
    let mut stream = UnixStream::connect(socket).map_err(no_server)?;
    let timeout = Some(Duration::from_secs(30));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    let mut line = serde_json::to_string(request).map_err(|e| fail(2, e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(no_server)?;
    if let Request::Drain {
        timeout: Some(secs),
    } = request
    {
        // `--wait` reads on until the server exits: the drain, then the
        // shutdown's own bound.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(secs.saturating_add(60))));
    }
    let mut reader = BufReader::new(stream.take(64 * 1024 * 1024));
    let mut reply = String::new();
    reader.read_line(&mut reply).map_err(no_server)?;
    let response = serde_json::from_str(&reply)
        .map_err(|_| fail(3, format!("no valid reply from {}", socket.display())))?;
    Ok((response, reader))
}
