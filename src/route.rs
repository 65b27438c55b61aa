//! From a request path to the program that serves it.
//!
//! With one program (`wspipe CMD`) every path runs it, with SCRIPT_NAME "/"
//! and the path in PATH_INFO, as websocketd does. With `--dir DIR` the path is
//! walked segment by segment, websocketd style: directories are descended,
//! the first regular file found is the script and what follows it becomes
//! PATH_INFO (`/chat/room/1` -> `DIR/chat`, PATH_INFO `/room/1`). If a segment
//! names nothing, a unique executable with that name plus an extension is
//! taken (`/chat` -> `DIR/chat.sh`).
//!
//! Confinement: segments are percent-decoded one at a time, and a segment
//! that decodes to `.`, `..`, something hidden (leading `.`), or anything
//! containing `/`, `\` or NUL is refused, so no encoded form can climb out.
//! The script found is canonicalized and must still lie under the
//! (canonical) directory, which refuses symlinks that point outside. It must
//! be a regular file with an execute bit.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{CommandSpec, Endpoint};

/// The program a request resolves to, with its CGI path variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// `SCRIPT_NAME`: the URL path that named the script.
    pub script_name: String,
    /// `PATH_INFO`: the rest of the URL path, decoded.
    pub path_info: String,
}

/// Why a path does not resolve; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// 404: nothing there.
    #[error("no script at this path")]
    NotFound,
    /// 400: a segment tries to leave the directory or is malformed.
    #[error("path is not allowed")]
    BadPath,
    /// 403: found, but outside the directory (symlink) or not executable.
    #[error("script is not executable or lies outside --dir")]
    Forbidden,
}

impl RouteError {
    /// The HTTP status for this error.
    pub fn status(self) -> http::StatusCode {
        match self {
            RouteError::NotFound => http::StatusCode::NOT_FOUND,
            RouteError::BadPath => http::StatusCode::BAD_REQUEST,
            RouteError::Forbidden => http::StatusCode::FORBIDDEN,
        }
    }
}

/// Resolves the (still percent-encoded) URL path of a request.
///
/// A directory lookup touches the filesystem (stat, readdir, realpath),
/// which can block on a slow disk or a network mount: it runs on tokio's
/// blocking pool, never on a worker that serves connections. One command
/// needs no lookup and is answered at once.
pub async fn resolve(endpoint: Option<&Endpoint>, raw_path: &str) -> Result<Resolved, RouteError> {
    let Some(Endpoint::Dir(root)) = endpoint else {
        return resolve_blocking(endpoint, raw_path);
    };
    let (root, raw_path) = (root.clone(), raw_path.to_owned());
    match tokio::task::spawn_blocking(move || resolve_in_dir(&root, &raw_path)).await {
        Ok(resolved) => resolved,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels it.
        Err(_) => Err(RouteError::NotFound),
    }
}

/// [`resolve`] on the calling thread, for callers that may block.
pub fn resolve_blocking(
    endpoint: Option<&Endpoint>,
    raw_path: &str,
) -> Result<Resolved, RouteError> {
    let Some(endpoint) = endpoint else {
        return Err(RouteError::NotFound);
    };
    match endpoint {
        Endpoint::Command(CommandSpec { program, args }) => Ok(Resolved {
            program: program.clone(),
            args: args.clone(),
            script_name: "/".into(),
            path_info: decode_lossy(raw_path)?,
        }),
        Endpoint::Dir(root) => resolve_in_dir(root, raw_path),
        // Channel endpoints run nothing.
        Endpoint::PubSub { .. } => Err(RouteError::NotFound),
    }
}

/// A decoded path for PATH_INFO; a NUL (which no environment variable can
/// hold) makes the path a client error rather than a failed spawn.
fn decode_lossy(s: &str) -> Result<String, RouteError> {
    let decoded = percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned();
    if decoded.contains('\0') {
        return Err(RouteError::BadPath);
    }
    Ok(decoded)
}

/// One decoded path segment, checked for anything that could escape.
fn decode_segment(raw: &str) -> Result<OsString, RouteError> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let forbidden = |b: &u8| matches!(b, b'/' | b'\\' | 0);
    if bytes.first() == Some(&b'.') || bytes.iter().any(forbidden) {
        return Err(RouteError::BadPath);
    }
    Ok(OsString::from_vec(bytes))
}

