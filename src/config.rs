//! Validated configuration, built once from the command line.
//!
//! Everything a user can get wrong is checked here, before any socket is
//! opened, and reported as one line (`wspipe: ...`): exit status 2 for bad
//! flags, 1 for a COMMAND that cannot be run (as websocketd). The rest of
//! the server works with types that cannot hold a contradictory setup.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::cli::Cli;
use crate::env::BaseEnv;
use crate::logging::{LogFormat, LogLevel};
use crate::origin::OriginPolicy;
use crate::proxy::TrustedProxies;

mod auth;
mod cluster;
mod combos;
pub mod file;
mod sockets;
use auth::auth;
use combos::{check_anyorigin, check_passstderr, check_shared};
use sockets::{addr_or_path, control, listen, publish, socket_mode, tls};

/// A configuration error: the one line printed before exiting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad flags or a contradictory combination: exit status 2.
    #[error("{0}")]
    Usage(String),
    /// COMMAND does not exist or is not executable: exit status 1, as
    /// websocketd.
    #[error("{0}")]
    Command(String),
}

impl ConfigError {
    /// The exit status wspipe ends with.
    pub fn exit_status(&self) -> u8 {
        match self {
            ConfigError::Usage(_) => 2,
            ConfigError::Command(_) => 1,
        }
    }
}

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError::Usage(msg.into())
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// The program a connection runs.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// What a WebSocket path maps to.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// One program for every path (SCRIPT_NAME "/", the path in PATH_INFO).
    Command(CommandSpec),
    /// Every executable under a directory, found by path (`--dir`).
    Dir(PathBuf),
    /// No program: every path is a channel endpoint (`--pubsub`).
    PubSub {
        /// Clients may not publish (`--pubsub-readonly`).
        read_only: bool,
    },
}

/// How messages map to the child's byte streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One text message per line, both ways.
    Text,
    /// Raw bytes both ways; child output as binary messages as it arrives.
    Binary,
    /// Messages both ways as a type byte, a 32-bit length and the payload
    /// (see [`crate::frames`]): boundaries and types survive.
    Framed,
}

/// Extra response headers, validated at start-up.
#[derive(Debug, Clone, Default)]
pub struct ExtraHeaders {
    /// Added to every response.
    pub all: Vec<(HeaderName, HeaderValue)>,
    /// Added to WebSocket upgrade (101) responses only.
    pub ws: Vec<(HeaderName, HeaderValue)>,
    /// Added to plain HTTP responses only.
    pub http: Vec<(HeaderName, HeaderValue)>,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<Listen>,
    /// `--port`, `--address` or `--unixsocket` was given: with sockets
    /// passed by systemd, `listen` is bound as well; without (it is then
    /// only the default port), it is not.
    pub listen_given: bool,
    /// `--socketmode`: the permission bits of the `--unixsocket` file.
    pub socket_mode: Option<u32>,
    /// The WebSocket endpoint; `None` when only files or CGI are served.
    pub endpoint: Option<Endpoint>,
    /// `--staticdir`, canonical.
    pub static_dir: Option<PathBuf>,
    /// `--cgidir`, canonical.
    pub cgi_dir: Option<PathBuf>,
    /// `--cgitimeout`: how long a CGI script has to send its headers.
    pub cgi_timeout: Duration,
    pub dev_console: bool,
    pub mode: Mode,
    /// Most live sessions; `None` is unlimited.
    pub max_forks: Option<usize>,
    /// Largest client message (and frame) accepted.
    pub max_message: usize,
    /// Longest line read from a child before it is cut.
    pub max_line: usize,
    /// Grace before the first signal; later signals follow at growing steps.
    pub close_grace: Duration,
    /// Ping interval, if pings are on.
    pub ping: Option<Duration>,
    pub origin: OriginPolicy,
    /// `--basic-auth`: who may connect; `None` admits everyone.
    pub auth: Option<std::sync::Arc<crate::auth::Auth>>,
    pub headers: ExtraHeaders,
    pub pass_stderr: bool,
    pub reverse_lookup: bool,
    /// The part of every child's environment that does not depend on the
    /// request: computed once, not per spawn.
    pub base_env: BaseEnv,
    pub log_level: LogLevel,
    /// `--log-format`: text or JSON lines.
    pub log_format: LogFormat,
    /// The control socket, if any.
    pub control: Option<ControlSocket>,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// TLS for every TCP listener (`--ssl`).
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// `--redirport`: a plain HTTP port that redirects to the main one.
    pub redirect_port: Option<u16>,
    /// `--metrics`: where statistics are served.
    pub metrics: Option<Listen>,
    /// `--publish`: where channel publishes are taken over HTTP.
    pub publish: Option<PublishListen>,
    /// `--channel-overflow`: what a full channel queue does.
    pub overflow: Overflow,
    /// `--history`, `--history-ttl`, `--history-ids`; `None`: no history.
    pub history: Option<HistoryFlags>,
    /// `--shared`: one child per endpoint, shared by its clients; `None`
    /// when each connection has its own.
    pub shared: Option<SharedFlags>,
    /// `--redis` and `--instance`: channels shared with other instances.
    pub cluster: Option<crate::cluster::Settings>,
    /// `--config`: what SIGHUP re-reads; set by the caller, not the flags.
    pub reload: Option<ReloadSource>,
}

