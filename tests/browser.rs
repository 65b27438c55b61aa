//! The dev console (`--devconsole`), and a JWT carried as a subprotocol,
//! in a real browser: the real wspipe binary, a real chromedriver, a real
//! headless Chromium, all on loopback.
//!
//! Needs Debian's `chromium` and `chromium-driver` (or `WSPIPE_CHROMIUM` and
//! `WSPIPE_CHROMEDRIVER` naming the binaries). Without them each
//! browser test prints a "skipped" line and returns, unless
//! `WSPIPE_BROWSER_TESTS=1` is set (as CI does), which makes it fail.
//!
//! `WSPIPE_UPDATE_SCREENSHOT=1` rewrites docs/devconsole.png (it is also
//! written when missing); every run leaves a fresh copy in Cargo's test
//! scratch directory.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{children_of, header_values, raw_response, Server, TIMEOUT};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tempfile::TempDir;

/// Debian's paths; `WSPIPE_CHROMIUM` and `WSPIPE_CHROMEDRIVER` override them.
const CHROMIUM: (&str, &str) = ("WSPIPE_CHROMIUM", "/usr/bin/chromium");
const CHROMEDRIVER: (&str, &str) = ("WSPIPE_CHROMEDRIVER", "/usr/bin/chromedriver");

/// Upper bound for a whole browser test, whatever hangs.
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// The browser tools (Chromium, chromedriver), or `None` (after saying so
/// on stderr) when they are missing and not required.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let path = |(var, default): (&str, &str)| {
        std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let (chromium, chromedriver) = (path(CHROMIUM), path(CHROMEDRIVER));
    let missing: Vec<String> = [&chromium, &chromedriver]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((chromium, chromedriver));
    }
    if std::env::var("WSPIPE_BROWSER_TESTS").as_deref() == Ok("1") {
        panic!(
            "WSPIPE_BROWSER_TESTS=1 but {} not installed \
             (apt-get install -y chromium chromium-driver)",
            missing.join(" and ")
        );
    }
    // Straight to the stderr file descriptor: eprintln! would be captured
    // by the test harness and never shown for a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: chromium/chromedriver not installed (set WSPIPE_BROWSER_TESTS=1 to require)"
    );
    None
}

/// chromedriver (and the Chromium it starts) plus a throwaway profile.
/// Dropping it kills the whole process tree, even when a test panics.
struct Browser {
    driver: Child,
    /// Every process that ever descended from chromedriver, seen so far.
    seen: std::sync::Mutex<Vec<u32>>,
    profile: TempDir,
    port: u16,
}

impl Browser {
    fn start(chromedriver: &Path) -> Browser {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut driver = Command::new(chromedriver)
            // Port 0: chromedriver picks a free one and prints it, no race.
            .args(["--port=0", "--allowed-ips=127.0.0.1", "--log-level=WARNING"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, so Drop can kill everything at once.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let (tx, rx) = mpsc::channel();
        let stdout = driver.stdout.take().expect("chromedriver stdout");
        std::thread::spawn(move || {
            // Keep draining so chromedriver never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let port = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok());
                if let Some(port) = port {
                    let _ = tx.send(port);
                }
            }
        });
        let mut browser = Browser {
            driver,
            seen: Default::default(),
            profile,
            port: 0,
        };
        browser.port = rx
            .recv_timeout(TIMEOUT)
            .expect("chromedriver did not report its port");
        browser
    }

    fn webdriver_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Records chromedriver's descendants (Chromium and its helpers), so
    /// they can be killed even after they are orphaned.
    fn note_descendants(&self) {
        let mut seen = self.seen.lock().unwrap();
        let mut queue = vec![self.driver.id()];
        while let Some(pid) = queue.pop() {
            for (child, _) in children_of(pid) {
                if !seen.contains(&child) {
                    seen.push(child);
                }
                queue.push(child);
            }
        }
    }

    /// A WebDriver session with headless Chromium.
    async fn session(&self, chromium: &Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-dev-shm-usage",
                    "--window-size=900,640",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ],
            }),
        );
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let url = self.webdriver_url();
        let client = tokio::time::timeout(Duration::from_secs(60), builder.connect(&url))
            .await
            .expect("no WebDriver session within 60 s")
            .expect("WebDriver session");
        self.note_descendants();
        client
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.note_descendants();
        let pgid = self.driver.id() as libc::pid_t;
        // SAFETY: plain signal sends to processes we started.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
            for &pid in self.seen.lock().unwrap().iter() {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = self.driver.wait();
    }
}

