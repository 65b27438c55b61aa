//! `--metrics ADDR|PATH`: the counters of [`crate::control::metrics`] over
//! HTTP, on their own listener.

use http::header::{self, HeaderValue};
use http::{Method, Response};

use super::response::{is_read, method_not_allowed};
use super::{full, Body};
use crate::bus::Bus;
use crate::control::metrics::render;
use crate::session::Registry;
use crate::shared::Shared;

/// The answer to one request on the metrics listener (any path).
pub fn respond(method: &Method, registry: &Registry, bus: &Bus, shared: &Shared) -> Response<Body> {
    if !is_read(method) {
        return method_not_allowed();
    }
    let mut r = Response::new(full(render(registry, bus, shared)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}
