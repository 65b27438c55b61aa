//! End to end: `--jwt-key`. Tokens signed here with the test keys of
//! tests/data/jwt (jsonwebtoken's encoder); the real server verifies them.
//! Every refused token gets 401 and starts nothing (children counted); an
//! admitted client's child gets its claims and never the token.

mod common;

use std::path::{Path, PathBuf};

use common::shared::live_children;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "an HMAC secret of at least thirty-two bytes";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/jwt")
        .join(name)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap()
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    sign(Algorithm::HS256, None, &key, claims)
}

fn rs256(private: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(&pem(private)).unwrap();
    sign(Algorithm::RS256, None, &key, claims)
}

/// A server of a script that prints its environment, with `--jwt-key
/// KEY` and `extra` flags.
fn env_server(dir: &Path, key: &Path, extra: &[&str]) -> Server {
    let program = script(dir, "env.sh", "#!/bin/sh\nenv\necho end of env\n");
    let mut args = vec!["--jwt-key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(program.to_str().unwrap());
    Server::start(&args)
}

fn secret_file(dir: &Path) -> PathBuf {
    let path = dir.join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    path
}

/// The environment the admitted client's child printed, and every line.
async fn child_env(ws: &mut Ws) -> (std::collections::BTreeMap<String, String>, Vec<String>) {
    let (lines, _) = texts_until_close(ws).await;
    (parse_env(&lines), lines)
}

#[tokio::test]
async fn a_token_admits_from_the_header_a_subprotocol_or_the_query_and_never_reaches_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let key = secret_file(dir.path());
    let server = env_server(dir.path(), &key, &["--jwt-query", "access_token"]);
    let token = hs256(&json!({
        "sub": "alice", "exp": now() + 300, "role": "admin", "groups": ["a", "b"],
    }));

    let bearer = format!("Bearer {token}");
    let mut ws = connect_with(&server.url("/room"), &[("Authorization", &bearer)])
        .await
        .expect("admitted by its Authorization header");
    let (env, lines) = child_env(&mut ws).await;
    assert_eq!(env["REMOTE_USER"], "alice");
    assert_eq!(env["AUTH_TYPE"], "Bearer");
    assert_eq!(env["WSPIPE_JWT_SUB"], "alice");
    assert_eq!(env["WSPIPE_JWT_ROLE"], "admin");
    assert_eq!(env["WSPIPE_JWT_GROUPS"], r#"["a","b"]"#);
    assert!(!env.contains_key("HTTP_AUTHORIZATION"));
    assert!(
        !lines.iter().any(|l| l.contains(&token)),
        "the token leaked"
    );

    // As a browser offers it: the client library checks that the 101
    // answers with a protocol it offered, as browsers do.
    let offered = format!("chat, bearer.{token}");
    let mut ws = connect_with(
        &server.url("/room"),
        &[("Sec-WebSocket-Protocol", &offered)],
    )
    .await
    .expect("admitted by its subprotocol");
    let (env, lines) = child_env(&mut ws).await;
    assert_eq!(env["REMOTE_USER"], "alice");
    assert_eq!(env["HTTP_SEC_WEBSOCKET_PROTOCOL"], "chat");
    assert!(
        !lines.iter().any(|l| l.contains(&token)),
        "the token leaked"
    );
    let request = upgrade_request(
        "/room",
        &format!("Sec-WebSocket-Protocol: bearer.{token}\r\n"),
    );
    let (status, head) = raw_request(server.addr, &request);
    assert_eq!(status, 101, "{head}");
    assert_eq!(
        header_values(&head, "sec-websocket-protocol"),
        [format!("bearer.{token}")]
    );

    let url = server.url(&format!("/room?x=1&access_token={token}&y=2"));
    let mut ws = connect_with(&url, &[])
        .await
        .expect("admitted by --jwt-query");
    let (env, lines) = child_env(&mut ws).await;
    assert_eq!(env["REMOTE_USER"], "alice");
    assert_eq!(env["QUERY_STRING"], "x=1&y=2");
    assert!(
        !lines.iter().any(|l| l.contains(&token)),
        "the token leaked"
    );
}

/// A raw upgrade request for `path` with `extra` header lines.
fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn expired_early_misaimed_forged_and_unsigned_tokens_get_401_and_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = env_server(
        dir.path(),
        &data("rsa-public.pem"),
        &[
            "--jwt-aud",
            "chat",
            "--jwt-iss",
            "https://login.example",
            "--realm",
            "Chat",
        ],
    );
    let t = now();
    let good = json!({"sub": "bob", "exp": t + 300, "aud": "chat", "iss": "https://login.example"});
    let with = |patch: Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let signed = rs256("rsa-private.pem", &good);
    // The unsigned form of a good token: alg none, no signature.
    let payload = signed.split('.').nth(1).unwrap();
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let confused = {
        let key = EncodingKey::from_secret(&pem("rsa-public.pem")).unwrap();
        sign(Algorithm::HS256, None, &key, &good)
    };
    let cases = [
        (
            "expired",
            rs256("rsa-private.pem", &with(json!({"exp": t - 120}))),
        ),
        (
            "not yet valid",
            rs256("rsa-private.pem", &with(json!({"nbf": t + 120}))),
        ),
        (
            "wrong audience",
            rs256("rsa-private.pem", &with(json!({"aud": "other"}))),
        ),
        (
            "wrong issuer",
            rs256("rsa-private.pem", &with(json!({"iss": "https://evil"}))),
        ),
        ("no exp", {
            let mut claims = good.clone();
            claims.as_object_mut().unwrap().remove("exp");
            rs256("rsa-private.pem", &claims)
        }),
        ("wrong key", rs256("other-rsa-private.pem", &good)),
        ("alg none", alg_none),
        ("HS256 with the RSA public key", confused),
        ("garbage", "not-a-token".to_owned()),
        (
            "over-long",
            format!("{}.{}.{}", "a".repeat(5000), "b".repeat(5000), "c"),
        ),
    ];
    for (what, token) in &cases {
        let bearer = format!("Bearer {token}");
        let status = handshake_status(&server.url("/"), &[("Authorization", &bearer)]).await;
        assert_eq!(status, 401, "{what}");
    }
    assert!(
        live_children(&server).is_empty(),
        "no child for a refused token"
    );
    let (status, head) = raw_request(server.addr, &upgrade_request("/", ""));
    assert_eq!(status, 401);
    assert_eq!(
        header_values(&head, "www-authenticate"),
        ["Bearer realm=\"Chat\""]
    );
    let (_, head) = raw_request(
        server.addr,
        &upgrade_request("/", "Authorization: Bearer a.b.c\r\n"),
    );
    assert_eq!(
        header_values(&head, "www-authenticate"),
        ["Bearer realm=\"Chat\", error=\"invalid_token\""]
    );
    for reason in [
        "token expired",
        "wrong audience",
        "bad signature",
        "algorithm not accepted",
    ] {
        let line = server.wait_log_async(&format!("refused: {reason}")).await;
        assert!(line.contains("status=401"), "{line}");
    }
    // And the good one still gets in.
    let bearer = format!("Bearer {signed}");
    let mut ws = connect_with(&server.url("/"), &[("Authorization", &bearer)])
        .await
        .expect("admitted");
    let (env, _) = child_env(&mut ws).await;
    assert_eq!(env["REMOTE_USER"], "bob");
    assert_eq!(env["WSPIPE_JWT_ISS"], "https://login.example");
}