/// Decodes every segment of a URL path, refusing any that could escape a
/// directory (empty segments are skipped).
pub fn decode_path(raw_path: &str) -> Result<PathBuf, RouteError> {
    let mut path = PathBuf::new();
    for raw in raw_path.split('/').filter(|s| !s.is_empty()) {
        path.push(decode_segment(raw)?);
    }
    Ok(path)
}

/// True if `path` (which must exist) resolves, symlinks followed, to
/// somewhere inside `root` (canonical).
pub fn is_confined(root: &Path, path: &Path) -> bool {
    path.canonicalize().is_ok_and(|real| real.starts_with(root))
}

fn resolve_in_dir(root: &Path, raw_path: &str) -> Result<Resolved, RouteError> {
    let raw_segments: Vec<&str> = raw_path.split('/').filter(|s| !s.is_empty()).collect();
    let mut file = root.to_path_buf();
    let mut script_name = String::new();
    for (i, raw) in raw_segments.iter().enumerate() {
        let segment = decode_segment(raw)?;
        let mut candidate = file.join(&segment);
        let meta = match std::fs::metadata(&candidate) {
            Ok(meta) => meta,
            Err(_) => {
                candidate = with_extension(&file, &segment).ok_or(RouteError::NotFound)?;
                std::fs::metadata(&candidate).map_err(|_| RouteError::NotFound)?
            }
        };
        script_name.push('/');
        script_name.push_str(&decode_lossy(raw)?);
        file = candidate;
        if meta.is_dir() {
            continue;
        }
        check_script(root, &file)?;
        let rest = &raw_segments[i + 1..];
        let path_info = if rest.is_empty() {
            String::new()
        } else {
            decode_lossy(&format!("/{}", rest.join("/")))?
        };
        return Ok(Resolved {
            program: file,
            args: Vec::new(),
            script_name,
            path_info,
        });
    }
    // The path ends in a directory (or is "/"): nothing to run.
    Err(RouteError::NotFound)
}

