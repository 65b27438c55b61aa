//! A minimal WebSocket client for trying wspipe from a terminal: prints every
//! message it receives and sends every line typed on stdin.
//!
//!     cargo run --example wsclient -- ws://127.0.0.1:8080/
//!
//! It exits when the server closes, printing the close code and reason.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8080/".into());
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    eprintln!("connected to {url}");
    let (mut tx, mut rx) = ws.split();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => println!("{t}"),
                Some(Ok(Message::Binary(b))) => println!("<{} bytes>", b.len()),
                Some(Ok(Message::Close(frame))) => {
                    match frame {
                        Some(f) => eprintln!("closed: {} {}", u16::from(f.code), f.reason),
                        None => eprintln!("closed"),
                    }
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            line = stdin.next_line(), if stdin_open => match line? {
                Some(line) => tx.send(Message::text(line)).await?,
                None => {
                    stdin_open = false;
                    tx.send(Message::Close(None)).await?;
                }
            },
        }
    }
}
