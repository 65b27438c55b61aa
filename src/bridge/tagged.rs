//! `--passstderr`: every message to the client names the stream it came
//! from, as websocketd 0.5 does it: `{"stream":"stdout","data":"LINE"}` and
//! `{"stream":"stderr","data":"LINE"}`, one object per line.

use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

/// The child's stream a tagged line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

#[derive(Serialize)]
struct Tagged<'a> {
    stream: Stream,
    data: &'a str,
}

/// One line as a tagged text message. serde_json does the escaping
/// (quotes, backslashes, every control character as `\uXXXX`), so any line
/// makes valid JSON; bytes that are not UTF-8 become U+FFFD first, as in
/// untagged text mode, since a JSON string (and a text frame) is UTF-8.
pub(crate) fn tagged(stream: Stream, line: &[u8]) -> Message {
    let data = String::from_utf8_lossy(line);
    let json = serde_json::to_string(&Tagged {
        stream,
        data: &data,
    })
    // Serializing a unit enum and a &str into a String cannot fail: serde_json
    // errors only come from I/O, non-string map keys or failing Serialize impls.
    .expect("a stream name and a string always serialize");
    Message::Text(json.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(message: Message) -> serde_json::Value {
        let text = message.into_text().expect("a text message");
        serde_json::from_str(text.as_str()).expect("valid JSON")
    }

    #[test]
    fn any_line_round_trips_through_json() {
        let line = "q\"uote \\ tab\t cr\r nul\0 bell\x07 esc\x1b é 日本 😀";
        let value = decode(tagged(Stream::Stderr, line.as_bytes()));
        assert_eq!(value["stream"], "stderr");
        assert_eq!(value["data"], line);
        assert_eq!(value.as_object().map(|o| o.len()), Some(2));
    }

    #[test]
    fn field_order_and_names_are_websocketds() {
        let text = tagged(Stream::Stdout, b"hi").into_text().expect("text");
        assert_eq!(text.as_str(), r#"{"stream":"stdout","data":"hi"}"#);
    }

    #[test]
    fn bytes_that_are_not_utf8_become_replacement_characters() {
        let value = decode(tagged(Stream::Stdout, b"a\xffb\xc3"));
        assert_eq!(value["data"], "a\u{fffd}b\u{fffd}");
    }
}
