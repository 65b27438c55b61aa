//! A child's stdout as messages: lines (text mode), raw chunks (binary
//! mode), frames (`--framed`) or lines tagged as stdout (`--passstderr`),
//! read without waiting and without holding a buffer while the child is
//! quiet.

use bytes::BytesMut;
use tokio::net::unix::pipe;
use tokio_tungstenite::tungstenite::Message;

use super::tagged::{tagged, Stream};
use crate::config::Mode;
use crate::frames::{FrameError, FrameSplitter, Kind};
use crate::lines::{to_text, LineSplitter, READ_CHUNK};
use crate::pipes::{read_into, read_through};

/// Largest read from a child's stdout in binary mode (one binary message).
const BINARY_CHUNK: usize = 64 * 1024;

/// The child's stdout, framed as the mode says.
pub(crate) struct ChildOutput {
    pub pipe: pipe::Receiver,
    framing: Framing,
    /// Set once the pipe reached its end.
    pub eof: bool,
    /// Set when framed output turned out malformed.
    pub broken: Option<FrameError>,
}

/// The decoder for each mode.
enum Framing {
    /// One text message per line.
    Lines(LineSplitter),
    /// Bytes read and not yet sent, one binary message per read.
    Raw(BytesMut),
    /// Header-delimited messages (`--framed`).
    Frames(FrameSplitter),
    /// One JSON text message per line, `{"stream":"stdout",...}`
    /// (`--passstderr`, text mode only). A variant of its own so that the
    /// plain line path stays as it is.
    Tagged(LineSplitter),
}

impl ChildOutput {
    pub fn new(pipe: pipe::Receiver, mode: Mode, max_line: usize) -> Self {
        let framing = match mode {
            Mode::Text => Framing::Lines(LineSplitter::new(max_line)),
            Mode::Binary => Framing::Raw(BytesMut::new()),
            Mode::Framed => Framing::Frames(FrameSplitter::new(max_line)),
        };
        Self::with(pipe, framing)
    }

    /// Text mode with every line tagged as stdout (`--passstderr`).
    pub fn tagged(pipe: pipe::Receiver, max_line: usize) -> Self {
        Self::with(pipe, Framing::Tagged(LineSplitter::new(max_line)))
    }

    fn with(pipe: pipe::Receiver, framing: Framing) -> Self {
        ChildOutput {
            pipe,
            framing,
            eof: false,
            broken: None,
        }
    }

    /// Reads what the pipe holds right now, if it is still open (never
    /// waits), even before the reactor has reported it readable: an
    /// injected message must not overtake a line the child wrote before it.
    pub fn read_now(&mut self) {
        if !self.eof {
            self.read_with(read_through);
        }
    }

    /// Reads what the pipe has now (called once it is readable).
    pub fn read(&mut self) {
        self.read_with(read_into);
    }

    fn read_with(&mut self, reader: fn(&pipe::Receiver, &mut BytesMut) -> bool) {
        let buf = match &mut self.framing {
            Framing::Lines(lines) | Framing::Tagged(lines) => lines.read_buf(),
            Framing::Raw(chunk) => {
                chunk.reserve(READ_CHUNK.max(BINARY_CHUNK));
                chunk
            }
            Framing::Frames(frames) => frames.read_buf(),
        };
        self.eof = reader(&self.pipe, buf);
        // A wake-up that found nothing (readiness is only cleared by a read
        // that would block) must not leave a reserved buffer behind: idle
        // connections should hold none.
        match &mut self.framing {
            Framing::Lines(lines) | Framing::Tagged(lines) => lines.release_if_idle(),
            Framing::Raw(chunk) if chunk.is_empty() => *chunk = BytesMut::new(),
            Framing::Raw(_) => {}
            Framing::Frames(frames) => frames.release_if_idle(),
        }
    }

    /// The next message ready to send, if any.
    pub fn next_message(&mut self) -> Option<Message> {
        match &mut self.framing {
            Framing::Lines(lines) => lines
                .next_line_or_last(self.eof)
                .map(|l| Message::Text(to_text(l))),
            Framing::Tagged(lines) => lines
                .next_line_or_last(self.eof)
                .map(|l| tagged(Stream::Stdout, &l)),
            Framing::Raw(chunk) if !chunk.is_empty() => {
                let data = chunk.split().freeze();
                Some(Message::Binary(data))
            }
            Framing::Raw(_) => None,
            Framing::Frames(frames) => {
                let next = frames.next_frame().and_then(|frame| match frame {
                    None if self.eof => frames.finish().map(|()| None),
                    other => Ok(other),
                });
                match next {
                    Ok(Some((Kind::Text, payload))) => Some(Message::Text(to_text(payload))),
                    Ok(Some((Kind::Binary, payload))) => Some(Message::Binary(payload)),
                    Ok(None) => None,
                    Err(e) => {
                        self.broken = Some(e);
                        None
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A pipe whose read end tokio owns and whose write end we hold.
    fn child_pipe(mode: Mode) -> (ChildOutput, std::fs::File) {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        let receiver = pipe::Receiver::from_owned_fd(read).expect("receiver");
        (ChildOutput::new(receiver, mode, 1 << 20), write.into())
    }

    // The current-thread runtime does not turn the reactor until the test
    // yields, so tokio has not seen these bytes arrive: exactly the moment
    // an injected message comes in right after the child wrote a line.
    #[tokio::test(flavor = "current_thread")]
    async fn read_now_sees_what_the_child_wrote_before_the_reactor_does() {
        for mode in [Mode::Text, Mode::Binary] {
            let (mut out, mut child) = child_pipe(mode);
            child.write_all(b"written first\n").expect("write");
            out.read_now();
            let message = out.next_message().expect("the line, before anything else");
            let expected: &[u8] = match mode {
                Mode::Text => b"written first",
                _ => b"written first\n",
            };
            assert_eq!(message.into_data().as_ref(), expected, "{mode:?}");
            drop(child);
            out.read_now();
            assert!(out.eof, "{mode:?}: end of file seen");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn read_now_on_an_empty_pipe_finds_nothing_and_waits_for_more() {
        let (mut out, mut child) = child_pipe(Mode::Text);
        out.read_now();
        assert!(out.next_message().is_none());
        assert!(!out.eof);
        child.write_all(b"later\n").expect("write");
        // The readiness path still works after a read behind tokio's back.
        out.pipe.readable().await.expect("readable");
        out.read();
        assert_eq!(
            out.next_message().expect("line").into_data().as_ref(),
            b"later"
        );
    }
}
