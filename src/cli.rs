//! Command-line flags.
//!
//! Flag names and meanings follow websocketd, so that an existing websocketd
//! command line works unchanged: `--port=8080` and `--port 8080`, Go-style
//! single-dash long flags (`-port=8080`), and boolean flags given bare
//! (`--binary`) or with a value (`--binary=true`, `--binary=false`).
//! Everything after the program name belongs to the program.
//!
//! This module only describes and parses; [`crate::config`] validates.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, CommandFactory, Parser};

use crate::logging::{LogFormat, LogLevel};

/// Turn any program that reads stdin and writes stdout into a WebSocket
/// server: every connection gets its own process; each line the program
/// writes becomes a message, each message it receives becomes a line.
#[derive(Debug, Parser)]
#[command(
    name = "wspipe",
    version,
    override_usage = "wspipe [OPTIONS] COMMAND [ARGS]...\n       wspipe [OPTIONS] --command \"COMMAND ARGS\"\n       wspipe [OPTIONS] --dir DIR",
    after_help = "Examples:\n  wspipe --port 8080 ./count.sh\n  wspipe --port 8080 --dir ./scripts\n  wspipe --port 8080 --binary cat"
)]
pub struct Cli {
    /// TCP port to listen on (0 picks a free port). Default: 80.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Interface to bind to; repeat for several (IPv6 in brackets: [::1]).
    /// Default: all interfaces.
    #[arg(long, value_name = "ADDRESS")]
    pub address: Vec<String>,

    /// Listen on this Unix domain socket (alone, or beside TCP when --port or
    /// --address is given too).
    #[arg(long, value_name = "PATH")]
    pub unixsocket: Option<PathBuf>,

    /// Permission bits, in octal, of the --unixsocket file (e.g. 0700);
    /// without it the umask decides.
    #[arg(long, value_name = "MODE")]
    pub socketmode: Option<String>,

    /// Binary mode: child output is sent as binary messages as it arrives,
    /// incoming messages are written to stdin as raw bytes.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub binary: bool,

    /// Message-preserving mode: every message, both ways, is a type byte
    /// (1 text, 2 binary), a 32-bit big-endian length and the payload.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub framed: bool,

    /// Channel endpoints with no program: a client on /room is a member of
    /// channel /room, and what it sends is published to every member.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub pubsub: bool,

    /// With --pubsub: clients only listen; a message from one closes it
    /// with 1008.
    #[arg(long = "pubsub-readonly", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub pubsub_readonly: bool,

    /// One process per endpoint, shared by its clients (with --dir, one per
    /// script): started at the first client, each line it writes goes to
    /// every client of the endpoint, each client message becomes a line on
    /// its stdin (raw bytes with --binary, frames with --framed); ended
    /// after the last client leaves. Needs COMMAND or --dir.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub shared: bool,

    /// With --shared: lines tell clients apart. A client message reaches
    /// the child as "ID<TAB>text" (ID as `ctl list` shows it); an output
    /// line "ID<TAB>text" goes to that client alone (dropped and counted
    /// if ID is no client of the endpoint); a line with no TAB or an empty
    /// ID goes to every client; joins and leaves come as "join<TAB>ID" and
    /// "leave<TAB>ID".
    #[arg(long = "shared-ids", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub shared_ids: bool,

    /// With --shared: a child that exits (or is killed with `ctl kill
    /// ENDPOINT`) is started again after 100 ms, doubling up to 10 s while
    /// it keeps failing (back to 100 ms once one has run 10 s); its clients
    /// stay connected. Without it they are closed with the exit's code.
    #[arg(long = "shared-restart", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub shared_restart: bool,

    /// With --shared: a child is not ended when its last client leaves; it
    /// serves until the server stops (or it exits), started at its
    /// endpoint's first client.
    #[arg(long = "shared-keep", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub shared_keep: bool,

