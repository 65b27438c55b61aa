//! SIGHUP with `--config`: read the file again and apply what can change
//! without dropping a session.
//!
//! The whole configuration is built and validated again (the original
//! command line still overriding the file); if anything is wrong the
//! running configuration stays and the reason is logged. Otherwise every
//! changed key is logged: the reloadable ones are applied to new
//! connections, the others are named as needing a restart and not applied.

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::file::{self, LoadError};
use crate::config::{Config, ReloadSource};
use crate::state::State;

/// Keys applied by a reload (to new connections); any other key that
/// changes needs a restart.
pub const RELOADABLE: [&str; 10] = [
    "origin",
    "sameorigin",
    "anyorigin",
    "maxforks",
    "loglevel",
    "header",
    "header-ws",
    "header-http",
    "staticdir",
    "pingms",
];

/// With `--config`: handles SIGHUP until shutdown. Without, SIGHUP keeps
/// its default action (as websocketd: the process ends).
pub fn start(state: &State) -> anyhow::Result<()> {
    let Some(source) = state.config().reload.clone() else {
        return Ok(());
    };
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let state = state.clone();
    state.shutdown().clone().spawn(async move {
        // What is in force, key by key: a change that needs a restart is
        // not, so it is reported again at the next SIGHUP.
        let mut running = source.effective.clone();
        loop {
            tokio::select! {
                () = state.shutdown().cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            reload(&state, &source, &mut running);
        }
    });
    Ok(())
}

/// One SIGHUP.
fn reload(state: &State, source: &ReloadSource, running: &mut toml::Table) {
    let path = source.path.display();
    let (config, effective) = match build(source) {
        Ok(built) => built,
        Err(why) => {
            tracing::error!("SIGHUP: {why}; keeping the running configuration");
            return;
        }
    };
    // A louder level first and a quieter one last, so that the report
    // is seen either way.
    let level = (state.reloadable().log_level, config.log_level);
    let louder = (level.1 as u8) < (level.0 as u8);
    if louder {
        crate::logging::set_level(level.1);
    }
    // Applied before it is reported: whoever reads a line can count on it.
    state.apply(&config);
    report(&path.to_string(), running, &effective);
    if level.0 != level.1 && !louder {
        crate::logging::set_level(level.1);
    }
}

/// Keys whose values may hold a password (`--redis URL`): a change is
/// told without them.
const SECRET: [&str; 1] = ["redis"];

/// One line per changed key; the applied ones become `running`.
fn report(path: &str, running: &mut toml::Table, effective: &toml::Table) {
    let changes = changes(running, effective);
    if changes.is_empty() {
        tracing::info!("SIGHUP: {path} read again: nothing changed");
    }
    for (key, old, new) in changes {
        if SECRET.contains(&key.as_str()) {
            tracing::warn!("SIGHUP: {key} changed: needs a restart, not applied");
            continue;
        }
        if !RELOADABLE.contains(&key.as_str()) {
            tracing::warn!(
                "SIGHUP: {key} changed from {old} to {new}: needs a restart, not applied"
            );
            continue;
        }
        tracing::info!("SIGHUP: {key} changed from {old} to {new}: applied to new connections");
        match effective.get(&key) {
            Some(value) => running.insert(key, value.clone()),
            None => running.remove(&key),
        };
    }
}

/// The configuration the file and the original command line give now.
fn build(source: &ReloadSource) -> Result<(Config, toml::Table), String> {
    let loaded = file::load(source.args.clone()).map_err(|e| match e {
        LoadError::File(msg) => msg,
        LoadError::Clap(e) => e.to_string().lines().next().unwrap_or_default().to_owned(),
    })?;
    let config =
        Config::from_cli(loaded.cli).map_err(|e| format!("{}: {e}", source.path.display()))?;
    Ok((config, loaded.effective))
}

/// Keys whose value differs, with the old and new values as TOML.
fn changes(old: &toml::Table, new: &toml::Table) -> Vec<(String, String, String)> {
    let show = |v: Option<&toml::Value>| v.map_or_else(|| "(unset)".to_owned(), |v| v.to_string());
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| (k.clone(), show(old.get(k)), show(new.get(k))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_every_key_that_differs() {
        let old: toml::Table = toml::from_str("port = 1\norigin = \"a\"\npingms = 0").unwrap();
        let new: toml::Table = toml::from_str("port = 2\npingms = 0\nmaxforks = 3").unwrap();
        let found = changes(&old, &new);
        assert_eq!(
            found,
            [
                ("maxforks".into(), "(unset)".into(), "3".into()),
                ("origin".into(), "\"a\"".into(), "(unset)".into()),
                ("port".into(), "1".into(), "2".into()),
            ]
        );
    }

    #[test]
    fn reloadable_keys_are_flags() {
        use clap::CommandFactory;
        let cli = crate::cli::Cli::command();
        for key in RELOADABLE {
            assert!(
                cli.get_arguments().any(|a| a.get_long() == Some(key)),
                "{key}"
            );
        }
    }
}