/// What SIGHUP needs to build the configuration again: the arguments as
/// given (the file is read anew; the command line still overrides it).
#[derive(Debug, Clone)]
pub struct ReloadSource {
    pub path: PathBuf,
    pub args: Vec<OsString>,
    /// The effective keys at start, to tell what a reload changes.
    pub effective: toml::Table,
}

/// Largest `--history`: a whole replay, and the notice before it, fit in
/// one member's queue (the hub's `MEMBER_QUEUE`, checked there), so
/// catching up never drops.
pub const MAX_HISTORY: usize = 1000;

/// `--history`, `--history-ttl`, `--history-ids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryFlags {
    /// Messages kept per channel, 1 to [`MAX_HISTORY`].
    pub depth: usize,
    /// How long an idle channel's history is kept.
    pub ttl: Duration,
    /// Whether clients get `SEQ<TAB>` before each message and the epoch
    /// notice when they join.
    pub ids: bool,
}

/// How shared children (`--shared`) behave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedFlags {
    /// `--shared-ids`: a shared child's lines carry client ids.
    pub ids: bool,
    /// `--shared-restart`: a child that exits is started again.
    pub restart: bool,
    /// `--shared-keep`: a child outlives its last client.
    pub keep: bool,
}

/// What a publish does for a member whose queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop the oldest queued messages to make room (counted).
    #[default]
    Drop,
    /// Close the client (1008); it gets no more messages.
    Close,
}

/// Where HTTP publishes are taken, and the token they must carry.
#[derive(Debug, Clone)]
pub struct PublishListen {
    pub listen: Listen,
    pub token: Option<Token>,
    /// Permission bits of a Unix socket (`--publish-mode`, default 0600:
    /// only wspipe's user); `None` for TCP.
    pub mode: Option<u32>,
}

/// A secret a request must present (`--publish-token`). Its Debug output
/// hides it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Where the control socket lives and who may use it.
#[derive(Debug, Clone)]
pub struct ControlSocket {
    /// Absolute, so children can use it from any working directory.
    pub path: PathBuf,
    /// Permission bits (default 0600: only wspipe's user).
    pub mode: u32,
}

