//! `--auth-cmd PROG`: a program decides. It runs with the request's CGI
//! environment (its headers as `HTTP_*`: the cookie of a PHP session, an
//! `Authorization` header...), no stdin, bounded in time (`--auth-timeout`)
//! and, by the caller, in how many run at once.
//!
//! - exit 0 admits; each stdout line `NAME=value` is a variable for the
//!   child: `REMOTE_USER=alice` sets REMOTE_USER, any other NAME becomes
//!   `WSPIPE_AUTH_NAME` (so a command cannot set PATH or LD_PRELOAD for
//!   the child); `CHANNELS=/a, /rooms/*` (one or more lines) limits the
//!   channels the client may join. NAME is letters, digits and `_`, not starting with a
//!   digit; a line that is not such a pair refuses the request (503), as
//!   does more than 64 KiB of output: fail closed.
//! - any other exit status refuses (403);
//! - a crash (a signal), a timeout or a program that cannot start: 503.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::channels::Permits;
use crate::env::Var;
use crate::process::{self, Exit, SpawnSpec};

/// Most stdout read from the command.
const MAX_OUTPUT: usize = 64 * 1024;

/// Grace before the command's group is signalled on a timeout: it has had
/// its time already.
const KILL_GRACE: Duration = Duration::from_millis(50);

/// The configured command.
#[derive(Debug, Clone)]
pub struct AuthCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// `--auth-timeout`.
    pub timeout: Duration,
}

/// What the command said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Exit 0: REMOTE_USER (if it named one) and the other variables.
    Admit {
        user: Option<String>,
        vars: Vec<(String, String)>,
        /// `CHANNELS=` lines.
        channels: Option<Permits>,
    },
    /// Another exit status.
    Refuse,
    /// It did not answer properly (why, for the log).
    Failed(String),
}

impl AuthCommand {
    /// Runs the command with `env` (the base environment, then the
    /// request's variables).
    pub async fn run(&self, env: [&[Var]; 2]) -> Verdict {
        let spawned = match process::spawn(&SpawnSpec {
            program: &self.program,
            args: &self.args,
            env,
            dir: None,
        }) {
            Ok(spawned) => spawned,
            Err(e) => return Verdict::Failed(format!("cannot start: {e}")),
        };
        let process::Spawned {
            mut child,
            stdin,
            mut stdout,
            stderr,
        } = spawned;
        drop(stdin); // no stdin: it decides from its environment
        drop(stderr); // unread: a chatty command gets EPIPE, not a stall
        let mut out = BytesMut::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let read = tokio::time::timeout_at(deadline, read_bounded(&mut stdout, &mut out)).await;
        let exited = match read {
            Ok(Ok(())) => tokio::time::timeout_at(deadline, child.exited())
                .await
                .is_ok(),
            Ok(Err(e)) => {
                child.terminate(KILL_GRACE).await;
                return Verdict::Failed(e);
            }
            Err(_) => false,
        };
        if !exited {
            child.terminate(KILL_GRACE).await;
            return Verdict::Failed(format!("no answer within {:?}", self.timeout));
        }
        match child.reap().await {
            Exit::Code(0) => parse(&out),
            Exit::Code(_) => Verdict::Refuse,
            other => Verdict::Failed(other.to_string()),
        }
    }
}

/// Reads stdout to its end, refusing more than [`MAX_OUTPUT`].
async fn read_bounded(
    stdout: &mut tokio::net::unix::pipe::Receiver,
    out: &mut BytesMut,
) -> Result<(), String> {
    loop {
        if out.len() > MAX_OUTPUT {
            return Err(format!("more than {MAX_OUTPUT} bytes of output"));
        }
        match stdout.read_buf(out).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading its output: {e}")),
        }
    }
}

