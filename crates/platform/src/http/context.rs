//! Per-request context: the request id and W3C trace context, and the middleware that
//! establishes them, records the request's metrics and writes its access-log line.
//!
//! Every service and the gateway run [`observe`] outermost, so each log line a request causes
//! carries the same `request_id` and `trace_id` in every process it passes through.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use http::{HeaderMap, HeaderValue};
use tracing::{Instrument, Level, field::Empty};

use crate::telemetry::trace;
pub use crate::telemetry::trace::{TRACEPARENT, TraceContext};

pub const REQUEST_ID: &str = "x-request-id";

/// What every handler can know about the request it serves.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub trace: TraceContext,
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_acceptable_request_id(id))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// A client's request id is echoed only when it is short printable ASCII, so it cannot
/// smuggle control characters into logs or headers.
fn is_acceptable_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The path as logged and traced. A guest cart's id is a capability (whoever knows it holds the
/// cart), so it is masked, in the services and in the gateway alike.
fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    const CARTS: &str = "/api/v1/carts/";
    let Some(rest) = path.strip_prefix(CARTS) else { return path.into() };
    let (id, tail) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    if id == "me" { path.into() } else { format!("{CARTS}{{cart_id}}{tail}").into() }
}

/// Establishes the request context and the request's server span (a child of the caller's
/// `traceparent`), answers with `X-Request-Id`, records `http_server_requests_total` /
/// `http_server_request_duration_seconds` by route template, and logs one line per request.
pub async fn observe(State(service): State<&'static str>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let quiet = route.starts_with("/health") || route == "/metrics";
    let traceparent = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
    let id = request_id(req.headers());
    // Every field is given as the span is made: each later `record` passes through every layer.
    let (span, scope) = trace::start(traceparent, || {
        tracing::info_span!(
            "http_request",
            otel.name = trace::recording().then(|| format!("{method} {route}")),
            otel.kind = "server",
            otel.status_code = Empty,
            "service.name" = service,
            "http.request.method" = method.as_str(),
            "http.route" = route.as_str(),
            "url.path" = &*loggable_path(req.uri().path()),
            "http.request.id" = id.as_str(),
            "http.response.status_code" = Empty,
        )
    });
    let context = RequestContext { request_id: id, trace: scope.context() };
    let request_id = HeaderValue::from_str(&context.request_id).ok();
    req.extensions_mut().insert(context);

    let mut response = scope.run(next.run(req).instrument(span.clone())).await;

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    crate::metrics::record_http_request(service, method.as_str(), &route, status, elapsed);
    if let Some(request_id) = request_id {
        response.headers_mut().insert(REQUEST_ID, request_id);
    }
    // As i64: the trace layer takes unsigned integers for text.
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    let _entered = span.enter();
    let duration = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    scope.in_scope(|| {
        if quiet {
            tracing::event!(Level::DEBUG, "event.duration" = duration, "request completed");
        } else if status >= 500 {
            tracing::event!(Level::WARN, "event.duration" = duration, "request completed");
        } else {
            tracing::event!(Level::INFO, "event.duration" = duration, "request completed");
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_cart_ids_are_masked_in_logged_paths() {
        assert_eq!(loggable_path("/api/v1/carts/0192c3a4-1111/items/TR-1"), "/api/v1/carts/{cart_id}/items/TR-1");
        assert_eq!(loggable_path("/api/v1/carts/0192c3a4-1111"), "/api/v1/carts/{cart_id}");
        assert_eq!(loggable_path("/api/v1/carts/me"), "/api/v1/carts/me");
        assert_eq!(loggable_path("/api/v1/carts/me/merge"), "/api/v1/carts/me/merge");
        assert_eq!(loggable_path("/api/v1/carts/meh"), "/api/v1/carts/{cart_id}");
        assert_eq!(loggable_path("/api/v1/products/x"), "/api/v1/products/x");
    }

    #[test]
    fn request_id_is_echoed_only_when_safe() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&headers), "has space");
    }
}
