//! Every HTTP request lands here first and is sent one way:
//!
//! ```text
//! WebSocket handshake ............ upgrade (spawn a child, 101)
//! a script under --cgidir ........ CGI/1.1
//! a file under --staticdir ....... static file
//! GET with --devconsole .......... the dev console page for that endpoint
//! anything else .................. 426 (GET/HEAD: "this is a WebSocket
//!                                  endpoint") or 405
//! ```
//!
//! `conn` serves one connection with hyper (also for `--redirport`,
//! `--metrics` and `--publish`), `response` holds the helpers every answer
//! is built with.

pub mod cgi;
pub mod conn;
pub mod console;
pub mod metrics;
pub mod publish;
pub mod redirect;
pub mod response;
pub mod static_files;
pub mod upgrade;

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

pub use response::{add_headers, empty, full, text, Body};

use crate::auth::{Denial, Probe};
use crate::config::Endpoint;
use crate::env::RemoteInfo;
use crate::peer::Peer;
use crate::state::State;
use static_files::StaticFiles;
use upgrade::wants_websocket;

/// What the public listeners serve: the shared state, plus the parts that
/// only HTTP needs.
#[derive(Debug)]
pub struct Site {
    state: State,
}

impl Site {
    pub fn new(state: State) -> Arc<Self> {
        Arc::new(Site { state })
    }

    /// `--staticdir` as it is now (SIGHUP may change it). Made per request:
    /// a `ServeDir` is only its root and settings, nothing opened.
    fn static_files(&self) -> Option<StaticFiles> {
        let dir = self.state.reloadable().static_dir.clone()?;
        Some(StaticFiles::new(dir, self.state.config().cgi_dir.clone()))
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Serves one request.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
    ) -> Result<Response<Body>, Infallible> {
        let upgrade = wants_websocket(&req);
        if let Err(denial) = self.authenticate(&mut req, peer, upgrade).await {
            return Ok(self.denied(&req, peer, denial));
        }
        if upgrade {
            return Ok(match upgrade::upgrade(&mut req, peer, &self.state).await {
                Ok(response) => response,
                Err(refusal) => {
                    self.state.registry().count_refused();
                    tracing::info!(
                        target: "wspipe::access",
                        path = %req.uri().path(),
                        remote = %peer.text(),
                        status = refusal.status.as_u16(),
                        "refused: {}", refusal.reason
                    );
                    let mut response = response::refused(&refusal);
                    if refusal.status == StatusCode::UPGRADE_REQUIRED {
                        response.headers_mut().insert(
                            header::SEC_WEBSOCKET_VERSION,
                            HeaderValue::from_static("13"),
                        );
                    }
                    self.http_headers(response)
                }
            });
        }
        let response = self.plain(req, peer).await;
        Ok(self.http_headers(response))
    }

    /// Authentication: admits the request (its [`Admission`] goes into
    /// its extensions, for the child's REMOTE_USER) or says why not.
    /// Upgrades always need it; other requests with `--auth-http`. The
    /// credentials stop here: the child gets no HTTP_AUTHORIZATION, and
    /// no JWT in its subprotocols or query.
    async fn authenticate(
        &self,
        req: &mut Request<Incoming>,
        peer: &Peer,
        upgrade: bool,
    ) -> Result<(), Denial> {
        let config = self.state.config();
        let Some(auth) = &config.auth else {
            return Ok(());
        };
        if !upgrade && !auth.guards_http() {
            return Ok(());
        }
        let (request_env, remote) = if auth.wants_request_env() {
            let (vars, remote) = self.auth_env(req, peer).await;
            (vars, Some(remote))
        } else {
            (Vec::new(), None)
        };
        let remote_addr = remote
            .as_ref()
            .map(RemoteInfo::addr_text)
            .unwrap_or_default();
        let probe = Probe {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            remote_addr: &remote_addr,
            env: [config.base_env.vars(), request_env.as_slice()],
        };
        let admission = auth.check(&probe).await?;
        // An upgrade joins the channel of its path: the authenticator may
        // have limited which.
        if upgrade && !admission.may_join(req.uri().path()) {
            return Err(Denial {
                status: StatusCode::FORBIDDEN,
                reason: "channel not permitted for this client",
                challenge: None,
            });
        }
        let mut uri = req.uri().clone();
        auth.scrub(req.headers_mut(), &mut uri);
        *req.uri_mut() = uri;
        req.extensions_mut().insert(admission);
        if let Some(remote) = remote {
            // Found once: with --reverselookup it took a DNS query.
            req.extensions_mut().insert(remote);
        }
        Ok(())
    }