/// The `NAME=value` lines of an admitting command.
pub fn parse(out: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(out) else {
        return Verdict::Failed("output is not UTF-8".into());
    };
    let mut user = None;
    let mut vars = Vec::new();
    let mut channels: Option<String> = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once('=').filter(|(n, _)| valid_name(n)) else {
            return Verdict::Failed(format!("not a NAME=value line: {:.60}", line));
        };
        if value.contains('\0') {
            return Verdict::Failed(format!("{name}: a NUL in its value"));
        }
        match name {
            "REMOTE_USER" => user = Some(value.to_owned()),
            "CHANNELS" => channels.get_or_insert_default().extend([",", value]),
            _ => vars.push((format!("WSPIPE_AUTH_{name}"), value.to_owned())),
        }
    }
    let channels = match channels.as_deref().map(Permits::parse_list).transpose() {
        Ok(channels) => channels,
        Err(e) => return Verdict::Failed(format!("CHANNELS: {e}")),
    };
    Verdict::Admit {
        user,
        vars,
        channels,
    }
}

/// Letters, digits and `_`, not starting with a digit, at most 64 bytes:
/// a name an authenticator may give a child variable (also `--auth-url`'s).
pub(super) fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok && name.len() <= 64 && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_become_namespaced_variables_and_bad_ones_fail_closed() {
        assert_eq!(
            parse(b"REMOTE_USER=alice\nROLE=admin\n\nteam_1=a=b\n"),
            Verdict::Admit {
                user: Some("alice".into()),
                vars: vec![
                    ("WSPIPE_AUTH_ROLE".into(), "admin".into()),
                    ("WSPIPE_AUTH_team_1".into(), "a=b".into()),
                ],
                channels: None,
            }
        );
        let Verdict::Admit { channels, .. } = parse(b"CHANNELS=/a\nCHANNELS=/rooms/*\n") else {
            panic!("admitted");
        };
        let channels = channels.unwrap();
        assert!(channels.allows("/a") && channels.allows("/rooms/x") && !channels.allows("/b"));
        assert!(matches!(parse(b"CHANNELS=nope"), Verdict::Failed(_)));
        assert_eq!(
            parse(b""),
            Verdict::Admit {
                user: None,
                vars: vec![],
                channels: None,
            }
        );
        for bad in [
            &b"no equals"[..],
            b"1X=a",
            b"A B=c",
            b"=x",
            b"\xff=1",
            b"A=\0",
        ] {
            assert!(matches!(parse(bad), Verdict::Failed(_)), "{bad:?}");
        }
    }

    fn command(body: &str, timeout: Duration) -> (tempfile::TempDir, AuthCommand) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("check");
        std::fs::write(&path, body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let command = AuthCommand {
            program: path,
            args: Vec::new(),
            timeout,
        };
        (dir, command)
    }

    #[tokio::test]
    async fn exit_status_output_timeout_and_crash_each_give_their_verdict() {
        let env: Vec<Var> = vec![("HTTP_COOKIE".into(), "sid=good".into())];
        let env = &env;
        let run = |body: &'static str, timeout| async move {
            let (_dir, cmd) = command(body, timeout);
            cmd.run([env, &[]]).await
        };
        let second = Duration::from_secs(5);
        let admit =
            "#!/bin/sh\n[ \"$HTTP_COOKIE\" = sid=good ] || exit 1\necho REMOTE_USER=alice\n";
        assert_eq!(
            run(admit, second).await,
            Verdict::Admit {
                user: Some("alice".into()),
                vars: vec![],
                channels: None,
            }
        );
        assert_eq!(run("#!/bin/sh\nexit 3\n", second).await, Verdict::Refuse);
        let slow = run("#!/bin/sh\nexec sleep 10\n", Duration::from_millis(100)).await;
        assert!(
            matches!(slow, Verdict::Failed(ref why) if why.contains("no answer")),
            "{slow:?}"
        );
        let crash = run("#!/bin/sh\nkill -SEGV $$\n", second).await;
        assert!(
            matches!(crash, Verdict::Failed(ref why) if why.contains("SIGSEGV")),
            "{crash:?}"
        );
        let flood = run("#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' a\n", second).await;
        assert!(
            matches!(flood, Verdict::Failed(ref why) if why.contains("bytes")),
            "{flood:?}"
        );
    }
}