    /// What happens to a client too slow for its channels: "drop" (its
    /// oldest queued messages go, counted) or "close" (it is closed with
    /// 1008).
    #[arg(long = "channel-overflow", value_name = "POLICY", default_value = "drop",
          value_parser = ["drop", "close"])]
    pub channel_overflow: String,

    /// Keep the last N messages of each channel (1 to 1000), numbered per
    /// channel from 1: a client that reconnects with ?since=SEQ (or
    /// Last-Event-ID: SEQ) first gets what it missed, then the live
    /// stream. With --redis the history is kept in Redis, numbered the
    /// same on every instance, so a client resumes on any of them. See
    /// docs/channels.md and docs/scale-out.md.
    #[arg(long, value_name = "N")]
    pub history: Option<usize>,

    /// How long a channel's history outlives its last publish, in seconds.
    #[arg(long = "history-ttl", value_name = "SECS", default_value_t = 300)]
    pub history_ttl: u64,

    /// With --history: each channel message reaches clients as
    /// SEQ<TAB>MESSAGE, and a joining client first gets
    /// `epoch<TAB>EPOCH` (or `reset<TAB>EPOCH` when what it missed is gone).
    #[arg(long = "history-ids", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub history_ids: bool,

    /// Serve every executable in DIR as an endpoint (/chat runs DIR/chat).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Serve HTTPS and wss:// (needs --sslcert and --sslkey).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub ssl: bool,

    /// Certificate chain (PEM) for --ssl.
    #[arg(long, value_name = "FILE")]
    pub sslcert: Option<PathBuf>,

    /// Private key (PEM) for --ssl.
    #[arg(long, value_name = "FILE")]
    pub sslkey: Option<PathBuf>,

    /// CA certificates (PEM): require client certificates signed by them.
    #[arg(long, value_name = "FILE")]
    pub sslca: Option<PathBuf>,

    /// Also listen on this port and redirect plain HTTP to the main address.
    #[arg(long, value_name = "PORT")]
    pub redirport: Option<u16>,

    /// Serve static files from DIR over HTTP (same port as the WebSockets).
    #[arg(long, value_name = "DIR")]
    pub staticdir: Option<PathBuf>,

    /// Serve CGI scripts from DIR over HTTP.
    #[arg(long, value_name = "DIR")]
    pub cgidir: Option<PathBuf>,

    /// Milliseconds a CGI script has to send its response headers once it
    /// has the whole request body; after that it is ended and the client
    /// gets 502 Bad Gateway.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub cgitimeout: u64,

    /// A plain GET on an endpoint shows an interactive console page (cannot
    /// be used with --staticdir or --cgidir).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub devconsole: bool,

    /// The program and its arguments as one string, split like a shell would
    /// split words (no shell is run: no globbing, no variables).
    #[arg(long, value_name = "COMMAND")]
    pub command: Option<String>,

    /// Environment variables of wspipe passed to children, besides PATH.
    #[arg(
        long,
        value_name = "VAR,...",
        value_delimiter = ',',
        default_value = "LD_LIBRARY_PATH"
    )]
    pub passenv: Vec<String>,

    /// Most children alive at once (WebSocket sessions); beyond it upgrades
    /// are refused with 429. 0 means unlimited.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub maxforks: usize,

    /// Grace time in milliseconds between closing a child's stdin and the
    /// first signal (SIGINT, then SIGTERM, then SIGKILL).
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub closems: u64,

    /// Allowed origins: host[:port] or scheme://host[:port], comma separated.
    /// Other upgrades are refused with 403.
    #[arg(long, value_name = "LIST")]
    pub origin: Option<String>,

    /// Refuse (403) upgrades whose Origin does not match the Host header.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub sameorigin: bool,

    /// Accept any Origin, stated explicitly (the default already; accepted
    /// for websocketd command lines). Cannot be used with --origin or
    /// --sameorigin.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub anyorigin: bool,

    /// Print the version and license, and exit.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub license: bool,

    /// Header added to every response ("Name: value"); repeatable.
    #[arg(long, value_name = "HEADER")]
    pub header: Vec<String>,

    /// Header added to WebSocket upgrade responses only; repeatable.
    #[arg(long = "header-ws", value_name = "HEADER")]
    pub header_ws: Vec<String>,

    /// Header added to plain HTTP responses only; repeatable.
    #[arg(long = "header-http", value_name = "HEADER")]
    pub header_http: Vec<String>,

    /// Log level, from most to least verbose.
    #[arg(long, value_enum, value_name = "LEVEL", default_value = "access")]
    pub loglevel: LogLevel,

    /// How log lines are written to stderr: "text" for people, "json" (one
    /// object per line: timestamp, level, target, message and the event's
    /// fields) for log collectors. See docs/operations.md.
    #[arg(
        long = "log-format",
        value_enum,
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Largest message accepted from a client, in bytes; bigger ones close
    /// the connection with 1009.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub maxframesize: usize,

    /// Longest line read from a child, in bytes; a longer line is delivered
    /// in pieces of this size.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub maxlinesize: usize,

    /// Send a ping every MS milliseconds and drop clients that miss a pong.
    /// 0 disables pings.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub pingms: u64,

    /// Send the child's stderr to the client too, and tag every message as
    /// JSON: {"stream":"stdout","data":"LINE"} or {"stream":"stderr",...},
    /// one per line (websocketd 0.5). stderr is still logged. Text mode
    /// only (not with --binary, --framed, --shared or --pubsub).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub passstderr: bool,

    /// HTTP Basic authentication before any process starts: an htpasswd
    /// file (bcrypt, SHA-crypt or {SHA} entries; `htpasswd -B`). A client
    /// without valid credentials gets 401 and never starts a child or
    /// joins a channel; an admitted one's child gets REMOTE_USER and
    /// AUTH_TYPE. See docs/auth.md.
    #[arg(long = "basic-auth", value_name = "FILE")]
    pub basic_auth: Option<std::path::PathBuf>,

    /// A program decides who connects: it runs with the request's CGI
    /// environment (HTTP_COOKIE, HTTP_AUTHORIZATION, REMOTE_ADDR...) and no
    /// stdin. Exit 0 admits (stdout lines NAME=value become WSPIPE_AUTH_NAME
    /// for the child, REMOTE_USER=name its REMOTE_USER), another status
    /// refuses (403), a crash or --auth-timeout is 503. Split like
    /// --command; no shell.
    #[arg(long = "auth-cmd", value_name = "PROG")]
    pub auth_cmd: Option<String>,

    /// An HTTP service decides who connects (nginx auth_request style):
    /// http://LOOPBACK:PORT/PATH or unix:/SOCKET:/PATH gets a GET with the
    /// request's headers and X-Original-Method, X-Original-URI,
    /// X-Original-Remote-Addr. 2xx admits (Wspipe-Env-NAME headers become
    /// WSPIPE_AUTH_NAME, Wspipe-Env-Remote-User the REMOTE_USER), 401/403
    /// refuse with that status, anything else or --auth-timeout is 503.
    #[arg(long = "auth-url", value_name = "URL")]
    pub auth_url: Option<String>,

    /// A signed JWT admits: FILE holds an HMAC secret (32 bytes or more),
    /// a PEM public key (RSA, EC, Ed25519) or a JWKS. The token comes as
    /// `Authorization: Bearer TOKEN`, as an offered subprotocol
    /// `bearer.TOKEN` (browsers: new WebSocket(url, ["bearer." + token])),
    /// or in the --jwt-query parameter. The key pins the algorithm; exp is
    /// required, nbf checked. sub becomes REMOTE_USER, each claim NAME
    /// WSPIPE_JWT_NAME, a `channels` claim limits the channels joined.
    #[arg(long = "jwt-key", value_name = "FILE")]
    pub jwt_key: Option<std::path::PathBuf>,

    /// The audience --jwt-key tokens must name in `aud` (repeat for
    /// several accepted ones); without it, a token with an `aud` is refused.
    #[arg(long = "jwt-aud", value_name = "AUD")]
    pub jwt_aud: Vec<String>,

    /// The issuer --jwt-key tokens must name in `iss` (repeat for several).
    #[arg(long = "jwt-iss", value_name = "ISS")]
    pub jwt_iss: Vec<String>,

    /// The query parameter a --jwt-key token may come in (`?NAME=TOKEN`);
    /// it is taken out of QUERY_STRING before the child sees it.
    #[arg(long = "jwt-query", value_name = "NAME")]
    pub jwt_query: Option<String>,

    /// How long --auth-cmd or --auth-url may take, in milliseconds, before
    /// the request gets 503 (and a command is ended).
    #[arg(long = "auth-timeout", value_name = "MS", default_value_t = 5000)]
    pub auth_timeout: u64,

    /// The realm --basic-auth and --jwt-key name in their 401 challenges
    /// (browsers show it in their password prompt).
    #[arg(long, value_name = "NAME", default_value = "wspipe")]
    pub realm: String,

    /// Authentication (--basic-auth, --auth-cmd, --auth-url, --jwt-key)
    /// guards static files (--staticdir), CGI scripts (--cgidir) and the
    /// dev console as well, not only WebSocket upgrades.
    #[arg(long = "auth-http", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub auth_http: bool,

    /// Resolve client addresses to names for REMOTE_HOST.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub reverselookup: bool,

    /// Reverse proxies (IPs, CIDR ranges, or "unix" for Unix socket peers)
    /// whose Forwarded / X-Forwarded-For headers give REMOTE_ADDR.
    #[arg(long = "trusted-proxy", value_name = "CIDR,...")]
    pub trusted_proxy: Vec<String>,

    /// Open a control socket at PATH for `wspipe ctl` (list, send,
    /// broadcast, close, kill, stats).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// Serve Prometheus/OpenMetrics statistics on HOST:PORT (TCP) or a Unix
    /// socket PATH (a value with a '/', or unix:PATH), apart from the public
    /// port.
    #[arg(long, value_name = "ADDR|PATH")]
    pub metrics: Option<String>,

    /// Take channel publishes over HTTP (POST /CHANNEL, the body is the
    /// message) on HOST:PORT or a Unix socket PATH (a value with a '/', or
    /// unix:PATH). A TCP address must be loopback unless --publish-token is
    /// given.
    #[arg(long, value_name = "ADDR|PATH")]
    pub publish: Option<String>,

    /// A file holding the token --publish requires as
    /// "Authorization: Bearer TOKEN".
    #[arg(long = "publish-token", value_name = "FILE")]
    pub publish_token: Option<PathBuf>,

    /// Permission bits of the --publish Unix socket, in octal [default: 600]
    // No clap default: config.rs applies 600 to a Unix socket and refuses
    // an explicit --publish-mode with a TCP --publish.
    #[arg(long = "publish-mode", value_name = "MODE")]
    pub publish_mode: Option<String>,

    /// Share channels with other wspipe instances through Redis:
    /// redis://[USER:PASS@]HOST[:PORT][/DB], rediss://... (TLS) or
    /// unix:///PATH. A publish on any instance reaches the members on
    /// every instance (docs/scale-out.md); local members never wait for
    /// Redis.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// This instance's name among those sharing --redis: 1 to 64 ASCII
    /// letters, digits, '.', '_', '-' or ':'. Default: the host name and
    /// the port (web1:8080).
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,

    /// Permission bits of the control socket, in octal.
    #[arg(long = "control-mode", value_name = "MODE", default_value = "600")]
    pub control_mode: String,

    /// Read flags from a TOML file: each key is a long flag name (`port =
    /// 8080`, `address = ["127.0.0.1"]`, `command = ["./chat.sh"]`); flags
    /// on the command line override it. SIGHUP re-reads it (see
    /// docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (--config file and command line
    /// merged, defaults included) as TOML that --config accepts, and exit.
    #[arg(long = "print-config", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub print_config: bool,

    /// Print the man page or a shell completion script to stdout and exit
    /// (no COMMAND needed).
    #[arg(long, value_enum, value_name = "KIND")]
    pub generate: Option<Generate>,

    /// The program to run for each connection, and its arguments.
    #[arg(value_name = "COMMAND", trailing_var_arg = true)]
    pub program: Vec<OsString>,
}

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// The roff man page, wspipe(1).
    Man,
    /// A bash completion script.
    CompleteBash,
    /// A zsh completion script.
    CompleteZsh,
    /// A fish completion script.
    CompleteFish,
}

