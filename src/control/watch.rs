//! `watch`: a control connection turned into a stream of events, one JSON
//! object per line, after a first `{"ok":true}`.
//!
//! A watcher that reads slowly falls behind and loses the oldest events (a
//! `{"event":"lost","count":N}` line says how many); no session waits for
//! it. The stream ends when the watcher closes the connection or the
//! server shuts down.

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::protocol::Response;
use super::Control;
use crate::events::Event;

pub(super) async fn stream(
    mut write: OwnedWriteHalf,
    mut reader: BufReader<OwnedReadHalf>,
    control: &Control,
    publishes: bool,
) {
    let mut watcher = control.events.watch();
    if write_line(&mut write, &Response::ok()).await.is_err() {
        return;
    }
    // Anything the watcher sends now is ignored; its end ends the stream.
    let mut ignored = [0u8; 512];
    loop {
        tokio::select! {
            _ = control.shutdown.cancelled() => return,
            read = reader.read(&mut ignored) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            event = watcher.next() => match event {
                None => return,
                Some(Event::Publish { .. }) if !publishes => {}
                Some(event) => {
                    if write_line(&mut write, &event).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

async fn write_line<T: serde::Serialize>(
    write: &mut OwnedWriteHalf,
    value: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_string(value).map_err(std::io::Error::other)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await
}
