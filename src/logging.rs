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

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// The level filter of the global subscriber, for SIGHUP to change. Global
/// as the subscriber it belongs to is.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

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
    let (filter, handle) = reload::Layer::new(EnvFilter::new(directive(level)));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            registry
                .with(fmt::layer().with_writer(std::io::stderr).with_ansi(ansi))
                .init();
        }
        // The event's fields beside timestamp, level and target, not
        // nested: `jq .remote` rather than `jq .fields.remote`.
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    let _ = FILTER.set(handle);
}

/// Changes the level of the subscriber [`init`] installed (a no-op
/// without one, as in tests).
pub fn set_level(level: LogLevel) {
    if let Some(handle) = FILTER.get() {
        let _ = handle.reload(EnvFilter::new(directive(level)));
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
