//! Flags that exclude one another, checked before anything else is built
//! (kept apart from config.rs, which builds the configuration).

use super::{bad, ConfigError, Endpoint};
use crate::cli::Cli;

/// `--anyorigin` says "no origin check" (as websocketd 0.5 has it);
/// `--origin` and `--sameorigin` each ask for one.
pub(super) fn check_anyorigin(cli: &Cli) -> Result<(), ConfigError> {
    if cli.anyorigin && (cli.origin.is_some() || cli.sameorigin) {
        return Err(bad(
            "--anyorigin cannot be used with --origin or --sameorigin",
        ));
    }
    Ok(())
}

/// `--shared` shares a program: it needs one (COMMAND, --command or
/// --dir); client ids are lines, so `--shared-ids` is for text mode.
pub(super) fn check_shared(cli: &Cli, endpoint: Option<&Endpoint>) -> Result<(), ConfigError> {
    if !cli.shared {
        let needing = [
            (cli.shared_ids, "--shared-ids"),
            (cli.shared_restart, "--shared-restart"),
            (cli.shared_keep, "--shared-keep"),
        ];
        return match needing.iter().find(|(given, _)| *given) {
            Some((_, flag)) => Err(bad(format!("{flag} needs --shared"))),
            None => Ok(()),
        };
    }
    match endpoint {
        Some(Endpoint::Command(_) | Endpoint::Dir(_)) => {}
        Some(Endpoint::PubSub { .. }) => {
            return Err(bad(
                "--shared shares a program's process: --pubsub runs none",
            ))
        }
        None => return Err(bad("--shared needs COMMAND, --command or --dir")),
    }
    if cli.shared_ids && (cli.binary || cli.framed) {
        return Err(bad(
            "--shared-ids tags lines: it works in text mode only (not with --binary or --framed)",
        ));
    }
    Ok(())
}

/// `--passstderr` tags each line of the child's stdout and stderr as JSON:
/// that needs lines and one child per connection. websocketd refuses it
/// with --binary too.
pub(super) fn check_passstderr(cli: &Cli) -> Result<(), ConfigError> {
    if !cli.passstderr {
        return Ok(());
    }
    let other = [
        (cli.binary, "--binary"),
        (cli.framed, "--framed"),
        (cli.shared, "--shared"),
        (cli.pubsub, "--pubsub"),
    ];
    match other.iter().find(|(given, _)| *given) {
        Some((_, flag)) => Err(bad(format!(
            "--passstderr tags lines of text as JSON: it cannot be used with {flag}"
        ))),
        None => Ok(()),
    }
}
