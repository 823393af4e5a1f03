//! The gateway in front of a fixture upstream: a small real HTTP service that records what it
//! receives and can answer slowly, stream, or serve a key set and an OpenAPI document.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{any, get},
};
use gateway::{AuthPolicy, Config, RouteConfig, UpstreamConfig};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use platform::auth::{ALGORITHM, AccessClaims, AuthConfig, ed25519_pkcs8};
use rand::RngCore;
use serde_json::{Value, json};
use testkit::TestClient;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Seen {
    hits: Arc<AtomicUsize>,
    last: Arc<Mutex<Option<Value>>>,
    /// Answer every request 503 (after counting it).
    unavailable: Arc<AtomicBool>,
    /// Answer the readiness probe 503.
    not_ready: Arc<AtomicBool>,
}

struct Key {
    der: Vec<u8>,
    jwk: Jwk,
}

fn key() -> Key {
    let mut seed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut seed);
    let der = ed25519_pkcs8(&seed);
    let mut jwk = Jwk::from_encoding_key(&EncodingKey::from_ed_der(&der), ALGORITHM).unwrap();
    jwk.common.key_id = Some("fixture-key".to_owned());
    Key { der, jwk }
}

fn token(key: &Key, exp_offset: i64) -> String {
    let claims =
        AccessClaims::new(uuid::Uuid::now_v7(), vec!["customer".into()], "emporium", "emporium", exp_offset, None);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("fixture-key".into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&key.der)).unwrap()
}

/// Echoes what it received: method, path, query, headers and body.
async fn echo(State(seen): State<Seen>, request: Request) -> Response {
    seen.hits.fetch_add(1, Ordering::SeqCst);
    if seen.unavailable.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.to_str().unwrap_or("").to_owned())))
        .collect();
    let echoed = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": body.len(),
    });
    *seen.last.lock().unwrap() = Some(echoed.clone());
    Json(echoed).into_response()
}

async fn readiness(State(seen): State<Seen>) -> StatusCode {
    if seen.not_ready.load(Ordering::SeqCst) { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }
}

async fn upstream(key: &Key, seen: Seen) -> SocketAddr {
    let jwks = json!({"keys": [key.jwk]});
    let document = json!({
        "openapi": "3.1.0",
        "info": {"title": "fixture", "version": "1"},
        "paths": {"/api/v1/things": {"get": {"responses": {"200": {"description": "things"}}}}}
    });
    let app = Router::new()
        .route("/.well-known/jwks.json", get(move || async move { Json(jwks) }))
        .route("/openapi.json", get(move || async move { Json(document) }))
        .route(
            "/api/v1/slow/{*rest}",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/api/v1/stream/big",
            get(|| async {
                let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 64 * 1024])));
                Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route("/health/ready", get(readiness))
        .fallback(any(echo))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A port with nothing listening.
async fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

struct Fixture {
    client: TestClient,
    seen: Seen,
    key: Key,
    _stop: tokio_util::sync::DropGuard,
}

async fn start(configure: impl FnOnce(&mut Config, SocketAddr)) -> Fixture {
    platform::metrics::install();
    let key = key();
    let seen = Seen::default();
    let addr = upstream(&key, seen.clone()).await;
    let upstream_config = UpstreamConfig {
        urls: vec![format!("http://{addr}")],
        timeout: Duration::from_millis(500),
        ..UpstreamConfig::default()
    };
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstreams: [("things".to_owned(), upstream_config)].into(),
        routes: vec![
            RouteConfig::new("/api/v1/things", "things", AuthPolicy::Optional),
            RouteConfig::new("/api/v1/private", "things", AuthPolicy::Required),
            RouteConfig::new("/api/v1/open", "things", AuthPolicy::None),
            RouteConfig::new("/api/v1/slow", "things", AuthPolicy::None),
            RouteConfig::new("/api/v1/stream", "things", AuthPolicy::None),
        ],
        ..Config::default()
    };
    config.upstreams.remove("identity");
    configure(&mut config, addr);
    let auth = AuthConfig { jwks_url: Some(format!("http://{addr}/.well-known/jwks.json")), ..AuthConfig::default() };
    let shared = platform::config::Shared { auth, ..Default::default() };
    let gateway = gateway::build(config, &shared).await.expect("gateway starts");
    let client = TestClient::new(format!("http://{}", gateway.local_addr()));
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    tokio::spawn(gateway.run_until_stopped(stop));
    Fixture { client, seen, key, _stop: guard }
}

