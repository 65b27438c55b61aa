//! The side door: control of a running server from scripts.
//!
//! ```text
//! wspipe ctl ...  --(NDJSON over a Unix socket)-->  listener -> commands
//!                                                       |
//!                                     registry of live sessions (id -> handle)
//!                                                       |
//!                       inject channel -> bridge outbound (in order with lines)
//!                       control channel -> bridge supervisor (close, kill)
//! ```
//!
//! `protocol` defines the wire format, `registry` the live sessions,
//! `commands` what each request does, `listener` the socket server, and
//! `client` the `wspipe ctl` command.

pub mod client;
pub mod commands;
pub mod listener;
pub mod metrics;
pub mod protocol;
pub mod registry;
