//! Shutdown waits for every task the server started. The server runs in
//! this process (`wspipe::server::serve`) so that the runtime itself can
//! be asked, once `serve` has returned, whether any of its tasks is still
//! alive: none may be, whatever connections were open when it began (an
//! idle control client, an idle keep-alive metrics scrape, an idle HTTP
//! client and a live WebSocket session).

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::Message;
use wspipe::cli::Cli;
use wspipe::config::Config;

const TIMEOUT: Duration = Duration::from_secs(10);

fn config(args: &[&Path]) -> Config {
    let [public, control, metrics] = args else {
        panic!("three socket paths")
    };
    let argv = [
        OsString::from("wspipe"),
        "--unixsocket".into(),
        public.into(),
        "--control".into(),
        control.into(),
        "--metrics".into(),
        metrics.into(),
        "cat".into(),
    ];
    Config::from_cli(Cli::try_parse_args(argv).expect("flags")).expect("config")
}

/// Connects once the server has bound `path` (it binds as soon as `serve`
/// is first polled; the retry only covers the scheduling in between).
async fn connect(path: &Path) -> UnixStream {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match UnixStream::connect(path).await {
            Ok(stream) => return stream,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("{path:?}: {e}"),
            Err(_) => tokio::task::yield_now().await,
        }
    }
}

/// Reads until `end` has been seen.
async fn read_until(stream: &mut UnixStream, end: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(end) {
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
            .await
            .expect("read timed out")
            .expect("read");
        assert!(
            n > 0,
            "closed before {end:?}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn no_task_outlives_the_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let (public, control, metrics) = (
        tmp.path().join("public.sock"),
        tmp.path().join("control.sock"),
        tmp.path().join("metrics.sock"),
    );
    let config = config(&[&public, &control, &metrics]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = wspipe::server::serve(config, Vec::new(), async {
            let _ = stopped.await;
        });
        let clients = async {
            let mut ctl = connect(&control).await;
            ctl.write_all(b"{\"cmd\":\"stats\"}\n").await.unwrap();
            let mut reply = String::new();
            BufReader::new(&mut ctl)
                .read_line(&mut reply)
                .await
                .unwrap();
            assert!(reply.contains("\"ok\":true"), "{reply}");

            let mut scrape = connect(&metrics).await;
            scrape
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
                .await
                .unwrap();
            read_until(&mut scrape, "# EOF\n").await;

            let mut plain = connect(&public).await;
            plain
                .write_all(b"GET / HTTP/1.1\r\nHost: p\r\n\r\n")
                .await
                .unwrap();
            read_until(&mut plain, "WebSocket endpoint").await;

            let (mut ws, _) = tokio_tungstenite::client_async("ws://p/", connect(&public).await)
                .await
                .expect("handshake");
            ws.send(Message::text("ping")).await.unwrap();
            let echo = ws.next().await.expect("echo").expect("ok");
            assert_eq!(echo.into_text().unwrap().as_str(), "ping");

            stop.send(()).unwrap();
            let close = tokio::time::timeout(TIMEOUT, ws.next())
                .await
                .expect("close in time");
            match close {
                Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
                other => panic!("expected a 1001 close, got {other:?}"),
            }
            // Held open (and idle) until the server is done.
            (ctl, scrape, plain, ws)
        };
        let (served, _open) = tokio::join!(server, clients);
        served.expect("serve");
        // A task the tracker saw end is released by the runtime a moment
        // later; one that escaped the tracker (an idle connection we hold
        // open) would stay alive for as long as we wait here.
        let metrics = tokio::runtime::Handle::current().metrics();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while metrics.num_alive_tasks() > 0 && tokio::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            metrics.num_alive_tasks(),
            0,
            "tasks left running after the shutdown"
        );
    });
}
