//! Origin policy: `--origin` lists and handshake Origin/Host values from the
//! fuzzer. Nothing panics; a restrictive policy refuses a missing Origin; an
//! open policy allows everything; the answer is deterministic and blind to
//! ASCII case.
//!
//! Input layout: byte 0 is flags (bit 0 `--sameorigin`, bit 1 TLS, bit 2 no
//! `--origin` list, bit 3 no Origin header, bit 4 no Host header); the rest is
//! `LIST \n ORIGIN \n HOST` (lossy UTF-8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wspipe::origin::{OriginError, OriginPolicy};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(3, '\n');
    let list = parts.next().unwrap_or("");
    let origin = parts.next().unwrap_or("");
    let host = parts.next().unwrap_or("");

    let same = flags & 1 != 0;
    let tls = flags & 2 != 0;
    let list = (flags & 4 == 0).then_some(list);
    let origin = (flags & 8 == 0).then_some(origin);
    let host = (flags & 16 == 0).then_some(host);

    let Ok(policy) = OriginPolicy::new(list, same) else {
        return;
    };
    let verdict = policy.check(origin, host, tls);
    assert_eq!(verdict, policy.check(origin, host, tls));
    if policy.is_open() {
        assert_eq!(verdict, Ok(()));
    } else if origin.is_none() {
        assert_eq!(verdict, Err(OriginError::Missing));
    }
    // Schemes and hosts compare case-insensitively, in the list, the Origin
    // and the Host header alike.
    let upper = |s: Option<&str>| s.map(str::to_ascii_uppercase);
    let (uo, uh) = (upper(origin), upper(host));
    assert_eq!(verdict, policy.check(uo.as_deref(), uh.as_deref(), tls));
    let upper_list = upper(list);
    if let Ok(upper_policy) = OriginPolicy::new(upper_list.as_deref(), same) {
        assert_eq!(verdict, upper_policy.check(origin, host, tls));
    }
});
