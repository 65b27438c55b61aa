//! What strangers send to authentication, with fuzzer-chosen bytes: the
//! Basic credentials parser, the JWT token finder and scrubber, the JWT
//! verifier (against a secret the fuzzer cannot know), the channel
//! permits, and what an `--auth-url` service or an `--auth-cmd` answers.
//! Nothing panics; no forged token is admitted; a scrubbed request holds
//! no token; every variable an authenticator gives is namespaced and
//! well-formed.
//!
//! Input layout: lines split on `\n`. The first line is the request URI's
//! query; each other line's first byte picks a header name (mod 5) and
//! the rest is its value. The whole input is also an `--auth-cmd`'s output.
#![no_main]

use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use libfuzzer_sys::fuzz_target;
use wspipe::auth::channels::Permits;
use wspipe::auth::jwt::{keys, token, Jwt};
use wspipe::auth::{command, credentials, url};

const NAMES: [&str; 5] = [
    "authorization",
    "sec-websocket-protocol",
    "wspipe-env-role",
    "wspipe-channels",
    "wspipe-env-remote-user",
];

fn jwt() -> &'static Jwt {
    static JWT: OnceLock<Jwt> = OnceLock::new();
    JWT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fuzz-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "a secret no fuzzer will guess, 32+ bytes").unwrap();
        let keys = keys::load(&path).unwrap();
        Jwt::new(keys, vec!["chat".into()], Vec::new(), Some("t".into()))
    })
}

fn names_are_namespaced(vars: &[(String, String)], prefix: &str) {
    for (name, value) in vars {
        assert!(name.starts_with(prefix), "{name}");
        assert!(!value.contains('\0'), "{name}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let query = lines.next().unwrap_or_default();
    let uri: Uri = format!("/room?{}", String::from_utf8_lossy(query))
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/room"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((&pick, value)) = line.split_first() else {
            continue;
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(NAMES[pick as usize % NAMES.len()], v);
        }
    }

    let _ = credentials(&headers);

    if let Ok(found) = token::find(&headers, &uri, Some("t")) {
        assert!(!found.token.is_empty() && found.token.len() <= token::MAX_TOKEN);
    }
    assert!(jwt().check(&headers, &uri).is_err(), "a forged token got in");
    let (mut scrubbed, mut scrubbed_uri) = (headers.clone(), uri.clone());
    scrubbed.remove(http::header::AUTHORIZATION);
    token::scrub(&mut scrubbed, &mut scrubbed_uri, Some("t"));
    assert_eq!(
        token::find(&scrubbed, &scrubbed_uri, Some("t")),
        Err("token required"),
        "a token survived scrubbing"
    );
    assert_eq!(scrubbed_uri.path(), uri.path());

    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(permits) = Permits::parse_list(text) {
            for name in text.split(',').map(str::trim) {
                if permits.allows(name) {
                    assert!(name.starts_with('/') && !name.contains('?'), "{name:?}");
                }
            }
        }
    }

    if let url::Answer::Admit { vars, .. } = url::answer(StatusCode::OK, &headers) {
        names_are_namespaced(&vars, "WSPIPE_AUTH_");
    }
    if let command::Verdict::Admit { vars, .. } = command::parse(data) {
        names_are_namespaced(&vars, "WSPIPE_AUTH_");
    }
});
