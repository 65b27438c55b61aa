//! `--config FILE`, `--print-config` and SIGHUP, end to end with the real
//! binary on loopback.

mod common;

use std::path::PathBuf;

use common::*;

/// A temporary directory holding the config file.
struct Setup {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Setup {
    fn new(toml: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wspipe.toml");
        std::fs::write(&path, toml).unwrap();
        Setup { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Replaces the file: written aside and renamed, so a reload never
    /// reads half of it.
    fn rewrite(&self, toml: &str) {
        let next = self.dir.path().join("next.toml");
        std::fs::write(&next, toml).unwrap();
        std::fs::rename(&next, &self.path).unwrap();
    }

    /// Starts `wspipe --config FILE ARGS...` and waits until it serves.
    fn start(&self, args: &[&str]) -> Server {
        let mut all = vec!["--config", self.path()];
        all.extend_from_slice(args);
        let daemon = Daemon::spawn(&all);
        let addr = daemon.tcp_addr();
        Server { daemon, addr }
    }
}

/// Loopback on any port, echoing with cat.
const BASE: &str = "port = 0\naddress = [\"127.0.0.1\"]\ncommand = [\"cat\"]\n";

fn hup(server: &Server) {
    signal(server.pid(), libc::SIGHUP);
}

async fn echo(ws: &mut Ws, text: &str) {
    send_text(ws, text).await;
    assert_eq!(next_text(ws).await, text);
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn the_file_sets_port_address_and_program() {
    let port = free_port();
    let setup = Setup::new(&format!(
        "port = {port}\naddress = [\"127.0.0.1\"]\ncommand = \"cat -u\"\n"
    ));
    let server = setup.start(&[]);
    assert_eq!(server.addr, format!("127.0.0.1:{port}").parse().unwrap());
    let mut ws = connect(&server.url("/")).await;
    echo(&mut ws, "from the file").await;
}

#[tokio::test]
async fn the_command_line_overrides_the_file() {
    // Port 1 and a missing program would both fail: the command line
    // replaces them, and its --address replaces the file's list.
    let setup = Setup::new(
        "port = 1\naddress = [\"no-such-host.invalid\"]\ncommand = [\"/no/such/program\"]\n",
    );
    let server = setup.start(&["--port", "0", "--address", "127.0.0.1", "cat"]);
    let mut ws = connect(&server.url("/")).await;
    echo(&mut ws, "overridden").await;
}

/// Runs `wspipe --config FILE` expecting exit status 2 and one line.
fn refused(path: &str) -> String {
    let out = run_bin(&["--config", path]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr.trim_end().to_owned()
}

#[test]
fn bad_files_exit_2_with_one_line_naming_file_line_and_key() {
    let cases = [
        ("port = 0\n\nprot = 8080\n", ":3: unknown key \"prot\""),
        (
            "port = \"8080\"\n",
            ":1: key \"port\": expected an integer, found string",
        ),
        (
            "maxforks = true\n",
            ":1: key \"maxforks\": expected an integer",
        ),
        (
            "address = \"127.0.0.1\"\n",
            ":1: key \"address\": expected an array",
        ),
        (
            "binary = \"yes\"\n",
            ":1: key \"binary\": expected a boolean",
        ),
        ("port = 70000\n", ":1: key \"port\": invalid value"),
        ("port = 0\nthis is not toml\n", ":2: not TOML: "),
    ];
    for (toml, needle) in cases {
        let setup = Setup::new(toml);
        let line = refused(setup.path());
        let expected = format!("wspipe: {}{needle}", setup.path());
        assert!(line.starts_with(&expected), "{toml:?}: {line}");
    }
    // Unreadable: missing, or a directory.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let line = refused(missing.to_str().unwrap());
    assert!(
        line.starts_with(&format!("wspipe: {}: cannot read: ", missing.display())),
        "{line}"
    );
    let line = refused(dir.path().to_str().unwrap());
    assert!(line.contains("cannot read"), "{line}");
}

fn print_config(args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--print-config");
    let out = run_bin(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn print_config_round_trips_through_config() {
    let setup = Setup::new(
        "port = 8080\npassenv = [\"HOME\", \"LANG\"]\nheader = [\"X-A: 1\", \"X-B: 2\"]\ncommand = [\"cat\", \"-u\"]\n",
    );
    let first = print_config(&["--config", setup.path(), "--maxforks", "4", "--binary"]);
    for line in [
        "port = 8080",
        "maxforks = 4",
        "binary = true",
        "passenv = [\"HOME\", \"LANG\"]",
        "loglevel = \"access\"",
        "command = [\"cat\", \"-u\"]",
    ] {
        assert!(first.lines().any(|l| l == line), "{line:?} in {first}");
    }
    let again = Setup::new(&first);
    assert_eq!(print_config(&["--config", again.path()]), first);
    // Without a file, the command line alone.
    let plain = print_config(&["--port", "9", "--command", "cat -u"]);
    assert!(
        plain.contains("port = 9\n") && plain.contains("command = \"cat -u\"\n"),
        "{plain}"
    );
}

async fn status_from(server: &Server, origin: &str) -> u16 {
    handshake_status(&server.url("/"), &[("Origin", origin)]).await
}

#[tokio::test]
async fn sighup_applies_a_new_origin_list_to_new_handshakes_only() {
    let setup = Setup::new(&format!("{BASE}origin = \"old.example\"\n"));
    let server = setup.start(&[]);
    let mut live = connect_with(&server.url("/"), &[("Origin", "http://old.example")])
        .await
        .unwrap();
    echo(&mut live, "before").await;
    assert_eq!(status_from(&server, "http://new.example").await, 403);

    setup.rewrite(&format!("{BASE}origin = \"new.example\"\n"));
    hup(&server);
    let line = server
        .wait_log_async("SIGHUP: origin changed from \"old.example\" to \"new.example\"")
        .await;
    assert!(line.contains("applied to new connections"), "{line}");
    echo(&mut live, "after").await;
    assert_eq!(status_from(&server, "http://old.example").await, 403);
    assert_eq!(status_from(&server, "http://new.example").await, 101);
}

#[tokio::test]
async fn sighup_with_a_lower_maxforks_refuses_new_sessions_and_keeps_live_ones() {
    let setup = Setup::new(&format!("{BASE}maxforks = 3\n"));
    let server = setup.start(&[]);
    let mut a = connect(&server.url("/")).await;
    let mut b = connect(&server.url("/")).await;
    echo(&mut a, "a").await;
    echo(&mut b, "b").await;

    setup.rewrite(&format!("{BASE}maxforks = 1\n"));
    hup(&server);
    server
        .wait_log_async("SIGHUP: maxforks changed from 3 to 1")
        .await;
    assert_eq!(handshake_status(&server.url("/"), &[]).await, 429);
    echo(&mut a, "a still").await;
    echo(&mut b, "b still").await;
    // One left: still at the new limit.
    a.close(None).await.unwrap();
    server.wait_log_async("disconnect").await;
    assert_eq!(handshake_status(&server.url("/"), &[]).await, 429);
    b.close(None).await.unwrap();
    assert!(
        wait_until_async(TIMEOUT, || server.log.count("disconnect") == 2).await,
        "{:?}",
        server.log.lines()
    );
    let mut c = connect(&server.url("/")).await;
    echo(&mut c, "under the limit").await;
}

#[tokio::test]
async fn sighup_with_a_broken_file_keeps_the_running_configuration() {
    let setup = Setup::new(&format!("{BASE}origin = \"old.example\"\n"));
    let server = setup.start(&[]);
    setup.rewrite(&format!("{BASE}origin = \"new.example\"\nprot = 1\n"));
    hup(&server);
    let line = server
        .wait_log_async("keeping the running configuration")
        .await;
    let reason = format!("{}:5: unknown key \"prot\"", setup.path());
    assert!(line.contains(&reason), "{line}");
    assert_eq!(status_from(&server, "http://old.example").await, 101);
    assert_eq!(status_from(&server, "http://new.example").await, 403);

    // Valid TOML that does not validate (a missing program) is kept out too.
    setup.rewrite("port = 0\naddress = [\"127.0.0.1\"]\ncommand = [\"/no/such\"]\n");
    hup(&server);
    let line = server
        .log
        .wait_line_async(
            |l| l.contains("keeping the running") && l.contains("/no/such"),
            TIMEOUT,
        )
        .await;
    assert!(line.is_some(), "{:?}", server.log.lines());
    assert_eq!(status_from(&server, "http://new.example").await, 403);
}

#[tokio::test]
async fn sighup_names_a_changed_port_as_needing_a_restart() {
    let setup = Setup::new(BASE);
    let server = setup.start(&["--loglevel", "access"]);
    let other = free_port();
    setup.rewrite(&format!(
        "port = {other}\naddress = [\"127.0.0.1\"]\ncommand = [\"cat\"]\npingms = 5000\n"
    ));
    hup(&server);
    let line = server
        .wait_log_async(&format!("SIGHUP: port changed from 0 to {other}"))
        .await;
    assert!(line.contains("needs a restart, not applied"), "{line}");
    server
        .wait_log_async("SIGHUP: pingms changed from 0 to 5000: applied")
        .await;
    // Still where it was, and nothing listens on the new port.
    let mut ws = connect(&server.url("/")).await;
    echo(&mut ws, "same port").await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", other)).is_err());
}

#[tokio::test]
async fn sighup_changes_the_log_level_and_headers() {
    let setup = Setup::new(&format!("{BASE}header = [\"X-Old: 1\"]\n"));
    let server = setup.start(&[]);
    let raw = |addr| {
        raw_response(
            addr,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    };
    let (_, head, _) = raw(server.addr);
    assert_eq!(header_values(&head, "x-old"), ["1"]);
    setup.rewrite(&format!(
        "{BASE}header = [\"X-New: 2\"]\nloglevel = \"error\"\n"
    ));
    hup(&server);
    server.wait_log_async("SIGHUP: loglevel changed").await;
    let (_, head, _) = raw(server.addr);
    assert!(header_values(&head, "x-old").is_empty(), "{head}");
    assert_eq!(header_values(&head, "x-new"), ["2"]);
    // A quieter level is set after its report: a refused reload (an error
    // line, so shown) tells it is in force.
    setup.rewrite(&format!(
        "{BASE}header = [\"X-New: 2\"]\nloglevel = \"error\"\nprot = 1\n"
    ));
    hup(&server);
    server
        .wait_log_async("keeping the running configuration")
        .await;
    // At "error" a session's access lines are gone...
    let mut ws = connect(&server.url("/")).await;
    echo(&mut ws, "quiet").await;
    // ...and going back to "access" is reported (louder: applied first).
    setup.rewrite(BASE);
    hup(&server);
    server
        .wait_log_async("SIGHUP: loglevel changed from \"error\" to \"access\"")
        .await;
    assert_eq!(
        server.log.count("wspipe::access: connect"),
        0,
        "{:?}",
        server.log.lines()
    );
    let mut ws2 = connect(&server.url("/")).await;
    echo(&mut ws2, "loud").await;
    server.wait_log_async("wspipe::access: connect").await;
    drop(ws);
}

#[test]
fn sighup_without_config_is_not_handled() {
    // websocketd's default: SIGHUP ends the process.
    let mut server = Server::start(&["cat"]);
    signal(server.pid(), libc::SIGHUP);
    let status = server.wait_exit(TIMEOUT).expect("exits on SIGHUP");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGHUP));
}

#[test]
fn sighup_moves_staticdir_for_new_requests() {
    let root = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        std::fs::create_dir(root.path().join(name)).unwrap();
        std::fs::write(root.path().join(name).join("index.html"), name).unwrap();
    }
    let dir = |name: &str| root.path().join(name).display().to_string();
    let setup = Setup::new(&format!("{BASE}staticdir = {:?}\n", dir("a")));
    let server = setup.start(&[]);
    let get = || {
        raw_response(
            server.addr,
            "GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    };
    assert_eq!(get().2, "a");
    setup.rewrite(&format!("{BASE}staticdir = {:?}\n", dir("b")));
    hup(&server);
    server.wait_log("SIGHUP: staticdir changed");
    assert_eq!(get().2, "b");
}

#[tokio::test]
async fn sighup_turns_pings_on_for_new_sessions() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let setup = Setup::new(BASE);
    let server = setup.start(&[]);
    setup.rewrite(&format!("{BASE}pingms = 50\n"));
    hup(&server);
    server
        .wait_log_async("SIGHUP: pingms changed from 0 to 50")
        .await;
    let mut ws = connect(&server.url("/")).await;
    let first = tokio::time::timeout(TIMEOUT, ws.next()).await;
    assert!(matches!(first, Ok(Some(Ok(Message::Ping(_))))), "{first:?}");
}