#[tokio::test]
async fn forwards_path_query_body_and_rewrites_headers() {
    let f = start(|_, _| {}).await;
    let response = f
        .client
        .post("/api/v1/things/42/parts?colour=red&size=m")
        .header("x-request-id", "req-123")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"hello": "world"}))
        .send()
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-request-id"), Some("req-123"));
    let echoed = response.json();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["path"], "/api/v1/things/42/parts");
    assert_eq!(echoed["query"], "colour=red&size=m");
    assert_eq!(echoed["body_len"], 17);
    let headers = &echoed["headers"];
    assert_eq!(headers["x-request-id"], "req-123");
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.get("x-hop").is_none(), "headers named by Connection are hop-by-hop");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert!(headers["x-forwarded-host"].as_str().unwrap().starts_with("127.0.0.1:"));
    let traceparent = headers["traceparent"].as_str().unwrap();
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "same trace");
    assert!(!traceparent.contains("00f067aa0ba902b7"), "the gateway is the new parent span");

    // Without an id the gateway makes one, and the upstream sees the same.
    let response = f.client.get("/api/v1/things").send().await;
    let generated = response.header("x-request-id").unwrap().to_owned();
    assert_eq!(response.json()["headers"]["x-request-id"], generated.as_str());
    assert!(response.json()["headers"]["traceparent"].as_str().unwrap().starts_with("00-"));
}

/// A request from a trusted proxy (a storefront, an ingress) already names its client: the
/// proxy's own address is a hop, not a client, and is not added, so the services behind find the
/// client where they find a direct caller's.
#[tokio::test]
async fn a_trusted_proxy_is_not_added_to_x_forwarded_for() {
    let trusting = start(|config, _| {
        config.rate_limits.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let response = trusting.client.get("/api/v1/things/1").header("x-forwarded-for", "203.0.113.9").send().await;
    assert_eq!(response.json()["headers"]["x-forwarded-for"], "203.0.113.9");
    // Without a client named, the peer is the client.
    let response = trusting.client.get("/api/v1/things/1").send().await;
    assert_eq!(response.json()["headers"]["x-forwarded-for"], "127.0.0.1");

    let plain = start(|_, _| {}).await;
    let response = plain.client.get("/api/v1/things/1").header("x-forwarded-for", "203.0.113.9").send().await;
    assert_eq!(response.json()["headers"]["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
}

#[tokio::test]
async fn token_policies_are_enforced_before_the_upstream() {
    let f = start(|_, _| {}).await;
    let valid = token(&f.key, 600);
    let expired = token(&f.key, -300);

    f.client.get("/api/v1/private/x").send().await.problem(401);
    f.client.get("/api/v1/private/x").bearer(&expired).send().await.problem(401);
    f.client.get("/api/v1/private/x").bearer("garbage").send().await.problem(401);
    f.client.get("/api/v1/things").bearer(&expired).send().await.problem(401);
    assert_eq!(f.seen.hits.load(Ordering::SeqCst), 0, "refused requests never reach the upstream");

    assert_eq!(f.client.get("/api/v1/private/x").bearer(&valid).send().await.status, 200);
    assert_eq!(f.client.get("/api/v1/things").send().await.status, 200);
    assert_eq!(f.client.get("/api/v1/open").bearer("garbage").send().await.status, 200);
    let forwarded = f.client.get("/api/v1/private/x").bearer(&valid).send().await.json();
    assert_eq!(forwarded["headers"]["authorization"], format!("Bearer {valid}"), "services verify again");

    let unknown = f.client.get("/api/v1/elsewhere").send().await;
    unknown.problem(404);
    let prefix_lookalike = f.client.get("/api/v1/thingsandmore").send().await;
    prefix_lookalike.problem(404);
}

#[tokio::test]
async fn a_down_upstream_is_a_prompt_503() {
    let closed = closed_port().await;
    let f = start(|config, _| {
        config.upstreams.get_mut("things").unwrap().urls = vec![format!("http://{closed}")];
    })
    .await;
    let started = Instant::now();
    let response = f.client.get("/api/v1/things").send().await;
    assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
    let body = response.problem(503);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(body["detail"], "the things service is unavailable");
    assert!(!String::from_utf8_lossy(&response.body).contains("127.0.0.1"), "no internals leak");
}

#[tokio::test]
async fn a_dead_replica_is_skipped() {
    let closed = closed_port().await;
    let f = start(|config, live| {
        config.upstreams.get_mut("things").unwrap().urls = vec![format!("http://{closed}"), format!("http://{live}")];
    })
    .await;
    for _ in 0..6 {
        assert_eq!(f.client.post("/api/v1/things").json(&json!({"n": 1})).send().await.status, 200);
    }
    assert_eq!(f.seen.hits.load(Ordering::SeqCst), 6, "every request reached the live replica exactly once");
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_at_the_timeout() {
    let f = start(|_, _| {}).await;
    let started = Instant::now();
    let response = f.client.get("/api/v1/slow/x").send().await;
    let elapsed = started.elapsed();
    response.problem(504);
    assert!(elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_shed_after_a_short_wait() {
    let f = start(|config, _| {
        let upstream = config.upstreams.get_mut("things").unwrap();
        upstream.max_in_flight = 2;
        upstream.queue_timeout = Duration::from_millis(100);
    })
    .await;
    let slow = || f.client.get("/api/v1/slow/x").send();
    let shed = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let hits = f.seen.hits.load(Ordering::SeqCst);
        let started = Instant::now();
        let response = f.client.get("/api/v1/things/1").send().await;
        (response, started.elapsed(), f.seen.hits.load(Ordering::SeqCst) - hits)
    };
    let (first, second, (shed, waited, reached)) = tokio::join!(slow(), slow(), shed);
    first.problem(504);
    second.problem(504);
    let problem = shed.problem(503);
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert!(problem["detail"].as_str().unwrap().contains("busy"), "{problem}");
    assert!(waited >= Duration::from_millis(100) && waited < Duration::from_millis(400), "waited {waited:?}");
    assert_eq!(reached, 0, "a shed request never reaches the upstream");
    // Places free again once the slow ones are answered.
    assert_eq!(f.client.get("/api/v1/things/1").send().await.status, 200);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let f = start(|config, _| config.body_limit = 1024).await;
    let big = vec![b'x'; 4096];
    f.client.post("/api/v1/things").raw("application/octet-stream", big.clone()).send().await.problem(413);
    assert_eq!(f.seen.hits.load(Ordering::SeqCst), 0);

    // A chunked body with no declared length is cut off at the limit too.
    let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 512])));
    let request = http::Request::post(format!("{}/api/v1/things", f.client.base()))
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Body>();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 413);

    assert_eq!(
        f.client.post("/api/v1/things").raw("application/octet-stream", vec![b'x'; 1000]).send().await.status,
        200
    );
}

#[tokio::test]
async fn large_responses_stream_through() {
    let f = start(|_, _| {}).await;
    let response = f.client.get("/api/v1/stream/big").send().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), 64 * 64 * 1024);
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let f = start(|config, _| config.cors.allowed_origins = vec!["https://shop.example.com".to_owned()]).await;
    let preflight = |origin: &'static str| {
        f.client
            .request(http::Method::OPTIONS, "/api/v1/things")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type, idempotency-key")
            .send()
    };
    let allowed = preflight("https://shop.example.com").await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("access-control-allow-origin"), Some("https://shop.example.com"));
    assert!(allowed.header("access-control-allow-headers").unwrap().contains("idempotency-key"));
    let denied = preflight("https://evil.example.com").await;
    assert!(denied.header("access-control-allow-origin").is_none());
    assert_eq!(f.seen.hits.load(Ordering::SeqCst), 0, "preflights are answered by the gateway");
}

