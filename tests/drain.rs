//! End to end: `wspipe ctl drain`, the first half of a restart without
//! downtime. Every listener closes at once (a new instance can take the
//! port and the socket paths), live sessions go on until they end or the
//! bound passes, then the server exits 0.

mod common;

use std::process::Command;

use common::shared::ctl;
use common::*;

/// A `cat` server with a control socket at `dir/ctl.sock`.
fn controlled(dir: &std::path::Path, port: &str) -> (Daemon, String) {
    let socket = dir.join("ctl.sock");
    let path = socket.to_str().unwrap().to_owned();
    let daemon = Daemon::spawn(&[
        "--port",
        port,
        "--address",
        "127.0.0.1",
        "--control",
        &path,
        "cat",
    ]);
    daemon.wait_log("serving on");
    (daemon, path)
}

#[tokio::test]
async fn a_drain_frees_the_port_at_once_and_lets_live_sessions_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (mut old, socket) = controlled(dir.path(), "0");
    let addr = old.tcp_addr();
    let mut live = connect(&format!("ws://{addr}/")).await;
    let out = ctl(&socket, &["drain", "--timeout", "60"]);
    assert!(out.status.success(), "{out:?}");
    old.wait_log_async("draining: no longer accepting; 1 session(s)")
        .await;
    let freed = wait_until_async(TIMEOUT, || {
        std::net::TcpStream::connect(addr).is_err() && !std::path::Path::new(&socket).exists()
    })
    .await;
    assert!(freed, "the port and the control socket are let go");
    // A new instance takes both over while the old one still serves.
    let port = addr.port().to_string();
    // (The same control socket path: the old one removed its file.)
    let (new, _) = controlled(dir.path(), &port);
    let mut fresh = connect(&format!("ws://{addr}/")).await;
    send_text(&mut fresh, "to the new one").await;
    assert_eq!(next_text(&mut fresh).await, "to the new one");
    send_text(&mut live, "still served").await;
    assert_eq!(next_text(&mut live).await, "still served");
    assert!(
        old.wait_exit(std::time::Duration::from_millis(200))
            .is_none(),
        "draining"
    );
    // Its last session ends: the old instance exits, 0.
    live.close(None).await.unwrap();
    finish_close(&mut live).await;
    let status = old.wait_exit(TIMEOUT).expect("exits once drained");
    assert!(status.success(), "{status:?}");
    old.wait_log_async("drained: every session has ended").await;
    drop(new);
}

#[tokio::test]
async fn at_the_drain_bound_the_sessions_left_are_closed_with_1001() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, socket) = controlled(dir.path(), "0");
    let mut ws = connect(&format!("ws://{}/", server.tcp_addr())).await;
    // --wait returns once the server has exited.
    let waiter = std::thread::spawn(move || {
        Command::new(bin())
            .args([
                "ctl",
                "--socket",
                &socket,
                "drain",
                "--timeout",
                "1",
                "--wait",
            ])
            .output()
            .unwrap()
    });
    assert_eq!(expect_close(&mut ws).await.0, 1001);
    let out = waiter.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let status = server.wait_exit(TIMEOUT).expect("exited");
    assert!(status.success(), "{status:?}");
    server
        .wait_log_async("drain bound passed: closing the 1 session(s) left")
        .await;
}

#[tokio::test]
async fn a_second_drain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (server, socket) = controlled(dir.path(), "0");
    // A live session keeps the draining server up for the second request
    // (with none, the drain is over at once and the server exits).
    let _live = connect(&format!("ws://{}/", server.tcp_addr())).await;
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    use std::io::{BufRead, Write};
    stream
        .write_all(b"{\"cmd\":\"drain\",\"timeout\":5}\n{\"cmd\":\"drain\"}\n")
        .unwrap();
    let mut lines = std::io::BufReader::new(stream).lines();
    assert_eq!(lines.next().unwrap().unwrap(), r#"{"ok":true}"#);
    let second = lines.next().unwrap().unwrap();
    assert!(second.contains("already draining"), "{second}");
}