impl Cli {
    /// Parses a given argument list (first item is the program name).
    pub fn try_parse_args<I>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = OsString>,
    {
        Cli::try_parse_from(normalize_go_flags(args))
    }
}

/// Rewrites Go-style `-flag[=value]` into `--flag[=value]` for our long flag
/// names, up to the program name, so `websocketd -port=8080 ./x` works too.
pub(crate) fn normalize_go_flags<I>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = OsString>,
{
    let command = Cli::command();
    let takes_value = |name: &str| {
        command
            .get_arguments()
            .find(|a| a.get_long() == Some(name))
            .map(|a| a.get_action().takes_values() && !a.is_require_equals_set())
    };
    let mut out = Vec::new();
    let mut args = args.into_iter();
    if let Some(argv0) = args.next() {
        out.push(argv0);
    }
    let mut value_expected = false;
    for arg in args.by_ref() {
        if value_expected {
            value_expected = false;
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            break;
        };
        if text == "--" || !text.starts_with('-') {
            out.push(arg);
            break;
        }
        let (dashes, body) = match text.strip_prefix("--") {
            Some(body) => ("--", body),
            None => ("-", &text[1..]),
        };
        let name = body.split('=').next().unwrap_or_default();
        match takes_value(name) {
            Some(needs_value) => {
                value_expected = needs_value && !body.contains('=');
                if dashes == "-" && name.len() > 1 {
                    out.push(format!("-{text}").into());
                } else {
                    out.push(arg);
                }
            }
            None => out.push(arg),
        }
    }
    out.extend(args);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_args(
            std::iter::once("wspipe")
                .chain(args.iter().copied())
                .map(OsString::from),
        )
    }

    #[test]
    fn websocketd_style_flags() {
        let cli = parse(&[
            "--port=8080",
            "--binary",
            "--maxforks",
            "3",
            "./x",
            "-a",
            "--b",
        ])
        .unwrap();
        assert_eq!(cli.port, Some(8080));
        assert!(cli.binary);
        assert_eq!(cli.maxforks, 3);
        assert_eq!(cli.program, ["./x", "-a", "--b"]);
    }

    #[test]
    fn boolean_flags_take_optional_values() {
        let cli = parse(&["--binary=false", "--sameorigin=true", "cat"]).unwrap();
        assert!(!cli.binary);
        assert!(cli.sameorigin);
        // A bare boolean never swallows the program name.
        let cli = parse(&["--binary", "true"]).unwrap();
        assert!(cli.binary);
        assert_eq!(cli.program, ["true"]);
    }

    #[test]
    fn go_style_single_dash_flags() {
        let cli = parse(&[
            "-port=9000",
            "-address",
            "127.0.0.1",
            "-binary",
            "cat",
            "-port=1",
        ])
        .unwrap();
        assert_eq!(cli.port, Some(9000));
        assert_eq!(cli.address, ["127.0.0.1"]);
        assert!(cli.binary);
        assert_eq!(cli.program, ["cat", "-port=1"]);
    }

    #[test]
    fn passenv_is_a_list() {
        let cli = parse(&["--passenv", "HOME,LANG", "cat"]).unwrap();
        assert_eq!(cli.passenv, ["HOME", "LANG"]);
    }

    #[test]
    fn unknown_flag_is_an_error() {
        assert!(parse(&["--nosuchflag", "cat"]).is_err());
    }
}
