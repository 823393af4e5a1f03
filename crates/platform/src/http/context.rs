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
use rand::RngCore;
use tracing::{Instrument, Level};

pub const REQUEST_ID: &str = "x-request-id";
pub const TRACEPARENT: &str = "traceparent";

/// W3C trace context of one hop: the caller's trace id, and this hop's own span id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// This hop's span id: the parent of anything it calls.
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceContext {
    /// A new root trace.
    pub fn new_root() -> Self {
        let mut rng = rand::thread_rng();
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        rng.fill_bytes(&mut trace_id);
        rng.fill_bytes(&mut span_id);
        Self { trace_id, span_id, flags: 1 }
    }

    /// Continues the caller's trace (a `traceparent` header value) with a new span of ours;
    /// `None` when the header is not a valid version-00 trace context.
    pub fn continue_from(traceparent: &str) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace)?;
        let parent_id: [u8; 8] = decode_hex(parent)?;
        let [flags]: [u8; 1] = decode_hex(flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        let mut span_id = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut span_id);
        Some(Self { trace_id, span_id, flags })
    }

    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(Self::continue_from)
            .unwrap_or_else(Self::new_root)
    }

    pub fn trace_id_hex(&self) -> String {
        encode_hex(&self.trace_id)
    }

    /// The `traceparent` to send downstream: our trace, with this hop as the parent.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", encode_hex(&self.trace_id), encode_hex(&self.span_id), self.flags)
    }
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

fn encode_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// What every handler can know about the request it serves.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub trace: TraceContext,
}

impl RequestContext {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let request_id = headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| is_acceptable_request_id(id))
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        Self { request_id, trace: TraceContext::from_headers(headers) }
    }
}

/// A client's request id is echoed only when it is short printable ASCII, so it cannot
/// smuggle control characters into logs or headers.
fn is_acceptable_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Establishes the request context, answers with `X-Request-Id`, records
/// `http_server_requests_total` / `http_server_request_duration_seconds` by route template,
/// and logs one line per request.
pub async fn observe(State(service): State<&'static str>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let context = RequestContext::from_headers(req.headers());
    let method = req.method().clone();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let quiet = route.starts_with("/health") || route == "/metrics";
    let span = tracing::info_span!(
        "http_request",
        service,
        method = %method,
        route = %route,
        request_id = %context.request_id,
        trace_id = %context.trace.trace_id_hex(),
    );
    let request_id = HeaderValue::from_str(&context.request_id).ok();
    req.extensions_mut().insert(context);

    let mut response = next.run(req).instrument(span.clone()).await;

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    crate::metrics::record_http_request(service, method.as_str(), &route, status, elapsed);
    if let Some(request_id) = request_id {
        response.headers_mut().insert(REQUEST_ID, request_id);
    }
    let _entered = span.enter();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    if quiet {
        tracing::event!(Level::DEBUG, status, duration_ms, "request completed");
    } else if status >= 500 {
        tracing::event!(Level::WARN, status, duration_ms, "request completed");
    } else {
        tracing::event!(Level::INFO, status, duration_ms, "request completed");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_traceparent_with_a_new_span() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = TraceContext::continue_from(header).unwrap();
        assert_eq!(trace.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let downstream = trace.traceparent();
        assert!(downstream.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(downstream.ends_with("-01"));
        assert_ne!(&downstream[36..52], "00f067aa0ba902b7");
    }

    #[test]
    fn rejects_invalid_traceparents() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(TraceContext::continue_from(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn request_id_is_echoed_only_when_safe() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(RequestContext::from_headers(&headers).request_id, "abc-123");
        headers.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(RequestContext::from_headers(&headers).request_id, "has space");
    }
}
