//! The payloads of `--history` with `--redis`: numbered messages and
//! fences, two more kinds of the format in [`super::codec`] (kind bytes an
//! instance that does not know them leaves alone).
//!
//! ```text
//! kind 3, a numbered message (built by the publish script in Redis):
//!   3 | nonce (8, big-endian) | N | name (N) | SEQ (decimal) TAB EPOCH TAB | BODY
//! kind 4, a fence (published by the resume script):
//!   4 | nonce (8, big-endian) | token (8, big-endian)
//! BODY: 1 then UTF-8 text, or 2 then bytes (what the stream keeps too)
//! ```
//!
//! A numbered message is delivered by every instance, its publisher's
//! included: its number comes from Redis, so no instance can deliver it
//! before Redis has given it one. A fence tells the instance whose nonce
//! it carries that every numbered message Redis numbered before a resume
//! read has come through (Redis hands a subscriber its messages in the
//! order the scripts ran).

use bytes::Bytes;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::codec::Origin;
use super::target::MAX_INSTANCE;

/// The kind byte of a numbered message.
pub const NUMBERED: u8 = 3;
/// The kind byte of a fence.
pub const FENCE: u8 = 4;

const TEXT: u8 = 1;
const BINARY: u8 = 2;
const HEADER: usize = 1 + 8 + 1;
/// Most digits of a seq, and most bytes of an epoch, read back.
const MAX_SEQ_DIGITS: usize = 20;
const MAX_EPOCH: usize = 64;

/// A numbered message, decoded.
#[derive(Debug, PartialEq)]
pub struct Numbered<'a> {
    pub nonce: u64,
    pub name: &'a str,
    pub seq: u64,
    pub epoch: &'a str,
    pub message: Message,
}

/// Why a numbered payload or a fence was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NumberedError {
    #[error("shorter than its header")]
    Short,
    #[error("bad instance name")]
    Name,
    #[error("bad sequence number")]
    Seq,
    #[error("bad epoch")]
    Epoch,
    #[error("unknown body kind")]
    Body,
    #[error("text that is not UTF-8")]
    NotUtf8,
}

/// What goes before the seq: kind, nonce, name (the script appends the
/// rest).
pub fn header(origin: &Origin) -> Vec<u8> {
    let name = origin.name.as_str().as_bytes();
    let mut out = Vec::with_capacity(HEADER + name.len());
    out.push(NUMBERED);
    out.extend_from_slice(&origin.nonce.to_be_bytes());
    // InstanceName holds at most MAX_INSTANCE (64) bytes.
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out
}

/// What the stream keeps of `message`, and what follows the epoch;
/// `None` for control frames.
pub fn body(message: &Message) -> Option<Vec<u8>> {
    let (kind, data): (u8, &[u8]) = match message {
        Message::Text(text) => (TEXT, text.as_bytes()),
        Message::Binary(data) => (BINARY, data),
        _ => return None,
    };
    let mut out = Vec::with_capacity(1 + data.len());
    out.push(kind);
    out.extend_from_slice(data);
    Some(out)
}

/// The message a body holds.
pub fn message_of(body: &[u8]) -> Result<Message, NumberedError> {
    let (&kind, data) = body.split_first().ok_or(NumberedError::Body)?;
    let data = Bytes::copy_from_slice(data);
    match kind {
        TEXT => Ok(Message::Text(
            Utf8Bytes::try_from(data).map_err(|_| NumberedError::NotUtf8)?,
        )),
        BINARY => Ok(Message::Binary(data)),
        _ => Err(NumberedError::Body),
    }
}