/// Runs a browser test body with a session, bounded by [`TEST_LIMIT`];
/// the session is closed politely on success, and Drop kills the rest.
async fn with_browser<F, Fut>(body: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Client>,
{
    let Some((chromium, chromedriver)) = browser_tools() else {
        return;
    };
    let browser = Browser::start(&chromedriver);
    let run = async {
        let client = browser.session(&chromium).await;
        let client = body(client).await;
        browser.note_descendants();
        let _ = tokio::time::timeout(TIMEOUT, client.close()).await;
    };
    tokio::time::timeout(TEST_LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("browser test did not finish within {TEST_LIMIT:?}"));
    drop(browser);
}

/// Waits (bounded) for an element.
async fn wait_for(client: &Client, what: &str, locator: Locator<'_>) -> Element {
    client
        .wait()
        .at_most(TIMEOUT)
        .for_element(locator)
        .await
        .unwrap_or_else(|e| panic!("{what}: not on the page within {TIMEOUT:?}: {e}"))
}

/// XPath for a log entry of `kind` whose message text is exactly `text`.
fn entry_xpath(kind: &str, text: &str) -> String {
    format!(
        "//div[@id='log']/div[contains(concat(' ', @class, ' '), ' {kind} ')]\
         /span[@class='text'][normalize-space(.)='{text}']"
    )
}

async fn log_text(client: &Client) -> String {
    match client.find(Locator::Id("log")).await {
        Ok(log) => log.text().await.unwrap_or_default(),
        Err(e) => format!("(no log: {e})"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn console_echoes_a_line_in_the_browser() {
    let server = Server::start(&["--devconsole", "cat"]);
    let page = format!("http://{}/", server.addr);
    let ws_url = format!("ws://{}/", server.addr);
    with_browser(|client| async move {
        client.goto(&page).await.expect("open the console");
        assert_eq!(client.title().await.unwrap(), "wspipe dev console");
        wait_for(
            &client,
            "the open event",
            Locator::Css("#log .entry.event[data-event=open]"),
        )
        .await;
        let url = client.find(Locator::Id("url")).await.unwrap();
        assert_eq!(url.prop("value").await.unwrap().as_deref(), Some(&*ws_url));

        // A line sent with Enter, another with the Send button.
        let input = client.find(Locator::Id("input")).await.unwrap();
        input
            .send_keys(&("hello from chromium".to_owned() + &char::from(Key::Enter).to_string()))
            .await
            .expect("type and press Enter");
        let echoed = entry_xpath("recv", "hello from chromium");
        wait_for(
            &client,
            "the echo of the first line",
            Locator::XPath(&echoed),
        )
        .await;
        input.send_keys("second line").await.expect("type");
        client
            .find(Locator::Id("send"))
            .await
            .unwrap()
            .click()
            .await
            .expect("click Send");
        let echoed = entry_xpath("recv", "second line");
        wait_for(
            &client,
            "the echo of the second line",
            Locator::XPath(&echoed),
        )
        .await;
        let sent = client
            .find_all(Locator::Css("#log .entry.sent"))
            .await
            .unwrap();
        assert_eq!(sent.len(), 2, "log: {}", log_text(&client).await);
        assert_eq!(
            input.prop("value").await.unwrap().as_deref(),
            Some(""),
            "input cleared after sending"
        );

        let png = client.screenshot().await.expect("screenshot");
        save_screenshot(&png);

        // Disconnect: a clean close from the browser's side.
        client
            .find(Locator::Id("disconnect"))
            .await
            .unwrap()
            .click()
            .await
            .expect("click Disconnect");
        let close = wait_for(
            &client,
            "the close event",
            Locator::Css("#log .entry.event[data-event=close]"),
        )
        .await;
        assert_eq!(
            close.attr("data-code").await.unwrap().as_deref(),
            Some("1000")
        );
        let status = client.find(Locator::Id("status")).await.unwrap();
        assert_eq!(status.text().await.unwrap(), "closed");
        client
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn console_shows_the_servers_close_code() {
    let server = Server::start(&["--devconsole", "sh", "-c", "echo hi; exit 3"]);
    // Any path is the endpoint here; the query string must be kept.
    let page = format!("http://{}/room/1?user=ann", server.addr);
    let ws_url = format!("ws://{}/room/1?user=ann", server.addr);
    with_browser(|client| async move {
        client.goto(&page).await.expect("open the console");
        let url = client.find(Locator::Id("url")).await.unwrap();
        assert_eq!(url.prop("value").await.unwrap().as_deref(), Some(&*ws_url));
        wait_for(
            &client,
            "the line \"hi\"",
            Locator::XPath(&entry_xpath("recv", "hi")),
        )
        .await;
        let close = wait_for(
            &client,
            "the close event",
            Locator::Css("#log .entry.event[data-event=close]"),
        )
        .await;
        assert_eq!(
            close.attr("data-code").await.unwrap().as_deref(),
            Some("1011")
        );
        let shown = close.text().await.unwrap();
        assert!(shown.contains("code 1011"), "close event text: {shown}");
        assert!(shown.contains("exit status 3"), "close event text: {shown}");

        // Connect again: a second session, same output.
        client
            .find(Locator::Id("connect"))
            .await
            .unwrap()
            .click()
            .await
            .expect("click Connect");
        let second_close = "(//div[@id='log']/div[@data-event='close'])[2]";
        wait_for(&client, "the second close", Locator::XPath(second_close)).await;
        let his = client
            .find_all(Locator::XPath(&entry_xpath("recv", "hi")))
            .await
            .unwrap();
        assert_eq!(his.len(), 2, "log: {}", log_text(&client).await);
        client
    })
    .await;
}

/// Plain HTTP answers of `--devconsole` (no browser needed).
#[test]
fn console_http_answers() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("chat.sh");
    std::fs::write(&script, "#!/bin/sh\ncat\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().to_str().unwrap();
    let server = Server::start(&["--devconsole", "--dir", root]);
    let get = |method: &str, path: &str| {
        raw_response(
            server.addr,
            &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
    };

    let (code, head, body) = get("GET", "/chat?x=1");
    assert_eq!(code, 200, "{head}");
    assert_eq!(
        header_values(&head, "content-type"),
        ["text/html; charset=utf-8"]
    );
    assert_eq!(header_values(&head, "cache-control"), ["no-store"]);
    assert!(body.contains("<title>wspipe dev console</title>"));

    let (code, head) = common::raw_request(
        server.addr,
        "HEAD /chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200, "{head}");
    assert_eq!(
        header_values(&head, "content-length"),
        [body.len().to_string()]
    );

    let (code, head, _) = get("GET", "/nothing-here");
    assert_eq!(code, 404, "{head}");
    let (code, head, _) = get("GET", "/");
    assert_eq!(code, 404, "{head}");
    let (code, head, _) = get("POST", "/chat");
    assert_eq!(code, 405, "{head}");
}

/// Keeps the screenshot: always in Cargo's scratch dir, and as
/// docs/devconsole.png when that is missing or WSPIPE_UPDATE_SCREENSHOT=1.
fn save_screenshot(png: &[u8]) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "screenshot is not a PNG"
    );
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("devconsole.png");
    std::fs::write(&scratch, png).expect("write screenshot");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/devconsole.png");
    let update = std::env::var("WSPIPE_UPDATE_SCREENSHOT").as_deref() == Ok("1");
    if update || !docs.exists() {
        std::fs::create_dir_all(docs.parent().unwrap()).expect("docs dir");
        std::fs::write(&docs, png).expect("write docs/devconsole.png");
    }
}

/// A page that opens two WebSockets the way a browser must carry a token,
/// as an offered subprotocol `bearer.TOKEN`: one with the token in the
/// URL's fragment, one with a forged one. Each socket's message and close
/// become elements `#NAME-msg` and `#NAME-close`.
const JWT_PAGE: &str = r#"<!doctype html><title>jwt</title><div id="out"></div><script>
const [good, forged] = location.hash.slice(1).split(",");
function add(id, text) {
  const d = document.createElement("div");
  d.id = id; d.textContent = text;
  document.getElementById("out").append(d);
}
function open(name, token) {
  const ws = new WebSocket("ws://" + location.host + "/room", ["bearer." + token]);
  ws.onmessage = e => add(name + "-msg", e.data + " protocol=" + ws.protocol);
  ws.onclose = e => add(name + "-close", "close " + e.code);
}
open("good", good);
open("forged", forged);
</script>"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_carries_a_jwt_as_a_subprotocol_and_a_forged_one_is_refused() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let dir = TempDir::new().unwrap();
    let secret = "the browser test's HMAC secret, 32+ bytes";
    let key_file = dir.path().join("secret");
    std::fs::write(&key_file, secret).unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("index.html"), JWT_PAGE).unwrap();
    let child = dir.path().join("who.sh");
    std::fs::write(&child, "#!/bin/sh\necho \"user=$REMOTE_USER\"\n").unwrap();
    std::fs::set_permissions(&child, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(&[
        "--jwt-key",
        key_file.to_str().unwrap(),
        "--staticdir",
        site.to_str().unwrap(),
        child.to_str().unwrap(),
    ]);
    let exp = jsonwebtoken::get_current_timestamp() + 300;
    let claims = serde_json::json!({"sub": "alice", "exp": exp});
    let sign = |secret: &str| {
        let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
        encode(&Header::default(), &claims, &key).unwrap()
    };
    let (good, forged) = (sign(secret), sign("a guess at the secret, 32 bytes or so"));
    let page = format!("http://{}/index.html#{good},{forged}", server.addr);
    with_browser(|client| async move {
        client.goto(&page).await.expect("open the page");
        let msg = wait_for(
            &client,
            "the admitted socket's line",
            Locator::Id("good-msg"),
        )
        .await;
        assert_eq!(
            msg.text().await.unwrap(),
            format!("user=alice protocol=bearer.{good}")
        );
        let closed = wait_for(
            &client,
            "the forged socket's close",
            Locator::Id("forged-close"),
        )
        .await;
        // A refused handshake is, to a page, an abnormal closure.
        assert_eq!(closed.text().await.unwrap(), "close 1006");
        assert!(client.find(Locator::Id("forged-msg")).await.is_err());
        client
    })
    .await;
    server.wait_log_async("refused: bad signature").await;
}
