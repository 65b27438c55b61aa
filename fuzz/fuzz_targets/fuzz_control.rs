//! The control protocol parser on arbitrary lines: never panics, and what it
//! accepts survives a trip through JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wspipe::control::protocol::{parse_request, Request};

fn check(line: &str) {
    if let Ok(req) = parse_request(line) {
        let json = serde_json::to_string(&req).expect("a request serializes");
        assert!(!json.contains('\n'), "one request per line: {json:?}");
        let again: Request = parse_request(&json).expect("serialized request parses");
        assert_eq!(again, req);
    }
}

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(line) => check(line),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});