#[tokio::test]
async fn ec_and_ed25519_keys_and_a_jwks_with_key_ids_verify_their_own_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let claims = json!({"sub": "carol", "exp": now() + 300});
    let ec = EncodingKey::from_ec_pem(&pem("ec-private.pem")).unwrap();
    let ed = EncodingKey::from_ed_pem(&pem("ed-private.pem")).unwrap();
    for (public, token) in [
        ("ec-public.pem", sign(Algorithm::ES256, None, &ec, &claims)),
        ("ed-public.pem", sign(Algorithm::EdDSA, None, &ed, &claims)),
    ] {
        let server = env_server(dir.path(), &data(public), &[]);
        let bearer = format!("Bearer {token}");
        let mut ws = connect_with(&server.url("/"), &[("Authorization", &bearer)])
            .await
            .unwrap_or_else(|e| panic!("{public}: {e}"));
        assert_eq!(child_env(&mut ws).await.0["REMOTE_USER"], "carol");
        // The other key's token is refused.
        let other = if public.starts_with("ec") {
            sign(Algorithm::EdDSA, None, &ed, &claims)
        } else {
            sign(Algorithm::ES256, None, &ec, &claims)
        };
        let bearer = format!("Bearer {other}");
        assert_eq!(
            handshake_status(&server.url("/"), &[("Authorization", &bearer)]).await,
            401
        );
    }

    use base64::Engine;
    let k = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let jwks = dir.path().join("jwks.json");
    let (first, second) = (
        "first secret, thirty-two bytes long",
        "second secret, thirty-two bytes long",
    );
    std::fs::write(
        &jwks,
        json!({"keys": [
            {"kty": "oct", "kid": "one", "alg": "HS256", "k": k(first)},
            {"kty": "oct", "kid": "two", "alg": "HS256", "k": k(second)},
        ]})
        .to_string(),
    )
    .unwrap();
    let server = env_server(dir.path(), &jwks, &[]);
    let by = |secret: &str, kid: Option<&str>| {
        let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
        format!("Bearer {}", sign(Algorithm::HS256, kid, &key, &claims))
    };
    for (token, status) in [
        (by(second, Some("two")), 101),
        (by(first, Some("one")), 101),
        (by(second, None), 101),
        (by(first, Some("two")), 401),
        (by(first, Some("three")), 401),
    ] {
        let got = handshake_status(&server.url("/"), &[("Authorization", &token)]).await;
        assert_eq!(got, status, "{token:.40}");
    }
    server.wait_log_async("refused: unknown key id").await;
}

