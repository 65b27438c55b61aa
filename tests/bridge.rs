//! End to end: the real binary, a real client, real children. Text and
//! binary pumping, line framing, and the close codes that report how a child
//! ended.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

fn examples(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn count_example_sends_each_line_then_closes_normally() {
    let tmp = tempfile::tempdir().unwrap();
    let count = script(
        tmp.path(),
        "count.sh",
        "#!/bin/sh\nfor i in 1 2 3 4 5; do echo $i; done\n",
    );
    let server = Server::start(&[count.to_str().unwrap()]);
    let mut ws = connect(&server.url("/")).await;
    let (texts, close) = texts_until_close(&mut ws).await;
    assert_eq!(texts, ["1", "2", "3", "4", "5"]);
    assert_eq!(close.0, 1000);
}

#[tokio::test]
async fn echo_round_trips_lines_in_order() {
    let server = Server::start(&["cat"]);
    let mut ws = connect(&server.url("/")).await;
    for i in 0..100 {
        send_text(&mut ws, &format!("line {i} ünïcode")).await;
    }
    for i in 0..100 {
        assert_eq!(next_text(&mut ws).await, format!("line {i} ünïcode"));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn greeter_example_answers_each_message() {
    let server = Server::start(&[&examples("greeter.sh")]);
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "Ada").await;
    assert_eq!(next_text(&mut ws).await, "Hello, Ada!");
    send_text(&mut ws, "Linus").await;
    assert_eq!(next_text(&mut ws).await, "Hello, Linus!");
}

#[tokio::test]
async fn command_flag_is_split_like_a_shell_but_not_run_by_one() {
    let server = Server::start(&["--command", "printf '%s|%s\\n' 'two words' $HOME"]);
    let mut ws = connect(&server.url("/")).await;
    let (texts, close) = texts_until_close(&mut ws).await;
    assert_eq!(texts, ["two words|$HOME"]);
    assert_eq!(close.0, 1000);
}

#[tokio::test]
async fn crlf_and_final_line_without_newline_are_delivered() {
    let server = Server::start(&["printf", "a\\r\\nb\\n\\nlast"]);
    let mut ws = connect(&server.url("/")).await;
    let (texts, close) = texts_until_close(&mut ws).await;
    assert_eq!(texts, ["a", "b", "", "last"]);
    assert_eq!(close.0, 1000);
}

#[tokio::test]
async fn lines_are_delivered_as_soon_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let slow = script(
        tmp.path(),
        "slow.sh",
        "#!/bin/sh\necho first\nexec sleep 30\n",
    );
    let server = Server::start(&[slow.to_str().unwrap()]);
    let mut ws = connect(&server.url("/")).await;
    let started = Instant::now();
    assert_eq!(next_text(&mut ws).await, "first");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "line was held back"
    );
}

#[tokio::test]
async fn nonzero_exit_closes_with_1011_after_flushing_every_line() {
    let tmp = tempfile::tempdir().unwrap();
    let fail = script(
        tmp.path(),
        "fail.sh",
        "#!/bin/sh\ni=0; while [ $i -lt 2000 ]; do echo \"line $i\"; i=$((i+1)); done\nexit 3\n",
    );
    let server = Server::start(&[fail.to_str().unwrap()]);
    let mut ws = connect(&server.url("/")).await;
    let (texts, close) = texts_until_close(&mut ws).await;
    assert_eq!(texts.len(), 2000);
    assert_eq!(texts[1999], "line 1999");
    assert_eq!(close, (1011, "exit status 3".to_string()));
}

#[tokio::test]
async fn crashing_child_closes_only_its_own_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    script(dir, "crash", "#!/bin/sh\necho bye\nkill -SEGV $$\n");
    script(dir, "echo", "#!/bin/sh\nexec cat\n");
    let server = Server::start(&["--dir", dir.to_str().unwrap()]);
    let mut steady = connect(&server.url("/echo")).await;
    let mut crashing = connect(&server.url("/crash")).await;
    let (texts, close) = texts_until_close(&mut crashing).await;
    assert_eq!(texts, ["bye"]);
    assert_eq!(close, (1011, "killed by SIGSEGV".to_string()));
    send_text(&mut steady, "still here").await;
    assert_eq!(next_text(&mut steady).await, "still here");
}

