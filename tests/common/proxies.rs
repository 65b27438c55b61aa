//! Real reverse proxies for the end-to-end tests: Debian's nginx and
//! apache2 (with mod_php when asked), started on loopback ports of their
//! own with a minimal main configuration that includes a site file the
//! test prepared, each in its own process group, stopped when dropped.
//! Also a plain HTTP/1.1 client to talk to them.
//!
//! Without nginx or apache2 installed the tests using these say so on
//! stderr and return; with `WSPIPE_DEPLOY_TESTS=1` (as .ci/run sets) a
//! missing proxy is a failure instead.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

pub const NGINX_BIN: &str = "/usr/sbin/nginx";
pub const APACHE_BIN: &str = "/usr/sbin/apache2";
pub const APACHE_MODULES: &str = "/usr/lib/apache2/modules";
/// What the test httpd.conf loads besides an MPM (mod_unixd and
/// mod_log_config are built into Debian's apache2).
pub const APACHE_MODULE_LIST: &[(&str, &str)] = &[
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_host_module", "mod_authz_host.so"),
    ("alias_module", "mod_alias.so"),
    ("env_module", "mod_env.so"),
    ("headers_module", "mod_headers.so"),
    ("cgid_module", "mod_cgid.so"),
    ("proxy_module", "mod_proxy.so"),
    ("proxy_http_module", "mod_proxy_http.so"),
    ("proxy_wstunnel_module", "mod_proxy_wstunnel.so"),
];
/// The MPM of the test httpd.conf: threads, as Debian's default.
pub const APACHE_MPM_EVENT: (&str, &str) = ("mpm_event_module", "mod_mpm_event.so");
/// With mod_php, processes: Debian's libphp is built without thread
/// safety and refuses to load under a threaded MPM.
pub const APACHE_MPM_PREFORK: (&str, &str) = ("mpm_prefork_module", "mod_mpm_prefork.so");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Apache,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Apache => "apache2",
        }
    }

    /// The binary, if everything this proxy needs is installed. Otherwise a
    /// skip line on stderr and `None`, or, with WSPIPE_DEPLOY_TESTS=1, a
    /// panic: a CI that is meant to run these tests must not pass without.
    pub fn find(self, test: &str) -> Option<PathBuf> {
        let bin = match self {
            Kind::Nginx => NGINX_BIN,
            Kind::Apache => APACHE_BIN,
        };
        let modules: &[(&str, &str)] = match self {
            Kind::Nginx => &[],
            Kind::Apache => APACHE_MODULE_LIST,
        };
        let mpm = match self {
            Kind::Nginx => None,
            Kind::Apache => Some(APACHE_MPM_EVENT),
        };
        let missing = std::iter::once(bin.to_string())
            .chain(
                modules
                    .iter()
                    .chain(&mpm)
                    .map(|(_, file)| format!("{APACHE_MODULES}/{file}")),
            )
            .find(|p| !Path::new(p).exists());
        let Some(missing) = missing else {
            return Some(PathBuf::from(bin));
        };
        not_installed(
            test,
            self.name(),
            &missing,
            "install it with `apt-get install -y nginx apache2`",
        )
    }
}

/// `None` with a skip line on stderr, or, with WSPIPE_DEPLOY_TESTS=1, a
/// panic: a CI that is meant to run these tests must not pass without.
pub fn not_installed<T>(test: &str, what: &str, missing: &str, hint: &str) -> Option<T> {
    if std::env::var("WSPIPE_DEPLOY_TESTS").as_deref() == Ok("1") {
        panic!(
            "{test}: {what} is not installed ({missing} is missing) and WSPIPE_DEPLOY_TESTS=1 \
             requires it: {hint}"
        );
    }
    // Straight to fd 2, not eprintln!: the test harness captures that for
    // passing tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {what} is not installed ({missing} is missing); {hint}, \
         or set WSPIPE_DEPLOY_TESTS=1 to make this a failure"
    );
    None
}