#[tokio::test]
async fn merges_openapi_documents_and_renders_docs() {
    let f = start(|_, _| {}).await;
    let document = f.client.get("/api/v1/openapi.json").send().await;
    assert_eq!(document.status, 200);
    let document = document.json();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "Emporium API");
    assert!(document["paths"]["/api/v1/things"]["get"].is_object(), "{document}");
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    let docs = f.client.get("/docs/").header("accept", "text/html").send().await;
    assert_eq!(docs.status, 200);
    let html = String::from_utf8_lossy(&docs.body);
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("https://"), "no assets from a CDN: /docs works offline");
    let config = f.client.get("/docs/swagger-initializer.js").send().await;
    assert!(String::from_utf8_lossy(&config.body).contains("/api/v1/openapi.json"));
}

/// A second fixture upstream, for pools of two replicas.
async fn other_replica() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    (upstream(&key(), seen.clone()).await, seen)
}

fn pool(config: &mut Config, urls: [SocketAddr; 2], tune: impl FnOnce(&mut UpstreamConfig)) {
    let things = config.upstreams.get_mut("things").unwrap();
    things.urls = urls.iter().map(|a| format!("http://{a}")).collect();
    // Probes stay out of the way unless a test asks for them.
    things.probe_interval = Duration::from_secs(3600);
    tune(things);
}

