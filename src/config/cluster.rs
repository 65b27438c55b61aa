//! `--redis URL` and `--instance NAME`.

use super::{bad, ConfigError, Listen};
use crate::cli::Cli;
use crate::cluster::{InstanceName, Settings, Target};

pub(super) fn settings(cli: &Cli, listen: &[Listen]) -> Result<Option<Settings>, ConfigError> {
    let Some(url) = &cli.redis else {
        if cli.instance.is_some() {
            return Err(bad("--instance needs --redis"));
        }
        return Ok(None);
    };
    let target = Target::parse(url).map_err(|e| bad(format!("--redis {}: {e}", shown(url))))?;
    let instance = match &cli.instance {
        Some(name) => {
            InstanceName::parse(name).map_err(|e| bad(format!("--instance {name:?}: {e}")))?
        }
        None => InstanceName::default_for(&host_name(), first_port(listen)),
    };
    Ok(Some(Settings { target, instance }))
}

/// The URL as an error quotes it: without what follows `://` when it
/// might hold a password.
fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if rest.contains('@') => format!("{scheme}://..."),
        _ => url.to_owned(),
    }
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// The port of the first TCP listener, for the default instance name.
fn first_port(listen: &[Listen]) -> Option<u16> {
    listen.iter().find_map(|l| match l {
        Listen::Tcp(addr) => Some(addr.port()),
        Listen::Unix(_) => None,
    })
}