impl Config {
    /// Validates the parsed flags.
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let static_dir = existing_dir("--staticdir", cli.staticdir.as_ref())?;
        let cgi_dir = existing_dir("--cgidir", cli.cgidir.as_ref())?;
        let endpoint = endpoint(&cli, static_dir.is_some() || cli.cgidir.is_some())?;
        check_shared(&cli, endpoint.as_ref())?;
        check_passstderr(&cli)?;
        if cli.devconsole && (static_dir.is_some() || cgi_dir.is_some()) {
            return Err(bad(
                "--devconsole cannot be used with --staticdir or --cgidir",
            ));
        }
        if cli.cgitimeout == 0 {
            return Err(bad("--cgitimeout must be at least 1 ms"));
        }
        if cli.maxframesize < 16 {
            return Err(bad("--maxframesize must be at least 16 bytes"));
        }
        if cli.maxlinesize < 4 {
            return Err(bad("--maxlinesize must be at least 4 bytes"));
        }
        check_anyorigin(&cli)?;
        let origin = OriginPolicy::new(cli.origin.as_deref(), cli.sameorigin)
            .map_err(|e| bad(format!("--origin: {e}")))?;
        let headers = ExtraHeaders {
            all: parse_headers("--header", &cli.header)?,
            ws: parse_headers("--header-ws", &cli.header_ws)?,
            http: parse_headers("--header-http", &cli.header_http)?,
        };
        let control = control(&cli)?;
        let tls = tls(&cli)?;
        let trusted_proxies = TrustedProxies::parse(&cli.trusted_proxy.join(","))
            .map_err(|e| bad(format!("--trusted-proxy: {e}")))?;
        let mut base_env = BaseEnv::from_parent(&cli.passenv);
        if let Some(c) = &control {
            // Children reach the server with `"$WSPIPE_BIN" ctl ...` even
            // when wspipe is not on their PATH.
            base_env.set(crate::env::CONTROL_VAR, c.path.as_os_str());
            if let Ok(exe) = std::env::current_exe() {
                base_env.set(crate::env::BIN_VAR, exe.as_os_str());
            }
        }
        let listen = listen(&cli)?;
        let cluster = cluster::settings(&cli, &listen)?;
        let mut config = Config {
            listen,
            listen_given: cli.port.is_some() || !cli.address.is_empty() || cli.unixsocket.is_some(),
            socket_mode: socket_mode(&cli)?,
            endpoint,
            static_dir,
            cgi_dir,
            cgi_timeout: Duration::from_millis(cli.cgitimeout),
            dev_console: cli.devconsole,
            mode: match (cli.binary, cli.framed) {
                (true, true) => return Err(bad("give only one of --binary and --framed")),
                (true, false) => Mode::Binary,
                (false, true) => Mode::Framed,
                (false, false) => Mode::Text,
            },
            max_forks: (cli.maxforks > 0).then_some(cli.maxforks),
            max_message: cli.maxframesize,
            max_line: cli.maxlinesize,
            close_grace: Duration::from_millis(cli.closems),
            ping: (cli.pingms > 0).then(|| Duration::from_millis(cli.pingms)),
            origin,
            auth: auth(&cli)?,
            headers,
            pass_stderr: cli.passstderr,
            reverse_lookup: cli.reverselookup,
            base_env,
            log_level: cli.loglevel,
            log_format: cli.log_format,
            control,
            trusted_proxies,
            tls,
            redirect_port: cli.redirport,
            metrics: cli
                .metrics
                .as_deref()
                .map(|value| addr_or_path("--metrics", value))
                .transpose()?,
            publish: publish(&cli)?,
            overflow: match cli.channel_overflow.as_str() {
                "close" => Overflow::Close,
                _ => Overflow::Drop,
            },
            history: history(&cli)?,
            shared: cli.shared.then_some(SharedFlags {
                ids: cli.shared_ids,
                restart: cli.shared_restart,
                keep: cli.shared_keep,
            }),
            cluster,
            reload: None,
        };
        // Last, so that a bad flag is reported (exit 2) before a missing
        // program (exit 1).
        if let Some(Endpoint::Command(spec)) = &mut config.endpoint {
            spec.program = locate(&spec.program)?;
        }
        Ok(config)
    }
}

/// A directory flag's value, canonical, checked to exist.
fn existing_dir(flag: &str, dir: Option<&PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let root = dir
        .canonicalize()
        .map_err(|e| bad(format!("{flag} {}: {e}", dir.display())))?;
    if !root.is_dir() {
        return Err(bad(format!("{flag} {}: not a directory", dir.display())));
    }
    Ok(Some(root))
}

fn endpoint(cli: &Cli, serves_http: bool) -> Result<Option<Endpoint>, ConfigError> {
    let given = [
        cli.dir.is_some(),
        cli.command.is_some(),
        !cli.program.is_empty(),
        cli.pubsub,
    ];
    if cli.pubsub_readonly && !cli.pubsub {
        return Err(bad("--pubsub-readonly needs --pubsub"));
    }
    match given.iter().filter(|g| **g).count() {
        0 if serves_http => return Ok(None),
        0 => return Err(bad(
            "no program to run: give COMMAND [ARGS...], --command, --dir, --pubsub, --staticdir or --cgidir",
        )),
        1 => {}
        _ => return Err(bad("give only one of COMMAND, --command, --dir and --pubsub")),
    }
    if cli.pubsub {
        if cli.framed {
            return Err(bad(
                "--framed frames a program's stdin and stdout: --pubsub has none",
            ));
        }
        return Ok(Some(Endpoint::PubSub {
            read_only: cli.pubsub_readonly,
        }));
    }
    if let Some(root) = existing_dir("--dir", cli.dir.as_ref())? {
        return Ok(Some(Endpoint::Dir(root)));
    }
    let mut words: Vec<OsString> = match &cli.command {
        Some(line) => shell_words::split(line)
            .map_err(|e| bad(format!("--command: {e}")))?
            .into_iter()
            .map(OsString::from)
            .collect(),
        None => cli.program.clone(),
    };
    if words.is_empty() {
        return Err(bad("--command is empty"));
    }
    Ok(Some(Endpoint::Command(CommandSpec {
        program: PathBuf::from(words.remove(0)),
        args: words,
    })))
}