#[tokio::test]
async fn binary_mode_passes_raw_bytes_both_ways() {
    let server = Server::start(&["--binary", "cat"]);
    let mut ws = connect(&server.url("/")).await;
    let payload: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    ws.send(Message::binary(payload.clone())).await.unwrap();
    ws.send(Message::text("text\nwith newline")).await.unwrap();
    let mut expected = payload;
    expected.extend_from_slice(b"text\nwith newline");
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match next_event(&mut ws).await {
            Event::Binary(b) => got.extend(b),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn binary_flag_accepts_explicit_false() {
    let server = Server::start(&["--binary=false", "cat"]);
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "hi").await;
    assert_eq!(next_event(&mut ws).await, Event::Text("hi".into()));
}

#[tokio::test]
async fn overlong_lines_are_split_into_pieces_of_maxlinesize() {
    let server = Server::start(&[
        "--maxlinesize",
        "1000",
        "sh",
        "-c",
        "head -c 2500 /dev/zero | tr '\\0' x; echo; echo end",
    ]);
    let mut ws = connect(&server.url("/")).await;
    let (texts, close) = texts_until_close(&mut ws).await;
    let lens: Vec<usize> = texts.iter().map(String::len).collect();
    assert_eq!(lens, [1000, 1000, 500, 3]);
    assert_eq!(texts[3], "end");
    assert_eq!(close.0, 1000);
}

#[tokio::test]
async fn invalid_utf8_from_child_becomes_replacement_characters() {
    let server = Server::start(&["printf", "ok \\377\\376 end\\n"]);
    let mut ws = connect(&server.url("/")).await;
    let (texts, _) = texts_until_close(&mut ws).await;
    assert_eq!(texts, ["ok \u{FFFD}\u{FFFD} end"]);
}

#[tokio::test]
async fn stderr_goes_to_the_log_tagged_with_the_connection() {
    let server = Server::start(&["sh", "-c", "echo oops-on-stderr >&2; echo out"]);
    let mut ws = connect(&server.url("/")).await;
    let (texts, _) = texts_until_close(&mut ws).await;
    assert_eq!(texts, ["out"]);
    let line = server
        .log
        .wait_for_async("oops-on-stderr", TIMEOUT)
        .await
        .expect("stderr logged");
    assert!(line.contains("id="), "{line}");
}

/// A child that writes to stderr, then stdout, then stderr again with no
/// newline before it exits, with characters JSON has to escape. The sleeps
/// fix the order: two pipes have none between them.
const BOTH_STREAMS: &str = r#"#!/bin/sh
printf 'err: q"uote \\ back\ttab \303\251 \001 \033[0m end\n' >&2
sleep 0.2
printf 'out: {"json":"inside"}\n'
sleep 0.2
printf 'last words' >&2
"#;

/// The lines of [`BOTH_STREAMS`], as the child wrote them.
const ERR_LINE: &str = "err: q\"uote \\ back\ttab \u{e9} \u{1} \u{1b}[0m end";
const OUT_LINE: &str = r#"out: {"json":"inside"}"#;

/// Parses a `--passstderr` message: exactly `stream` and `data`.
fn tagged(text: &str) -> (String, String) {
    let value: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
    let object = value.as_object().expect("a JSON object");
    assert_eq!(object.len(), 2, "{text}");
    let field = |name: &str| {
        object[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} is a string: {text}"))
            .to_owned()
    };
    (field("stream"), field("data"))
}

#[tokio::test]
async fn passstderr_tags_every_stdout_and_stderr_line_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let both = script(tmp.path(), "both.sh", BOTH_STREAMS);
    let server = Server::start(&["--passstderr", both.to_str().unwrap()]);
    let mut ws = connect(&server.url("/")).await;
    let (texts, close) = texts_until_close(&mut ws).await;
    let got: Vec<(String, String)> = texts.iter().map(|t| tagged(t)).collect();
    let want = [
        ("stderr", ERR_LINE),
        ("stdout", OUT_LINE),
        ("stderr", "last words"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(s, d)| (s.to_string(), d.to_string()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(close.0, 1000);
    // Control characters are escaped, never sent raw.
    assert!(texts[0].contains(r"\u0001"), "{}", texts[0]);
    // stderr is still logged as well.
    server
        .log
        .wait_for_async("last words", TIMEOUT)
        .await
        .expect("stderr logged too");
}

#[tokio::test]
async fn without_passstderr_stdout_lines_go_plain_and_stderr_only_to_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let both = script(tmp.path(), "both.sh", BOTH_STREAMS);
    let server = Server::start(&[both.to_str().unwrap()]);
    let mut ws = connect(&server.url("/")).await;
    let (texts, _) = texts_until_close(&mut ws).await;
    assert_eq!(texts, [OUT_LINE]);
    server
        .log
        .wait_for_async("last words", TIMEOUT)
        .await
        .expect("stderr logged");
}

#[tokio::test]
async fn passstderr_cuts_long_lines_into_pieces_that_are_each_valid_json() {
    // 2500 quotes (each escaped to two bytes) on stdout, and on stderr 999
    // bytes then an 'é' that straddles the 1000-byte cut.
    let server = Server::start(&[
        "--passstderr",
        "--maxlinesize",
        "1000",
        "sh",
        "-c",
        "head -c 2500 /dev/zero | tr '\\0' '\"'; echo; sleep 0.2; \
         head -c 999 /dev/zero | tr '\\0' x >&2; printf '\\303\\251z\\n' >&2",
    ]);
    let mut ws = connect(&server.url("/")).await;
    let (texts, _) = texts_until_close(&mut ws).await;
    let got: Vec<(String, String)> = texts.iter().map(|t| tagged(t)).collect();
    let quotes = |n: usize| "\"".repeat(n);
    let want = [
        ("stdout", quotes(1000)),
        ("stdout", quotes(1000)),
        ("stdout", quotes(500)),
        ("stderr", "x".repeat(999)),
        ("stderr", "\u{e9}z".to_string()),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(s, d)| (s.to_string(), d.clone()))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn passstderr_with_binary_is_refused_at_start_as_websocketd_does() {
    for mode in ["--binary", "--framed"] {
        let out = run_bin(&["--port", "0", "--passstderr", mode, "cat"]);
        assert_eq!(out.status.code(), Some(2), "{mode}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--passstderr") && stderr.contains(mode),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn access_log_records_open_and_close() {
    let server = Server::start(&["sh", "-c", "echo hi; exit 4"]);
    let mut ws = connect(&server.url("/some/path")).await;
    let _ = texts_until_close(&mut ws).await;
    let open = server.log.wait_for_async("connect", TIMEOUT).await.unwrap();
    assert!(
        open.contains("path=\"/some/path\"") || open.contains("path=/some/path"),
        "{open}"
    );
    assert!(open.contains("pid="), "{open}");
    let close = server
        .log
        .wait_for_async("disconnect", TIMEOUT)
        .await
        .unwrap();
    for field in [
        "remote=",
        "duration=",
        "exit status 4",
        "close=1011",
        "pid=",
    ] {
        assert!(close.contains(field), "{field} missing in {close}");
    }
}

#[tokio::test]
async fn loglevel_info_hides_access_lines() {
    let server = Server::start(&["--loglevel=info", "sh", "-c", "echo hi"]);
    let mut ws = connect(&server.url("/")).await;
    let _ = texts_until_close(&mut ws).await;
    // The session is fully over once the child is reaped.
    assert!(wait_until_async(TIMEOUT, || server.children().is_empty()).await);
    assert!(server
        .log
        .wait_for_async("disconnect", Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test]
async fn client_message_too_big_closes_with_1009() {
    let server = Server::start(&["--maxframesize", "1024", "cat"]);
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, &"x".repeat(100)).await;
    assert_eq!(next_text(&mut ws).await.len(), 100);
    let _ = ws.send(Message::text("y".repeat(5000))).await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);
    assert!(
        wait_until_async(TIMEOUT, || server.children().is_empty()).await,
        "child ended"
    );
}

#[tokio::test]
async fn binary_message_in_text_mode_closes_with_1003() {
    let server = Server::start(&["cat"]);
    let mut ws = connect(&server.url("/")).await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1003);
    assert!(
        wait_until_async(TIMEOUT, || server.children().is_empty()).await,
        "child ended"
    );
}

#[test]
fn invalid_utf8_from_client_closes_with_1007() {
    let server = Server::start(&["cat"]);
    let mut raw = RawClient::connect(server.addr, "/");
    raw.send_frame(0x81, b"ok \xff\xfe");
    assert_eq!(raw.read_close_code(), Some(1007));
    assert!(
        wait_until(TIMEOUT, || server.children().is_empty()),
        "child ended"
    );
}

#[test]
fn protocol_error_from_client_closes_with_1002() {
    let server = Server::start(&["cat"]);
    let mut raw = RawClient::connect(server.addr, "/");
    // Opcode 0x3 is reserved.
    raw.send_frame(0x83, b"?");
    assert_eq!(raw.read_close_code(), Some(1002));
    assert!(
        wait_until(TIMEOUT, || server.children().is_empty()),
        "child ended"
    );
}

#[tokio::test]
async fn framed_mode_keeps_message_boundaries_and_types() {
    let server = Server::start(&["--framed", "cat"]);
    let mut ws = connect(&server.url("/")).await;
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sent = vec![
        Message::text("two\nlines"),
        Message::binary(vec![0u8, 10, 13, 255]),
        Message::text(""),
        Message::binary(big.clone()),
        Message::text("ünïcode"),
    ];
    for m in &sent {
        ws.send(m.clone()).await.unwrap();
    }
    let expected = [
        Event::Text("two\nlines".into()),
        Event::Binary(vec![0, 10, 13, 255]),
        Event::Text(String::new()),
        Event::Binary(big),
        Event::Text("ünïcode".into()),
    ];
    for want in expected {
        assert_eq!(next_event(&mut ws).await, want);
    }
}

#[tokio::test]
async fn framed_mode_closes_1011_when_the_child_breaks_the_framing() {
    let server = Server::start(&[
        "--framed",
        "printf",
        "\\001\\000\\000\\000\\002ok\\011garbage",
    ]);
    let mut ws = connect(&server.url("/")).await;
    assert_eq!(next_event(&mut ws).await, Event::Text("ok".into()));
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1011);
    assert!(reason.contains("frame type"), "{reason}");
    assert!(wait_until_async(TIMEOUT, || server.children().is_empty()).await);
}

#[test]
fn framed_and_binary_do_not_combine() {
    let out = std::process::Command::new(bin())
        .args(["--framed", "--binary", "cat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn framed_example_answers_whole_messages() {
    let server = Server::start(&["--framed", &examples("framed-upper.py")]);
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "multi\nline").await;
    assert_eq!(next_text(&mut ws).await, "MULTI\nLINE");
    ws.send(Message::binary(vec![7u8; 1000])).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "1000 bytes");
}