/// Apache's binary and Debian's mod_php (`libphp8.2.so` on Debian 12: the
/// version is looked for, not assumed), if they, the prefork MPM mod_php
/// needs, and the PHP `extensions` enabled for Apache (`curl`: the package
/// php-curl) are installed; otherwise as [`Kind::find`].
pub fn find_mod_php(test: &str, extensions: &[&str]) -> Option<(PathBuf, PathBuf)> {
    let apache = Kind::Apache.find(test)?;
    let packages: String = extensions.iter().map(|e| format!(" php-{e}")).collect();
    let hint = format!("install them with `apt-get install -y libapache2-mod-php{packages}`");
    let prefork = format!("{APACHE_MODULES}/{}", APACHE_MPM_PREFORK.1);
    if !Path::new(&prefork).exists() {
        return not_installed(test, "mod_mpm_prefork", &prefork, &hint);
    }
    let module = std::fs::read_dir(APACHE_MODULES)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libphp") && n.ends_with(".so"))
        });
    let Some(module) = module else {
        let missing = format!("{APACHE_MODULES}/libphp*.so");
        return not_installed(test, "mod_php", &missing, &hint);
    };
    // Debian enables an extension for Apache's PHP with a link in
    // /etc/php/VERSION/apache2/conf.d (20-curl.ini).
    let name = module.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let version = name.trim_start_matches("libphp").trim_end_matches(".so");
    let conf_d = format!("/etc/php/{version}/apache2/conf.d");
    for extension in extensions {
        let enabled = std::fs::read_dir(&conf_d)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .ends_with(&format!("-{extension}.ini"))
            });
        if !enabled {
            let missing = format!("{conf_d}/20-{extension}.ini");
            return not_installed(test, &format!("php-{extension}"), &missing, &hint);
        }
    }
    Some((apache, module))
}

/// A temp dir that other users can enter: a proxy running as root hands
/// its requests to workers (and CGI scripts) running as www-data or nobody.
pub fn site_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `text` with every `from` replaced; panics when `from` is not there, so
/// that an edit of a deploy file cannot silently break a substitution.
pub fn substitute(text: &str, file: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (from, to) in pairs {
        assert!(out.contains(from), "{file} no longer contains {from:?}");
        out = out.replace(from, to);
    }
    out
}

/// A port nobody listens on right now (the proxy binds it a moment later;
/// a lost race is retried by [`Proxy::start_with`]).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running nginx or apache2, in its own process group.
pub struct Proxy {
    pub kind: Kind,
    child: Child,
    pub port: u16,
    error_log: PathBuf,
}

impl Proxy {
    /// Starts what `command` makes for a fresh directory in `site` and a
    /// free loopback port: the command and its error log.
    pub fn start_with(
        kind: Kind,
        bin: &Path,
        site: &Path,
        command: impl Fn(&Path, u16) -> (Command, PathBuf),
    ) -> Proxy {
        let mut last_log = String::new();
        for attempt in 0..5 {
            let dir = site.join(format!("{}-{attempt}", kind.name()));
            std::fs::create_dir(&dir).unwrap();
            let port = free_port();
            let (mut cmd, error_log) = command(&dir, port);
            use std::os::unix::process::CommandExt;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut proxy = Proxy {
                kind,
                child,
                port,
                error_log,
            };
            match proxy.wait_ready() {
                Ok(()) => return proxy,
                Err(log) if log.contains("Address already in use") => {
                    last_log = log;
                    continue;
                }
                Err(log) => panic!("{} did not start:\n{log}", kind.name()),
            }
        }
        panic!("{} found no free port:\n{last_log}", kind.name());
    }

    /// Waits until the port accepts connections; the error log if the
    /// proxy exited or never listened.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}\n{}", self.log()));
            }
            if TcpStream::connect(self.addr()).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not listening after {TIMEOUT:?}\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// The proxy's error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- {} error log\n{}", self.kind.name(), self.log());
        }
        // The master was started as a process group leader; its workers
        // and CGI children are in its group. Until the master is reaped
        // (below) its pid, and so the group id, cannot be reused.
        let pgid = self.child.id();
        if self.child.try_wait().ok().flatten().is_none() {
            // The master alone gets SIGTERM and stops its children.
            signal(pgid, libc::SIGTERM);
            let gone = |t| wait_until(t, || group_members(pgid).is_empty());
            if !gone(Duration::from_secs(2)) {
                // An Apache child that was still lingering on a connection
                // just closed can take seconds (Apache escalates by itself
                // after 3 s). Not what these tests are about: kill the
                // children, not the master, so that the master reaps them
                // rather than leaving orphans to init, and exits.
                for pid in group_members(pgid).into_iter().filter(|&p| p != pgid) {
                    signal(pid, libc::SIGKILL);
                }
                if !gone(TIMEOUT) {
                    // SAFETY: plain kill(2) on the group we created.
                    unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
                    gone(TIMEOUT);
                }
            }
        }
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 request with `Connection: close` and a text body;
/// (status, head, body) with a chunked body decoded. Bounded by
/// [`TIMEOUT`].
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String, String) {
    let text = [("Content-Type", "text/plain; charset=utf-8")];
    http_request_with(LOOPBACK, addr, method, path, &text, body)
}

