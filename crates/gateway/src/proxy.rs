//! Forwarding requests to upstream pools.
//!
//! Replicas are chosen round-robin; one that refuses a connection is skipped for a short while
//! and the request goes to the next — safe for every method, because a request whose connection
//! was never opened was never seen. Small request bodies are buffered so that this retry can
//! resend them; large or chunked bodies stream through once. Response bodies always stream.

use std::{
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Uri, header, uri::PathAndQuery};
use http_body_util::{BodyExt, Limited};
use platform::{
    ErrorCode, Problem,
    http::{
        RequestContext,
        client::{HttpClient, client},
        context::{REQUEST_ID, TRACEPARENT},
    },
};
use tracing::Instrument;

use crate::config::UpstreamConfig;

/// Bodies up to this size are buffered so a refused connection can be retried elsewhere.
const REPLAYABLE_BODY: u64 = 64 * 1024;

/// Headers that describe one connection, not the message; never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

struct Replica {
    base: Uri,
    down_until: Mutex<Option<Instant>>,
}

impl Replica {
    fn is_down(&self, now: Instant) -> bool {
        self.down_until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|until| until > now)
    }

    fn mark_down(&self, for_: Duration) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + for_);
    }

    fn mark_up(&self) {
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        if down.is_some() {
            *down = None;
        }
    }
}

/// A pool of replicas of one service.
pub struct Upstream {
    pub name: String,
    replicas: Vec<Replica>,
    next: AtomicUsize,
    config: UpstreamConfig,
    client: HttpClient,
    ok: metrics::Counter,
    errors: metrics::Counter,
    latency: metrics::Histogram,
}

/// How a forwarded request failed.
#[derive(Debug)]
enum Failure {
    /// No replica accepted a connection.
    Unavailable,
    TimedOut,
    BodyTooLarge,
    Broken,
}

impl Upstream {
    pub fn new(name: &str, config: &UpstreamConfig) -> Self {
        let replicas = config
            .urls
            .iter()
            .filter_map(|url| url.trim_end_matches('/').parse::<Uri>().ok())
            .map(|base| Replica { base, down_until: Mutex::new(None) })
            .collect();
        // Handles are registered once: the hot path then only bumps them.
        let upstream = name.to_owned();
        Self {
            name: name.to_owned(),
            replicas,
            next: AtomicUsize::new(0),
            config: config.clone(),
            client: client(config.connect_timeout),
            ok: metrics::counter!("gateway_upstream_requests_total", "upstream" => upstream.clone(), "outcome" => "ok"),
            errors: metrics::counter!("gateway_upstream_requests_total", "upstream" => upstream.clone(), "outcome" => "error"),
            latency: metrics::histogram!("gateway_upstream_duration_seconds", "upstream" => upstream),
        }
    }

