//! Which channels an admitted client may join: what an authenticator said
//! (`Wspipe-Channels: /a, /rooms/*` from `--auth-url`, a `CHANNELS=` line
//! from `--auth-cmd`, a `channels` claim in a JWT). A client joins the
//! channel of its URL path when it connects, so a path outside its list
//! is refused (403) before anything starts. No list means no limit.
//!
//! An entry is a channel name (`/room`: that channel), or a name ending in
//! `/*` (`/rooms/*`: every channel below `/rooms/`, not `/rooms` itself).
//! The names follow the hub's rules (a path, no control characters, no
//! `?`, at most 1024 bytes), checked here on their own so that this layer
//! stays below the hub.

/// Longest entry, in bytes: a channel name's bound.
const MAX_NAME: usize = 1024;

/// Most entries one client may be given.
const MAX_ENTRIES: usize = 256;

/// The channels a client may join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permits(Vec<Entry>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// One channel.
    Exact(String),
    /// Every channel whose name starts with this (it ends in `/`).
    Below(String),
}

/// Why a list of channels is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPermits {
    #[error(
        "channel {0:?}: a channel is a path of at most 1024 bytes, no control characters or '?'"
    )]
    Name(String),
    #[error("more than 256 channels")]
    TooMany,
}

impl Permits {
    /// A comma-separated list (`/a, /b, /rooms/*`); an empty one permits
    /// nothing.
    pub fn parse_list(list: &str) -> Result<Self, BadPermits> {
        Self::from_names(list.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }

    /// The entries of `names`, each checked.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, BadPermits> {
        let mut entries = Vec::new();
        for name in names {
            if entries.len() == MAX_ENTRIES {
                return Err(BadPermits::TooMany);
            }
            entries.push(entry(name)?);
        }
        Ok(Permits(entries))
    }

    /// Whether the channel `name` may be joined.
    pub fn allows(&self, name: &str) -> bool {
        self.0.iter().any(|entry| match entry {
            Entry::Exact(exact) => exact == name,
            Entry::Below(prefix) => name.len() > prefix.len() && name.starts_with(prefix.as_str()),
        })
    }
}

fn entry(name: &str) -> Result<Entry, BadPermits> {
    let valid = name.starts_with('/')
        && name.len() <= MAX_NAME
        && !name.chars().any(|c| c.is_control() || c == '?');
    if !valid {
        return Err(BadPermits::Name(name.chars().take(64).collect()));
    }
    Ok(match name.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => Entry::Below(prefix.to_owned()),
        _ => Entry::Exact(name.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_and_subtrees() {
        let permits = Permits::parse_list(" /lobby, /rooms/* ,").unwrap();
        for (name, allowed) in [
            ("/lobby", true),
            ("/lobby/x", false),
            ("/rooms/a", true),
            ("/rooms/a/b", true),
            ("/rooms/", false),
            ("/rooms", false),
            ("/roomsx", false),
            ("/other", false),
        ] {
            assert_eq!(permits.allows(name), allowed, "{name}");
        }
        assert!(!Permits::parse_list("").unwrap().allows("/"));
        // A `*` not after a `/` is a plain character of an exact name.
        assert!(Permits::parse_list("/a*").unwrap().allows("/a*"));
        assert!(!Permits::parse_list("/a*").unwrap().allows("/ab"));
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in ["room", "/a?b", "/a\nb"] {
            assert!(Permits::parse_list(bad).is_err(), "{bad:?}");
        }
        let long = format!("/{}", "a".repeat(1024));
        assert!(Permits::parse_list(&long).is_err());
        let many = vec!["/a"; 257].join(",");
        assert_eq!(Permits::parse_list(&many), Err(BadPermits::TooMany));
    }
}
