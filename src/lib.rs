//! wspipe: turn any program that reads stdin and writes stdout into a
//! WebSocket server, websocketd style.
//!
//! The modules form layers; each imports only from the layers below it
//! (`python3 ../shared/tools/modcycles.py src` checks that no two
//! top-level modules import each other, directly or around a cycle):
//!
//! ```text
//! main, server  start, signals, shutdown          (server.rs, main.rs)
//! reload        SIGHUP: re-read --config          (reload.rs)
//! generate      man page, completions             (generate.rs)
//! net           bind, accept loops                (net/)
//! http          routing, upgrade, CGI, static,    (http/)
//!               console, redirect, metrics, conn
//! state         the shared state, as a handle     (state.rs)
//! control       protocol, commands, ctl client    (control/)
//! shared        one child per endpoint, shared    (shared/)
//!               by its clients (--shared)
//! bus           publish here, then to the other   (bus.rs)
//!               instances (--redis)
//! pubsub        a session with no child of its    (pubsub.rs)
//!               own: channel or shared client
//! hub           channels: members, publish        (hub.rs)
//! bridge        the pump: supervisor, inbound,    (bridge/)
//!               outbound, child output
//! session       registry, stats, mailboxes,       (session/)
//!               spawn, stderr log
//! peer          who is connected                  (peer.rs)
//! config, route, process                          (validated flags, URL
//!                                                  path -> program, children)
//! auth          who may connect (--basic-auth)    (auth/)
//! cluster       channels across instances         (cluster/)
//!               through Redis
//! pure          cli, logging, lines, frames, mailbox, pipes, env, origin,
//!               proxy, tls, limits, shutdown, events, systemd, forks,
//!               backoff
//! ```
//!
//! One connection walks down and back up: `net` accepts it and hands it
//! to `http`, whose `upgrade` checks the handshake (origin, `route`,
//! `--maxforks`), spawns the child through `session::spawn`, registers the
//! session and answers 101; `bridge` then pumps both ways until the close
//! code that follows the child's exit. docs/architecture.md draws it.

pub mod auth;
pub mod backoff;
pub mod bridge;
pub mod bus;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod env;
pub mod events;
pub mod forks;
pub mod frames;
pub mod generate;
pub mod history;
pub mod http;
pub mod hub;
pub mod limits;
pub mod lines;
pub mod logging;
pub mod mailbox;
pub mod net;
pub mod origin;
pub mod peer;
pub mod pipes;
pub mod process;
pub mod proxy;
pub mod pubsub;
pub mod reload;
pub mod resume;
pub mod route;
pub mod server;
pub mod session;
pub mod shared;
pub mod shutdown;
pub mod state;
pub mod systemd;
pub mod tls;

#[cfg(test)]
mod testing;
