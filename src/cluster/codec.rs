//! How one published message travels through Redis.
//!
//! The Redis channel is `wspipe:` followed by the channel name
//! (`wspipe:/room`), so that `redis-cli psubscribe 'wspipe:*'` shows the
//! traffic by channel. The payload is binary, one header then the
//! message's bytes untouched:
//!
//! ```text
//! offset  size  field
//! 0       1     kind: 1 text, 2 binary (the type bytes of --framed)
//! 1       8     origin nonce: random per process start, big-endian
//! 9       1     N, the length of the origin's instance name (1..=64)
//! 10      N     the origin's instance name (ASCII)
//! 10+N    ...   the message, as published (UTF-8 for text)
//! ```
//!
//! An instance drops what carries its own nonce (it served its own members
//! directly). The nonce, not the name, says "mine": two instances given the
//! same name by mistake still hear each other (and the log says so). A
//! payload that does not parse, or text that is not UTF-8, is dropped and
//! counted; a kind byte other than 1 or 2 is left for later formats.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::target::{InstanceName, MAX_INSTANCE};

/// Prefix of every Redis channel wspipe publishes on.
pub const PREFIX: &str = "wspipe:";

/// The pattern that matches all of them.
pub const PATTERN: &str = "wspipe:*";

const TEXT: u8 = 1;
const BINARY: u8 = 2;
const HEADER: usize = 1 + 8 + 1;

/// Who published: the instance's name and a nonce of this run of it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub nonce: u64,
    pub name: InstanceName,
}

/// One decoded payload.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub nonce: u64,
    pub name: &'a str,
    pub message: Message,
}

/// Why a payload was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than its header")]
    Short,
    #[error("unknown kind byte {0}")]
    Kind(u8),
    #[error("bad instance name")]
    Name,
    #[error("text that is not UTF-8")]
    NotUtf8,
}

/// The Redis channel for a wspipe channel.
pub fn redis_channel(channel: &str) -> String {
    format!("{PREFIX}{channel}")
}

/// The wspipe channel a Redis channel carries, if it is one of ours.
pub fn channel_of(redis_channel: &str) -> Option<&str> {
    redis_channel.strip_prefix(PREFIX)
}

/// The payload for `message`; `None` for control frames, which are never
/// published.
pub fn encode(origin: &Origin, message: &Message) -> Option<Vec<u8>> {
    let (kind, data): (u8, &[u8]) = match message {
        Message::Text(text) => (TEXT, text.as_bytes()),
        Message::Binary(data) => (BINARY, data),
        _ => return None,
    };
    let name = origin.name.as_str().as_bytes();
    let mut out = Vec::with_capacity(HEADER + name.len() + data.len());
    out.push(kind);
    out.extend_from_slice(&origin.nonce.to_be_bytes());
    // InstanceName holds at most MAX_INSTANCE (64) bytes.
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(data);
    Some(out)
}

pub fn decode(payload: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    if payload.len() < HEADER {
        return Err(DecodeError::Short);
    }
    let kind = payload[0];
    if kind != TEXT && kind != BINARY {
        return Err(DecodeError::Kind(kind));
    }
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&payload[1..9]);
    let len = usize::from(payload[9]);
    if len == 0 || len > MAX_INSTANCE {
        return Err(DecodeError::Name);
    }
    let name = payload
        .get(HEADER..HEADER + len)
        .and_then(|n| std::str::from_utf8(n).ok())
        .ok_or(DecodeError::Name)?;
    let data = Bytes::copy_from_slice(&payload[HEADER + len..]);
    let message = if kind == TEXT {
        Message::Text(Utf8Bytes::try_from(data).map_err(|_| DecodeError::NotUtf8)?)
    } else {
        Message::Binary(data)
    };
    Ok(Decoded {
        nonce: u64::from_be_bytes(nonce),
        name,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            nonce: 0x0102_0304_0506_0708,
            name: InstanceName::parse("web1:8080").unwrap(),
        }
    }

    #[test]
    fn text_and_binary_survive_the_trip() {
        for message in [
            Message::text("héllo"),
            Message::text(""),
            Message::binary(vec![0u8, 255, 10, 13]),
            Message::binary(Vec::new()),
        ] {
            let bytes = encode(&origin(), &message).unwrap();
            let d = decode(&bytes).unwrap();
            assert_eq!((d.nonce, d.name), (0x0102_0304_0506_0708, "web1:8080"));
            assert_eq!(d.message, message);
        }
        assert!(encode(&origin(), &Message::Ping(Bytes::new())).is_none());
    }

    #[test]
    fn the_layout_is_as_documented() {
        let bytes = encode(&origin(), &Message::text("hi")).unwrap();
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..9], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(bytes[9], 9);
        assert_eq!(&bytes[10..19], b"web1:8080");
        assert_eq!(&bytes[19..], b"hi");
        assert_eq!(redis_channel("/room"), "wspipe:/room");
        assert_eq!(channel_of("wspipe:/room"), Some("/room"));
        assert_eq!(channel_of("other:/room"), None);
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert_eq!(decode(b"").unwrap_err(), DecodeError::Short);
        assert_eq!(
            decode(b"garbage!!!xx").unwrap_err(),
            DecodeError::Kind(b'g')
        );
        let mut bytes = encode(&origin(), &Message::text("hi")).unwrap();
        bytes[9] = 200;
        assert_eq!(decode(&bytes).unwrap_err(), DecodeError::Name);
        bytes[9] = 0;
        assert_eq!(decode(&bytes).unwrap_err(), DecodeError::Name);
        let mut bytes = encode(&origin(), &Message::text("hi")).unwrap();
        bytes.push(0xff);
        assert_eq!(decode(&bytes).unwrap_err(), DecodeError::NotUtf8);
        let cut = encode(&origin(), &Message::text("hi")).unwrap();
        assert_eq!(decode(&cut[..12]).unwrap_err(), DecodeError::Name);
    }
}
