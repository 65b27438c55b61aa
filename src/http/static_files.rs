//! Static files (`--staticdir`), on the same port as the WebSockets.
//!
//! tower-http's `ServeDir` does the HTTP work: Content-Type, Last-Modified
//! and If-Modified-Since, Range, `index.html` for directories, and refusal
//! of `..`. In front of it we refuse what it would allow: encoded
//! separators and hidden files (as for `--dir`), symlinks that lead out of
//! the directory, and anything under `--cgidir`, so a script is never served
//! as source text when the two directories overlap.

use std::path::PathBuf;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use super::response::{is_read, method_not_allowed};
use super::{text, Body};
use crate::route::{decode_path, is_confined};

/// The static file service.
#[derive(Debug, Clone)]
pub struct StaticFiles {
    /// Canonical root.
    root: PathBuf,
    /// Canonical `--cgidir`, never served as files.
    cgi_root: Option<PathBuf>,
    service: ServeDir,
}

impl StaticFiles {
    /// Serves `root` (canonical), never anything under `cgi_root`.
    pub fn new(root: PathBuf, cgi_root: Option<PathBuf>) -> Self {
        StaticFiles {
            service: ServeDir::new(&root),
            root,
            cgi_root,
        }
    }

    /// Answers one GET or HEAD.
    pub async fn serve(&self, req: Request<Incoming>) -> Response<Body> {
        if !is_read(req.method()) {
            return method_not_allowed();
        }
        let Ok(relative) = decode_path(req.uri().path()) else {
            return text(StatusCode::NOT_FOUND, "Not found\n");
        };
        if let Some(refused) = self.check(relative).await {
            return refused;
        }
        match self.service.clone().oneshot(req).await {
            Ok(response) => response.map(|body| body.boxed_unsync()),
            Err(never) => match never {},
        }
    }

    /// Refuses a path that exists but leads out of the root or into
    /// `--cgidir`. Looking (stat, realpath) can block on a slow disk, so it
    /// happens on the blocking pool, as ServeDir's own file access does.
    async fn check(&self, relative: PathBuf) -> Option<Response<Body>> {
        let (root, cgi_root) = (self.root.clone(), self.cgi_root.clone());
        let allowed = tokio::task::spawn_blocking(move || {
            let file = root.join(relative);
            if !file.exists() {
                return true; // ServeDir answers 404
            }
            let in_cgi = cgi_root.is_some_and(|cgi| is_confined(&cgi, &file));
            is_confined(&root, &file) && !in_cgi
        });
        match allowed.await {
            Ok(true) => None,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(false) | Err(_) => Some(text(StatusCode::FORBIDDEN, "Forbidden\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ready_at_first_poll, with_busy_blocking_pool};

    // With the blocking pool held busy, a check done on the worker would
    // still finish at once; one handed to the pool cannot.
    #[test]
    fn path_checks_leave_the_worker() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::create_dir(root.join("cgi")).unwrap();
        std::fs::write(root.join("cgi/s"), "#!/bin/sh\n").unwrap();
        let files = StaticFiles::new(root.clone(), Some(root.join("cgi")));
        with_busy_blocking_pool(|release| async move {
            let mut check = std::pin::pin!(files.check(PathBuf::from("cgi/s")));
            assert!(
                !ready_at_first_poll(check.as_mut()).await,
                "checked on the worker"
            );
            drop(release);
            assert!(check.await.is_some(), "a script under --cgidir is refused");
            for (path, allowed) in [("a.txt", true), ("missing", true)] {
                assert_eq!(
                    files.check(PathBuf::from(path)).await.is_none(),
                    allowed,
                    "{path}"
                );
            }
        });
    }
}
