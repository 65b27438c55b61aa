//! URL path to program: `decode_path` never yields anything that could leave
//! the directory, and `resolve_blocking` over a small tree (scripts, a directory, an
//! escaping symlink, a symlinked parent) only ever returns an executable file
//! inside the root, and never a PATH_INFO with a NUL (refused as a bad path).
//! The tree is made once per process.
//!
//! Input: the raw (percent-encoded) URL path, lossy UTF-8.
#![no_main]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use wspipe::config::{CommandSpec, Endpoint};
use wspipe::route::{decode_path, is_confined, resolve_blocking, RouteError};

/// `$TMPDIR/wspipe-fuzz-route-UID/{root,outside}`: made if missing, reused
/// (idempotent, so parallel jobs and repeated runs share it).
fn tree() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        let base = std::env::temp_dir().join(format!("wspipe-fuzz-route-{uid}"));
        let root = base.join("root");
        fs::create_dir_all(root.join("sub/inner")).unwrap();
        let script = |p: &Path, mode: u32| {
            if !p.exists() {
                fs::write(p, "#!/bin/sh\n").unwrap();
            }
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
        };
        script(&root.join("chat"), 0o755);
        script(&root.join("echo.sh"), 0o755);
        script(&root.join("twin.sh"), 0o755);
        script(&root.join("twin.py"), 0o755);
        script(&root.join("sub/deep"), 0o755);
        script(&root.join("sub/inner/x.py"), 0o755);
        script(&root.join("plain"), 0o644);
        script(&base.join("outside"), 0o755);
        let link = |target: &Path, name: &str| {
            let _ = std::os::unix::fs::symlink(target, root.join(name));
        };
        link(&base.join("outside"), "escape");
        link(&base, "up");
        link(&root.join("chat"), "alias");
        root.canonicalize().unwrap()
    })
}

fn check_decoded(raw: &str) {
    let Ok(path) = decode_path(raw) else {
        return;
    };
    let segments = raw.split('/').filter(|s| !s.is_empty()).count();
    let mut n = 0;
    for c in path.components() {
        n += 1;
        let Component::Normal(name) = c else {
            panic!("{raw:?} decodes to {path:?}: component {c:?}");
        };
        let name = name.as_encoded_bytes();
        assert!(!name.is_empty() && name[0] != b'.', "{raw:?} -> {path:?}");
        assert!(
            !name.iter().any(|b| matches!(b, b'/' | b'\\' | 0)),
            "{raw:?} -> {path:?}"
        );
    }
    assert_eq!(n, segments, "{raw:?} -> {path:?}: segments merged or split");
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    check_decoded(&raw);

    let root = tree();
    if let Ok(r) = resolve_blocking(Some(&Endpoint::Dir(root.clone())), &raw) {
        assert!(is_confined(root, &r.program), "{raw:?} -> {:?}", r.program);
        let meta = fs::metadata(&r.program).unwrap();
        assert!(meta.is_file() && meta.permissions().mode() & 0o111 != 0);
        assert!(r.script_name.starts_with('/'), "{raw:?} -> {r:?}");
        assert!(r.path_info.is_empty() || r.path_info.starts_with('/'));
        assert!(r.args.is_empty());
        assert!(!r.script_name.contains('\0') && !r.path_info.contains('\0'));
    }

    let spec = CommandSpec {
        program: "cat".into(),
        args: Vec::new(),
    };
    // One program takes every path, but for one whose decoded form holds a
    // NUL (no environment variable can carry it): that is a client error.
    let nul = percent_decode_str(&raw).any(|b| b == 0);
    match resolve_blocking(Some(&Endpoint::Command(spec)), &raw) {
        Ok(r) => {
            assert!(!nul, "{raw:?} has a NUL yet resolved");
            assert_eq!(r.script_name, "/");
            assert!(!r.path_info.contains('\0'));
        }
        Err(e) => {
            assert_eq!(e, RouteError::BadPath, "{raw:?}");
            assert!(nul, "{raw:?} refused without a NUL");
        }
    }
});