#[tokio::test]
async fn a_channels_claim_limits_the_channels_a_client_may_join() {
    let dir = tempfile::tempdir().unwrap();
    let key = secret_file(dir.path());
    let server = Server::start(&["--jwt-key", key.to_str().unwrap(), "--pubsub"]);
    let token =
        hs256(&json!({"sub": "dave", "exp": now() + 300, "channels": ["/lobby", "/rooms/*"]}));
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    for (path, status) in [
        ("/lobby", 101),
        ("/rooms/7", 101),
        ("/rooms", 403),
        ("/admin", 403),
        ("/lobby/x", 403),
    ] {
        assert_eq!(
            handshake_status(&server.url(path), &auth).await,
            status,
            "{path}"
        );
    }
    server.wait_log_async("channel not permitted").await;
    // Unlimited without the claim.
    let open = hs256(&json!({"sub": "erin", "exp": now() + 300}));
    let bearer = format!("Bearer {open}");
    assert_eq!(
        handshake_status(&server.url("/admin"), &[("Authorization", &bearer)]).await,
        101
    );
}

#[test]
fn a_bad_key_or_jwt_flag_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "too short\n").unwrap();
    let missing = dir.path().join("missing");
    let private = data("rsa-private.pem");
    let key = secret_file(dir.path());
    for (args, needle) in [
        (
            vec!["--jwt-key", short.to_str().unwrap(), "cat"],
            "at least 32",
        ),
        (
            vec!["--jwt-key", missing.to_str().unwrap(), "cat"],
            "No such file",
        ),
        (
            vec!["--jwt-key", private.to_str().unwrap(), "cat"],
            "private key",
        ),
        (vec!["--jwt-aud", "chat", "cat"], "need --jwt-key"),
        (
            vec!["--jwt-key", key.to_str().unwrap(), "--jwt-query", "", "cat"],
            "cannot be empty",
        ),
        (
            vec![
                "--jwt-key",
                key.to_str().unwrap(),
                "--auth-cmd",
                "true",
                "cat",
            ],
            "only one of",
        ),
    ] {
        assert_usage_error(&args, needle);
    }
}