    /// The CGI variables an `--auth-cmd` decides from (the request's, with
    /// no SCRIPT_NAME or PATH_INFO: nothing is routed yet; and no id: no
    /// session exists yet), and the client's address.
    async fn auth_env(
        &self,
        req: &Request<Incoming>,
        peer: &Peer,
    ) -> (Vec<crate::env::Var>, RemoteInfo) {
        let addresses = self.state.address_policy();
        let remote = addresses.remote_info(peer, req.headers()).await;
        let vars = crate::env::request_vars(&crate::env::RequestEnv {
            id: "",
            method: req.method(),
            uri: req.uri(),
            version: req.version(),
            headers: req.headers(),
            remote: &remote,
            tls: addresses.is_https(peer, req.headers()),
            local_port: peer.local_port(),
            script_name: "",
            path_info: "",
        });
        (vars, remote)
    }

    /// The answer to a request authentication refused: logged and counted
    /// like any refusal, with the challenge of a 401.
    fn denied(&self, req: &Request<Incoming>, peer: &Peer, denial: Denial) -> Response<Body> {
        self.state.registry().count_refused_auth();
        tracing::info!(
            target: "wspipe::access",
            path = %req.uri().path(),
            remote = %peer.text(),
            status = denial.status.as_u16(),
            "refused: {}", denial.reason
        );
        let mut response = text(denial.status, &format!("{}\n", denial.reason));
        if let Some(challenge) = denial.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        self.http_headers(response)
    }

    /// Adds `--header` and `--header-http` to a non-upgrade response.
    fn http_headers(&self, mut response: Response<Body>) -> Response<Body> {
        let headers = &self.state.reloadable().headers;
        add_headers(&mut response, &headers.all);
        add_headers(&mut response, &headers.http);
        response
    }

    /// A request that is not a WebSocket handshake.
    async fn plain(&self, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
        let config = self.state.config();
        if let Some(script) = cgi::script_for(config.cgi_dir.as_ref(), req.uri().path()).await {
            return cgi::serve(req, peer, &self.state, script).await;
        }
        if let Some(files) = self.static_files() {
            return files.serve(req).await;
        }
        if config.dev_console && response::is_read(req.method()) {
            if matches!(config.endpoint, Some(Endpoint::PubSub { .. })) {
                return console::page(); // every path is a channel
            }
            return match crate::route::resolve(config.endpoint.as_ref(), req.uri().path()).await {
                Ok(_) => console::page(),
                Err(e) => text(e.status(), &format!("{e}\n")),
            };
        }
        if response::is_read(req.method()) {
            let mut r = text(
                StatusCode::UPGRADE_REQUIRED,
                "This is a WebSocket endpoint served by wspipe: connect with a WebSocket client (ws://).\n",
            );
            r.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            r
        } else {
            response::method_not_allowed()
        }
    }
}

/// The client's REMOTE_* variables, found once per request: an
/// authentication that needed them left them in the request (with
/// `--reverselookup` they cost a DNS query).
async fn remote_of<B>(req: &Request<B>, peer: &Peer, state: &State) -> RemoteInfo {
    match req.extensions().get::<RemoteInfo>() {
        Some(known) => known.clone(),
        None => {
            let addresses = state.address_policy();
            addresses.remote_info(peer, req.headers()).await
        }
    }
}
