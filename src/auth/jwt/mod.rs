//! `--jwt-key FILE`: a signed JSON Web Token (RFC 7519) admits. Verified
//! by the `jsonwebtoken` crate with the algorithm pinned by the key
//! ([`keys`]); the token is looked for where [`token`] says.
//!
//! Checked: the signature, `exp` (required: a token that never expires is
//! refused), `nbf`, both with [`LEEWAY`] for clocks a little apart, and
//! with `--jwt-aud` / `--jwt-iss` the audience and issuer (then required).
//! A token with an `aud` when no `--jwt-aud` is given is refused, as RFC
//! 7519 4.1.3 says: the server cannot tell it is meant for it.
//!
//! Admitted, the claims reach the child: `sub` as REMOTE_USER, and every
//! top-level claim NAME as `WSPIPE_JWT_NAME` (upper-cased, `-` as `_`;
//! names that are not letters, digits and `_` after that are left out),
//! a string as it is, anything else as compact JSON. A `channels` claim
//! (an array of names, or a comma-separated string) limits the channels
//! the client may join.

pub mod keys;
pub mod token;

use http::header::{HeaderMap, HeaderValue};
use http::Uri;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::channels::Permits;
use super::command::valid_name;
use keys::Key;

/// Seconds a token's `exp` and `nbf` may be off by: clocks of the issuer
/// and this server a little apart, not tokens kept alive.
pub const LEEWAY: u64 = 10;

/// The configured verification.
#[derive(Debug)]
pub struct Jwt {
    keys: Vec<Key>,
    /// `--jwt-aud`: one of them must be in `aud`; empty when not given.
    audience: Vec<String>,
    /// `--jwt-iss`: `iss` must be one of them; empty when not given.
    issuer: Vec<String>,
    /// `--jwt-query NAME`.
    query: Option<String>,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `sub`, when it is a string.
    pub user: Option<String>,
    pub vars: Vec<(String, String)>,
    /// A `channels` claim.
    pub channels: Option<Permits>,
    /// The `bearer.` subprotocol the token came in, for the 101.
    pub protocol: Option<HeaderValue>,
}

/// Why a token is refused (for the log and the 401's body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    /// Whether a token was given at all: RFC 6750 3.1 answers an invalid
    /// one with `error="invalid_token"`, a missing one without.
    pub token_given: bool,
}

impl Jwt {
    pub fn new(
        keys: Vec<Key>,
        audience: Vec<String>,
        issuer: Vec<String>,
        query: Option<String>,
    ) -> Self {
        Jwt {
            keys,
            audience,
            issuer,
            query,
        }
    }

    /// `--jwt-query`, for [`token::scrub`].
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Verifies the request's token.
    pub fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<Verified, Refused> {
        let found = token::find(headers, uri, self.query()).map_err(|reason| Refused {
            reason,
            token_given: reason != "token required",
        })?;
        let refused = |reason| Refused {
            reason,
            token_given: true,
        };
        let claims = self.verify(&found.token).map_err(refused)?;
        let channels = claims
            .get("channels")
            .map(|value| permits(value).ok_or("a malformed channels claim"))
            .transpose()
            .map_err(refused)?;
        Ok(Verified {
            user: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
            vars: vars(&claims),
            channels,
            protocol: found.protocol,
        })
    }

    /// The claims of a token one of the keys signed, still valid.
    fn verify(&self, token: &str) -> Result<Map<String, Value>, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
        let mut candidates = self
            .keys
            .iter()
            .filter(|key| header.kid.is_none() || key.kid == header.kid)
            .peekable();
        if candidates.peek().is_none() {
            return Err("unknown key id");
        }
        let mut candidates = candidates
            .filter(|key| key.algorithms.contains(&header.alg))
            .peekable();
        if candidates.peek().is_none() {
            return Err("algorithm not accepted for this key");
        }
        let mut reason = "bad signature";
        for key in candidates {
            let validation = self.validation(&key.algorithms);
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => {}
                // The signature held with this key: its claims are the
                // reason, whatever the other keys say.
                Err(e) => reason = claim_reason(e.kind()),
            }
        }
        Err(reason)
    }

    fn validation(&self, algorithms: &[Algorithm]) -> Validation {
        let mut v = Validation::new(algorithms[0]);
        v.algorithms = algorithms.to_vec();
        v.leeway = LEEWAY;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if !self.audience.is_empty() {
            v.set_audience(&self.audience);
            required.push("aud");
        }
        if !self.issuer.is_empty() {
            v.set_issuer(&self.issuer);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        v
    }
}

/// A claims failure, in words.
fn claim_reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim (exp, aud, iss)",
        ErrorKind::InvalidAlgorithm => "algorithm not accepted for this key",
        _ => "invalid token",
    }
}

/// A `channels` claim: an array of names, or one comma-separated string.
fn permits(value: &Value) -> Option<Permits> {
    match value {
        Value::String(list) => Permits::parse_list(list).ok(),
        Value::Array(items) => {
            let names: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            Permits::from_names(names?).ok()
        }
        _ => None,
    }
}