/// `--history N` (1 to [`MAX_HISTORY`]), with its TTL and `--history-ids`.
fn history(cli: &Cli) -> Result<Option<HistoryFlags>, ConfigError> {
    const MAX_DEPTH: usize = MAX_HISTORY;
    let Some(depth) = cli.history else {
        if cli.history_ids {
            return Err(bad("--history-ids needs --history"));
        }
        return Ok(None);
    };
    if !(1..=MAX_DEPTH).contains(&depth) {
        return Err(bad(format!(
            "--history {depth}: keep 1 to {MAX_DEPTH} messages per channel"
        )));
    }
    if cli.history_ttl == 0 {
        return Err(bad("--history-ttl must be at least 1 second"));
    }
    Ok(Some(HistoryFlags {
        depth,
        ttl: Duration::from_secs(cli.history_ttl),
        ids: cli.history_ids,
    }))
}

/// COMMAND is checked once, at start-up, as websocketd does: a program that
/// does not exist or is not executable is refused now (exit status 1)
/// rather than failing every connection. A path (absolute, or relative to
/// wspipe's working directory, which the children share) is used as given;
/// a bare name is looked up in PATH, as a spawn would, and the absolute path
/// found is kept: every spawn then takes the fast posix_spawn path instead
/// of fork plus a PATH search (the children's PATH is wspipe's own).
fn locate(program: &Path) -> Result<PathBuf, ConfigError> {
    let refuse = |why: &str| {
        ConfigError::Command(format!(
            "unable to locate specified COMMAND '{}': {why}",
            program.display()
        ))
    };
    // As execvp decides: a name with a '/' is a path.
    let is_path = program.as_os_str().as_bytes().contains(&b'/');
    match which::which(program) {
        Ok(_) if is_path => Ok(program.to_path_buf()),
        Ok(found) => Ok(found),
        Err(_) if !is_path => Err(refuse("not found in PATH")),
        Err(_) => Err(refuse(&match std::fs::metadata(program) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "no such file".to_string(),
            Err(e) => e.to_string(),
            Ok(meta) if meta.is_dir() => "a directory, not a program".to_string(),
            Ok(_) => "not executable".to_string(),
        })),
    }
}

