//! `--config FILE`: flags from a TOML file, and `--print-config`.
//!
//! Every key is a long flag name, read from the clap definitions: a new
//! flag is a key at once and there is no second list to keep. Each key is
//! turned into the argument tokens the flag would be on the command line
//! (`port = 8080` is `--port=8080`) and clap parses them, so values are
//! checked by the same parsers as the command line. A flag given on the
//! command line replaces the file's key of the same name entirely (lists
//! included). The rules are written down in docs/configuration.md.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use toml::{Spanned, Value};

use crate::cli::{normalize_go_flags, Cli};

/// Flags that act rather than configure: not keys of a file.
const NOT_KEYS: [&str; 6] = [
    "config",
    "print-config",
    "generate",
    "license",
    "help",
    "version",
];

/// The key for the program: a string is `--command` (split like a shell),
/// an array is `COMMAND [ARGS]...` word for word.
const COMMAND_KEY: &str = "command";

/// clap's id of the positional `COMMAND [ARGS]...`.
const PROGRAM_ID: &str = "program";

/// Why the flags could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The command line itself (including --help and --version).
    Clap(clap::Error),
    /// The file: one line naming the file, and the line and key if known.
    File(String),
}

/// The command line merged with the `--config` file.
#[derive(Debug)]
pub struct Loaded {
    pub cli: Cli,
    /// Every key's effective value (defaults included), as `--print-config`
    /// prints it.
    pub effective: toml::Table,
}

/// What a flag's value is in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Integer,
    Text,
    /// A repeatable flag: an array of strings.
    List,
}

impl Kind {
    fn of(arg: &Arg) -> Kind {
        if matches!(arg.get_action(), ArgAction::Append) {
            return Kind::List;
        }
        let id = arg.get_value_parser().type_id();
        if id == TypeId::of::<bool>() {
            Kind::Bool
        } else if [
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
        ]
        .iter()
        .any(|t| id == *t)
        {
            Kind::Integer
        } else {
            Kind::Text
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Bool => "a boolean (true or false)",
            Kind::Integer => "an integer",
            Kind::Text => "a string",
            Kind::List => "an array of strings",
        }
    }
}

/// The flags a file may set, by key.
fn keys() -> Vec<Arg> {
    Cli::command()
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| !NOT_KEYS.contains(&l)))
        .cloned()
        .collect()
}

/// Parses `args` (the first is the program name), merged with the file
/// `--config` names, if any.
pub fn load(args: Vec<OsString>) -> Result<Loaded, LoadError> {
    let args = normalize_go_flags(args);
    let given = Cli::command()
        .try_get_matches_from(&args)
        .map_err(LoadError::Clap)?;
    let matches = match given.get_one::<PathBuf>("config") {
        None => given,
        Some(path) => {
            let file = read(path)?;
            merge(&args, &given, file)?
        }
    };
    let cli = Cli::from_arg_matches(&matches).map_err(LoadError::Clap)?;
    Ok(Loaded {
        cli,
        effective: effective(&matches),
    })
}

/// A file's keys as flag tokens: `flags` before the command line's, the
/// program (an array `command`) after it.
#[derive(Debug, Default)]
struct FileArgs {
    /// By clap id.
    flags: BTreeMap<String, Vec<OsString>>,
    program: Option<Vec<OsString>>,
}

/// Reads and checks the file: every key known, every value of the right
/// type and accepted by the flag's parser.
fn read(path: &Path) -> Result<FileArgs, LoadError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::File(format!("{shown}: cannot read: {e}")))?;
    let table: BTreeMap<Spanned<String>, Spanned<Value>> = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(&text, s.start));
        LoadError::File(format!("{shown}:{line}: not TOML: {}", e.message().trim()))
    })?;
    let keys = keys();
    let mut out = FileArgs::default();
    for (key, value) in &table {
        let line = line_of(&text, key.span().start);
        let at = |msg: String| LoadError::File(format!("{shown}:{line}: {msg}"));
        let name = key.get_ref().as_str();
        let Some(arg) = keys.iter().find(|a| a.get_long() == Some(name)) else {
            return Err(at(format!("unknown key {name:?}")));
        };
        if name == COMMAND_KEY && value.get_ref().is_array() {
            let words = strings(value.get_ref())
                .ok_or_else(|| at(format!("key {name:?}: expected an array of strings")))?;
            out.program = Some(words.into_iter().map(OsString::from).collect());
            continue;
        }
        let tokens =
            tokens(arg, name, value.get_ref()).map_err(|m| at(format!("key {name:?}: {m}")))?;
        // Each key alone through clap: a value it refuses is this key's.
        let alone = std::iter::once(OsString::from("wspipe")).chain(tokens.iter().cloned());
        if let Err(e) = Cli::command().try_get_matches_from(alone) {
            return Err(at(format!("key {name:?}: {}", first_line(&e.to_string()))));
        }
        out.flags.insert(arg.get_id().as_str().to_owned(), tokens);
    }
    Ok(out)
}

/// The tokens a key's value stands for, or why its type is wrong.
fn tokens(arg: &Arg, name: &str, value: &Value) -> Result<Vec<OsString>, String> {
    let kind = Kind::of(arg);
    let flag = |v: &str| OsString::from(format!("--{name}={v}"));
    let scalar = match (kind, value) {
        (Kind::Bool, Value::Boolean(b)) => Some(b.to_string()),
        (Kind::Integer, Value::Integer(n)) => Some(n.to_string()),
        (Kind::Text, Value::String(s)) => Some(s.clone()),
        (Kind::List, Value::Array(_)) => None,
        _ => {
            return Err(format!(
                "expected {}, found {}",
                kind.expected(),
                value.type_str()
            ))
        }
    };
    match scalar {
        Some(v) => Ok(vec![flag(&v)]),
        None => strings(value)
            .map(|list| list.iter().map(|v| flag(v)).collect())
            .ok_or_else(|| format!("expected {}", kind.expected())),
    }
}

