//! `--jwt-key FILE`: the keys tokens are verified with, and for each the
//! algorithms it may verify. The algorithm is pinned by the key, never
//! taken on the token's word: an HMAC secret verifies only HS256/384/512,
//! an RSA key only RS*/PS*, an EC key ES256/ES384, an Ed25519 key EdDSA.
//! So `alg: none` (which the crate does not even parse) and the classic
//! confusion (HS256 "signed" with the RSA public key as the secret) are
//! refused whatever the token says.
//!
//! What the file holds is told from its first bytes, and a file that looks
//! like one kind but does not parse as it is an error, never tried as
//! another kind: a broken PEM public key must not become an HMAC secret.
//! - `-----BEGIN ... PUBLIC KEY-----` (or `CERTIFICATE`): an RSA, EC or
//!   Ed25519 public key;
//! - `{`: a JWKS (`{"keys":[...]}`) or a single JWK;
//! - anything else: an HMAC secret, the file's bytes without trailing
//!   whitespace, at least 32 bytes (RFC 7518 3.2: no shorter than the
//!   hash).

use std::path::Path;
use std::str::FromStr;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Shortest HMAC secret accepted, in bytes.
const MIN_SECRET: usize = 32;

/// Most keys a JWKS may hold: a token without `kid` is tried against each
/// key of its algorithm, so this bounds the work a forged token costs.
const MAX_KEYS: usize = 32;

