//! wspipe: turn any program that reads stdin and writes stdout into a
//! WebSocket server, websocketd style.
//!
//! One connection walks one way through the modules:
//!
//! ```text
//! server   (listen, accept, TLS, HTTP/1.1 via hyper, shutdown)
//!   -> http     (upgrade? CGI? static file? console? redirect)
//!   -> upgrade  (handshake checks, origin, route, fork limit, spawn, 101)
//!   -> route    (URL path -> program, SCRIPT_NAME, PATH_INFO)
//!   -> env      (CGI/1.1 environment; proxy: REMOTE_ADDR behind proxies)
//!   -> process  (spawn in own process group, signal escalation, reap)
//!   -> bridge   (supervisor + inbound + outbound: pump both ways with
//!                backpressure; close code from the exit status)
//!   -> lines / frames (framing of child output; pure)
//! ```
//!
//! `cli` and `config` turn flags into a validated [`config::Config`];
//! `limits` sizes the open-files budget; `origin` holds the Origin policy;
//! `tls` loads certificates; `logging` sets up websocketd's levels;
//! `control` is the side door for `wspipe ctl` (registry of sessions,
//! protocol, commands, metrics), reaching sessions through `mailbox`es.

pub mod bridge;
pub mod cli;
pub mod config;
pub mod control;
pub mod env;
pub mod frames;
pub mod http;
pub mod limits;
pub mod lines;
pub mod logging;
pub mod mailbox;
pub mod origin;
pub mod process;
pub mod proxy;
pub mod route;
pub mod server;
pub mod tls;
pub mod upgrade;