/// `WSPIPE_JWT_NAME` for every claim whose name fits.
fn vars(claims: &Map<String, Value>) -> Vec<(String, String)> {
    claims
        .iter()
        .filter_map(|(name, value)| {
            let name = name.to_ascii_uppercase().replace('-', "_");
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (valid_name(&name) && !text.contains('\0'))
                .then(|| (format!("WSPIPE_JWT_{name}"), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const RSA_PRIVATE: &[u8] = include_bytes!("../../../tests/data/jwt/rsa-private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../../../tests/data/jwt/rsa-public.pem");
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn jwt_with(file: &[u8], aud: &[&str]) -> Jwt {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, file).unwrap();
        let keys = keys::load(&path).unwrap();
        let aud = aud.iter().map(|s| s.to_string()).collect();
        Jwt::new(keys, aud, Vec::new(), Some("token".into()))
    }

    fn check(jwt: &Jwt, token: &str) -> Result<Verified, &'static str> {
        let uri: Uri = format!("/?token={token}").parse().unwrap();
        jwt.check(&HeaderMap::new(), &uri).map_err(|r| r.reason)
    }

    fn hs256(claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn claims_become_variables_and_channels() {
        let jwt = jwt_with(SECRET, &[]);
        let token = hs256(&json!({
            "sub": "alice", "exp": now() + 60, "role": "admin",
            "team-id": 7, "groups": ["a", "b"], "bad name": 1,
            "channels": ["/lobby", "/rooms/*"],
        }));
        let verified = check(&jwt, &token).unwrap();
        assert_eq!(verified.user.as_deref(), Some("alice"));
        let vars: std::collections::HashMap<_, _> = verified.vars.into_iter().collect();
        assert_eq!(vars["WSPIPE_JWT_SUB"], "alice");
        assert_eq!(vars["WSPIPE_JWT_ROLE"], "admin");
        assert_eq!(vars["WSPIPE_JWT_TEAM_ID"], "7");
        assert_eq!(vars["WSPIPE_JWT_GROUPS"], r#"["a","b"]"#);
        assert!(!vars.keys().any(|k| k.contains(' ')));
        let channels = verified.channels.unwrap();
        assert!(channels.allows("/rooms/1") && !channels.allows("/admin"));
    }

    #[test]
    fn time_audience_and_algorithm_are_enforced() {
        let jwt = jwt_with(SECRET, &["chat"]);
        let t = now();
        for (claims, reason) in [
            (json!({"exp": t - 60, "aud": "chat"}), "token expired"),
            (
                json!({"exp": t + 60, "nbf": t + 60, "aud": "chat"}),
                "token not yet valid",
            ),
            (json!({"exp": t + 60, "aud": "other"}), "wrong audience"),
            (
                json!({"exp": t + 60}),
                "token lacks a required claim (exp, aud, iss)",
            ),
            (
                json!({"aud": "chat"}),
                "token lacks a required claim (exp, aud, iss)",
            ),
            (
                json!({"exp": t + 60, "aud": "chat", "channels": 5}),
                "a malformed channels claim",
            ),
        ] {
            assert_eq!(
                check(&jwt, &hs256(&claims)).unwrap_err(),
                reason,
                "{claims}"
            );
        }
        // Within the leeway.
        let fresh = json!({"exp": t - 2, "nbf": t + 2, "aud": "chat"});
        assert!(check(&jwt, &hs256(&fresh)).is_ok());
        // A token meant for some audience when none is configured.
        let open = jwt_with(SECRET, &[]);
        let aimed = json!({"exp": t + 60, "aud": "chat"});
        assert_eq!(check(&open, &hs256(&aimed)).unwrap_err(), "wrong audience");
    }

    #[test]
    fn forged_tokens_are_refused() {
        let rsa = jwt_with(RSA_PUBLIC, &[]);
        let claims = json!({"sub": "mallory", "exp": now() + 60});
        let good = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        )
        .unwrap();
        assert!(check(&rsa, &good).is_ok());
        // HS256 "signed" with the public key as the secret.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(RSA_PUBLIC).unwrap(),
        )
        .unwrap();
        assert_eq!(
            check(&rsa, &confused).unwrap_err(),
            "algorithm not accepted for this key"
        );
        // alg none: the good token's claims with no signature.
        let mut parts = good.split('.');
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
        let unsigned = format!("{none_header}.{}.", parts.nth(1).unwrap());
        assert_eq!(check(&rsa, &unsigned).unwrap_err(), "malformed token");
        // A flipped signature byte, and garbage.
        let mut tampered = good.clone().into_bytes();
        let middle = tampered.len() - 40;
        tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(check(&rsa, &tampered).unwrap_err(), "bad signature");
        assert_eq!(check(&rsa, "a.b.c").unwrap_err(), "malformed token");
        assert_eq!(check(&rsa, "nodots").unwrap_err(), "malformed token");
    }
}
