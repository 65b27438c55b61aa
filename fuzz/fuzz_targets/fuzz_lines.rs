//! LineSplitter over fuzzer-chosen bytes, line limit and read boundaries,
//! checked against a reference model of the documented rules.
//!
//! Input layout: byte 0 picks `max_line` (4..=67), byte 1 the number of read
//! sizes (1..=8), then that many read sizes (1..=256 each, cycled); the rest
//! is the child's output.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wspipe::lines::{to_text, LineSplitter};

/// A piece and the terminator it lost (`\n`, `\r\n`, a final `\r`, or none).
type Piece<'a> = (&'a [u8], &'static [u8]);

/// The rules of src/lines.rs for input held whole (see the module docs and
/// the property tests there): a line ends at `\n`, one `\r` before it goes
/// too, a trailing `\r` at the end of input goes too; a line longer than
/// `max` is cut at the last UTF-8 character start among offsets
/// `max-3..=max` (at `max` when there is none).
fn model(input: &[u8], max: usize) -> Vec<Piece<'_>> {
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    let find_nl = |from: usize| {
        input[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| p + from)
    };
    let mut out = Vec::new();
    let mut at = 0;
    // The next `\n` at or after `at`: searched once per line, not per piece,
    // so that long lines cut into many pieces cost linear time.
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

fn split(input: &[u8], reads: &[usize], max: usize) -> Vec<Bytes> {
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
        }
        // Held back: at most max bytes, plus a `\r` that may start "\r\n".
        let held = s.read_buf().len();
        assert!(held <= max + 1, "holds {held} bytes, max {max}");
    }
    while let Some(line) = s.finish() {
        out.push(line);
    }
    assert!(s.is_empty());
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = 4 + (data[0] as usize % 64);
    let n = 1 + (data[1] as usize % 8);
    if data.len() < 2 + n {
        return;
    }
    let reads: Vec<usize> = data[2..2 + n].iter().map(|&b| b as usize + 1).collect();
    let input = &data[2 + n..];

    let got = split(input, &reads, max);
    let want = model(input, max);
    let want_pieces: Vec<&[u8]> = want.iter().map(|(p, _)| *p).collect();
    let got_pieces: Vec<&[u8]> = got.iter().map(|b| &b[..]).collect();
    assert_eq!(got_pieces, want_pieces, "max {max}, reads {reads:?}");
    // Independent of how reads split the bytes.
    let whole = split(input, &[usize::MAX], max);
    assert_eq!(got, whole);

    let mut rebuilt = Vec::with_capacity(input.len());
    for (piece, term) in &want {
        assert!(piece.len() <= max);
        rebuilt.extend_from_slice(piece);
        rebuilt.extend_from_slice(term);
    }
    assert_eq!(rebuilt, input);

    if std::str::from_utf8(input).is_ok() {
        for piece in &got {
            assert!(std::str::from_utf8(piece).is_ok(), "a character was cut");
        }
    }
    for piece in got {
        let lossy = String::from_utf8_lossy(&piece).into_owned();
        assert_eq!(to_text(piece).as_str(), lossy);
    }
});
