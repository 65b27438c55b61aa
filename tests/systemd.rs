//! End to end: wspipe under a service manager. Sockets passed in as
//! systemd does (LISTEN_FDS from fd 3, LISTEN_PID, LISTEN_FDNAMES), by
//! Debian's own `systemd-socket-activate` and by hand; readiness, stopping
//! and the watchdog told over NOTIFY_SOCKET.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;

use common::*;

/// A free loopback port (bound and let go: a small window in which another
/// process could take it, as with any "port 0 then reuse").
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn systemd_socket_activate_hands_over_its_socket_and_its_queued_client() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(["--listen", &listen, "--fdname", "web", bin()]);
    // No --port: the passed socket is all it serves.
    let daemon = Daemon::spawn_cmd(cmd, &["cat"]);
    daemon.wait_log_async("Listening on").await;
    // systemd-socket-activate starts wspipe at the first connection, which
    // waits in the socket's queue meanwhile and is then served.
    let mut ws = connect(&format!("ws://{listen}/")).await;
    send_text(&mut ws, "activated").await;
    assert_eq!(next_text(&mut ws).await, "activated");
    let line = daemon.wait_log_async("serving on").await;
    assert!(line.contains(&format!("ws://{listen}/")), "{line}");
    assert!(line.contains("socket from systemd"), "{line}");
    let serving: Vec<String> = daemon
        .log
        .lines()
        .into_iter()
        .filter(|l| l.contains("serving on"))
        .collect();
    assert_eq!(
        serving.len(),
        1,
        "nothing else bound (no default port 80): {serving:?}"
    );
}

#[tokio::test]
async fn a_passed_unix_socket_is_served_beside_the_port_the_flags_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.sock");
    let socket = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let program = script(
        dir.path(),
        "env.sh",
        "#!/bin/sh\nenv | grep '^LISTEN_'\n\
         echo \"sockets: $(for fd in /proc/$$/fd/*; do readlink $fd; done | grep -c socket)\"\necho end\n",
    );
    // Server::start_cmd adds --port 0 --address 127.0.0.1: given, so bound
    // too.
    let server = Server::start_cmd(activated(&socket, "web"), &[program.to_str().unwrap()]);
    drop(socket);
    server.wait_log_async("socket from systemd").await;
    let mut over_unix = connect_unix(&path).await;
    let (lines, _) = texts_until_close_on(&mut over_unix).await;
    assert_eq!(
        lines,
        ["sockets: 0", "end"],
        "no LISTEN_* and no socket for the child"
    );
    let mut over_tcp = connect(&server.url("/")).await;
    let (lines, _) = texts_until_close(&mut over_tcp).await;
    assert_eq!(lines, ["sockets: 0", "end"]);
}

#[test]
fn a_passed_descriptor_that_is_no_listening_socket_exits_1_with_one_line() {
    let file = std::fs::File::open("/dev/null").unwrap();
    let out = activated(&file, "web").args(["cat"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("passed socket \"web\" is not a socket"),
        "{err}"
    );
    let datagram = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = activated(&datagram, "web").args(["cat"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a stream socket"));
}

/// The next notification datagram, within the test timeout.
fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let n = socket.recv(&mut buf).expect("a notification");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn readiness_stopping_and_the_watchdog_reach_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&path).unwrap();
    let mut cmd = Command::new(bin());
    cmd.env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000");
    let mut server = Server::start_cmd(cmd, &["cat"]);
    let ready = next_notification(&notify);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains("STATUS=serving on 1 listener(s)"),
        "{ready:?}"
    );
    // Every 100 ms (half of 200 ms): two in a row.
    for _ in 0..2 {
        assert_eq!(next_notification(&notify), "WATCHDOG=1\n");
    }
    signal(server.pid(), libc::SIGTERM);
    let stopping = loop {
        let n = next_notification(&notify);
        if !n.starts_with("WATCHDOG") {
            break n;
        }
    };
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(server.wait_exit(TIMEOUT).expect("exits").success());
}
