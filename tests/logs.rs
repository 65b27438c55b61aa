//! End to end: `--log-format json` writes every log line as one JSON
//! object, the access lines with their fields at the top level.

mod common;

use common::*;

fn parse(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test]
async fn json_logs_carry_each_access_field_at_the_top_level() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "hi.sh", "#!/bin/sh\necho hi\nexit 3\n");
    let server = Server::start(&["--log-format", "json", program.to_str().unwrap()]);
    let mut ws = connect(&server.url("/x?q=1")).await;
    let (lines, close) = texts_until_close(&mut ws).await;
    assert_eq!((lines, close.0), (vec!["hi".to_owned()], 1011));
    let disconnect = server.wait_log_async("\"message\":\"disconnect\"").await;
    let connect = server.wait_log_async("\"message\":\"connect\"").await;
    let (connect, disconnect) = (parse(&connect), parse(&disconnect));
    for line in [&connect, &disconnect] {
        assert_eq!(line["target"], "wspipe::access", "{line}");
        assert_eq!(line["level"], "INFO");
        assert!(line["timestamp"].is_string());
        assert_eq!(line["path"], "/x");
        assert!(line["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(line["id"], connect["id"]);
        assert!(line["pid"].is_u64(), "{line}");
    }
    assert_eq!(disconnect["exit"], "exit status 3");
    assert_eq!(disconnect["close"], 1011);
    assert!(disconnect["cause"].is_string());
    assert!(disconnect["duration"].is_string());
    // Every line, not only the access lines, is an object.
    for line in server.log.lines() {
        parse(&line);
    }
}

#[test]
fn an_unknown_log_format_exits_2_with_one_line() {
    let out = run_bin(&["--log-format", "xml", "cat"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
