//! Forwarding requests to upstream pools.
//!
//! Replicas are chosen round-robin. One that refuses a connection, times out or fails its
//! readiness probe is skipped for a back-off that grows while it keeps failing, until a probe
//! finds it ready again; a refused connection goes on to the next replica at once — safe for
//! every method, because a request whose connection was never opened was never seen. A request
//! that did reach a replica is tried on another only when repeating it is harmless (GET, HEAD,
//! OPTIONS, PUT, DELETE, or a POST or PATCH with an `Idempotency-Key`) and the replica answered
//! 503 or dropped the connection, within a retry budget that bounds the extra load. Small request
//! bodies are buffered so that they can be resent; large or chunked bodies stream through once,
//! never retried. Response bodies always stream.

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
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header, uri::PathAndQuery};
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

use crate::{admission::Admission, config::UpstreamConfig};

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
    health: Mutex<ReplicaHealth>,
}

#[derive(Default)]
struct ReplicaHealth {
    down_until: Option<Instant>,
    /// Failures in a row: each doubles the time the replica is skipped.
    strikes: u32,
}

impl Replica {
    fn health(&self) -> std::sync::MutexGuard<'_, ReplicaHealth> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_down(&self, now: Instant) -> bool {
        self.health().down_until.is_some_and(|until| until > now)
    }

    /// Skips the replica for `down_for`, doubled for each failure in a row before this one, and
    /// at least `at_least`.
    fn eject(&self, config: &UpstreamConfig, at_least: Duration) -> Duration {
        let mut health = self.health();
        let doubled = config.down_for.saturating_mul(1 << health.strikes.min(16));
        health.strikes = health.strikes.saturating_add(1);
        let skipped = doubled.min(config.max_down_for).max(at_least);
        health.down_until = Some(Instant::now() + skipped);
        skipped
    }

    fn mark_up(&self) {
        let mut health = self.health();
        if health.down_until.is_some() || health.strikes > 0 {
            *health = ReplicaHealth::default();
        }
    }
}

