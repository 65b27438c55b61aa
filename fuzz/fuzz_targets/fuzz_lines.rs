//! LineSplitter over fuzzer-chosen bytes, line limit and read boundaries,
//! checked against the reference model of the documented rules
//! (`wspipe::lines::model`, shared with the property tests; visible here
//! because cargo-fuzz builds with `--cfg fuzzing`).
//!
//! Input layout: byte 0 picks `max_line` (4..=67), byte 1 the number of read
//! sizes (1..=8), then that many read sizes (1..=256 each, cycled); the rest
//! is the child's output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wspipe::lines::model::{feed, model};
use wspipe::lines::to_text;

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

    let got = feed(input, &reads, max);
    let want = model(input, max);
    let want_pieces: Vec<&[u8]> = want.iter().map(|(p, _)| *p).collect();
    let got_pieces: Vec<&[u8]> = got.iter().map(|b| &b[..]).collect();
    assert_eq!(got_pieces, want_pieces, "max {max}, reads {reads:?}");
    // Independent of how reads split the bytes.
    let whole = feed(input, &[usize::MAX], max);
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