/// An array's items, if every one is a string.
fn strings(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// The arguments clap sees: the file's flags that the command line does not
/// give, then the command line, then the file's program unless the command
/// line names one.
fn merge(args: &[OsString], given: &ArgMatches, file: FileArgs) -> Result<ArgMatches, LoadError> {
    let on_command_line = |id: &str| given.value_source(id) == Some(ValueSource::CommandLine);
    let program_given = on_command_line(PROGRAM_ID) || on_command_line(COMMAND_KEY);
    let mut merged = vec![args.first().cloned().unwrap_or_else(|| "wspipe".into())];
    for (id, tokens) in file.flags {
        // `--command` and COMMAND are one setting: either replaces both.
        let overridden = on_command_line(&id) || (id == COMMAND_KEY && program_given);
        if !overridden {
            merged.extend(tokens);
        }
    }
    merged.extend(args.iter().skip(1).cloned());
    if let Some(program) = file.program.filter(|_| !program_given) {
        if !args.iter().any(|a| a == "--") {
            merged.push("--".into());
        }
        merged.extend(program);
    }
    Cli::command()
        .try_get_matches_from(merged)
        .map_err(LoadError::Clap)
}

/// Every key with a value (given or default), as TOML values.
fn effective(matches: &ArgMatches) -> toml::Table {
    let mut table = toml::Table::new();
    for arg in keys() {
        let id = arg.get_id().as_str();
        let Some(raw) = matches.get_raw(id) else {
            continue;
        };
        let raw: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        let value = match Kind::of(&arg) {
            Kind::Bool => Value::Boolean(matches.get_one::<bool>(id).copied().unwrap_or(false)),
            Kind::List => Value::Array(raw.into_iter().map(Value::String).collect()),
            Kind::Integer => match raw.first().and_then(|v| v.parse::<i64>().ok()) {
                Some(n) => Value::Integer(n),
                None => continue,
            },
            Kind::Text => match raw.into_iter().next() {
                Some(v) => Value::String(v),
                None => continue,
            },
        };
        table.insert(arg.get_long().unwrap_or(id).to_owned(), value);
    }
    if let Some(words) = matches.get_raw(PROGRAM_ID) {
        let words = words.map(|w| Value::String(w.to_string_lossy().into_owned()));
        table.insert(COMMAND_KEY.to_owned(), Value::Array(words.collect()));
    }
    table
}

/// `--print-config`: the effective configuration, as a file.
pub fn render(effective: &toml::Table) -> String {
    let body = toml::to_string(effective).unwrap_or_default();
    format!("# wspipe --print-config (see docs/configuration.md)\n{body}")
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn first_line(msg: &str) -> String {
    let line = msg.lines().next().unwrap_or(msg);
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(toml: &str, args: &[&str]) -> Result<Loaded, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(&path, toml).unwrap();
        let mut all: Vec<OsString> = vec!["wspipe".into(), "--config".into(), path.into()];
        all.extend(args.iter().map(OsString::from));
        load(all)
    }

    fn file_error(toml: &str) -> String {
        match load_with(toml, &[]) {
            Err(LoadError::File(msg)) => msg.split_once(".toml:").unwrap().1.to_owned(),
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    #[test]
    fn keys_become_flags_and_the_command_line_wins() {
        let toml = "port = 8080\naddress = [\"127.0.0.1\", \"::1\"]\nbinary = true\ncommand = [\"cat\", \"-u\"]\n";
        let cli = load_with(toml, &[]).unwrap().cli;
        assert_eq!(cli.port, Some(8080));
        assert_eq!(cli.address, ["127.0.0.1", "::1"]);
        assert!(cli.binary);
        assert_eq!(cli.program, ["cat", "-u"]);
        let cli = load_with(toml, &["--port=1", "--address", "[::1]", "sh"])
            .unwrap()
            .cli;
        assert_eq!(cli.port, Some(1));
        assert_eq!(cli.address, ["[::1]"]);
        assert_eq!(cli.program, ["sh"]);
        let cli = load_with(toml, &["--command", "sh -c x"]).unwrap().cli;
        assert!(cli.program.is_empty());
        assert_eq!(cli.command.as_deref(), Some("sh -c x"));
    }

    #[test]
    fn bad_keys_and_values_name_line_and_key() {
        assert_eq!(
            file_error("port = 1\nprot = 2\n"),
            "2: unknown key \"prot\""
        );
        assert_eq!(
            file_error("\nport = \"80\"\n"),
            "2: key \"port\": expected an integer, found string"
        );
        assert!(file_error("port = 99999\n").starts_with("1: key \"port\": invalid value"));
        assert!(
            file_error("loglevel = \"loud\"\n").starts_with("1: key \"loglevel\": invalid value")
        );
        assert!(file_error("port = 1\nport 2\n").starts_with("2: not TOML: "));
        assert_eq!(
            file_error("header = [1]\n"),
            "1: key \"header\": expected an array of strings"
        );
        assert_eq!(file_error("config = \"x\"\n"), "1: unknown key \"config\"");
    }

    #[test]
    fn effective_round_trips() {
        let toml =
            "port = 8080\npassenv = [\"HOME\", \"LANG\"]\nshared = true\ncommand = [\"cat\"]\n";
        let first = load_with(toml, &["--maxforks=3"]).unwrap().effective;
        assert_eq!(first["maxforks"], Value::Integer(3));
        assert_eq!(first["loglevel"], Value::String("access".into()));
        let again = load_with(&render(&first), &[]).unwrap().effective;
        assert_eq!(first, again);
    }
}
