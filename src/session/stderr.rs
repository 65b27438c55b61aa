//! A child's stderr in wspipe's log, one line at a time (target
//! `wspipe::stderr`, tagged with the session or request id), for
//! WebSocket sessions and CGI scripts alike.

use tokio::net::unix::pipe;

use crate::lines::LineSplitter;
use crate::pipes::read_into;

/// Logs one line a child wrote to stderr.
pub fn log_line(id: &str, line: &[u8]) {
    tracing::error!(target: "wspipe::stderr", id = %id, "{}", String::from_utf8_lossy(line));
}

/// Logs `pipe` line by line until it closes (or fails); a line longer than
/// `max_line` is logged in pieces. Holds no buffer while the pipe is quiet.
pub async fn log_stderr(pipe: pipe::Receiver, id: &str, max_line: usize) {
    let mut lines = LineSplitter::new(max_line);
    loop {
        if pipe.readable().await.is_err() {
            break;
        }
        let eof = read_into(&pipe, lines.read_buf());
        while let Some(line) = lines.next_line() {
            log_line(id, &line);
        }
        lines.release_if_idle();
        if eof {
            break;
        }
    }
    if let Some(line) = lines.finish() {
        log_line(id, &line);
    }
}
