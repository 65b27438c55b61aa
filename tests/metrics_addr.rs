//! `--metrics ADDR|PATH`: a HOST:PORT is TCP (a host name is resolved),
//! never a socket file named after it; only a value with a `/` (or
//! `unix:PATH`) is a socket path; anything else exits 2 with one line.

mod common;

use std::process::Command;

use common::*;

#[test]
fn a_host_name_and_port_serve_metrics_over_tcp_and_create_no_file() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin());
    cmd.current_dir(cwd.path());
    let server = Server::start_cmd(cmd, &["--metrics", "localhost:0", "cat"]);
    let line = server.wait_log("metrics on ");
    let addr = http_addr(&line);
    assert!(addr.ip().is_loopback(), "{addr}");
    let (status, head, body) = raw_response(addr, "GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("wspipe_connections 0"), "{body}");
    let files: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().flatten().collect();
    assert!(files.is_empty(), "files created: {files:?}");
}

#[test]
fn a_socket_path_needs_a_slash_or_unix_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sock");
    let value = format!("unix:{}", path.display());
    let server = Server::start(&["--metrics", &value, "cat"]);
    server.wait_log(&format!("metrics on unix:{}", path.display()));
    assert!(path.exists());
}

#[test]
fn a_value_that_is_neither_exits_2_with_one_line() {
    for value in [
        "metrics.sock",
        "localhost:notaport",
        "no-such-host.invalid:9100",
    ] {
        let out = run_bin(&["--metrics", value, "cat"]);
        assert_eq!(out.status.code(), Some(2), "{value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{value}: {stderr}");
        assert!(stderr.contains("--metrics"), "{value}: {stderr}");
    }
}
