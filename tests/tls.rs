//! End to end over TLS: wss:// with a certificate made at test time, mutual
//! TLS with --sslca, start-up errors, and --redirport.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_tungstenite::Connector;

/// A test CA, a server certificate for 127.0.0.1/localhost and a client
/// certificate, written as PEM files into a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "wspipe test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        write("ca.pem", ca.pem());
        for (name, sans) in [
            (
                "server",
                vec!["localhost".to_string(), "127.0.0.1".to_string()],
            ),
            ("client", vec!["client".to_string()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(sans)
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// A client configuration trusting the test CA, optionally with the
    /// client certificate.
    fn client(&self, with_cert: bool) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if with_cert {
            let chain = CertificateDer::pem_file_iter(self.path("client.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(self.path("client.key")).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(config)
    }
}

async fn connect_tls(
    url: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        false,
        Some(Connector::Rustls(config)),
    );
    tokio::time::timeout(TIMEOUT, connect)
        .await
        .expect("connect timed out")
        .map(|(ws, _)| ws)
}

fn start_tls(pki: &Pki, extra: &[&str], program: &[&str]) -> Server {
    let (cert, key) = (pki.arg("server.pem"), pki.arg("server.key"));
    let mut args = vec!["--ssl", "--sslcert", &cert, "--sslkey", &key];
    args.extend_from_slice(extra);
    args.extend_from_slice(program);
    Server::start(&args)
}

fn dump_env() -> String {
    format!("{}/examples/dump-env.sh", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn wss_echoes_and_children_see_https_on() {
    let pki = Pki::new();
    let server = start_tls(&pki, &[], &["cat"]);
    let url = format!("wss://127.0.0.1:{}/", server.addr.port());
    let mut ws = connect_tls(&url, pki.client(false))
        .await
        .expect("wss connects");
    send_text(&mut ws, "over tls").await;
    assert_eq!(next_text(&mut ws).await, "over tls");

    let server = start_tls(&pki, &[], &[&dump_env()]);
    let url = format!("wss://localhost:{}/", server.addr.port());
    let mut ws = connect_tls(&url, pki.client(false)).await.unwrap();
    let (env, close) = texts_until_close(&mut ws).await;
    assert_eq!(close.0, 1000);
    assert!(env.contains(&"HTTPS=on".to_string()), "{env:?}");
    assert!(
        env.contains(&format!("SERVER_PORT={}", server.addr.port())),
        "{env:?}"
    );
}

#[tokio::test]
async fn plain_ws_is_refused_on_a_tls_port() {
    let pki = Pki::new();
    let server = start_tls(&pki, &[], &["cat"]);
    let plain = tokio_tungstenite::connect_async(format!("ws://{}/", server.addr));
    let result = tokio::time::timeout(TIMEOUT, plain).await.expect("no hang");
    assert!(result.is_err());
    assert!(
        server.children().is_empty(),
        "no child for a failed handshake"
    );
}

#[tokio::test]
async fn sslca_requires_a_client_certificate() {
    let pki = Pki::new();
    let ca = pki.arg("ca.pem");
    let server = start_tls(&pki, &["--sslca", &ca], &["cat"]);
    let url = format!("wss://127.0.0.1:{}/", server.addr.port());
    assert!(
        connect_tls(&url, pki.client(false)).await.is_err(),
        "no client cert: refused"
    );
    assert!(server.children().is_empty());
    let mut ws = connect_tls(&url, pki.client(true))
        .await
        .expect("client cert accepted");
    send_text(&mut ws, "mutual").await;
    assert_eq!(next_text(&mut ws).await, "mutual");
}

fn start_error(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(["--port", "0", "--address", "127.0.0.1"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn bad_tls_setups_fail_at_start_with_one_line() {
    let pki = Pki::new();
    let (cert, key, client_key) = (
        pki.arg("server.pem"),
        pki.arg("server.key"),
        pki.arg("client.key"),
    );
    assert!(start_error(&["--ssl", "cat"]).contains("--sslcert"));
    assert!(start_error(&["--sslcert", &cert, "--sslkey", &key, "cat"]).contains("--ssl"));
    let missing = start_error(&[
        "--ssl",
        "--sslcert",
        "/nonexistent.pem",
        "--sslkey",
        &key,
        "cat",
    ]);
    assert!(missing.contains("/nonexistent.pem"), "{missing}");
    let mismatch = start_error(&["--ssl", "--sslcert", &cert, "--sslkey", &client_key, "cat"]);
    assert!(mismatch.contains("do not fit"), "{mismatch}");
    let not_pem = start_error(&[
        "--ssl",
        "--sslcert",
        &cert,
        "--sslkey",
        Path::new(&cert).to_str().unwrap(),
        "cat",
    ]);
    assert!(not_pem.contains("--sslkey"), "{not_pem}");
}

#[test]
fn redirport_redirects_plain_http_to_the_tls_port() {
    let pki = Pki::new();
    // A free port for the redirect listener: bind, note, release.
    let redir = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redir_arg = redir.to_string();
    let server = start_tls(&pki, &["--redirport", &redir_arg], &["cat"]);
    server
        .log
        .wait_for("redirecting", TIMEOUT)
        .expect("redirect listener up");
    let (status, head) = raw_request(
        ([127, 0, 0, 1], redir).into(),
        "GET /chat?room=1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(status, 301, "{head}");
    let location = format!(
        "location: https://localhost:{}/chat?room=1",
        server.addr.port()
    );
    assert!(head.to_ascii_lowercase().contains(&location), "{head}");
}