/// Retries allowed: each request adds `ratio` of one, time adds `per_second`, a retry takes one.
struct RetryBudget {
    ratio: f64,
    per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl RetryBudget {
    fn new(config: &UpstreamConfig) -> Self {
        let per_second = f64::from(config.min_retries_per_second);
        Self { ratio: config.retry_budget, per_second, state: Mutex::new((per_second, Instant::now())) }
    }

    /// What a burst may draw on: ten retries, or a second's worth of the floor.
    fn cap(&self) -> f64 {
        self.per_second.max(10.0)
    }

    fn deposit(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = (state.0 + self.ratio).min(self.cap());
    }

    fn withdraw(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        state.0 = (state.0 + now.duration_since(state.1).as_secs_f64() * self.per_second).min(self.cap());
        state.1 = now;
        if state.0 >= 1.0 {
            state.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether a request may be sent again after it reached a replica: the method says repeating it
/// changes nothing, or the client gave the key that makes the service answer a repeat alike.
fn idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE)
        || headers.contains_key("idempotency-key")
}

/// A pool of replicas of one service.
pub struct Upstream {
    pub name: String,
    replicas: Vec<Replica>,
    next: AtomicUsize,
    config: UpstreamConfig,
    client: HttpClient,
    retry_budget: RetryBudget,
    admission: Admission,
    ok: metrics::Counter,
    errors: metrics::Counter,
    latency: metrics::Histogram,
    retried: metrics::Counter,
    ejected: metrics::Counter,
    ready: metrics::Gauge,
}

/// How a forwarded request failed.
#[derive(Debug)]
enum Failure {
    /// No replica accepted a connection.
    Unavailable,
    TimedOut,
    BodyTooLarge,
    /// The client's body stopped arriving (the server's body-read timeout): the client's fault,
    /// not the replica's.
    BodyStalled,
    Broken,
}

impl Upstream {
    pub fn new(name: &str, config: &UpstreamConfig) -> Self {
        let replicas = config
            .urls
            .iter()
            .filter_map(|url| url.trim_end_matches('/').parse::<Uri>().ok())
            .map(|base| Replica { base, health: Mutex::default() })
            .collect();
        // Handles are registered once: the hot path then only bumps them.
        let upstream = name.to_owned();
        Self {
            name: name.to_owned(),
            replicas,
            next: AtomicUsize::new(0),
            config: config.clone(),
            client: client(config.connect_timeout),
            retry_budget: RetryBudget::new(config),
            admission: Admission::new(name, config),
            ok: metrics::counter!("gateway_upstream_requests_total", "upstream" => upstream.clone(), "outcome" => "ok"),
            errors: metrics::counter!("gateway_upstream_requests_total", "upstream" => upstream.clone(), "outcome" => "error"),
            latency: metrics::histogram!("gateway_upstream_duration_seconds", "upstream" => upstream.clone()),
            retried: metrics::counter!("gateway_upstream_retries_total", "upstream" => upstream.clone()),
            ejected: metrics::counter!("gateway_upstream_ejections_total", "upstream" => upstream.clone()),
            ready: metrics::gauge!("gateway_upstream_replicas_ready", "upstream" => upstream),
        }
    }

    /// Takes `replica` out of rotation for a while; `why` is logged.
    fn eject(&self, replica: &Replica, why: &str, at_least: Duration) {
        let skipped = self.eject_quietly(replica, at_least);
        tracing::warn!(upstream = %self.name, replica = %replica.base, skipped_for = ?skipped, "{why}");
    }

    fn eject_quietly(&self, replica: &Replica, at_least: Duration) -> Duration {
        self.ejected.increment(1);
        replica.eject(&self.config, at_least)
    }

    /// Probes every replica's readiness every `probe_interval` until `stop`: a replica that is not
    /// ready is skipped until a probe finds it ready, one that was skipped is back once it is.
    pub async fn probe_until_stopped(&self, stop: tokio_util::sync::CancellationToken) {
        self.ready.set(self.replicas.len() as f64);
        let Some(path) = self.config.health_path.as_deref().and_then(|p| p.parse::<PathAndQuery>().ok()) else {
            return;
        };
        let mut ticks = tokio::time::interval(self.config.probe_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let probes = self.replicas.iter().map(|replica| self.probe(replica, &path));
            futures_util::future::join_all(probes).await;
            let now = Instant::now();
            self.ready.set(self.replicas.iter().filter(|r| !r.is_down(now)).count() as f64);
        }
    }

    async fn probe(&self, replica: &Replica, path: &PathAndQuery) {
        let Some(uri) = join(&replica.base, Some(path.clone())) else { return };
        let mut request = http::Request::new(Body::empty());
        *request.uri_mut() = uri;
        let answer = tokio::time::timeout(self.config.connect_timeout * 2, self.client.request(request)).await;
        match answer {
            Ok(Ok(response)) if response.status().is_success() => {
                if replica.is_down(Instant::now()) {
                    tracing::info!(upstream = %self.name, replica = %replica.base, "replica is ready again");
                }
                replica.mark_up();
            }
            _ => {
                let was_down = replica.is_down(Instant::now());
                // Until the next probe at least: only a probe brings a replica that is not ready back.
                let at_least = self.config.probe_interval + Duration::from_secs(1);
                if was_down {
                    self.eject_quietly(replica, at_least);
                } else {
                    self.eject(replica, "replica failed its readiness probe", at_least);
                }
            }
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
                target: platform::telemetry::trace::TRACE_ONLY,
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
        let response = match self.admission.enter().await {
            Ok(ticket) => {
                let response = match self.try_forward(request, body_limit, &span).instrument(span.clone()).await {
                    Ok(response) => response,
                    Err(failure) => self.failure_response(failure),
                };
                ticket.done(response.status() == http::StatusCode::SERVICE_UNAVAILABLE);
                response
            }
            Err(retry_after) => {
                // Never sent: read what the client is still sending, so that it sees the answer.
                platform::http::extract::drain(request.into_body()).await;
                self.busy_response(retry_after)
            }
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

        let retryable = buffered.is_some() && idempotent(&parts.method, &parts.headers);
        self.retry_budget.deposit();
        let candidates = self.candidates();
        let last = candidates.len().saturating_sub(1);
        for (attempt, base) in candidates.into_iter().enumerate() {
            let may_retry = || retryable && attempt < last && self.retry_budget.withdraw();
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
            // Upstreams speak HTTP/1.1, whatever the client spoke to the gateway.
            *upstream_request.version_mut() = http::Version::HTTP_11;
            *upstream_request.headers_mut() =
                if attempt == last { std::mem::take(&mut parts.headers) } else { parts.headers.clone() };
            let sent = tokio::time::timeout(self.config.timeout, self.client.request(upstream_request)).await;
            let replica = self.replica(base);
            match sent {
                Err(_) => {
                    if let Some(replica) = replica {
                        self.eject(replica, "upstream replica did not answer in time", Duration::ZERO);
                    }
                    return Err(Failure::TimedOut);
                }
                Ok(Ok(response)) => {
                    if response.status() == http::StatusCode::SERVICE_UNAVAILABLE && may_retry() {
                        tracing::debug!(upstream = %self.name, replica = %base, "replica answered 503: trying another");
                        self.retried.increment(1);
                        continue;
                    }
                    if let Some(replica) = replica {
                        replica.mark_up();
                    }
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    return Ok(Response::from_parts(parts, Body::new(body)));
                }
                Ok(Err(error)) if error.is_connect() => {
                    if let Some(replica) = replica {
                        self.eject(replica, "upstream replica refused the connection", Duration::ZERO);
                    }
                    continue;
                }
                Ok(Err(error)) => {
                    if is_body_too_large(&error) {
                        return Err(Failure::BodyTooLarge);
                    }
                    if is_body_stalled(&error) {
                        return Err(Failure::BodyStalled);
                    }
                    tracing::warn!(upstream = %self.name, replica = %base, error = %platform::http::problem::error_chain(&error), "upstream request failed");
                    if let Some(replica) = replica {
                        self.eject_quietly(replica, Duration::ZERO);
                    }
                    if may_retry() {
                        self.retried.increment(1);
                        continue;
                    }
                    return Err(Failure::Broken);
                }
            }
        }
        Err(Failure::Unavailable)
    }

    /// The answer to a request shed at once, before anything was spent on it (see
    /// [`Admission::full`]); `None` when it may go on.
    pub fn busy(&self) -> Option<Response> {
        self.admission.full().map(|retry_after| self.busy_response(retry_after))
    }

    fn busy_response(&self, retry_after: u64) -> Response {
        Problem::unavailable(format!("the {} service is busy; try again shortly", self.name), retry_after)
            .into_response()
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
            Failure::BodyStalled => {
                Problem::with_detail(ErrorCode::BadRequest, "the request body stopped arriving before its end")
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

/// Marks a request that came from a trusted proxy (`gateway.rate_limits.trusted_proxies`, a
/// storefront, say): its address is a hop, not a client, and is not added to `X-Forwarded-For`.
/// The services behind then find the client where they find a direct caller's: the entry the
/// gateway vouches for.
#[derive(Clone, Copy)]
pub struct FromTrustedProxy;

/// Rewrites the client's headers into what the upstream should see.
fn prepare_headers(parts: &mut http::request::Parts) {
    let peer = match parts.extensions.get::<FromTrustedProxy>() {
        Some(_) if parts.headers.contains_key("x-forwarded-for") => None,
        _ => parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()),
    };
    let context = parts.extensions.get::<RequestContext>().cloned();
    // HTTP/2 clients name the host in the URI's authority, not a Host header.
    let original_host = parts
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|authority| HeaderValue::from_str(authority.as_str()).ok()));
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
    let error: &(dyn std::error::Error + 'static) = &*error;
    if caused_by::<http_body_util::LengthLimitError>(error) {
        Failure::BodyTooLarge
    } else if caused_by::<tower_http::timeout::TimeoutError>(error) {
        // The server's body-read timeout ended the client's body.
        Failure::BodyStalled
    } else {
        Failure::Broken
    }
}

/// Whether `error`, or anything in its chain of causes, is an `E`.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<E>())
}

fn is_body_stalled(error: &hyper_util::client::legacy::Error) -> bool {
    caused_by::<tower_http::timeout::TimeoutError>(error)
}

fn is_body_too_large(error: &hyper_util::client::legacy::Error) -> bool {
    caused_by::<http_body_util::LengthLimitError>(error)
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
    fn failures_in_a_row_skip_a_replica_longer_up_to_the_limit() {
        let config = UpstreamConfig {
            urls: vec!["http://a:1".into()],
            down_for: Duration::from_secs(2),
            max_down_for: Duration::from_secs(10),
            ..UpstreamConfig::default()
        };
        let replica = Replica { base: "http://a:1".parse().unwrap(), health: Mutex::default() };
        let skipped: Vec<u64> = (0..5).map(|_| replica.eject(&config, Duration::ZERO).as_secs()).collect();
        assert_eq!(skipped, [2, 4, 8, 10, 10]);
        assert!(replica.is_down(Instant::now()));
        replica.mark_up();
        assert!(!replica.is_down(Instant::now()));
        assert_eq!(replica.eject(&config, Duration::from_secs(6)).as_secs(), 6, "a probe's floor");
    }

    #[test]
    fn retries_stay_within_the_budget() {
        let config = UpstreamConfig { retry_budget: 0.2, min_retries_per_second: 0, ..UpstreamConfig::default() };
        let budget = RetryBudget::new(&config);
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            if budget.withdraw() {
                retries += 1;
            }
        }
        assert!((195..=200).contains(&retries), "{retries} retries for 1000 requests");
        assert!(idempotent(&Method::PUT, &HeaderMap::new()));
        assert!(!idempotent(&Method::POST, &HeaderMap::new()));
        let mut keyed = HeaderMap::new();
        keyed.insert("idempotency-key", HeaderValue::from_static("k"));
        assert!(idempotent(&Method::POST, &keyed));
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
        upstream.replicas[0]
            .eject(&UpstreamConfig { down_for: Duration::from_secs(60), ..config.clone() }, Duration::ZERO);
        for _ in 0..3 {
            assert_eq!(upstream.candidates()[0].to_string(), "http://b:2/");
        }
    }
}