/// A kind-3 payload (the caller checked the kind byte).
pub fn decode(payload: &[u8]) -> Result<Numbered<'_>, NumberedError> {
    if payload.len() < HEADER {
        return Err(NumberedError::Short);
    }
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&payload[1..9]);
    let len = usize::from(payload[9]);
    if len == 0 || len > MAX_INSTANCE {
        return Err(NumberedError::Name);
    }
    let name = payload
        .get(HEADER..HEADER + len)
        .and_then(|n| std::str::from_utf8(n).ok())
        .ok_or(NumberedError::Name)?;
    let rest = &payload[HEADER + len..];
    let (seq, rest) = field(rest, MAX_SEQ_DIGITS).ok_or(NumberedError::Seq)?;
    let seq: u64 = std::str::from_utf8(seq)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .ok_or(NumberedError::Seq)?;
    let (epoch, body) = field(rest, MAX_EPOCH).ok_or(NumberedError::Epoch)?;
    let epoch = std::str::from_utf8(epoch)
        .ok()
        .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or(NumberedError::Epoch)?;
    Ok(Numbered {
        nonce: u64::from_be_bytes(nonce),
        name,
        seq,
        epoch,
        message: message_of(body)?,
    })
}

/// The bytes before the first TAB (at most `max` of them), and those
/// after it.
fn field(bytes: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().take(max + 1).position(|&b| b == b'\t')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// A fence for `token` of the instance `nonce`.
pub fn fence(nonce: u64, token: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(FENCE);
    out.extend_from_slice(&nonce.to_be_bytes());
    out.extend_from_slice(&token.to_be_bytes());
    out
}

/// The nonce and token of a kind-4 payload.
pub fn decode_fence(payload: &[u8]) -> Result<(u64, u64), NumberedError> {
    if payload.len() != 17 {
        return Err(NumberedError::Short);
    }
    let mut nonce = [0u8; 8];
    let mut token = [0u8; 8];
    nonce.copy_from_slice(&payload[1..9]);
    token.copy_from_slice(&payload[9..17]);
    Ok((u64::from_be_bytes(nonce), u64::from_be_bytes(token)))
}

#[cfg(test)]
mod tests {
    use super::super::target::InstanceName;
    use super::*;

    fn origin() -> Origin {
        Origin {
            nonce: 7,
            name: InstanceName::parse("web1").unwrap(),
        }
    }

    /// What the publish script builds.
    fn payload(seq: &str, epoch: &str, message: &Message) -> Vec<u8> {
        let mut p = header(&origin());
        p.extend_from_slice(format!("{seq}\t{epoch}\t").as_bytes());
        p.extend_from_slice(&body(message).unwrap());
        p
    }

    #[test]
    fn a_numbered_message_survives_the_trip() {
        for message in [
            Message::text("hé\tllo"),
            Message::binary(vec![0u8, 9, 255]),
            Message::text(""),
        ] {
            let p = payload("42", "ab12", &message);
            assert_eq!(p[0], NUMBERED);
            let d = decode(&p).unwrap();
            assert_eq!((d.nonce, d.name, d.seq, d.epoch), (7, "web1", 42, "ab12"));
            assert_eq!(d.message, message);
        }
        assert!(body(&Message::Ping(Bytes::new())).is_none());
        assert_eq!(decode_fence(&fence(5, 9)), Ok((5, 9)));
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        let m = Message::text("x");
        assert_eq!(decode(b"\x03").unwrap_err(), NumberedError::Short);
        assert_eq!(
            decode(&payload("0", "e", &m)).unwrap_err(),
            NumberedError::Seq
        );
        assert_eq!(
            decode(&payload("x1", "e", &m)).unwrap_err(),
            NumberedError::Seq
        );
        assert_eq!(
            decode(&payload("1", "a b", &m)).unwrap_err(),
            NumberedError::Epoch
        );
        let mut p = payload("1", "e", &m);
        p.truncate(p.len() - 2);
        assert_eq!(decode(&p).unwrap_err(), NumberedError::Body);
        let mut p = payload("1", "e", &Message::text("x"));
        p.push(0xff);
        assert_eq!(decode(&p).unwrap_err(), NumberedError::NotUtf8);
        let mut p = header(&origin());
        p.extend_from_slice(&[b'1'; 40]);
        assert_eq!(decode(&p).unwrap_err(), NumberedError::Seq);
        assert_eq!(decode_fence(b"\x04abc").unwrap_err(), NumberedError::Short);
    }
}
