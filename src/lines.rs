//! Line framing of a child's output.
//!
//! In text mode every line a child writes to stdout becomes one WebSocket
//! text message. Pipes hand us bytes in arbitrary chunks, so a line may arrive
//! in many reads and one read may carry many lines. [`LineSplitter`] owns the
//! bytes read so far and hands out complete lines; it is pure (no I/O), which
//! keeps it easy to unit test, property test and fuzz.
//!
//! Three rules bound what a child can do to us:
//! - the buffer never holds more than `max_line` bytes of an unfinished line:
//!   a longer line is delivered in pieces of at most `max_line` bytes, cut on
//!   a UTF-8 character boundary where the data allows it (nothing is lost);
//! - a line ends at `\n`; a `\r` right before it is dropped too (`\r\n`);
//! - memory is only held while a line is unfinished: an idle splitter owns no
//!   allocation at all.

use bytes::{Bytes, BytesMut};

/// How much spare room is reserved before each read from the child.
///
/// Small enough that thousands of connections cost little, large enough that
/// a chatty child is read in few system calls.
pub const READ_CHUNK: usize = 16 * 1024;

/// Splits a byte stream into lines, bounded by a maximum line length.
#[derive(Debug)]
pub struct LineSplitter {
    /// Bytes read from the child and not yet handed out as lines.
    buf: BytesMut,
    /// How far `buf` has already been searched for `\n`, so that a long line
    /// arriving in many small reads is not rescanned from the start each time.
    scanned: usize,
    /// The longest piece handed out without a newline.
    max_line: usize,
}

impl LineSplitter {
    /// A splitter that delivers lines of at most `max_line` bytes (at least 4,
    /// so that one UTF-8 character always fits).
    pub fn new(max_line: usize) -> Self {
        LineSplitter {
            buf: BytesMut::new(),
            scanned: 0,
            max_line: max_line.max(4),
        }
    }

    /// The buffer to read into, with room for at least [`READ_CHUNK`] bytes
    /// but never more than the line limit allows to accumulate.
    pub fn read_buf(&mut self) -> &mut BytesMut {
        let room = READ_CHUNK.min(self.max_line.saturating_sub(self.buf.len()).max(1));
        self.buf.reserve(room);
        &mut self.buf
    }

    /// Appends bytes (used by tests and fuzzing; the server reads straight
    /// into [`read_buf`](Self::read_buf)).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True when no partial line is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next complete line (without its `\n` or `\r\n`), or the next piece
    /// of an overlong line. `None` means: read more.
    ///
    /// The result depends only on the bytes, never on how reads split them:
    /// a line is cut only once more than `max_line` bytes of it are known.
    pub fn next_line(&mut self) -> Option<Bytes> {
        let max = self.max_line;
        // A line of at most `max` bytes has its `\n` within the first max+1
        // bytes, or at max+1 right after a `\r`.
        let window = self.buf.len().min(max + 2);
        let from = self.scanned.min(window);
        if let Some(pos) = memchr::memchr(b'\n', &self.buf[from..window]).map(|p| p + from) {
            let content = if pos > 0 && self.buf[pos - 1] == b'\r' {
                pos - 1
            } else {
                pos
            };
            if content <= max {
                let mut line = self.buf.split_to(pos + 1);
                line.truncate(content);
                self.scanned = 0;
                self.release_if_idle();
                return Some(line.freeze());
            }
        }
        self.scanned = window;
        let overlong = match self.buf.len() {
            n if n <= max => false,
            // max+1 bytes: undecided only if the last may start a "\r\n".
            n if n == max + 1 => self.buf[max] != b'\r',
            _ => true,
        };
        if !overlong {
            return None;
        }
        let cut = utf8_cut(&self.buf, max);
        let piece = self.buf.split_to(cut).freeze();
        self.scanned = 0;
        self.release_if_idle();
        Some(piece)
    }

    /// At end of input: the final line that had no newline, if any.
    pub fn finish(&mut self) -> Option<Bytes> {
        if let Some(line) = self.next_line() {
            return Some(line);
        }
        if self.buf.is_empty() {
            return None;
        }
        let mut rest = std::mem::take(&mut self.buf);
        if rest.last() == Some(&b'\r') {
            rest.truncate(rest.len() - 1);
        }
        self.scanned = 0;
        Some(rest.freeze())
    }