/// One verification key.
#[derive(Clone)]
pub struct Key {
    /// Its `kid` (JWKS only): a token naming a `kid` is verified with that
    /// key alone.
    pub kid: Option<String>,
    pub decoding: DecodingKey,
    /// What it may verify (never empty).
    pub algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Why `--jwt-key` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--jwt-key {path}: {why}")]
pub struct KeyError {
    path: String,
    why: String,
}

/// Reads the keys of `path`.
pub fn load(path: &Path) -> Result<Vec<Key>, KeyError> {
    let fail = |why: String| KeyError {
        path: path.display().to_string(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    parse(&bytes).map_err(fail)
}

/// The keys a file's bytes hold.
fn parse(bytes: &[u8]) -> Result<Vec<Key>, String> {
    let start = bytes.trim_ascii_start();
    if start.starts_with(b"-----BEGIN") {
        pem(start).map(|key| vec![key])
    } else if start.starts_with(b"{") {
        jwks(start)
    } else {
        secret(bytes.trim_ascii_end()).map(|key| vec![key])
    }
}

/// An HMAC secret.
fn secret(secret: &[u8]) -> Result<Key, String> {
    if secret.len() < MIN_SECRET {
        return Err(format!(
            "an HMAC secret of {} bytes: give at least {MIN_SECRET} (RFC 7518 3.2)",
            secret.len()
        ));
    }
    let decoding = DecodingKey::from_secret(secret).map_err(|e| e.to_string())?;
    Ok(Key {
        kid: None,
        decoding,
        algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
    })
}

/// A PEM public key or certificate: RSA, EC or Ed25519.
fn pem(text: &[u8]) -> Result<Key, String> {
    let first_line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    if first_line.windows(7).any(|w| w == b"PRIVATE") {
        return Err("a private key: give the public key (openssl pkey -pubout)".into());
    }
    let (decoding, algorithms) = if let Ok(key) = DecodingKey::from_rsa_pem(text) {
        (key, rsa_algorithms())
    } else if let Ok(key) = DecodingKey::from_ec_pem(text) {
        (key, vec![Algorithm::ES256, Algorithm::ES384])
    } else if let Ok(key) = DecodingKey::from_ed_pem(text) {
        (key, vec![Algorithm::EdDSA])
    } else {
        return Err("not an RSA, EC or Ed25519 public key in PEM form".into());
    };
    Ok(Key {
        kid: None,
        decoding,
        algorithms,
    })
}

fn rsa_algorithms() -> Vec<Algorithm> {
    use Algorithm::*;
    vec![RS256, RS384, RS512, PS256, PS384, PS512]
}

/// A JWKS, or one JWK. Keys meant for encryption (`"use":"enc"`) are left
/// out; a set with no usable key is an error.
fn jwks(text: &[u8]) -> Result<Vec<Key>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let set: JwkSet = if value.get("keys").is_some() {
        serde_json::from_value(value).map_err(|e| format!("not a JWKS: {e}"))?
    } else {
        let jwk = serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?;
        JwkSet { keys: vec![jwk] }
    };
    if set.keys.len() > MAX_KEYS {
        return Err(format!("{} keys: at most {MAX_KEYS}", set.keys.len()));
    }
    let keys = set
        .keys
        .iter()
        .filter(|jwk| jwk.common.public_key_use != Some(PublicKeyUse::Encryption))
        .enumerate()
        .map(|(i, jwk)| jwk_key(jwk).map_err(|e| format!("key {}: {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err("no signature key in the set".into());
    }
    Ok(keys)
}

/// One JWK: its algorithms are its `alg` if it names one, else its type's.
fn jwk_key(jwk: &Jwk) -> Result<Key, String> {
    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => rsa_algorithms(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            ref other => return Err(format!("curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(oct) => {
            secret(&decoding_len_check(&oct.value)?)?;
            vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        }
        _ => return Err("unsupported key type".into()),
    };
    let algorithms = match jwk.common.key_algorithm {
        Some(named) => {
            let alg = algorithm_of(named)?;
            if !by_type.contains(&alg) {
                return Err(format!("alg {alg:?} does not fit the key's type"));
            }
            vec![alg]
        }
        None => by_type,
    };
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        decoding,
        algorithms,
    })
}

/// The bytes of an `oct` key's `k`, for the length rule secrets follow.
fn decoding_len_check(k: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(k.trim_end_matches('='))
        .map_err(|_| "\"k\" is not base64url".to_owned())
}

/// A JWK `alg` as a signature algorithm (`RSA-OAEP` and the other
/// encryption ones are not).
fn algorithm_of(named: KeyAlgorithm) -> Result<Algorithm, String> {
    let text = serde_json::to_value(named)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    Algorithm::from_str(&text).map_err(|_| format!("alg {text} is not a signature algorithm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PUBLIC: &str = include_str!("../../../tests/data/jwt/rsa-public.pem");
    const EC_PUBLIC: &str = include_str!("../../../tests/data/jwt/ec-public.pem");
    const ED_PUBLIC: &str = include_str!("../../../tests/data/jwt/ed-public.pem");
    const RSA_PRIVATE: &str = include_str!("../../../tests/data/jwt/rsa-private.pem");

    fn algs(bytes: &[u8]) -> Vec<Vec<Algorithm>> {
        parse(bytes)
            .unwrap()
            .into_iter()
            .map(|k| k.algorithms)
            .collect()
    }

    #[test]
    fn each_kind_of_key_pins_its_own_algorithms() {
        use Algorithm::*;
        let secret = format!("{}\n", "s".repeat(32));
        assert_eq!(algs(secret.as_bytes()), [vec![HS256, HS384, HS512]]);
        assert_eq!(algs(RSA_PUBLIC.as_bytes()), [rsa_algorithms()]);
        assert_eq!(algs(EC_PUBLIC.as_bytes()), [vec![ES256, ES384]]);
        assert_eq!(algs(ED_PUBLIC.as_bytes()), [vec![EdDSA]]);
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason_and_never_taken_for_a_secret() {
        for (bytes, why) in [
            ("short secret\n".to_owned(), "at least 32"),
            (RSA_PRIVATE.to_owned(), "private key"),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_owned(),
                "not an RSA, EC or Ed25519",
            ),
            ("{\"keys\": 3}".to_owned(), "not a JWKS"),
            ("{nope".to_owned(), "not JSON"),
            ("{\"keys\": []}".to_owned(), "no signature key"),
        ] {
            let err = parse(bytes.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{bytes:.30}: {err}");
        }
    }

    #[test]
    fn a_jwks_keeps_kids_honours_alg_and_skips_encryption_keys() {
        let k = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA";
        let set = format!(
            r#"{{"keys":[
              {{"kty":"oct","kid":"a","alg":"HS384","k":"{k}"}},
              {{"kty":"oct","kid":"b","k":"{k}"}},
              {{"kty":"oct","kid":"c","use":"enc","k":"{k}"}}
            ]}}"#
        );
        let keys = parse(set.as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("a"), Some("b")]);
        assert_eq!(keys[0].algorithms, [Algorithm::HS384]);
        assert_eq!(keys[1].algorithms.len(), 3);
        let mismatch = format!(r#"{{"kty":"oct","alg":"RS256","k":"{k}"}}"#);
        assert!(parse(mismatch.as_bytes())
            .unwrap_err()
            .contains("does not fit"));
        let short = r#"{"kty":"oct","k":"c2hvcnQ"}"#;
        assert!(parse(short.as_bytes()).unwrap_err().contains("at least 32"));
    }
}
