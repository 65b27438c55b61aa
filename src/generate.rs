//! `wspipe --generate KIND`: the man page and the shell completions, both
//! rendered from the clap definitions (clap_mangen, clap_complete), as
//! ripgrep does it. Nothing here restates a flag: OPTIONS and the `wspipe
//! ctl` commands come from [`Cli`] and [`CtlCli`], ENVIRONMENT from
//! [`CHILD_VARS`], the ctl exit statuses from the client's table.

use std::io;

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

use crate::cli::{Cli, Generate};
use crate::control::client::{CtlCli, EXIT_STATUS as CTL_EXIT_STATUS};
use crate::env::CHILD_VARS;

/// wspipe's own exit statuses (main.rs and [`crate::config`] decide them).
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (
        0,
        "Stopped by SIGTERM or SIGINT once every session had ended; or --help, --version or --generate printed what was asked.",
    ),
    (
        1,
        "Could not start: COMMAND does not exist or is not executable (one line naming it, as websocketd), a socket could not be bound, or the server failed.",
    ),
    (
        2,
        "Bad flags: an unknown flag, a bad value, or flags that contradict each other (one line on stderr).",
    ),
];

/// What `--generate KIND` prints.
pub fn render(kind: Generate) -> io::Result<Vec<u8>> {
    let shell = match kind {
        Generate::Man => return man_page(),
        Generate::CompleteBash => Shell::Bash,
        Generate::CompleteZsh => Shell::Zsh,
        Generate::CompleteFish => Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut completion_command(), "wspipe", &mut out);
    Ok(out)
}

/// wspipe's flags with `ctl` and its commands as a subcommand, so that
/// `wspipe ctl <TAB>` completes too (main.rs dispatches `ctl` by hand).
fn completion_command() -> Command {
    Cli::command().subcommand(
        CtlCli::command()
            .name("ctl")
            .disable_version_flag(true)
            .disable_help_subcommand(true),
    )
}

