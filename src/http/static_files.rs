//! Static files (`--staticdir`), on the same port as the WebSockets.
//!
//! tower-http's `ServeDir` does the HTTP work: Content-Type, Last-Modified
//! and If-Modified-Since, Range, `index.html` for directories, and refusal
//! of `..`. In front of it we refuse what it would allow: encoded
//! separators and hidden files (as for `--dir`), symlinks that lead out of
//! the directory, and anything under `--cgidir`, so a script is never served
//! as source text when the two directories overlap.

use std::path::PathBuf;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::ServiceExt;
use tower_http::services::ServeDir;

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
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
            r.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
            return r;
        }
        let Ok(relative) = decode_path(req.uri().path()) else {
            return text(StatusCode::NOT_FOUND, "Not found\n");
        };
        let file = self.root.join(&relative);
        if file.exists() {
            if !is_confined(&self.root, &file) {
                return text(StatusCode::FORBIDDEN, "Forbidden\n");
            }
            let in_cgi = self
                .cgi_root
                .as_ref()
                .is_some_and(|cgi| is_confined(cgi, &file));
            if in_cgi {
                return text(StatusCode::FORBIDDEN, "Forbidden\n");
            }
        }
        match self.service.clone().oneshot(req).await {
            Ok(response) => response.map(|body| body.boxed_unsync()),
            Err(never) => match never {},
        }
    }
}
