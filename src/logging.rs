//! Logging, with websocketd's levels mapped onto `tracing`.
//!
//! websocketd orders its levels debug, trace, access, info, error, fatal,
//! none (most verbose first; `none` logs nothing). Access lines (one per connection open and close) use
//! the `wspipe::access` target at INFO, so `--loglevel info` can hide them
//! while keeping other information.
//!
//! Lines go to stderr as text for people or, with `--log-format json`, one
//! JSON object per line for log collectors (docs/operations.md lists the
//! fields).

use tracing_subscriber::EnvFilter;

/// websocketd's log levels, most verbose first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Debug,
    Trace,
    Access,
    Info,
    Error,
    Fatal,
    /// Nothing at all (websocketd 0.5's `none`).
    None,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Time, level, target, message and key=value fields, colored on a
    /// terminal.
    Text,
    /// One JSON object per line: timestamp, level, target, message and
    /// the event's fields beside them.
    Json,
}

/// The filter directive for a level.
pub fn directive(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug,hyper=info,tungstenite=info,tokio_tungstenite=info",
        LogLevel::Trace => "trace,hyper=info,tungstenite=info,tokio_tungstenite=info",
        LogLevel::Access => "info",
        LogLevel::Info => "info,wspipe::access=off",
        LogLevel::Error | LogLevel::Fatal => "error",
        LogLevel::None => "off",
    }
}

/// Installs the global subscriber, writing to stderr.
pub fn init(level: LogLevel, format: LogFormat) {
    let filter = EnvFilter::new(directive(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).init();
        }
        // The event's fields beside timestamp, level and target, not
        // nested: `jq .remote` rather than `jq .fields.remote`.
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_websocketd_level_is_accepted_and_none_turns_logging_off() {
        for name in ["debug", "trace", "access", "info", "error", "fatal", "none"] {
            assert!(LogLevel::from_str(name, false).is_ok(), "{name}");
        }
        assert_eq!(directive(LogLevel::None), "off");
    }
}