/// 127.0.0.1, where a test's connections come from unless it says.
pub const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// [`http_request`] from the address `source` (any loopback address), with
/// the request headers `headers` (Host, Content-Length and Connection are
/// added).
pub fn http_request_with(
    source: IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = connect_tcp_from(source, addr);
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the response to {method} {path}: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "response to {method} {path} never ended"
        );
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = header_values(&head, "transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// Decodes a chunked body (chunk extensions and trailers ignored).
pub fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        if size == 0 {
            break;
        }
        let data = &rest[eol + 2..];
        out.extend_from_slice(&data[..size]);
        rest = data[size..].strip_prefix(b"\r\n").unwrap_or(&data[size..]);
    }
    out
}

/// A TCP connection to `addr` from the address `source`.
fn connect_tcp_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
    socket
        .connect_timeout(&addr.into(), TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr} from {source}: {e}"));
    socket.into()
}

/// nginx with a minimal main config whose http block includes `site`, the
/// text of a site file (Debian's nginx.conf includes conf.d/*.conf the
/// same way), all in `dir`: the command and its error log.
pub fn nginx_main(bin: &Path, dir: &Path, site: &str) -> (Command, PathBuf) {
    std::fs::write(dir.join("site.conf"), site).unwrap();
    std::fs::create_dir(dir.join("tmp")).unwrap();
    let d = dir.display();
    let main = format!(
        "worker_processes 1;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         \x20   access_log {d}/access.log;\n\
         \x20   client_body_temp_path {d}/tmp/body;\n\
         \x20   proxy_temp_path {d}/tmp/proxy;\n\
         \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
         \x20   scgi_temp_path {d}/tmp/scgi;\n\
         \x20   include {d}/site.conf;\n\
         }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let error_log = dir.join("error.log");
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(&error_log)
        .arg("-g")
        .arg(format!(
            "daemon off; pid {d}/nginx.pid; error_log {} info;",
            error_log.display()
        ));
    (cmd, error_log)
}

/// apache2 with a minimal httpd.conf that loads the modules and includes
/// `site`, the text of a site file, all in `dir`: the command and its error
/// log. With `php` (libphp*.so) the MPM is prefork and mod_php is loaded.
pub fn apache_main(bin: &Path, dir: &Path, site: &str, php: Option<&Path>) -> (Command, PathBuf) {
    std::fs::write(dir.join("site.conf"), site).unwrap();
    let run = dir.join("run");
    std::fs::create_dir(&run).unwrap();
    let d = dir.display();
    let mut conf = format!(
        "ServerRoot {d}\n\
         ServerName 127.0.0.1\n\
         DefaultRuntimeDir {d}/run\n\
         PidFile {d}/run/apache2.pid\n\
         ScriptSock {d}/run/cgisock\n\
         ErrorLog {d}/error.log\n\
         LogLevel warn proxy:info\n"
    );
    let (mpm, mpm_file) = match php {
        None => {
            conf.push_str(
                "StartServers 1\nServerLimit 2\nThreadsPerChild 16\nMaxRequestWorkers 32\n",
            );
            APACHE_MPM_EVENT
        }
        Some(_) => {
            // One connection per process: a proxied WebSocket holds one
            // for its lifetime, so keep spares for the requests beside it.
            conf.push_str(
                "StartServers 3\nMinSpareServers 2\nMaxSpareServers 4\nServerLimit 8\n\
                 MaxRequestWorkers 8\n",
            );
            APACHE_MPM_PREFORK
        }
    };
    conf.push_str(&format!("LoadModule {mpm} {APACHE_MODULES}/{mpm_file}\n"));
    for (name, file) in APACHE_MODULE_LIST {
        conf.push_str(&format!("LoadModule {name} {APACHE_MODULES}/{file}\n"));
    }
    if let Some(module) = php {
        conf.push_str(&format!("LoadModule php_module {}\n", module.display()));
    }
    if is_root() {
        // Apache refuses to serve as root: its children (CGI scripts and
        // PHP pages with them) run as this user, as on a Debian server.
        conf.push_str(&format!("User {0}\nGroup {0}\n", apache_user()));
    }
    // As Debian's apache2.conf: nothing is served unless a section allows it.
    conf.push_str(&format!(
        "<Directory />\n    AllowOverride None\n    Require all denied\n</Directory>\n\
         Include {d}/site.conf\n"
    ));
    std::fs::write(dir.join("httpd.conf"), conf).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-f")
        .arg(dir.join("httpd.conf"))
        .arg("-DFOREGROUND");
    (cmd, dir.join("error.log"))
}

/// The user Apache's children run as when the tests run as root:
/// `www-data` if there is one, else nobody's uid.
pub fn apache_user() -> &'static str {
    let www_data = std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("www-data:"));
    if www_data {
        "www-data"
    } else {
        "#65534"
    }
}