/// The unique `NAME.ext` in `dir` that is an executable file, if any.
fn with_extension(dir: &Path, name: &OsString) -> Option<PathBuf> {
    let mut prefix = name.clone().into_vec();
    prefix.push(b'.');
    let mut found = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let entry_name = entry.file_name().into_vec();
        let ext = entry_name.strip_prefix(prefix.as_slice());
        if ext.is_some_and(|e| !e.is_empty() && !e.contains(&b'.')) {
            let path = entry.path();
            if is_executable_file(&path) {
                if found.is_some() {
                    return None; // ambiguous: chat.sh and chat.py
                }
                found = Some(path);
            }
        }
    }
    found
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn check_script(root: &Path, file: &Path) -> Result<(), RouteError> {
    if !is_confined(root, file) {
        return Err(RouteError::Forbidden);
    }
    if !is_executable_file(file) {
        return Err(RouteError::Forbidden);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn script(path: &Path, mode: u32) {
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("sub")).unwrap();
        script(&root.join("chat"), 0o755);
        script(&root.join("echo.sh"), 0o755);
        script(&root.join("sub/deep"), 0o755);
        script(&root.join("plain"), 0o644);
        script(&tmp.path().join("outside"), 0o755);
        symlink(tmp.path().join("outside"), root.join("escape")).unwrap();
        symlink(root.join("chat"), root.join("alias")).unwrap();
        let root = root.canonicalize().unwrap();
        (tmp, root)
    }

    fn dir(root: &Path, path: &str) -> Result<Resolved, RouteError> {
        resolve_blocking(Some(&Endpoint::Dir(root.to_path_buf())), path)
    }

    // With the blocking pool held busy, a lookup done on the worker would
    // still finish at once; one handed to the pool cannot.
    #[test]
    fn directory_lookups_leave_the_worker_and_commands_do_not() {
        use crate::testing::{ready_at_first_poll, with_busy_blocking_pool};
        let (_tmp, root) = setup();
        with_busy_blocking_pool(|release| async move {
            let spec = CommandSpec {
                program: "cat".into(),
                args: Vec::new(),
            };
            let command = Endpoint::Command(spec);
            let mut at_once = std::pin::pin!(resolve(Some(&command), "/x"));
            assert!(
                ready_at_first_poll(at_once.as_mut()).await,
                "a command needs no lookup"
            );

            let endpoint = Endpoint::Dir(root.clone());
            let mut lookup = std::pin::pin!(resolve(Some(&endpoint), "/chat"));
            assert!(
                !ready_at_first_poll(lookup.as_mut()).await,
                "read on the worker"
            );
            drop(release);
            assert_eq!(lookup.await.unwrap().program, root.join("chat"));
        });
    }

    #[test]
    fn finds_scripts_and_path_info() {
        let (_tmp, root) = setup();
        let r = dir(&root, "/chat").unwrap();
        assert_eq!(r.program, root.join("chat"));
        assert_eq!(
            (r.script_name.as_str(), r.path_info.as_str()),
            ("/chat", "")
        );
        let r = dir(&root, "/sub/deep/a/b%20c").unwrap();
        assert_eq!(r.program, root.join("sub/deep"));
        assert_eq!(
            (r.script_name.as_str(), r.path_info.as_str()),
            ("/sub/deep", "/a/b c")
        );
        let r = dir(&root, "/echo").unwrap();
        assert_eq!(r.program, root.join("echo.sh"));
        assert!(
            dir(&root, "/alias").is_ok(),
            "symlink inside the dir is fine"
        );
    }

    #[test]
    fn missing_and_directories_are_not_found() {
        let (_tmp, root) = setup();
        assert_eq!(dir(&root, "/nope"), Err(RouteError::NotFound));
        assert_eq!(dir(&root, "/sub"), Err(RouteError::NotFound));
        assert_eq!(dir(&root, "/"), Err(RouteError::NotFound));
    }

    #[test]
    fn traversal_is_refused_in_every_spelling() {
        let (_tmp, root) = setup();
        for path in [
            "/../outside",
            "/sub/../chat",
            "/%2e%2e/outside",
            "/%2E%2E/outside",
            "/sub%2f..%2f..%2foutside",
            "/..%5coutside",
            "/.hidden",
            "/chat%00",
        ] {
            assert_eq!(dir(&root, path), Err(RouteError::BadPath), "{path}");
        }
    }

    #[test]
    fn escaping_symlinks_and_plain_files_are_forbidden() {
        let (_tmp, root) = setup();
        assert_eq!(dir(&root, "/escape"), Err(RouteError::Forbidden));
        assert_eq!(dir(&root, "/plain"), Err(RouteError::Forbidden));
    }

    #[test]
    fn single_command_takes_every_path() {
        let spec = CommandSpec {
            program: "cat".into(),
            args: vec!["-u".into()],
        };
        assert_eq!(
            resolve_blocking(Some(&Endpoint::Command(spec.clone())), "/a%00b"),
            Err(RouteError::BadPath)
        );
        let r = resolve_blocking(Some(&Endpoint::Command(spec)), "/any/path%21").unwrap();
        assert_eq!(r.script_name, "/");
        assert_eq!(r.path_info, "/any/path!");
        assert_eq!(r.args, ["-u"]);
    }
}

