//! An htpasswd file (`--basic-auth FILE`), as Apache's `htpasswd` writes
//! it: one `user:hash` per line, `#` comments and blank lines skipped.
//!
//! Accepted hashes, each checked by a maintained crate: bcrypt (`$2y$`,
//! `$2b$`, `$2a$`: `htpasswd -B`, the one to use), SHA-512-crypt and
//! SHA-256-crypt (`$6$`, `$5$`: `mkpasswd`, `openssl passwd -6`), and
//! `{SHA}` (`htpasswd -s`, unsalted: accepted for old files). Apache's
//! MD5 (`$apr1$`) and plain text are refused when the file is read, with
//! the line: no crate we trust verifies apr1, and a weak hash is better
//! replaced than silently accepted.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use sha1::{Digest, Sha1};
use sha_crypt::{PasswordVerifier, ShaCrypt};
use subtle::ConstantTimeEq;

/// One user's stored hash, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    Bcrypt(String),
    ShaCrypt(String),
    /// The SHA-1 digest `{SHA}` entries hold, decoded.
    Sha1([u8; 20]),
}

/// The users of an htpasswd file and their hashes.
#[derive(Debug, Clone)]
pub struct Htpasswd {
    users: HashMap<String, Hash>,
}

/// Why an htpasswd file cannot be used: with its line, for the one-line
/// error at start.
#[derive(Debug)]
pub struct BadFile {
    file: String,
    /// 0 when the file as a whole is the problem (unreadable, empty).
    line: usize,
    reason: String,
}

impl std::fmt::Display for BadFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file, self.reason),
            line => write!(f, "{}:{line}: {}", self.file, self.reason),
        }
    }
}

impl std::error::Error for BadFile {}

/// A bcrypt hash of a password nobody has, checked for unknown users so
/// that they take as long as known ones (no user enumeration by timing).
/// Cost 10 (`htpasswd -B -C 10`): what a careful admin uses; the tool's
/// default of 5 is cheaper, so an unknown user may take longer, never
/// shorter.
const DECOY: &str = "$2y$10$.Z6NeFE0Jc9PMqHHEQNCGu.2MVVNH5ba/6LelKSfZPnrBy1aPuxPO";

impl Htpasswd {
    /// Reads and checks the whole file.
    pub fn load(path: &Path) -> Result<Self, BadFile> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| BadFile {
            file: file.clone(),
            line: 0,
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|(line, reason)| BadFile { file, line, reason })
    }

    /// Parses the text of a file; an error names its line (1-based).
    fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let bad = |reason: String| (i + 1, reason);
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| bad("not user:hash".into()))?;
            if user.is_empty() {
                return Err(bad("empty user name".into()));
            }
            let hash =
                parse_hash(hash).map_err(|reason| bad(format!("user {user:?}: {reason}")))?;
            if users.insert(user.to_owned(), hash).is_some() {
                return Err(bad(format!("user {user:?} is listed twice")));
            }
        }
        if users.is_empty() {
            return Err((0, "no users".into()));
        }
        Ok(Htpasswd { users })
    }

    /// Whether `password` is `user`'s. Slow on purpose for bcrypt and
    /// SHA-crypt (run it off the async workers); an unknown user costs a
    /// decoy bcrypt check, so that it answers no faster than a known one.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => check(hash, password),
            None => {
                let _ = bcrypt::verify(password, DECOY);
                false
            }
        }
    }

    /// How many users the file lists.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Never true: a file without users is refused.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

fn parse_hash(hash: &str) -> Result<Hash, String> {
    if hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$") {
        // A malformed one would fail every check: say so now instead.
        return match bcrypt::verify("", hash) {
            Ok(_) => Ok(Hash::Bcrypt(hash.to_owned())),
            Err(e) => Err(format!("bad bcrypt hash: {e}")),
        };
    }
    if hash.starts_with("$5$") || hash.starts_with("$6$") {
        return match ShaCrypt::default().verify_password(b"", hash) {
            Ok(()) | Err(sha_crypt::password_hash::Error::PasswordInvalid) => {
                Ok(Hash::ShaCrypt(hash.to_owned()))
            }
            Err(e) => Err(format!("bad SHA-crypt hash: {e}")),
        };
    }
    if let Some(digest) = hash.strip_prefix("{SHA}") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(digest)
            .map_err(|e| format!("bad {{SHA}} hash: {e}"))?;
        let digest: [u8; 20] = bytes
            .try_into()
            .map_err(|_| "bad {SHA} hash: not 20 bytes".to_owned())?;
        return Ok(Hash::Sha1(digest));
    }
    if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
        return Err(
            "MD5 hashes are not accepted: re-create the entry with htpasswd -B (bcrypt)".into(),
        );
    }
    Err(
        "not a bcrypt, SHA-crypt or {SHA} hash (plain text and crypt(3) DES are not accepted)"
            .into(),
    )
}

fn check(hash: &Hash, password: &str) -> bool {
    match hash {
        Hash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        Hash::ShaCrypt(hash) => ShaCrypt::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok(),
        Hash::Sha1(digest) => {
            let got = Sha1::digest(password.as_bytes());
            got.as_slice().ct_eq(digest).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lines: &[String]) -> String {
        lines.join("\n")
    }

    #[test]
    fn each_accepted_hash_admits_its_password_only() {
        let bcrypt = bcrypt::hash("alice pw", 4).unwrap();
        let sha = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(b"carol pw"));
        let text = file(&[
            "# users".into(),
            format!("alice:{bcrypt}"),
            String::new(),
            // `openssl passwd -6 -salt saltsalt 'bob pw'`
            "bob:$6$saltsalt$Qx6ebRLR.Q8vV6/KFc0R1IzL8/U16AfLRbbd/TD9FJuNbRwrX/mv2b/55OkQP0pxU7hT9gPdreQMWwE9l8g0C.".into(),
            format!("carol:{{SHA}}{sha}"),
        ]);
        let users = Htpasswd::parse(&text).unwrap();
        assert_eq!(users.len(), 3);
        assert!(users.verify("alice", "alice pw"));
        assert!(!users.verify("alice", "alice pw "));
        assert!(users.verify("bob", "bob pw"));
        assert!(!users.verify("bob", "alice pw"));
        assert!(users.verify("carol", "carol pw"));
        assert!(!users.verify("carol", ""));
        assert!(!users.verify("dave", "alice pw"), "unknown user");
    }

    #[test]
    fn weak_malformed_and_duplicate_entries_are_refused_with_their_line() {
        let bcrypt = bcrypt::hash("x", 4).unwrap();
        for (text, line, needle) in [
            (
                "alice:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00".to_owned(),
                1,
                "MD5",
            ),
            ("\nalice:secret".to_owned(), 2, "plain text"),
            ("nocolon".to_owned(), 1, "user:hash"),
            (":{SHA}x".to_owned(), 1, "empty user"),
            ("a:{SHA}!!".to_owned(), 1, "{SHA}"),
            ("a:$2y$10$short".to_owned(), 1, "bcrypt"),
            (format!("a:{bcrypt}\na:{bcrypt}"), 2, "twice"),
            ("# nobody\n".to_owned(), 0, "no users"),
        ] {
            let (at, reason) = Htpasswd::parse(&text).unwrap_err();
            assert_eq!(at, line, "{text:?}: {reason}");
            assert!(reason.contains(needle), "{text:?}: {reason}");
        }
    }

    #[test]
    fn the_decoy_is_a_valid_bcrypt_hash() {
        assert_eq!(bcrypt::verify("anything", DECOY).ok(), Some(false));
    }
}
