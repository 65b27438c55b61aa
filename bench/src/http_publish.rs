//! Publishing over HTTP, as a web application would: one keep-alive
//! HTTP/1.1 connection (hyper's client), `POST PATH` with the message as
//! the body, each request sent once the previous one was answered. wspipe
//! (`--publish`) and nchan (`nchan_publisher`) both answer with JSON that
//! counts the subscribers reached.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Bound on one request and its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read (both servers answer with a short JSON object).
const MAX_ANSWER: usize = 64 * 1024;

/// One keep-alive connection to a publish endpoint.
pub struct HttpPublisher {
    sender: SendRequest<Full<Bytes>>,
    port: u16,
    /// The server said it closes this connection after its last answer.
    closing: bool,
    /// `127.0.0.1:PORT`, for the Host header.
    host: String,
    /// The connection's task: it ends with the connection.
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for HttpPublisher {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// The interesting part of an answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// Subscribers the server says it reached (wspipe's `delivered`,
    /// nchan's `subscribers`).
    pub reached: Option<u64>,
    pub body: String,
}

impl HttpPublisher {
    pub async fn connect(port: u16) -> anyhow::Result<HttpPublisher> {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect to the publish port {port}"))?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .context("HTTP handshake")?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpPublisher {
            sender,
            port,
            closing: false,
            host: format!("127.0.0.1:{port}"),
            conn,
        })
    }

    /// A new connection if the server closed this one or said it would
    /// (`Connection: close`: nginx after a 404 or `keepalive_requests`
    /// answers), as any HTTP client would.
    async fn reconnect_if_closed(&mut self) -> anyhow::Result<()> {
        if self.closing || self.sender.is_closed() {
            *self = HttpPublisher::connect(self.port).await?;
        }
        Ok(())
    }

    /// `POST path` with `message`; it must be accepted (2xx).
    pub async fn publish(&mut self, path: &str, message: &str) -> anyhow::Result<Answer> {
        let answer = self
            .request(
                Method::POST,
                path,
                Bytes::copy_from_slice(message.as_bytes()),
            )
            .await?;
        if !answer.status.is_success() {
            bail!("POST {path}: {} {}", answer.status, answer.body.trim());
        }
        Ok(answer)
    }

    async fn request(&mut self, method: Method, path: &str, body: Bytes) -> anyhow::Result<Answer> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            // nchan answers JSON only when asked.
            .header(hyper::header::ACCEPT, "text/json")
            .header(hyper::header::CONTENT_TYPE, "text/plain")
            .body(Full::new(body))
            .context("build the request")?;
        let exchange = async {
            self.reconnect_if_closed().await?;
            self.sender.ready().await.context("connection not ready")?;
            let resp = self.sender.send_request(req).await.context("send")?;
            let status = resp.status();
            let closing = resp
                .headers()
                .get(hyper::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| anyhow!("read the answer: {e}"))?
                .to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            self.closing = closing;
            anyhow::Ok(Answer {
                status,
                reached: reached(&body),
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
    }
}

/// `"delivered": N` (wspipe) or `"subscribers": N` (nchan).
fn reached(body: &str) -> Option<u64> {
    ["\"delivered\":", "\"subscribers\":"]
        .iter()
        .find_map(|key| {
            let at = body.find(key)? + key.len();
            let digits: String = body[at..]
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_answers_are_read() {
        assert_eq!(
            reached(r#"{"ok":true,"delivered":1000,"dropped":0}"#),
            Some(1000)
        );
        assert_eq!(
            reached(
                r#"{"messages": 1, "requested": -1, "subscribers": 42, "last_message_id": "1:0" }"#
            ),
            Some(42)
        );
        assert_eq!(reached("queued messages: 1"), None);
    }
}