    /// The next line; once the input has ended (`ended`), the final one
    /// without a newline too.
    pub fn next_line_or_last(&mut self, ended: bool) -> Option<Bytes> {
        if ended {
            self.finish()
        } else {
            self.next_line()
        }
    }

    /// Drops the allocation once everything is handed out, so an idle
    /// connection holds no buffer (also after a read that found nothing).
    pub fn release_if_idle(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

/// Where to cut `buf` to get a piece of at most `max` bytes without splitting
/// a UTF-8 character. Falls back to `max` when the bytes are not UTF-8 there.
fn utf8_cut(buf: &[u8], max: usize) -> usize {
    // A continuation byte looks like 0b10xx_xxxx; back off over at most three.
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    let mut cut = max;
    while cut > max - 3 && cut < buf.len() && is_continuation(buf[cut]) {
        cut -= 1;
    }
    if cut < buf.len() && is_continuation(buf[cut]) {
        max
    } else {
        cut
    }
}

/// Turns a line into text for a WebSocket text frame.
///
/// Valid UTF-8 is passed through without a copy. Invalid sequences are
/// replaced by U+FFFD (the policy of `String::from_utf8_lossy`): a text frame
/// must be valid UTF-8 (RFC 6455 section 8.1), and dropping or cutting the line
/// would lose data the client may still make sense of.
pub fn to_text(line: Bytes) -> tokio_tungstenite::tungstenite::Utf8Bytes {
    use tokio_tungstenite::tungstenite::Utf8Bytes;
    if std::str::from_utf8(&line).is_ok() {
        // SAFETY: validated as UTF-8 on the line above.
        unsafe { Utf8Bytes::from_bytes_unchecked(line) }
    } else {
        Utf8Bytes::from(String::from_utf8_lossy(&line).into_owned())
    }
}

/// The documented rules as a reference model, and a harness that feeds a
/// [`LineSplitter`] in chosen read sizes: shared by the property tests
/// below and by `fuzz/fuzz_targets/fuzz_lines.rs` (cargo-fuzz builds with
/// `--cfg fuzzing`). Not part of the API.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod model {
    use super::LineSplitter;
    use bytes::Bytes;

    /// A piece and the terminator it lost (`\n`, `\r\n`, a final `\r`, or
    /// none).
    pub type Piece<'a> = (&'a [u8], &'static [u8]);

    /// The rules, for input held whole:
    /// - a line ends at the first `\n`; one `\r` right before it goes too;
    /// - at the end of input, what is left is a last line (one trailing
    ///   `\r` dropped);
    /// - a line whose content (terminator excluded) is longer than `max` is
    ///   handed out in pieces: each piece ends at the last UTF-8 character
    ///   start among byte offsets `max-3..=max`, or at `max` when all four
    ///   are continuation bytes (not UTF-8: cut anywhere).
    pub fn model(input: &[u8], max: usize) -> Vec<Piece<'_>> {
        let is_continuation = |b: u8| b & 0xC0 == 0x80;
        let find_nl = |from: usize| {
            input[from..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|p| p + from)
        };
        let mut out = Vec::new();
        let mut at = 0;
        // The next `\n` at or after `at`: searched once per line, not per
        // piece, so that long lines cut into many pieces cost linear time.
        let mut nl = find_nl(0);
        while at < input.len() {
            let rest = &input[at..];
            let (content, term): (usize, &'static [u8]) = match nl {
                Some(n) if n > at && input[n - 1] == b'\r' => (n - 1 - at, b"\r\n"),
                Some(n) => (n - at, b"\n"),
                None if rest.last() == Some(&b'\r') => (rest.len() - 1, b"\r"),
                None => (rest.len(), b""),
            };
            if content <= max {
                out.push((&rest[..content], term));
                at += content + term.len();
                if nl.is_some_and(|n| n < at) {
                    nl = find_nl(at);
                }
                continue;
            }
            let cut = (max - 3..=max)
                .rev()
                .find(|&c| !is_continuation(rest[c]))
                .unwrap_or(max);
            out.push((&rest[..cut], b""));
            at += cut;
        }
        out
    }