#[tokio::test]
async fn only_requests_safe_to_repeat_are_retried_on_another_replica() {
    let (draining, refusing) = other_replica().await;
    refusing.unavailable.store(true, Ordering::SeqCst);
    let f = start(|config, live| pool(config, [draining, live], |_| {})).await;
    for _ in 0..4 {
        assert_eq!(f.client.get("/api/v1/things/1").send().await.status, 200);
        let keyed = f.client.post("/api/v1/things").header("idempotency-key", "k-1").json(&json!({})).send().await;
        assert_eq!(keyed.status, 200);
    }
    assert_eq!(f.seen.hits.load(Ordering::SeqCst), 8, "every one answered by the live replica");
    let retried = refusing.hits.load(Ordering::SeqCst);
    assert!((2..=6).contains(&retried), "round robin sent some to the draining replica first: {retried}");

    // A POST without a key may have had an effect: its 503 is the client's to see.
    let (before_live, before_draining) = (f.seen.hits.load(Ordering::SeqCst), refusing.hits.load(Ordering::SeqCst));
    let mut unavailable = 0;
    for _ in 0..4 {
        let answer = f.client.post("/api/v1/things").json(&json!({})).send().await;
        if answer.status == 503 {
            unavailable += 1;
        }
    }
    let draining_saw = refusing.hits.load(Ordering::SeqCst) - before_draining;
    assert_eq!(unavailable, draining_saw, "each POST the draining replica saw came back 503, none retried");
    assert_eq!(f.seen.hits.load(Ordering::SeqCst) - before_live + draining_saw, 4, "each POST sent once");
    let metrics = String::from_utf8(f.client.get("/metrics").send().await.body.to_vec()).unwrap();
    assert!(metrics.contains("gateway_upstream_retries_total{upstream=\"things\"}"), "{metrics}");
}

#[tokio::test]
async fn retries_stay_within_their_budget() {
    let (first, first_seen) = other_replica().await;
    let f = start(|config, live| {
        pool(config, [first, live], |things| {
            (things.retry_budget, things.min_retries_per_second) = (0.1, 0);
        })
    })
    .await;
    first_seen.unavailable.store(true, Ordering::SeqCst);
    f.seen.unavailable.store(true, Ordering::SeqCst);
    for _ in 0..100 {
        assert_eq!(f.client.get("/api/v1/things").send().await.status, 503);
    }
    let sent = first_seen.hits.load(Ordering::SeqCst) + f.seen.hits.load(Ordering::SeqCst);
    assert!((100..=111).contains(&sent), "100 requests and at most 10% retries went upstream: {sent}");
}

#[tokio::test]
async fn a_replica_that_is_not_ready_gets_no_traffic_until_a_probe_finds_it_ready() {
    let (other, other_seen) = other_replica().await;
    let f = start(|config, live| {
        pool(config, [other, live], |things| things.probe_interval = Duration::from_millis(100));
    })
    .await;
    other_seen.not_ready.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..6 {
        assert_eq!(f.client.get("/api/v1/things").send().await.status, 200);
    }
    assert_eq!(other_seen.hits.load(Ordering::SeqCst), 0, "the replica that is not ready was skipped");

    other_seen.not_ready.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..6 {
        assert_eq!(f.client.get("/api/v1/things").send().await.status, 200);
    }
    assert_eq!(other_seen.hits.load(Ordering::SeqCst), 3, "back in the rotation once ready");
}

/// With a certificate configured the gateway speaks TLS, HTTP/2 to clients that offer it (and
/// HTTP/1.1 to those that do not), and tells browsers to keep to HTTPS.
#[tokio::test]
async fn tls_is_terminated_with_http2_and_hsts() {
    if !std::process::Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success()) {
        testkit::skip_or_fail("curl, the HTTPS client of this test, is not installed");
        return;
    }
    let dir = testkit::temp_dir("gateway-tls");
    let ca = testkit::tls::certificates(&dir).await;
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    let f = start(|config, _| {
        config.tls = Some(gateway::config::TlsConfig { cert_file, key_file, hsts_max_age: Duration::from_secs(600) });
    })
    .await;
    let port = f.client.base().rsplit(':').next().unwrap().to_owned();
    // Asynchronously: the gateway runs on this test's one thread.
    let curl = |version: &'static str| {
        let (ca, url) = (ca.clone(), format!("https://localhost:{port}/api/v1/things"));
        async move {
            let output = tokio::process::Command::new("curl")
                .args(["-sS", "--max-time", "10", version, "--cacert"])
                .arg(&ca)
                .args(["-D", "-", "-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
                .arg(url)
                .output()
                .await
                .unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap().to_lowercase()
        }
    };
    let h2 = curl("--http2").await;
    assert!(h2.ends_with("200 2"), "HTTP/2 by ALPN: {h2}");
    assert!(h2.contains("strict-transport-security: max-age=600; includesubdomains"), "{h2}");
    let h1 = curl("--http1.1").await;
    assert!(h1.ends_with("200 1.1"), "HTTP/1.1 still served: {h1}");
    // Plain HTTP on the TLS port gets no answer.
    assert!(f.client.get("/api/v1/things").try_send().await.is_err());
    let _ = std::fs::remove_dir_all(dir);
}
