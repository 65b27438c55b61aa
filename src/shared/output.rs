//! A shared child's stdout to its clients: each line (split as for a
//! per-connection child, cut at `--maxlinesize`; or each chunk in binary
//! mode, each frame with `--framed`) is handed on at once, to
//! be published to the endpoint's channel (or, with `--shared-ids`, sent
//! to the one client it addresses), so it reaches clients through the
//! hub's bounded, never-waiting fan-out. Nothing here waits on a client,
//! so the child is read as fast as it writes, whatever its clients do.

use bytes::Bytes;
use tokio::net::unix::pipe;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::bridge::ChildOutput;
use crate::config::Mode;
use crate::frames::FrameError;

/// Why the pump stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PumpEnd {
    /// The child's stdout reached its end.
    Eof,
    /// `--framed`: the child wrote something that is not a frame.
    Broken(FrameError),
    /// It was told to stop.
    Stopped,
}

/// Hands the child's messages (lines, chunks or frames, as `mode` says) to
/// `deliver` until its stdout ends or `stop` is cancelled (then not one
/// more goes out: a fresh child may already be publishing to the same
/// channel). Owns stdout: returning closes it.
pub(super) async fn pump(
    stdout: pipe::Receiver,
    mode: Mode,
    max_line: usize,
    stop: &CancellationToken,
    mut deliver: impl FnMut(Message),
) -> PumpEnd {
    let mut out = ChildOutput::new(stdout, mode, max_line);
    loop {
        while let Some(message) = out.next_message() {
            if stop.is_cancelled() {
                return PumpEnd::Stopped;
            }
            deliver(message);
        }
        if let Some(e) = out.broken {
            return PumpEnd::Broken(e);
        }
        if out.eof {
            return PumpEnd::Eof;
        }
        tokio::select! {
            _ = out.pipe.readable() => out.read(),
            () = stop.cancelled() => return PumpEnd::Stopped,
        }
    }
}

/// Where a line of a `--shared-ids` child goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Address {
    /// Every client, the line unchanged: it has no TAB, or nothing before
    /// its first one.
    All(Message),
    /// Client `id` alone, the text after the first TAB: what came before
    /// it is a decimal number.
    To(u64, Message),
    /// Nobody (dropped and counted): something other than a decimal
    /// number that fits in 64 bits comes before the first TAB.
    Nobody,
}

/// Reads the address off a line of a `--shared-ids` child.
pub(super) fn address(line: Message) -> Address {
    let Message::Text(text) = line else {
        return Address::All(line);
    };
    let at = match text.as_str().find('\t') {
        None | Some(0) => return Address::All(Message::Text(text)),
        Some(at) => at,
    };
    let id = &text.as_str()[..at];
    let number = id.bytes().all(|b| b.is_ascii_digit());
    let Some(id) = id.parse::<u64>().ok().filter(|_| number) else {
        return Address::Nobody;
    };
    let rest = Bytes::from(text).slice(at + 1..);
    // Cut just after an ASCII TAB: still UTF-8, and no copy.
    match Utf8Bytes::try_from(rest) {
        Ok(rest) => Address::To(id, Message::Text(rest)),
        Err(_) => Address::Nobody,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_before_the_first_tab_addresses_one_client() {
        let to = |id, s: &str| Address::To(id, Message::text(s));
        let all = |s: &str| Address::All(Message::text(s));
        let at = |s: &str| address(Message::text(s));
        assert_eq!(at("7\thello"), to(7, "hello"));
        assert_eq!(at("7\t"), to(7, ""));
        assert_eq!(at("12\ta\tb"), to(12, "a\tb"));
        assert_eq!(at("007\tx"), to(7, "x"));
        assert_eq!(at("no tab"), all("no tab"));
        assert_eq!(at("\tto all\tof you"), all("\tto all\tof you"));
        assert_eq!(at(""), all(""));
        for nobody in [
            "x\ty",
            "+7\ty",
            "-1\ty",
            " 7\ty",
            "7 \ty",
            "99999999999999999999\ty",
        ] {
            assert_eq!(at(nobody), Address::Nobody, "{nobody:?}");
        }
        assert_eq!(at("7é\ty"), Address::Nobody);
        assert_eq!(at("7\té"), to(7, "é"));
    }
}