/// Property tests: no spelling of a URL path decodes to anything that could
/// leave the directory, and whatever `resolve` finds lies inside it.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::fs;
    use std::path::Component;

    /// URL paths built from the pieces traversal attempts are made of.
    fn raw_path() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_string()),
            Just("..".to_string()),
            Just(".".to_string()),
            Just("%2e".to_string()),
            Just("%2E".to_string()),
            Just("%2f".to_string()),
            Just("%2F".to_string()),
            Just("%5c".to_string()),
            Just("%5C".to_string()),
            Just("%00".to_string()),
            Just("%".to_string()),
            Just("%zz".to_string()),
            Just("%c3%a9".to_string()),
            Just("%ff".to_string()),
            Just("\\".to_string()),
            Just("sub".to_string()),
            Just("chat".to_string()),
            Just("echo".to_string()),
            Just("escape".to_string()),
            "[a-z]{1,3}",
            any::<char>().prop_map(String::from),
            (any::<u8>()).prop_map(|b| format!("%{b:02x}")),
        ];
        prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
    }

    fn check_decoded(raw: &str, path: &Path) -> Result<(), TestCaseError> {
        let segments = raw.split('/').filter(|s| !s.is_empty()).count();
        let mut components = 0;
        for c in path.components() {
            components += 1;
            let Component::Normal(name) = c else {
                return Err(TestCaseError::fail(format!("{raw:?} -> {c:?}")));
            };
            let name = name.as_encoded_bytes();
            prop_assert!(!name.is_empty());
            prop_assert!(!name.contains(&b'/') && !name.contains(&0) && !name.contains(&b'\\'));
            prop_assert!(name[0] != b'.', "{:?} -> hidden {:?}", raw, path);
        }
        // One component per segment: no decoded segment split or vanished.
        prop_assert_eq!(components, segments, "{:?} -> {:?}", raw, path);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn decode_path_stays_inside(raw in raw_path()) {
            if let Ok(path) = decode_path(&raw) {
                check_decoded(&raw, &path)?;
            }
        }

        #[test]
        fn decode_path_never_panics_on_any_string(raw in any::<String>()) {
            if let Ok(path) = decode_path(&raw) {
                check_decoded(&raw, &path)?;
            }
        }

        #[test]
        fn one_program_takes_every_path_without_a_nul(raw in raw_path()) {
            let spec = CommandSpec { program: "cat".into(), args: Vec::new() };
            let nul = percent_encoding::percent_decode_str(&raw).any(|b| b == 0);
            match resolve_blocking(Some(&Endpoint::Command(spec)), &raw) {
                Ok(r) => {
                    prop_assert!(!nul, "{:?} holds a NUL yet resolved", raw);
                    prop_assert!(!r.path_info.contains('\0'));
                }
                Err(e) => {
                    prop_assert_eq!(e, RouteError::BadPath);
                    prop_assert!(nul, "{:?} refused without a NUL", raw);
                }
            }
        }

        #[test]
        fn decode_segment_refuses_escapes(raw in "[^/]{0,8}|(%2[eEfF]|%5[cC]|%00|\\.|[a-z])*") {
            if let Ok(seg) = decode_segment(&raw) {
                let b = seg.as_encoded_bytes();
                prop_assert!(b.first() != Some(&b'.'));
                prop_assert!(!b.iter().any(|c| matches!(c, b'/' | b'\\' | 0)));
            }
        }
    }

    /// `resolve` over a small tree with escaping and inner symlinks: any
    /// program it returns is an executable regular file inside the
    /// (canonical) root, and SCRIPT_NAME + PATH_INFO account for the path.
    #[test]
    fn resolve_stays_inside_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("sub/inner")).unwrap();
        let script = |p: &Path, mode: u32| {
            fs::write(p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
        };
        script(&root.join("chat"), 0o755);
        script(&root.join("echo.sh"), 0o755);
        script(&root.join("sub/deep"), 0o755);
        script(&root.join("sub/inner/x.py"), 0o755);
        script(&root.join("plain"), 0o644);
        script(&tmp.path().join("outside"), 0o755);
        std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), root.join("up")).unwrap();
        std::os::unix::fs::symlink(root.join("chat"), root.join("alias")).unwrap();
        let root = root.canonicalize().unwrap();
        let endpoint = Endpoint::Dir(root.clone());

        let mut runner = TestRunner::new(Config::with_cases(256));
        runner
            .run(&raw_path(), |raw| {
                if let Ok(r) = resolve_blocking(Some(&endpoint), &raw) {
                    let real = r.program.canonicalize().unwrap();
                    prop_assert!(real.starts_with(&root), "{:?} -> {:?}", raw, real);
                    prop_assert!(is_executable_file(&real));
                    prop_assert!(r.script_name.starts_with('/'));
                    prop_assert!(r.path_info.is_empty() || r.path_info.starts_with('/'));
                    prop_assert!(!r.path_info.contains('\0') && !r.script_name.contains('\0'));
                }
                Ok(())
            })
            .unwrap();
    }
}