    /// Feeds `input` in reads of the given sizes (cycled), alternating
    /// between `push` and `read_buf`, draining after each read, and checks
    /// what the splitter holds on the way: never more than `max` bytes plus
    /// a `\r` that may yet start a "\r\n", and no buffer once idle.
    pub fn feed(input: &[u8], reads: &[usize], max: usize) -> Vec<Bytes> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = reads[i % reads.len()].min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            if i % 2 == 0 {
                s.push(chunk);
            } else {
                s.read_buf().extend_from_slice(chunk);
            }
            rest = tail;
            i += 1;
            while let Some(line) = s.next_line() {
                out.push(line);
                if s.is_empty() {
                    assert_eq!(s.buf.capacity(), 0, "idle splitter keeps a buffer");
                }
            }
            assert!(s.buf.len() <= max + 1, "holds {} > {max} + 1", s.buf.len());
            if s.buf.len() == max + 1 {
                assert_eq!(s.buf[max], b'\r');
            }
        }
        while let Some(line) = s.finish() {
            out.push(line);
        }
        assert!(s.is_empty());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]], max: usize) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            s.push(chunk);
            while let Some(line) = s.next_line() {
                out.push(line.to_vec());
            }
        }
        while let Some(line) = s.finish() {
            out.push(line.to_vec());
        }
        out
    }

    #[test]
    fn lines_across_reads() {
        let out = split_all(&[b"he", b"llo\nwor", b"ld\n", b"\n", b"x"], 100);
        assert_eq!(
            out,
            vec![b"hello".to_vec(), b"world".to_vec(), vec![], b"x".to_vec()]
        );
    }

    #[test]
    fn crlf_is_tolerated() {
        let out = split_all(&[b"a\r\nb\r", b"\nc\r"], 100);
        assert_eq!(out, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn lone_cr_inside_a_line_is_kept() {
        let out = split_all(&[b"a\rb\n"], 100);
        assert_eq!(out, vec![b"a\rb".to_vec()]);
    }

    #[test]
    fn overlong_line_is_split_into_bounded_pieces() {
        let out = split_all(&[b"abcdefghij", b"kl\n"], 4);
        assert_eq!(
            out,
            vec![b"abcd".to_vec(), b"efgh".to_vec(), b"ijkl".to_vec()]
        );
        // A line of exactly the limit is one message, however it arrives.
        assert_eq!(split_all(&[b"abcd", b"\n"], 4), vec![b"abcd".to_vec()]);
        assert_eq!(split_all(&[b"abcd\r", b"\n"], 4), vec![b"abcd".to_vec()]);
        assert_eq!(split_all(&[b"abcd\n"], 4), vec![b"abcd".to_vec()]);
    }

    #[test]
    fn split_respects_utf8_boundaries() {
        // é is C3 A9: a cut after 4 bytes of "aaaé..." would split one.
        let out = split_all(&["aaaééé\n".as_bytes()], 4);
        let want: Vec<Vec<u8>> = ["aaa", "éé", "é"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert_eq!(out, want);
    }

    #[test]
    fn result_does_not_depend_on_read_boundaries() {
        let input: &[u8] =
            b"ab\r\ncdefgh\r\n\r\nijklmnop\nq\xc3\xa9\xc3\xa9\xc3\xa9rs\r\n\xff\xfex\r";
        for max in 4..10 {
            let whole = split_all(&[input], max);
            for a in 0..input.len() {
                for b in a..input.len() {
                    let parts = [&input[..a], &input[a..b], &input[b..]];
                    assert_eq!(split_all(&parts, max), whole, "max {max}, cuts {a} {b}");
                }
            }
            for piece in &whole {
                assert!(piece.len() <= max);
            }
        }
    }

    #[test]
    fn buffer_never_exceeds_limit() {
        let mut s = LineSplitter::new(64);
        for _ in 0..1000 {
            let buf = s.read_buf();
            buf.extend_from_slice(&[b'x'; 7]);
            while s.next_line().is_some() {}
            assert!(s.buf.len() <= 65);
        }
    }

    #[test]
    fn idle_splitter_holds_no_allocation() {
        let mut s = LineSplitter::new(1024);
        s.push(b"line\n");
        assert_eq!(s.next_line().as_deref(), Some(&b"line"[..]));
        assert_eq!(s.buf.capacity(), 0);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let text = to_text(Bytes::from_static(b"ok \xff\xfe end"));
        assert_eq!(text.as_str(), "ok \u{FFFD}\u{FFFD} end");
        let text = to_text(Bytes::from_static("ünïcode".as_bytes()));
        assert_eq!(text.as_str(), "ünïcode");
    }
}

/// Property tests: the splitter against a reference model that sees the
/// whole input at once, over arbitrary bytes and arbitrary read boundaries.
#[cfg(test)]
mod proptests {
    use super::model::{feed, model};
    use super::to_text;
    use bytes::Bytes;
    use proptest::prelude::*;

    /// [`feed`], as owned vectors for comparing.
    fn run(input: &[u8], reads: &[usize], max: usize) -> Vec<Vec<u8>> {
        feed(input, reads, max).iter().map(|b| b.to_vec()).collect()
    }

    /// Bytes rich in what matters here: newlines, carriage returns, UTF-8
    /// characters of every width, stray continuation and lead bytes.
    fn input() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            4 => any::<u8>().prop_map(|b| vec![b]),
            3 => (b'a'..=b'z').prop_map(|b| vec![b]),
            2 => Just(b"\n".to_vec()),
            2 => Just(b"\r".to_vec()),
            2 => Just(b"\r\n".to_vec()),
            1 => Just("é".as_bytes().to_vec()),
            1 => Just("€".as_bytes().to_vec()),
            1 => Just("😀".as_bytes().to_vec()),
            1 => (0x80u8..0xC0).prop_map(|b| vec![b]),
            1 => (0xC0u8..=0xFF).prop_map(|b| vec![b]),
            1 => (1usize..80).prop_map(|n| vec![b'x'; n]),
        ];
        prop::collection::vec(token, 0..120).prop_map(|t| t.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn splitter_matches_model(
            input in input(),
            reads in prop::collection::vec(1usize..40, 1..8),
            max in 4usize..64,
        ) {
            let want = model(&input, max);
            let got = run(&input, &reads, max);
            let want_pieces: Vec<Vec<u8>> = want.iter().map(|(p, _)| p.to_vec()).collect();
            prop_assert_eq!(&got, &want_pieces);
            for piece in &got {
                prop_assert!(piece.len() <= max);
            }
            // Nothing is lost: pieces plus the terminators they lost are the input.
            let rebuilt: Vec<u8> = want.iter().flat_map(|(p, t)| p.iter().chain(t.iter())).copied().collect();
            prop_assert_eq!(rebuilt, input);
        }

        #[test]
        fn one_read_or_byte_by_byte_agree(input in input(), max in 4usize..64) {
            prop_assert_eq!(run(&input, &[usize::MAX], max), run(&input, &[1], max));
        }

        #[test]
        fn cuts_keep_valid_utf8_whole(
            text in "[a-z\r\n\u{e9}\u{20ac}\u{1F600}]{0,200}",
            max in 4usize..64,
        ) {
            // Valid UTF-8 in, every piece valid UTF-8 out: no character is split.
            for piece in run(text.as_bytes(), &[7, 3, 11], max) {
                prop_assert!(std::str::from_utf8(&piece).is_ok(), "{:?}", piece);
            }
        }

        #[test]
        fn to_text_is_lossy_utf8(bytes in input()) {
            let text = to_text(Bytes::from(bytes.clone()));
            prop_assert!(std::str::from_utf8(text.as_str().as_bytes()).is_ok());
            let lossy = String::from_utf8_lossy(&bytes);
            prop_assert_eq!(text.as_str(), lossy.as_ref());
        }
    }

    #[test]
    fn model_agrees_with_the_examples() {
        let pieces = |input: &[u8], max| -> Vec<Vec<u8>> {
            model(input, max)
                .into_iter()
                .map(|(p, _)| p.to_vec())
                .collect()
        };
        assert_eq!(pieces(b"abcd\r\n", 4), [b"abcd".to_vec()]);
        assert_eq!(pieces(b"abcd\r", 4), [b"abcd".to_vec()]);
        assert_eq!(pieces(b"abcd\rx", 4), [b"abcd".to_vec(), b"\rx".to_vec()]);
        assert_eq!(
            pieces("aaaééé\n".as_bytes(), 4),
            ["aaa", "éé", "é"].map(|s| s.as_bytes().to_vec())
        );
        assert_eq!(
            pieces(b"\x80\x80\x80\x80\x80\x80", 4),
            [b"\x80\x80\x80\x80".to_vec(), b"\x80\x80".to_vec()]
        );
    }
}