/// wspipe(1), in roff.
fn man_page() -> io::Result<Vec<u8>> {
    // NAME gets the package's one-line description; DESCRIPTION the whole
    // of --help's text.
    let cli = Cli::command();
    let long = cli.get_about().cloned().unwrap_or_default();
    let cli = cli.about(env!("CARGO_PKG_DESCRIPTION")).long_about(long);
    let man = Man::new(cli)
        .title("WSPIPE")
        .section("1")
        .date(page_date())
        .manual("User Commands");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    // No hyphenation: names such as REMOTE_ADDR and --publish-token must
    // not be split at line ends.
    let mut nh = Roff::new();
    nh.control("nh", []);
    nh.to_writer(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    control_section(&mut out)?;
    environment_section(&mut out)?;
    exit_status_section(&mut out)?;
    examples_section(&mut out)?;
    man.render_version_section(&mut out)?;
    see_also_section(&mut out)?;
    Ok(one_preamble(out))
}

/// The page's date (.TH's third field, which must not be empty: roff drops
/// an empty argument and the fields after it shift): SOURCE_DATE_EPOCH's
/// day when set, for reproducible packages, else today (UTC).
fn page_date() -> String {
    let now = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    now.date().to_string()
}

/// Every clap_mangen render starts with roff's apostrophe preamble: keep
/// the first only.
fn one_preamble(page: Vec<u8>) -> Vec<u8> {
    let preamble = Roff::new().render();
    let text = String::from_utf8_lossy(&page);
    let body = text.replace(preamble.as_str(), "");
    format!("{preamble}{body}").into_bytes()
}

/// A piece clap_mangen renders as a whole section, without its `.SH` line
/// (and without the preamble every render repeats), to go under a heading
/// of ours.
fn section_body(
    render: impl Fn(&mut Vec<u8>) -> io::Result<()>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let preamble = Roff::new().render();
    let mut piece = Vec::new();
    render(&mut piece)?;
    let text = String::from_utf8_lossy(&piece);
    let text = text.strip_prefix(preamble.as_str()).unwrap_or(&text);
    for line in text.lines().filter(|l| !l.starts_with(".SH ")) {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    Ok(())
}

/// `wspipe ctl`: its options, then each command with its synopsis, its
/// description and its options, all from [`CtlCli`].
fn control_section(out: &mut Vec<u8>) -> io::Result<()> {
    // Each command's -h/--help would repeat under every one of them.
    let mut ctl = CtlCli::command()
        .disable_help_subcommand(true)
        .mut_subcommands(|sub| sub.disable_help_flag(true));
    ctl.build();
    let mut roff = Roff::new();
    roff.control("SH", ["CONTROL CLIENT"]);
    roff.text([
        bold("wspipe ctl"),
        roman(" ["),
        bold("--socket"),
        roman(" "),
        italic("PATH"),
        roman("] "),
        italic("COMMAND"),
        roman(" ..."),
    ]);
    roff.control("PP", []);
    roff.text([roman(
        "talks to the control socket of a running server (--control PATH), for scripts: \
         list, message, close and kill connections, publish to channels, watch events. \
         The protocol is newline-delimited JSON (docs/control.md).",
    )]);
    roff.to_writer(out)?;
    let man = Man::new(ctl.clone());
    section_body(|w| man.render_options_section(w), out)?;
    for sub in ctl.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("wspipe ctl {}", sub.get_name());
        let mut heading = Roff::new();
        heading.control("SS", [name.as_str()]);
        heading.to_writer(out)?;
        let man = Man::new(sub.clone().bin_name(&name));
        section_body(|w| man.render_synopsis_section(w), out)?;
        let mut gap = Roff::new();
        gap.control("PP", []);
        gap.to_writer(out)?;
        section_body(|w| man.render_description_section(w), out)?;
        section_body(|w| man.render_options_section(w), out)?;
    }
    Ok(())
}

/// The variables a child gets, from [`CHILD_VARS`].
fn environment_section(out: &mut Vec<u8>) -> io::Result<()> {
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    roff.text([roman(
        "Each program wspipe runs gets the CGI/1.1 variables below, as websocketd sets them, \
         and nothing else of wspipe's environment but PATH and the variables named by \
         --passenv (default LD_LIBRARY_PATH).",
    )]);
    for (names, about) in CHILD_VARS {
        roff.control("TP", []);
        let mut line = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                line.push(roman(", "));
            }
            line.push(bold(*name));
        }
        roff.text(line);
        roff.text([roman(*about)]);
    }
    roff.control("PP", []);
    roff.text([
        bold("wspipe ctl"),
        roman(" reads "),
        bold(crate::env::CONTROL_VAR),
        roman(" when --socket is not given."),
    ]);
    roff.control("PP", []);
    roff.text([
        roman("Under a service manager wspipe reads "),
        bold("LISTEN_FDS"),
        roman(", "),
        bold("LISTEN_PID"),
        roman(" and "),
        bold("LISTEN_FDNAMES"),
        roman(" (socket activation: it serves the sockets passed from fd 3 and binds nothing else unless --port, --address or --unixsocket are given), and "),
        bold("NOTIFY_SOCKET"),
        roman(", "),
        bold("WATCHDOG_USEC"),
        roman(", "),
        bold("WATCHDOG_PID"),
        roman(" (READY=1 once serving, STOPPING=1 on shutdown, WATCHDOG=1 every half period), as sd_listen_fds(3) and sd_notify(3) define them."),
    ]);
    roff.to_writer(out)
}

fn exit_status_section(out: &mut Vec<u8>) -> io::Result<()> {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([bold("wspipe"), roman(":")]);
    status_list(&mut roff, EXIT_STATUS);
    roff.control("PP", []);
    roff.text([bold("wspipe ctl"), roman(":")]);
    status_list(&mut roff, CTL_EXIT_STATUS);
    roff.to_writer(out)
}

fn status_list(roff: &mut Roff, table: &[(u8, &str)]) {
    for (code, about) in table {
        roff.control("TP", []);
        roff.text([bold(code.to_string())]);
        roff.text([roman(*about)]);
    }
}

/// The examples of `--help` (its after_help), one per line.
fn examples_section(out: &mut Vec<u8>) -> io::Result<()> {
    let cli = Cli::command();
    let Some(after) = cli.get_after_help() else {
        return Ok(());
    };
    let mut roff = Roff::new();
    roff.control("SH", ["EXAMPLES"]);
    roff.control("nf", []);
    roff.control("RS", []);
    for line in after.to_string().lines().skip(1) {
        roff.text([roman(line.trim())]);
    }
    roff.control("RE", []);
    roff.control("fi", []);
    roff.to_writer(out)
}

fn see_also_section(out: &mut Vec<u8>) -> io::Result<()> {
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    roff.text([bold("websocketd"), roman("(1)")]);
    roff.control("PP", []);
    roff.text([roman(
        "In the wspipe source: README.md; docs/control.md (wspipe ctl and its protocol), \
         docs/channels.md (--pubsub, --publish), docs/http.md (--staticdir, --cgidir), \
         docs/deploy.md (nginx, Apache, systemd), docs/security.md.",
    )]);
    roff.to_writer(out)
}
