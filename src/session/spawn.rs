//! One way to start a session's child, for WebSocket sessions and CGI
//! requests alike: spawn with a brief retry on ETXTBSY, and map a failure
//! to the HTTP answer it deserves.

use std::time::Duration;

use http::StatusCode;

use crate::process::{self, SpawnSpec, Spawned};

/// A refused request: the status and a one-line reason for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

impl Refusal {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
        }
    }
}

/// Attempts after the first when exec meets ETXTBSY; they wait 5, 10, 20,
/// 40 and 80 ms (155 ms in all).
const TXTBSY_RETRIES: u32 = 5;

/// Spawns `spec`, logging a failure and answering it as a [`Refusal`].
///
/// ETXTBSY is retried briefly: a script that was just written may still be
/// open for writing in a process that is between fork and exec (a deploy
/// in progress, or any fork elsewhere), which makes exec fail for an
/// instant.
pub async fn spawn(spec: &SpawnSpec<'_>) -> Result<Spawned, Refusal> {
    let mut attempt = 0;
    loop {
        match process::spawn(spec) {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < TXTBSY_RETRIES => {
                tracing::debug!(
                    "{} is busy (open for writing): retrying",
                    spec.program.display()
                );
                tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                attempt += 1;
            }
            Ok(spawned) => return Ok(spawned),
            Err(e) => {
                tracing::error!("cannot start {}: {e}", spec.program.display());
                return Err(refusal(&e));
            }
        }
    }
}

/// Out of processes, fds or memory is temporary (503); anything else, like a
/// missing or non-executable program, is a server misconfiguration (500).
fn refusal(e: &std::io::Error) -> Refusal {
    let temporary = matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::EMFILE | libc::ENFILE | libc::ENOMEM)
    );
    if temporary {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot start the program now; try again later",
        )
    } else {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot start the program",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_errors_are_temporary_and_the_rest_misconfiguration() {
        for errno in [libc::EAGAIN, libc::EMFILE, libc::ENFILE, libc::ENOMEM] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert_eq!(refusal(&e).status, StatusCode::SERVICE_UNAVAILABLE);
        }
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(refusal(&e).status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