    pub fn openapi_path(&self) -> Option<&str> {
        self.config.openapi_path.as_deref()
    }

    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    /// Replica base URLs in the order to try them: round-robin, healthy ones first.
    pub fn candidates(&self) -> Vec<&Uri> {
        let count = self.replicas.len();
        if count <= 1 {
            return self.replicas.iter().map(|r| &r.base).collect();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut order: Vec<&Replica> = (0..count).map(|i| &self.replicas[(start + i) % count]).collect();
        // Stable: keeps the round-robin order within the healthy and the down groups.
        order.sort_by_key(|r| r.is_down(now));
        order.into_iter().map(|r| &r.base).collect()
    }

    fn replica(&self, base: &Uri) -> Option<&Replica> {
        self.replicas.iter().find(|r| &r.base == base)
    }

    /// Forwards `request` and returns the upstream's response (or a problem).
    pub async fn forward(&self, request: Request, body_limit: usize) -> Response {
        let started = Instant::now();
        // The upstream call's client span, only when spans leave the process.
        let span = if platform::telemetry::trace::recording() {
            tracing::info_span!(
                "upstream",
                otel.name = format!("{} {}", request.method(), self.name),
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                "http.request.method" = %request.method(),
                "peer.service" = %self.name,
                "server.address" = tracing::field::Empty,
                "server.port" = tracing::field::Empty,
                "http.response.status_code" = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let response = match self.try_forward(request, body_limit, &span).instrument(span.clone()).await {
            Ok(response) => response,
            Err(failure) => self.failure_response(failure),
        };
        span.record("http.response.status_code", i64::from(response.status().as_u16()));
        if response.status().is_server_error() {
            platform::telemetry::trace::fail(&span, "upstream answered a server error");
        }
        if response.status().is_server_error() { &self.errors } else { &self.ok }.increment(1);
        self.latency.record(started.elapsed().as_secs_f64());
        response
    }

    async fn try_forward(
        &self,
        request: Request,
        body_limit: usize,
        span: &tracing::Span,
    ) -> Result<Response, Failure> {
        let (mut parts, body) = request.into_parts();
        let declared = content_length(&parts.headers);
        if declared.is_some_and(|n| n > body_limit as u64) {
            // Read what the client is still sending before refusing, so it sees the answer.
            platform::http::extract::drain(body).await;
            return Err(Failure::BodyTooLarge);
        }
        let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
        prepare_headers(&mut parts);
        platform::telemetry::trace::inject(span, &mut parts.headers);
        let path_and_query = parts.uri.path_and_query().cloned();

        // Buffer what is small enough to resend; stream the rest through once.
        let (buffered, mut streamed) = match (chunked, declared) {
            // No body at all (a GET, say): nothing to read.
            (false, None | Some(0)) => (Some(Bytes::new()), None),
            (false, Some(n)) if n <= REPLAYABLE_BODY => {
                let bytes = Limited::new(body, body_limit).collect().await.map_err(classify_body_error)?.to_bytes();
                (Some(bytes), None)
            }
            _ => (None, Some(Body::new(Limited::new(body, body_limit)))),
        };

        let candidates = self.candidates();
        let last = candidates.len().saturating_sub(1);
        for (attempt, base) in candidates.into_iter().enumerate() {
            let body = match (&buffered, streamed.take()) {
                (Some(bytes), _) => Body::from(bytes.clone()),
                (None, Some(stream)) => stream,
                (None, None) => break,
            };
            let uri = join(base, path_and_query.clone()).ok_or(Failure::Broken)?;
            if let Some(host) = uri.host() {
                span.record("server.address", host);
            }
            if let Some(port) = uri.port_u16() {
                span.record("server.port", i64::from(port));
            }
            // Only the message goes upstream; the request's extensions are this process's state.
            let mut upstream_request = http::Request::new(body);
            *upstream_request.method_mut() = parts.method.clone();
            *upstream_request.uri_mut() = uri;
            *upstream_request.version_mut() = parts.version;
            *upstream_request.headers_mut() =
                if attempt == last { std::mem::take(&mut parts.headers) } else { parts.headers.clone() };
            let sent = tokio::time::timeout(self.config.timeout, self.client.request(upstream_request)).await;
            match sent {
                Err(_) => return Err(Failure::TimedOut),
                Ok(Ok(response)) => {
                    if let Some(replica) = self.replica(base) {
                        replica.mark_up();
                    }
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    return Ok(Response::from_parts(parts, Body::new(body)));
                }
                Ok(Err(error)) if error.is_connect() => {
                    tracing::warn!(upstream = %self.name, replica = %base, "upstream refused the connection");
                    if let Some(replica) = self.replica(base) {
                        replica.mark_down(self.config.down_for);
                    }
                    continue;
                }
                Ok(Err(error)) => {
                    if is_body_too_large(&error) {
                        return Err(Failure::BodyTooLarge);
                    }
                    tracing::warn!(upstream = %self.name, error = %platform::http::problem::error_chain(&error), "upstream request failed");
                    return Err(Failure::Broken);
                }
            }
        }
        Err(Failure::Unavailable)
    }

    fn failure_response(&self, failure: Failure) -> Response {
        let service = &self.name;
        match failure {
            Failure::Unavailable => Problem::unavailable(format!("the {service} service is unavailable"), 1),
            Failure::TimedOut => {
                Problem::with_detail(ErrorCode::Timeout, format!("the {service} service did not answer in time"))
            }
            Failure::BodyTooLarge => {
                Problem::with_detail(ErrorCode::PayloadTooLarge, "the request body exceeds the size limit")
            }
            Failure::Broken => {
                Problem::with_detail(ErrorCode::BadGateway, format!("the {service} service failed to answer"))
            }
        }
        .into_response()
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Rewrites the client's headers into what the upstream should see.
fn prepare_headers(parts: &mut http::request::Parts) {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let context = parts.extensions.get::<RequestContext>().cloned();
    let original_host = parts.headers.get(header::HOST).cloned();
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);

    if let Some(ip) = peer {
        let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(existing) => format!("{existing}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
        }
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("http"));
    }
    if let Some(host) = original_host
        && !headers.contains_key("x-forwarded-host")
    {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    if let Some(context) = context {
        if let Ok(value) = HeaderValue::from_str(&context.request_id) {
            headers.insert(REQUEST_ID, value);
        }
        if let Ok(value) = HeaderValue::from_str(&context.trace.traceparent()) {
            headers.insert(TRACEPARENT, value);
        }
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The replica's scheme and authority with the client's path and query.
fn join(base: &Uri, path_and_query: Option<PathAndQuery>) -> Option<Uri> {
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/")));
    Uri::from_parts(parts).ok()
}

fn classify_body_error(error: Box<dyn std::error::Error + Send + Sync>) -> Failure {
    if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
        Failure::BodyTooLarge
    } else {
        Failure::Broken
    }
}

fn is_body_too_large(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            return true;
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut headers);
        assert!(!headers.contains_key("x-secret-hop"));
        assert!(!headers.contains_key(header::TE));
        assert!(!headers.contains_key(header::CONNECTION));
        assert!(headers.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn joins_base_and_path() {
        let base: Uri = "http://127.0.0.1:8081".parse().unwrap();
        assert_eq!(
            join(&base, Some(PathAndQuery::from_static("/api/v1/users/me?x=1"))).unwrap().to_string(),
            "http://127.0.0.1:8081/api/v1/users/me?x=1"
        );
    }

    #[test]
    fn round_robin_puts_down_replicas_last() {
        let config =
            UpstreamConfig { urls: vec!["http://a:1".into(), "http://b:2".into()], ..UpstreamConfig::default() };
        let upstream = Upstream::new("svc", &config);
        let first: Vec<String> = upstream.candidates().iter().map(|u| u.to_string()).collect();
        let second: Vec<String> = upstream.candidates().iter().map(|u| u.to_string()).collect();
        assert_ne!(first[0], second[0], "round robin alternates");
        upstream.replicas[0].mark_down(Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(upstream.candidates()[0].to_string(), "http://b:2/");
        }
    }
}
