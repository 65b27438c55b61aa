//! The channel requests: publish, subscribe, unsubscribe, channels.

use super::commands::{message, not_found};
use super::protocol::{ChannelEntry, ErrorKind, Response};
use crate::bus::Bus;
use crate::config::Mode;
use crate::hub::{ChannelName, Hub, NameError, NotPresent};

/// The channel a request names.
fn channel(name: &str) -> Result<ChannelName, NameError> {
    ChannelName::parse(name)
}

/// The answer to a request naming a bad channel.
fn bad_channel(name: &str, e: NameError) -> Response {
    Response::error(
        ErrorKind::BadRequest,
        format!("bad channel {:?}: {e}", truncated(name)),
    )
}

/// A name as an error message quotes it: at most 64 characters.
fn truncated(name: &str) -> String {
    name.chars().take(64).collect()
}

pub fn publish(bus: &Bus, name: &str, text: &str, mode: Mode) -> Response {
    let channel = match channel(name) {
        Ok(channel) => channel,
        Err(e) => return bad_channel(name, e),
    };
    let delivery = bus.publish(&channel, message(text, mode));
    Response {
        delivered: Some(delivery.delivered),
        dropped: Some(delivery.dropped),
        ..Response::ok()
    }
}

pub fn subscribe(hub: &Hub, id: u64, name: &str) -> Response {
    match channel(name) {
        Ok(channel) => membership(hub.subscribe(id, &channel), id),
        Err(e) => bad_channel(name, e),
    }
}

pub fn unsubscribe(hub: &Hub, id: u64, name: &str) -> Response {
    match channel(name) {
        Ok(channel) => membership(hub.unsubscribe(id, &channel), id),
        Err(e) => bad_channel(name, e),
    }
}

/// Subscribing twice, or leaving a channel one is not in, is not an error:
/// the session ends up as asked.
fn membership(changed: Result<bool, NotPresent>, id: u64) -> Response {
    match changed {
        Ok(_) => Response::ok(),
        Err(NotPresent) => not_found(id),
    }
}

pub fn list(hub: &Hub) -> Response {
    let channels = hub
        .channels()
        .into_iter()
        .map(|c| ChannelEntry {
            name: c.name.as_str().to_owned(),
            members: c.members,
            published: c.published,
            dropped: c.dropped,
            instance: None,
        })
        .collect();
    Response {
        channels: Some(channels),
        ..Response::ok()
    }
}
