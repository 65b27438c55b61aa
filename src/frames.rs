//! Message framing for `--framed`: message boundaries and types survive the
//! trip through the child's byte streams.
//!
//! Lines cannot carry a message with a newline in it, and `--binary` turns
//! messages into a byte stream. In framed mode every message, both ways, is
//! a 5-byte header followed by the payload:
//!
//! ```text
//! +--------+--------+--------+--------+--------+-------------...
//! |  type  |    payload length, 32-bit big-endian |  payload
//! +--------+--------+--------+--------+--------+-------------...
//!   1 = text (UTF-8), 2 = binary
//! ```
//!
//! so `cat` echoes every message exactly, and a program in any language can
//! read one with two `read`s. [`FrameSplitter`] is the pure decoder of the
//! child's output, bounded like [`crate::lines::LineSplitter`].

use bytes::{Buf, Bytes, BytesMut};

use crate::lines::READ_CHUNK;

/// Header size: type byte and 32-bit length.
pub const HEADER: usize = 5;

/// What a framed message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text = 1,
    Binary = 2,
}

/// Why a child's output is not valid framing (the session then closes with
/// 1011, as the child broke the protocol it was started with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("child wrote an unknown frame type")]
    BadType,
    #[error("child wrote a frame larger than --maxlinesize")]
    TooLarge,
    #[error("child output ended inside a frame")]
    Truncated,
}

/// The header for a message of `kind` and `len` bytes.
pub fn header(kind: Kind, len: usize) -> [u8; HEADER] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [kind as u8, len[0], len[1], len[2], len[3]]
}

/// Decodes frames from a byte stream read in arbitrary pieces.
#[derive(Debug)]
pub struct FrameSplitter {
    buf: BytesMut,
    /// Largest payload accepted.
    max: usize,
}

impl FrameSplitter {
    /// A splitter that accepts payloads of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameSplitter {
            buf: BytesMut::new(),
            max,
        }
    }

    /// The buffer to read into, with room for the rest of the current frame
    /// (up to [`READ_CHUNK`] at a time).
    pub fn read_buf(&mut self) -> &mut BytesMut {
        let wanted = match self.peek_header() {
            Some((_, len)) => (HEADER + len).saturating_sub(self.buf.len()),
            None => HEADER - self.buf.len(),
        };
        self.buf.reserve(wanted.clamp(1, READ_CHUNK.max(HEADER)));
        &mut self.buf
    }

    /// Appends bytes (tests and fuzzing).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn peek_header(&self) -> Option<(u8, usize)> {
        let h = self.buf.get(..HEADER)?;
        Some((h[0], u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize))
    }

    /// The next complete frame, `Ok(None)` to read more, or an error once
    /// the stream cannot be framed.
    pub fn next_frame(&mut self) -> Result<Option<(Kind, Bytes)>, FrameError> {
        let Some((kind, len)) = self.peek_header() else {
            return Ok(None);
        };
        let kind = match kind {
            1 => Kind::Text,
            2 => Kind::Binary,
            _ => return Err(FrameError::BadType),
        };
        if len > self.max {
            return Err(FrameError::TooLarge);
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        self.buf.advance(HEADER);
        let payload = self.buf.split_to(len).freeze();
        if self.buf.is_empty() {
            // An idle splitter holds no allocation.
            self.buf = BytesMut::new();
        }
        Ok(Some((kind, payload)))
    }

    /// Drops the allocation when nothing is buffered.
    pub fn release_if_idle(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// At end of input: the error if a frame was left unfinished.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut v = header(kind, payload.len()).to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn frames_survive_any_read_boundaries() {
        let mut stream = frame(Kind::Text, b"hello\nworld");
        stream.extend(frame(Kind::Binary, &[0, 1, 2, 255]));
        stream.extend(frame(Kind::Text, b""));
        for cut in 0..stream.len() {
            let mut s = FrameSplitter::new(100);
            let mut out = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                s.push(part);
                while let Some(f) = s.next_frame().unwrap() {
                    out.push(f);
                }
            }
            assert_eq!(s.finish(), Ok(()));
            assert_eq!(
                out,
                vec![
                    (Kind::Text, Bytes::from_static(b"hello\nworld")),
                    (Kind::Binary, Bytes::from_static(&[0, 1, 2, 255])),
                    (Kind::Text, Bytes::new()),
                ]
            );
        }
    }

    #[test]
    fn bad_streams_are_errors() {
        let mut s = FrameSplitter::new(4);
        s.push(&frame(Kind::Binary, b"12345"));
        assert_eq!(s.next_frame(), Err(FrameError::TooLarge));
        let mut s = FrameSplitter::new(4);
        s.push(&[9, 0, 0, 0, 0]);
        assert_eq!(s.next_frame(), Err(FrameError::BadType));
        let mut s = FrameSplitter::new(4);
        s.push(&[1, 0, 0]);
        assert_eq!(s.next_frame(), Ok(None));
        assert_eq!(s.finish(), Err(FrameError::Truncated));
    }

    #[test]
    fn a_huge_claimed_length_allocates_nothing_up_front() {
        let mut s = FrameSplitter::new(usize::MAX);
        s.push(&[2, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(s.next_frame(), Ok(None));
        assert!(s.read_buf().capacity() <= HEADER + READ_CHUNK + 64);
    }
}