fn parse_headers(
    flag: &str,
    raw: &[String],
) -> Result<Vec<(HeaderName, HeaderValue)>, ConfigError> {
    raw.iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| bad(format!("{flag} {h:?}: expected \"Name: value\"")))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| bad(format!("{flag} {h:?}: invalid header name")))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| bad(format!("{flag} {h:?}: invalid header value")))?;
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_args(
            std::iter::once("wspipe")
                .chain(args.iter().copied())
                .map(OsString::from),
        )
        .expect("flags parse");
        Config::from_cli(cli)
    }

    #[test]
    fn command_string_is_split_like_a_shell_without_a_shell() {
        // The program must exist (it is checked at start-up): /bin/sh.
        let c = config(&["--command", "/bin/sh 'two words' \"$HOME\" *"]).unwrap();
        let Some(Endpoint::Command(spec)) = c.endpoint else {
            panic!("expected a command")
        };
        assert_eq!(spec.program, PathBuf::from("/bin/sh"));
        assert_eq!(spec.args, ["two words", "$HOME", "*"]);
    }

    #[test]
    fn bare_program_names_are_found_in_path_once() {
        let c = config(&["sh", "-c", "true"]).unwrap();
        let Some(Endpoint::Command(spec)) = c.endpoint else {
            panic!("expected a command")
        };
        assert!(spec.program.is_absolute(), "{:?}", spec.program);
        assert!(spec.program.ends_with("sh"));
        let err = config(&["no-such-program-here"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to locate specified COMMAND 'no-such-program-here': not found in PATH"
        );
        assert_eq!(err.exit_status(), 1);
    }

    #[test]
    fn commands_that_cannot_run_are_refused_with_status_1() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = tmp.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let plain = plain.to_str().unwrap();
        let dir = tmp.path().to_str().unwrap();
        for (args, why) in [
            (vec!["/no/such/program"], "no such file"),
            (vec!["./no-such-program"], "no such file"),
            (vec!["--command", "/no/such/program --flag"], "no such file"),
            (vec![plain], "not executable"),
            (vec![dir], "a directory, not a program"),
        ] {
            let err = config(&args).unwrap_err();
            assert_eq!(err.exit_status(), 1, "{args:?}");
            assert_eq!(
                err.to_string(),
                format!(
                    "unable to locate specified COMMAND '{}': {why}",
                    args[args.len() - 1].split(' ').next().unwrap()
                ),
                "{args:?}"
            );
        }
        // A path that exists is kept as given; a bad flag is reported first.
        let c = config(&["/bin/sh"]).unwrap();
        let Some(Endpoint::Command(spec)) = c.endpoint else {
            panic!("expected a command")
        };
        assert_eq!(spec.program, PathBuf::from("/bin/sh"));
        let err = config(&["--maxlinesize=1", "/no/such/program"]).unwrap_err();
        assert_eq!(err.exit_status(), 2, "{err}");
    }

    #[test]
    fn contradictory_endpoints_are_refused() {
        let err = config(&["--dir", "/tmp", "cat"]).unwrap_err();
        assert!(err.to_string().contains("only one"), "{err}");
        assert!(config(&[]).is_err());
    }

    #[test]
    fn anyorigin_is_the_open_policy_and_refuses_a_check() {
        assert!(config(&["--anyorigin", "cat"]).unwrap().origin.is_open());
        for other in [&["--origin", "a.example"][..], &["--sameorigin"]] {
            let args: Vec<&str> = ["--anyorigin"]
                .iter()
                .chain(other)
                .chain(&["cat"])
                .copied()
                .collect();
            let err = config(&args).unwrap_err();
            assert!(err.to_string().contains("--anyorigin"), "{err}");
        }
    }

    #[test]
    fn passstderr_needs_text_mode_and_a_child_per_connection() {
        assert!(config(&["--passstderr", "cat"]).unwrap().pass_stderr);
        assert!(!config(&["cat"]).unwrap().pass_stderr);
        for flag in ["--binary", "--framed", "--shared"] {
            let err = config(&["--passstderr", flag, "cat"]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
        let err = config(&["--passstderr", "--pubsub"]).unwrap_err();
        assert!(err.to_string().contains("--pubsub"), "{err}");
    }

    #[test]
    fn shared_needs_a_program_and_ids_need_text_mode() {
        let flags = |args: &[&str]| config(args).unwrap().shared;
        assert_eq!(flags(&["--shared", "cat"]), Some(SharedFlags::default()));
        assert!(flags(&["--shared", "--dir", "/tmp"]).is_some());
        assert_eq!(flags(&["cat"]), None);
        assert_eq!(
            flags(&[
                "--shared",
                "--shared-ids",
                "--shared-restart",
                "--shared-keep",
                "cat"
            ]),
            Some(SharedFlags {
                ids: true,
                restart: true,
                keep: true
            })
        );
        assert!(flags(&["--shared", "--binary", "cat"]).is_some());
        assert!(flags(&["--shared", "--framed", "cat"]).is_some());
        for (args, needle) in [
            (&["--shared", "--pubsub"][..], "--pubsub runs none"),
            (&["--shared-ids", "cat"], "--shared-ids needs --shared"),
            (
                &["--shared-restart", "cat"],
                "--shared-restart needs --shared",
            ),
            (&["--shared-keep", "cat"], "--shared-keep needs --shared"),
            (&["--shared", "--staticdir", "/tmp"], "needs COMMAND"),
            (
                &["--shared", "--shared-ids", "--binary", "cat"],
                "text mode only",
            ),
            (
                &["--shared", "--shared-ids", "--framed", "cat"],
                "text mode only",
            ),
        ] {
            let err = config(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn maxforks_zero_is_unlimited() {
        assert_eq!(config(&["--maxforks=0", "cat"]).unwrap().max_forks, None);
        assert_eq!(config(&["--maxforks=2", "cat"]).unwrap().max_forks, Some(2));
    }

    #[test]
    fn addresses_accept_brackets_and_repeat() {
        let c = config(&[
            "--port=1",
            "--address=[::1]",
            "--address",
            "127.0.0.1",
            "cat",
        ])
        .unwrap();
        assert_eq!(
            c.listen,
            [
                Listen::Tcp("[::1]:1".parse().unwrap()),
                Listen::Tcp("127.0.0.1:1".parse().unwrap())
            ]
        );
    }

    #[test]
    fn addr_or_path_takes_paths_only_when_they_look_like_paths() {
        let metrics = |v: &str| config(&["--metrics", v, "cat"]).map(|c| c.metrics);
        assert_eq!(
            metrics("127.0.0.1:9100").unwrap(),
            Some(Listen::Tcp("127.0.0.1:9100".parse().unwrap()))
        );
        assert_eq!(
            metrics("[::1]:9100").unwrap(),
            Some(Listen::Tcp("[::1]:9100".parse().unwrap()))
        );
        // A host name is resolved as TCP, never taken as a file name.
        let Some(Listen::Tcp(addr)) = metrics("localhost:9100").unwrap() else {
            panic!("localhost:9100 must be a TCP address");
        };
        assert!(addr.ip().is_loopback() && addr.port() == 9100, "{addr}");
        assert_eq!(
            metrics("/run/m.sock").unwrap(),
            Some(Listen::Unix("/run/m.sock".into()))
        );
        assert_eq!(
            metrics("./m.sock").unwrap(),
            Some(Listen::Unix("./m.sock".into()))
        );
        assert_eq!(
            metrics("unix:m.sock").unwrap(),
            Some(Listen::Unix("m.sock".into()))
        );
        for bad in [
            "m.sock",
            "localhost:port",
            "localhost:99999",
            "unix:",
            "no-such-host.invalid:1",
        ] {
            let err = metrics(bad).unwrap_err().to_string();
            assert!(err.starts_with("--metrics "), "{bad}: {err}");
        }
    }

    #[test]
    fn socketmode_is_octal_nonzero_and_needs_unixsocket() {
        let mode = |args: &[&str]| {
            let mut all = vec!["--unixsocket", "/run/ws.sock"];
            all.extend_from_slice(args);
            all.push("cat");
            config(&all).map(|c| c.socket_mode)
        };
        assert_eq!(mode(&[]).unwrap(), None);
        assert_eq!(mode(&["--socketmode", "0700"]).unwrap(), Some(0o700));
        assert_eq!(mode(&["--socketmode", "660"]).unwrap(), Some(0o660));
        for bad in ["0", "1000", "8", "rw"] {
            assert!(mode(&["--socketmode", bad]).is_err(), "{bad}");
        }
        let err = config(&["--socketmode", "700", "cat"]).unwrap_err();
        assert_eq!(err.to_string(), "--socketmode needs --unixsocket");
    }

    #[test]
    fn publish_mode_is_octal_and_only_for_a_unix_socket() {
        let mode = |args: &[&str]| {
            let mut all = vec!["--pubsub"];
            all.extend_from_slice(args);
            config(&all).map(|c| c.publish.and_then(|p| p.mode))
        };
        assert_eq!(mode(&["--publish", "/run/p.sock"]).unwrap(), Some(0o600));
        assert_eq!(
            mode(&["--publish", "unix:p.sock", "--publish-mode", "660"]).unwrap(),
            Some(0o660)
        );
        assert_eq!(mode(&["--publish", "127.0.0.1:0"]).unwrap(), None);
        for bad in ["999", "1000", "rw", ""] {
            let err = mode(&["--publish", "/run/p.sock", "--publish-mode", bad]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("--publish-mode {bad}: expected octal permission bits like 600")
            );
        }
        let err = mode(&["--publish", "127.0.0.1:0", "--publish-mode", "660"]).unwrap_err();
        assert!(err.to_string().contains("Unix socket"), "{err}");
        let err = mode(&["--publish-mode", "660"]).unwrap_err();
        assert_eq!(err.to_string(), "--publish-mode needs --publish");
    }

    #[test]
    fn bad_headers_are_refused() {
        assert!(config(&["--header", "NoColon", "cat"]).is_err());
        let c = config(&["--header-ws", "X-A: b", "cat"]).unwrap();
        assert_eq!(c.headers.ws[0].0, "x-a");
    }
}
