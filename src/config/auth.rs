//! Authentication flags: one of `--basic-auth FILE`, `--auth-cmd PROG`,
//! `--auth-url URL` and `--jwt-key FILE`, with `--realm`, `--auth-timeout`,
//! `--auth-http` and the JWT's `--jwt-aud`, `--jwt-iss`, `--jwt-query`.
//! Files are read now, so that a bad entry or key stops the start (exit
//! 2, with its reason).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{bad, ConfigError};
use crate::auth::{command::AuthCommand, htpasswd::Htpasswd, jwt, url, Auth};
use crate::cli::Cli;

/// The configured authentication; `None` admits everyone.
pub(super) fn auth(cli: &Cli) -> Result<Option<Arc<Auth>>, ConfigError> {
    check_jwt_options(cli)?;
    let given = [
        cli.basic_auth.is_some(),
        cli.auth_cmd.is_some(),
        cli.auth_url.is_some(),
        cli.jwt_key.is_some(),
    ];
    const ALL: &str = "--basic-auth, --auth-cmd, --auth-url and --jwt-key";
    match given.iter().filter(|g| **g).count() {
        0 if cli.auth_http => return Err(bad(format!("--auth-http needs one of {ALL}"))),
        0 => return Ok(None),
        1 => {}
        _ => return Err(bad(format!("give only one of {ALL}"))),
    }
    let timeout = Duration::from_millis(cli.auth_timeout.max(1));
    let auth = if let Some(path) = &cli.basic_auth {
        let users = Htpasswd::load(path).map_err(|e| bad(format!("--basic-auth {e}")))?;
        Auth::basic(users, &cli.realm, cli.auth_http).map_err(|e| bad(e.to_string()))?
    } else if let Some(line) = &cli.auth_cmd {
        Auth::command(auth_command(line, timeout)?, cli.auth_http)
    } else if let Some(value) = &cli.auth_url {
        let target = url::Target::parse(value).map_err(|e| bad(e.to_string()))?;
        Auth::url(url::AuthUrl { target, timeout }, cli.auth_http)
    } else {
        let path = cli.jwt_key.as_deref().unwrap_or(Path::new(""));
        let keys = jwt::keys::load(path).map_err(|e| bad(e.to_string()))?;
        let verifier = jwt::Jwt::new(
            keys,
            cli.jwt_aud.clone(),
            cli.jwt_iss.clone(),
            cli.jwt_query.clone(),
        );
        Auth::jwt(verifier, &cli.realm, cli.auth_http).map_err(|e| bad(e.to_string()))?
    };
    Ok(Some(Arc::new(auth)))
}

/// `--jwt-aud`, `--jwt-iss` and `--jwt-query` mean nothing without
/// `--jwt-key`, and a query parameter needs a name.
fn check_jwt_options(cli: &Cli) -> Result<(), ConfigError> {
    let given = !cli.jwt_aud.is_empty() || !cli.jwt_iss.is_empty() || cli.jwt_query.is_some();
    if given && cli.jwt_key.is_none() {
        return Err(bad("--jwt-aud, --jwt-iss and --jwt-query need --jwt-key"));
    }
    let empty = |values: &[String]| values.iter().any(|v| v.is_empty());
    if empty(&cli.jwt_aud) || empty(&cli.jwt_iss) || cli.jwt_query.as_deref() == Some("") {
        return Err(bad("--jwt-aud, --jwt-iss and --jwt-query cannot be empty"));
    }
    Ok(())
}

/// `--auth-cmd`: split like `--command`, no shell.
fn auth_command(line: &str, timeout: Duration) -> Result<AuthCommand, ConfigError> {
    let mut words = shell_words::split(line)
        .map_err(|e| bad(format!("--auth-cmd: {e}")))?
        .into_iter()
        .map(OsString::from);
    let program = words.next().ok_or_else(|| bad("--auth-cmd is empty"))?;
    Ok(AuthCommand {
        program: locate_auth_program(&program)?,
        args: words.collect(),
        timeout,
    })
}

/// The `--auth-cmd` program, found at start like COMMAND is: a missing
/// one would refuse every client.
fn locate_auth_program(program: &std::ffi::OsStr) -> Result<PathBuf, ConfigError> {
    // As `locate` (and execvp) decide: a name with a '/' is a path.
    let path = Path::new(program);
    let is_path = program.as_bytes().contains(&b'/');
    match which::which(path) {
        Ok(_) if is_path => Ok(path.to_path_buf()),
        Ok(found) => Ok(found),
        Err(e) => Err(bad(format!("--auth-cmd {}: {e}", path.display()))),
    }
}
