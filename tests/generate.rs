//! End to end: `wspipe --generate KIND` prints the man page and the shell
//! completions, rendered from the same clap definitions as `--help`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn generate(kind: &str) -> String {
    let out = run_bin(&["--generate", kind]);
    assert_eq!(out.status.code(), Some(0), "--generate {kind}: {out:?}");
    assert!(out.stderr.is_empty(), "--generate {kind}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Every `--flag` token in a text (after roff's `\-` is read as `-`).
fn long_flags(text: &str) -> std::collections::BTreeSet<String> {
    let text = text.replace("\\-", "-");
    let mut flags = std::collections::BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("--") {
        let after = &rest[at + 2..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        // "--" alone, or "---": not a flag.
        if name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            flags.insert(format!("--{}", name.trim_end_matches('-')));
        }
        rest = &after[name.len()..];
    }
    flags
}

#[test]
fn the_man_page_has_every_flag_of_help() {
    let out = run_bin(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let flags = long_flags(&help);
    assert!(
        flags.len() > 40,
        "too few flags parsed from --help: {flags:?}"
    );
    for flag in [
        "--port",
        "--pubsub",
        "--publish-token",
        "--generate",
        "--help",
    ] {
        assert!(flags.contains(flag), "{flag} not parsed from --help");
    }
    let man = generate("man");
    let in_man = long_flags(&man);
    let missing: Vec<_> = flags.difference(&in_man).collect();
    assert!(
        missing.is_empty(),
        "in --help, not in the man page: {missing:?}"
    );
    // clap_mangen writes option names as roff (\-\-port), in bold.
    assert!(man.contains("\\-\\-port"), "{man}");
}

#[test]
fn the_man_page_has_control_environment_and_exit_status() {
    let man = generate("man");
    assert!(man.starts_with(".ie") || man.starts_with(".TH"), "{man}");
    // All five .TH fields: an empty one would shift the rest.
    let title = format!(
        ".TH WSPIPE 1 1970-01-02 \"wspipe {}\" \"User Commands\"\n",
        env!("CARGO_PKG_VERSION")
    );
    let out = std::process::Command::new(bin())
        .args(["--generate", "man"])
        .env("SOURCE_DATE_EPOCH", "86400")
        .output()
        .unwrap();
    let dated = String::from_utf8_lossy(&out.stdout);
    assert!(dated.contains(&title), "{title} not in\n{dated}");
    assert_eq!(dated.matches(".ds Aq").count(), 2, "one preamble (.ie/.el)");
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "\"CONTROL CLIENT\"",
        "ENVIRONMENT",
        "\"EXIT STATUS\"",
        "\"SEE ALSO\"",
    ] {
        assert!(
            man.contains(&format!("\n.SH {section}\n")),
            "no {section} section"
        );
    }
    // Every verb of `wspipe ctl --help`.
    let out = run_bin(&["ctl", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    let verbs: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A verb line is indented by two; a wrapped description by more.
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| *v != "help")
        .collect();
    assert!(verbs.len() >= 10, "{verbs:?} from {help}");
    for verb in &verbs {
        assert!(
            man.contains(&format!(".SS \"wspipe ctl {verb}\"")),
            "ctl {verb} not in the man page"
        );
    }
    // The variables a child gets, and the exit codes of both.
    let environment = section(&man, "ENVIRONMENT");
    for var in [
        "REMOTE_ADDR",
        "QUERY_STRING",
        "PATH_INFO",
        "UNIQUE_ID",
        "WSPIPE_CONNECTION_ID",
        "WSPIPE_CONTROL",
        "HTTP_*",
    ] {
        assert!(environment.contains(var), "{var} not in ENVIRONMENT");
    }
    let exit = section(&man, "\"EXIT STATUS\"");
    for code in ["0", "1", "2", "3"] {
        assert!(
            exit.contains(&format!(".TP\n\\fB{code}\\fR")),
            "exit status {code} not listed:\n{exit}"
        );
    }
}

/// The roff of one `.SH` section.
fn section<'a>(man: &'a str, name: &str) -> &'a str {
    let start = man
        .find(&format!("\n.SH {name}\n"))
        .unwrap_or_else(|| panic!("no {name} section"));
    let rest = &man[start + 1..];
    let end = rest[1..].find("\n.SH ").map_or(rest.len(), |e| e + 1);
    &rest[..end]
}

/// groff (or `man -l`) formats the page without a warning. Skipped, with a
/// message, where neither is installed, unless WSPIPE_MAN_TESTS=1 (set by
/// .ci/run, which installs them).
#[test]
fn the_man_page_renders_without_warnings() {
    let man = generate("man");
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut command = if have("groff") {
        let mut c = Command::new("groff");
        c.args(["-man", "-Tutf8", "-ww", "-z"]);
        c
    } else if have("man") {
        let mut c = Command::new("man");
        c.args(["--warnings", "-l", "-"]).env("MANWIDTH", "80");
        c
    } else {
        let why = "neither groff nor man is installed (apt-get install groff-base man-db)";
        // .ci/run installs them and sets WSPIPE_MAN_TESTS=1.
        assert!(std::env::var_os("WSPIPE_MAN_TESTS").is_none(), "{why}");
        eprintln!("SKIPPED generate::the_man_page_renders_without_warnings: {why}");
        return;
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the formatter");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(man.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{command:?}: {stderr}");
    assert!(stderr.is_empty(), "warnings from {command:?}:\n{stderr}");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let bash = generate("complete-bash");
    assert!(bash.contains("--pubsub"), "{bash}");
    assert!(bash.contains("complete "), "{bash}");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("wspipe.bash");
    std::fs::write(&file, &bash).unwrap();
    let out = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(out.status.success(), "bash -n: {out:?}");
    // `wspipe ctl <TAB>` completes the ctl verbs.
    assert!(bash.contains("subscribe"), "{bash}");
    for shell in ["complete-zsh", "complete-fish"] {
        let text = generate(shell);
        assert!(!text.trim().is_empty(), "{shell}");
        assert!(text.contains("port"), "{shell}: {text}");
    }
    assert!(generate("complete-zsh").contains("#compdef wspipe"));
    assert!(generate("complete-fish").contains("complete -c wspipe"));
}

#[test]
fn generate_needs_no_command_and_takes_only_its_kinds() {
    // No COMMAND, --dir or --pubsub: still fine.
    assert!(generate("man").contains(".SH OPTIONS"));
    for bad in ["bogus", "complete-powershell", ""] {
        let out = run_bin(&["--generate", bad]);
        assert_eq!(out.status.code(), Some(2), "--generate {bad:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("wspipe: "), "{stderr}");
        assert!(stderr.contains("--generate"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn license_prints_name_version_and_license_without_a_command() {
    // websocketd --license: a line with name and version, then the license.
    let out = run_bin(&["--license"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        text.starts_with(&format!("wspipe {}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("MIT OR Apache-2.0"), "{text}");
}
