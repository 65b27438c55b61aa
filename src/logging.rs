//! Logging, with websocketd's levels mapped onto `tracing`.
//!
//! websocketd orders its levels debug, trace, access, info, error, fatal,
//! none (most verbose first; `none` logs nothing). Access lines (one per connection open and close) use
//! the `wspipe::access` target at INFO, so `--loglevel info` can hide them
//! while keeping other information.

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
pub fn init(level: LogLevel) {
    let filter = EnvFilter::new(directive(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
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
