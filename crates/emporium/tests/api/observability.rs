//! Observability end to end, on the distributed shop as an operator runs it: five processes on
//! PostgreSQL, Redis and RabbitMQ, exporting traces to a real OTLP receiver (gRPC for some
//! services, HTTP/protobuf for others), scraped by a real Prometheus loaded with `deploy/`'s
//! rules, their log files shipped by syslog-ng with `deploy/`'s configuration to a `_bulk`
//! endpoint standing in for Elasticsearch.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::{Value, json};
use testkit::{TestClient, TestDatabase, bulk::BulkRecorder, otlp::OtlpReceiver};
use tokio::process::{Child, Command};

use crate::{
    catalog::product_body,
    common::*,
    orders::{checkout_body, unique_sku},
};

/// Social sign-in's client secret: configured, never logged.
const CLIENT_SECRET: &str = "observed-client-secret-6b1f";

const SERVICES: [&str; 6] = ["identity", "catalog", "cart", "orders", "notifications", "gateway"];
/// The services that export over gRPC; the others use HTTP/protobuf.
const OVER_GRPC: [&str; 3] = ["gateway", "orders", "catalog"];

// OTLP span kinds.
const SERVER: i64 = 2;
const CLIENT: i64 = 3;
const PRODUCER: i64 = 4;
const CONSUMER: i64 = 5;

/// The repository's `deploy/` folder, read when the test runs (builds share their artifacts
/// between checkouts, so no path is compiled in).
fn deploy_dir() -> PathBuf {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for tests");
    Path::new(&manifest).join("../../deploy")
}

/// A tool the test needs from Debian's packages; `None` (skip, or fail when required) without it.
async fn tool(name: &str) -> Option<String> {
    let found = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().await.ok()?;
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    if path.is_empty() {
        testkit::skip_or_fail(&format!("{name} is not installed (.ci/run installs it)"));
        return None;
    }
    Some(path)
}

/// The distributed shop: one `emporium serve SERVICE` process each, logging to files.
struct Cluster {
    dir: PathBuf,
    http: BTreeMap<&'static str, u16>,
    children: HashMap<&'static str, Child>,
    gateway: TestClient,
    redis_prefix: String,
    _dbs: Vec<TestDatabase>,
    _broker: testkit::broker::TestBroker,
}

impl Cluster {
    async fn start(receiver: &OtlpReceiver) -> Option<Self> {
        if !testkit::redis_available().await {
            return None;
        }
        let broker = testkit::broker::TestBroker::shared("observability").await?;
        let mut dbs = Vec::new();
        for _ in 0..4 {
            dbs.push(TestDatabase::create(testkit::Backend::Postgres).await?);
        }
        let dir = testkit::temp_dir("observability");
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let port = |_: &str| testkit::free_port();
        let http: BTreeMap<&'static str, u16> = SERVICES.iter().map(|s| (*s, port(s))).collect();
        let (catalog_grpc, cart_grpc) = (testkit::free_port(), testkit::free_port());
        let identity_grpc = testkit::free_port();
        let redis_prefix = format!("test-obs-{}", uuid::Uuid::new_v4().simple());
        let url = |service: &str| format!("http://127.0.0.1:{}", http[service]);
        let common: Vec<(String, String)> = [
            ("EMPORIUM_DATA_DIR", dir.join("data").display().to_string()),
            ("EMPORIUM_EVENTS__URL", broker.url.clone()),
            ("EMPORIUM_EVENTS__NAMESPACE", broker.namespace.clone()),
            ("EMPORIUM_AUTH__JWKS_URL", format!("{}/.well-known/jwks.json", url("identity"))),
            ("EMPORIUM_LOG__FORMAT", "json".to_owned()),
            ("RUST_LOG", "info".to_owned()),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let own: HashMap<&str, Vec<(&str, String)>> = HashMap::from([
            (
                "identity",
                vec![
                    ("EMPORIUM_IDENTITY__LISTEN", format!("127.0.0.1:{}", http["identity"])),
                    ("EMPORIUM_IDENTITY__GRPC_LISTEN", format!("127.0.0.1:{identity_grpc}")),
                    ("EMPORIUM_IDENTITY__DATABASE_URL", dbs[0].url.clone()),
                    ("EMPORIUM_IDENTITY__SECRETS__MASTER_KEY", new_master_key()),
                    ("EMPORIUM_IDENTITY__PASSWORD_HASHING__MEMORY_KIB", "1024".to_owned()),
                    ("EMPORIUM_IDENTITY__PASSWORD_HASHING__ITERATIONS", "1".to_owned()),
                    ("EMPORIUM_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
                    ("EMPORIUM_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
                    ("EMPORIUM_IDENTITY__SOCIAL__PUBLIC_URL", url("gateway")),
                    ("EMPORIUM_IDENTITY__SOCIAL__REDIRECT_URIS", format!("[\"{}/signed-in\"]", url("gateway"))),
                    ("EMPORIUM_IDENTITY__SOCIAL__PROVIDERS__GITHUB__KIND", "github".to_owned()),
                    ("EMPORIUM_IDENTITY__SOCIAL__PROVIDERS__GITHUB__CLIENT_ID", "observed-client".to_owned()),
                    ("EMPORIUM_IDENTITY__SOCIAL__PROVIDERS__GITHUB__CLIENT_SECRET", CLIENT_SECRET.to_owned()),
                ],
            ),
            (
                "catalog",
                vec![
                    ("EMPORIUM_CATALOG__LISTEN", format!("127.0.0.1:{}", http["catalog"])),
                    ("EMPORIUM_CATALOG__GRPC_LISTEN", format!("127.0.0.1:{catalog_grpc}")),
                    ("EMPORIUM_CATALOG__DATABASE_URL", dbs[1].url.clone()),
                    ("EMPORIUM_CATALOG__CACHE_URL", testkit::redis_url()),
                    ("EMPORIUM_CATALOG__CACHE_PREFIX", redis_prefix.clone()),
                    ("EMPORIUM_CATALOG__DEMO_CATALOG", "false".to_owned()),
                ],
            ),
            (
                "cart",
                vec![
                    ("EMPORIUM_CART__LISTEN", format!("127.0.0.1:{}", http["cart"])),
                    ("EMPORIUM_CART__GRPC_LISTEN", format!("127.0.0.1:{cart_grpc}")),
                    ("EMPORIUM_CART__STORE_URL", testkit::redis_url()),
                    ("EMPORIUM_CART__KEY_PREFIX", redis_prefix.clone()),
                    ("EMPORIUM_CART__CATALOG_URL", format!("http://127.0.0.1:{catalog_grpc}")),
                ],
            ),
            (
                "orders",
                vec![
                    ("EMPORIUM_ORDERS__LISTEN", format!("127.0.0.1:{}", http["orders"])),
                    ("EMPORIUM_ORDERS__DATABASE_URL", dbs[2].url.clone()),
                    ("EMPORIUM_ORDERS__CATALOG_URL", format!("http://127.0.0.1:{catalog_grpc}")),
                    ("EMPORIUM_ORDERS__CART_URL", format!("http://127.0.0.1:{cart_grpc}")),
                ],
            ),
            (
                "notifications",
                vec![
                    ("EMPORIUM_NOTIFICATIONS__LISTEN", format!("127.0.0.1:{}", http["notifications"])),
                    ("EMPORIUM_NOTIFICATIONS__DATABASE_URL", dbs[3].url.clone()),
                    ("EMPORIUM_NOTIFICATIONS__IDENTITY_URL", format!("http://127.0.0.1:{identity_grpc}")),
                ],
            ),
            (
                "gateway",
                vec![
                    ("EMPORIUM_GATEWAY__LISTEN", format!("127.0.0.1:{}", http["gateway"])),
                    ("EMPORIUM_GATEWAY__UPSTREAMS__IDENTITY__URLS", format!("[\"{}\"]", url("identity"))),
                    ("EMPORIUM_GATEWAY__UPSTREAMS__CATALOG__URLS", format!("[\"{}\"]", url("catalog"))),
                    ("EMPORIUM_GATEWAY__UPSTREAMS__CART__URLS", format!("[\"{}\"]", url("cart"))),
                    ("EMPORIUM_GATEWAY__UPSTREAMS__ORDERS__URLS", format!("[\"{}\"]", url("orders"))),
                    ("EMPORIUM_GATEWAY__UPSTREAMS__NOTIFICATIONS__URLS", format!("[\"{}\"]", url("notifications"))),
                ],
            ),
        ]);
        let mut children = HashMap::new();
        for service in SERVICES {
            let log = std::fs::File::create(dir.join("logs").join(format!("{service}.log"))).unwrap();
            let (endpoint, protocol) = if OVER_GRPC.contains(&service) {
                (receiver.grpc_endpoint.clone(), "grpc")
            } else {
                (receiver.http_endpoint.clone(), "http/protobuf")
            };
            let child = Command::new(env!("CARGO_BIN_EXE_emporium"))
                .args(["serve", service])
                .envs(common.iter().cloned())
                .envs(own[service].iter().map(|(k, v)| (*k, v.clone())))
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
                .stdout(Stdio::from(log))
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("the emporium binary starts");
            children.insert(service, child);
            // Later services find the earlier ones serving.
            let live = TestClient::new(url(service));
            let up = testkit::eventually(Duration::from_secs(60), || async {
                matches!(live.get("/health/ready").try_send().await, Ok(response) if response.status == 200)
            })
            .await;
            assert!(up, "{service} did not become ready");
        }
        let gateway = TestClient::new(url("gateway"));
        Some(Self { dir, http, children, gateway, redis_prefix, _dbs: dbs, _broker: broker })
    }

    async fn metrics(&self) -> String {
        let mut all = String::new();
        for port in self.http.values() {
            let answer = TestClient::new(format!("http://127.0.0.1:{port}")).get("/metrics").send().await;
            assert_eq!(answer.status, 200);
            all.push_str(&String::from_utf8_lossy(&answer.body));
            all.push('\n');
        }
        all
    }

    fn logs(&self) -> Vec<(String, String)> {
        SERVICES
            .iter()
            .map(|s| (s.to_string(), std::fs::read_to_string(self.dir.join("logs").join(format!("{s}.log"))).unwrap()))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.start_kill();
        }
        // Drop may run inside the runtime (or while a panic unwinds it): a thread of its own.
        let prefix = self.redis_prefix.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(testkit::redis_delete_prefix(&prefix));
        })
        .join();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the shopping session used, that must never be logged.
struct Secrets(Vec<String>);

/// A shopping session through the gateway: sign-ins, searches (one finding nothing), a guest
/// cart, a paid checkout sent with our own `traceparent`, and a declined one.
async fn shop(gateway: &TestClient, trace_id: &str, parent_id: &str) -> Secrets {
    let mut secrets = vec![ADMIN_PASSWORD.to_owned(), PASSWORD.to_owned(), CLIENT_SECRET.to_owned()];
    let admin = gateway
        .post("/api/v1/auth/login")
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await;
    assert_eq!(admin.status, 200);
    let admin_token = token(&admin.json());
    secrets.push(admin_token.clone());
    secrets.push(refresh_token(&admin.json()));
    let sku = unique_sku("OBS");
    let created = gateway
        .post("/api/v1/products")
        .bearer(&admin_token)
        .json(&product_body("Observed Trail Shoe", &sku, 4_200, 20))
        .send()
        .await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let slug = created.json()["slug"].as_str().unwrap().to_owned();

    let email = unique_email("observed");
    let registered = gateway
        .post("/api/v1/auth/register")
        .json(&json!({"email": email, "password": PASSWORD, "name": "Obs"}))
        .send()
        .await;
    assert_eq!(registered.status, 201);
    secrets.push(token(&registered.json()));
    let login = gateway.post("/api/v1/auth/login").json(&json!({"email": email, "password": PASSWORD})).send().await;
    assert_eq!(login.status, 200);
    let refreshed =
        gateway.post("/api/v1/auth/refresh").json(&json!({"refresh_token": refresh_token(&login.json())})).send().await;
    assert_eq!(refreshed.status, 200);
    secrets.extend([token(&login.json()), refresh_token(&login.json()), refresh_token(&refreshed.json())]);
    let user = token(&refreshed.json());
    secrets.push(user.clone());
    assert_eq!(gateway.get("/api/v1/users/me").bearer(&user).send().await.status, 200);

    // The index catches up with the new product by events.
    let found = testkit::eventually(Duration::from_secs(10), || async {
        gateway.get("/api/v1/products?q=observed+trail").send().await.json()["total"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert!(found, "the new product is searchable");
    assert_eq!(gateway.get("/api/v1/products?q=zzqxwvnothing").send().await.json()["total"], 0);
    assert_eq!(gateway.get("/api/v1/products/suggest?q=obser").send().await.status, 200);
    assert_eq!(gateway.get(&format!("/api/v1/products/{slug}")).send().await.status, 200);

    let guest = gateway.post("/api/v1/carts").send().await;
    assert_eq!(guest.status, 201);
    let guest_cart = guest.json()["id"].as_str().unwrap().to_owned();
    secrets.push(guest_cart.clone());
    let added = gateway
        .post(&format!("/api/v1/carts/{guest_cart}/items"))
        .json(&json!({"sku": sku, "quantity": 1}))
        .send()
        .await;
    assert_eq!(added.status, 200);

    let add = || gateway.post("/api/v1/carts/me/items").bearer(&user).json(&json!({"sku": sku, "quantity": 2})).send();
    assert_eq!(add().await.status, 200);
    let paid = gateway
        .post("/api/v1/orders")
        .bearer(&user)
        .header("idempotency-key", "observed-paid")
        .header("traceparent", &format!("00-{trace_id}-{parent_id}-01"))
        .json(&checkout_body("me", "pm_card_visa"))
        .send()
        .await;
    assert_eq!(paid.status, 201, "{}", String::from_utf8_lossy(&paid.body));
    let replayed = gateway
        .post("/api/v1/orders")
        .bearer(&user)
        .header("idempotency-key", "observed-paid")
        .json(&checkout_body("me", "pm_card_visa"))
        .send()
        .await;
    assert_eq!(replayed.status, 201);
    assert_eq!(add().await.status, 200);
    let declined = gateway
        .post("/api/v1/orders")
        .bearer(&user)
        .header("idempotency-key", "observed-declined")
        .json(&checkout_body("me", "pm_card_chargeDeclined"))
        .send()
        .await;
    assert_eq!(declined.status, 402);
    let logout = gateway
        .post("/api/v1/auth/logout")
        .json(&json!({"refresh_token": refresh_token(&refreshed.json())}))
        .send()
        .await;
    assert_eq!(logout.status, 204);
    Secrets(secrets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_distributed_shop_is_observable_end_to_end() {
    let (Some(prometheus), Some(promtool), Some(syslog_ng)) =
        (tool("prometheus").await, tool("promtool").await, tool("syslog-ng").await)
    else {
        return;
    };
    let Some(receiver) = OtlpReceiver::start().await else { return };
    let Some(mut cluster) = Cluster::start(&receiver).await else { return };

    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let parent_id = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let secrets = shop(&cluster.gateway, &trace_id, parent_id).await;

    one_trace_from_the_gateway_to_the_consumers(&receiver, &trace_id, parent_id).await;
    dashboards_name_only_emitted_metrics(&cluster, &promtool).await;
    logs_are_ecs_lines_without_secrets(&cluster, &secrets, &trace_id);
    syslog_ng_ships_the_logs(&cluster, &syslog_ng, &trace_id).await;
    prometheus_scrapes_and_alerts(&mut cluster, &prometheus).await;
}

/// One checkout is one trace: gateway → orders → catalog and cart (gRPC) → payment → the
/// consumers of the events it caused and the emails it sends, every span's parent in the trace.
async fn one_trace_from_the_gateway_to_the_consumers(receiver: &OtlpReceiver, trace_id: &str, parent_id: &str) {
    let complete = |spans: &[Value]| {
        let has = |service: &str, kind: i64, name: &str| {
            spans.iter().any(|s| {
                s["service"] == service && s["kind"] == kind && s["name"].as_str().is_some_and(|n| n.contains(name))
            })
        };
        let ids: HashSet<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
        let linked = spans.iter().all(|s| {
            let parent = s["parent_span_id"].as_str().unwrap_or_default();
            parent == parent_id || ids.contains(parent)
        });
        linked
            && has("gateway", SERVER, "POST")
            && has("gateway", CLIENT, "orders")
            && has("orders", SERVER, "/api/v1/orders")
            && has("orders", CLIENT, "catalog.v1.Inventory/Reserve")
            && has("catalog", SERVER, "catalog.v1.Inventory/Reserve")
            && has("orders", CLIENT, "sandbox charge")
            && has("cart", SERVER, "cart.v1")
            && has("cart", PRODUCER, "publish cart.checked_out")
            && has("orders", CLIENT, "transaction orders")
            && spans.iter().any(|s| s["kind"] == PRODUCER)
            && spans.iter().any(|s| s["kind"] == CONSUMER)
            && has("notifications", CONSUMER, "")
            && has("notifications", PRODUCER, "send_email")
    };
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = receiver.trace(trace_id).await;
        if complete(&spans) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let summary: Vec<String> = spans
        .iter()
        .map(|s| format!("{} {} {} {}<-{}", s["service"], s["kind"], s["name"], s["span_id"], s["parent_span_id"]))
        .collect();
    assert!(complete(&spans), "the checkout's trace is incomplete:\n{}", summary.join("\n"));

    let by_id: HashMap<&str, &Value> = spans.iter().map(|s| (s["span_id"].as_str().unwrap(), s)).collect();
    fn parent_in<'a>(by_id: &HashMap<&str, &'a Value>, span: &Value) -> Option<&'a Value> {
        by_id.get(span["parent_span_id"].as_str().unwrap_or_default()).copied()
    }
    let parent = |span: &Value| parent_in(&by_id, span);
    let find = |service: &str, kind: i64, name: &str| {
        spans
            .iter()
            .find(|s| s["service"] == service && s["kind"] == kind && s["name"].as_str().unwrap().contains(name))
            .unwrap()
    };
    // The hops, each the child of the one before.
    let gateway = find("gateway", SERVER, "POST");
    assert_eq!(gateway["parent_span_id"], parent_id, "the gateway continues the client's trace");
    let upstream = find("gateway", CLIENT, "orders");
    assert_eq!(parent(upstream).unwrap()["span_id"], gateway["span_id"]);
    let orders = find("orders", SERVER, "/api/v1/orders");
    assert_eq!(parent(orders).unwrap()["span_id"], upstream["span_id"]);
    assert_eq!(orders["attributes"]["http.request.method"], "POST");
    assert_eq!(orders["attributes"]["http.route"], "/api/v1/orders");
    assert_eq!(orders["attributes"]["http.response.status_code"], 201);
    let reserve = find("catalog", SERVER, "catalog.v1.Inventory/Reserve");
    let reserving = parent(reserve).unwrap();
    assert_eq!((reserving["service"].as_str(), reserving["kind"].as_i64()), (Some("orders"), Some(CLIENT)));
    assert_eq!(reserve["attributes"]["rpc.system"], "grpc");
    assert_eq!(reserve["attributes"]["rpc.method"], "Reserve");
    let cart = find("cart", SERVER, "cart.v1");
    assert_eq!(parent(cart).unwrap()["service"], "orders");
    // Every span descends from the client's.
    let reaches_root = |span: &Value| {
        let mut up = span["parent_span_id"].as_str().unwrap_or_default().to_owned();
        for _ in 0..64 {
            if up == parent_id {
                return true;
            }
            match by_id.get(up.as_str()) {
                Some(parent) => up = parent["parent_span_id"].as_str().unwrap_or_default().to_owned(),
                None => return false,
            }
        }
        false
    };
    assert!(spans.iter().all(reaches_root));
    // The consumers of the stock changes the checkout caused are in the trace, below orders.
    let consumer = spans
        .iter()
        .find(|s| s["kind"] == CONSUMER && ["catalog", "cart"].contains(&s["service"].as_str().unwrap_or_default()))
        .expect("a stock change's consumer is in the trace");
    assert_eq!(consumer["attributes"]["messaging.operation.type"], "process");
    // Both transports delivered, and the resource says who sent what.
    let transports: HashSet<&str> = spans.iter().filter_map(|s| s["transport"].as_str()).collect();
    assert!(transports.contains("grpc") && transports.contains("http"), "{transports:?}");
    assert_eq!(orders["resource"]["deployment.environment.name"], "test");
    assert_eq!(orders["resource"]["service.namespace"], "emporium");
}

/// Every query of every dashboard is valid PromQL, and every metric it names is in the
/// shop's `/metrics` after this short session (`deploy/grafana/check.py`).
async fn dashboards_name_only_emitted_metrics(cluster: &Cluster, promtool: &str) {
    let exposition = cluster.dir.join("metrics.txt");
    std::fs::write(&exposition, cluster.metrics().await).unwrap();
    let checked = Command::new("python3")
        .arg(deploy_dir().join("grafana/check.py"))
        .arg("--metrics")
        .arg(&exposition)
        .env(
            "PATH",
            format!(
                "{}:{}",
                Path::new(promtool).parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .await
        .expect("python3 runs");
    assert!(
        checked.status.success(),
        "the dashboards' check failed:\n{}\n{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// Every line is one ECS JSON object; request lines carry the HTTP and trace fields, the
/// checkout's line its trace id; no secret the session used appears anywhere.
fn logs_are_ecs_lines_without_secrets(cluster: &Cluster, secrets: &Secrets, trace_id: &str) {
    let mut requests = 0;
    let mut checkout_logged = false;
    for (service, text) in cluster.logs() {
        for secret in &secrets.0 {
            assert!(!text.contains(secret.as_str()), "{service}'s log contains a secret the session used");
        }
        assert!(!text.to_ascii_lowercase().contains("bearer "), "{service}'s log contains an authorization header");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let line: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{service}: not JSON: {line}"));
            for field in ["@timestamp", "log.level", "message", "service.name", "ecs.version", "log.logger"] {
                assert!(line.get(field).is_some(), "{service}: no {field} in {line}");
            }
            if line["message"] == "request completed" {
                requests += 1;
                for field in ["http.request.method", "url.path", "http.route", "http.request.id", "trace.id", "span.id"]
                {
                    assert!(line[field].is_string(), "{service}: no {field} in {line}");
                }
                assert!(line["http.response.status_code"].is_u64() && line["event.duration"].is_u64(), "{line}");
                assert_eq!(line["service.name"], service.as_str());
                if service == "orders" && line["http.route"] == "/api/v1/orders" && line["trace.id"] == trace_id {
                    checkout_logged = true;
                }
            }
        }
    }
    assert!(requests > 20, "only {requests} request lines");
    assert!(checkout_logged, "the checkout's log line carries its trace id");
}

/// syslog-ng, with `deploy/logging/syslog-ng.conf`, tails the log files and delivers `_bulk`
/// requests whose documents are the lines as written, ECS fields intact.
async fn syslog_ng_ships_the_logs(cluster: &Cluster, syslog_ng: &str, trace_id: &str) {
    let recorder = BulkRecorder::start("logs-emporium-default").await;
    let state = cluster.dir.join("syslog-ng");
    std::fs::create_dir_all(&state).unwrap();
    let mut shipper = Command::new(syslog_ng)
        .arg("-F")
        .arg("--no-caps")
        .arg("-f")
        .arg(deploy_dir().join("logging/syslog-ng.conf"))
        .arg("-R")
        .arg(state.join("persist"))
        .arg("-p")
        .arg(state.join("pid"))
        .arg("-c")
        .arg(state.join("ctl"))
        .env("EMPORIUM_LOG_FILE", cluster.dir.join("logs/orders.log"))
        .env("ELASTICSEARCH_URL", &recorder.url)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("syslog-ng starts");
    let written: Vec<Value> = std::fs::read_to_string(cluster.dir.join("logs/orders.log"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let checkout = written
        .iter()
        .find(|l| l["message"] == "request completed" && l["trace.id"] == trace_id)
        .expect("the checkout's line")
        .clone();
    let shipped = testkit::eventually(Duration::from_secs(30), || {
        let received = recorder.received();
        let checkout = checkout.clone();
        async move { received.documents.iter().any(|(_, doc)| keeps(doc, &checkout)) }
    })
    .await;
    let _ = shipper.kill().await;
    let received = recorder.received();
    assert!(shipped, "the checkout's line reached _bulk as written ({} documents)", received.documents.len());
    assert!(received.malformed.is_empty(), "{:?}", received.malformed);
    assert!(received.documents.iter().all(|(action, _)| action.get("create").is_some()), "data streams take `create`");
    assert!(received.documents.len() >= written.len() / 2, "{} of {} lines", received.documents.len(), written.len());
}

/// Whether a shipped document has every field of the line, with the same value and type (the
/// shipper may add its own, such as `host.name`).
fn keeps(document: &Value, line: &Value) -> bool {
    line.as_object().is_some_and(|fields| fields.iter().all(|(key, value)| document.get(key) == Some(value)))
}

/// A real Prometheus scrapes every service with `deploy/`'s rules loaded: all targets up, the
/// rules evaluate, business counters are there; a service that stops makes its alert fire.
async fn prometheus_scrapes_and_alerts(cluster: &mut Cluster, prometheus: &str) {
    let rules = cluster.dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    for entry in std::fs::read_dir(deploy_dir().join("prometheus/rules")).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        // The down alert waits a minute in production; two seconds here.
        if let Some(at) = text.find("alert: EmporiumServiceDown") {
            let rest = text[at..].replacen("for: 1m", "for: 2s", 1);
            text.replace_range(at.., &rest);
        }
        std::fs::write(rules.join(path.file_name().unwrap()), text).unwrap();
    }
    let scrapes: Vec<Value> = cluster
        .http
        .iter()
        .map(|(service, port)| json!({"job_name": format!("emporium-{service}"), "static_configs": [{"targets": [format!("127.0.0.1:{port}")]}]}))
        .collect();
    let config = json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [format!("{}/*.yml", rules.display())],
        "scrape_configs": scrapes,
    });
    let config_file = cluster.dir.join("prometheus.yml");
    // JSON is YAML.
    std::fs::write(&config_file, config.to_string()).unwrap();
    let port = testkit::free_port();
    let _server = Command::new(prometheus)
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!("--storage.tsdb.path={}", cluster.dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    let api = TestClient::new(format!("http://127.0.0.1:{port}"));
    let query = |q: &str| {
        let path = format!("/api/v1/query?query={}", form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>());
        let api = api.clone();
        async move {
            match api.get(&path).try_send().await {
                Ok(answer) if answer.status == 200 => {
                    answer.json()["data"]["result"].as_array().cloned().unwrap_or_default()
                }
                _ => Vec::new(),
            }
        }
    };
    let value =
        |result: &[Value]| result.first().and_then(|r| r["value"][1].as_str()).and_then(|v| v.parse::<f64>().ok());
    let all_up = testkit::eventually(Duration::from_secs(30), || async {
        let up = query("up{job=~\"emporium-.+\"} == 1").await;
        up.len() == SERVICES.len()
    })
    .await;
    assert!(all_up, "every service is scraped");
    for (q, at_least) in [
        ("sum(orders_paid_total)", 1.0),
        ("sum(orders_revenue_minor_units_total{currency=\"EUR\"})", 8_400.0),
        ("sum(orders_checkouts_refused_total{reason=\"declined\"})", 1.0),
        ("sum(catalog_searches_total{results=\"none\"})", 1.0),
        ("sum(identity_logins_total{outcome=\"success\"})", 2.0),
        ("sum(cart_carts_created_total)", 1.0),
        ("sum(db_pool_connections_max{service=\"orders\"})", 1.0),
        ("sum(grpc_server_requests_total{grpc_method=\"Reserve\",grpc_code=\"OK\"})", 1.0),
        ("sum(events_published_total)", 1.0),
    ] {
        let got = value(&query(q).await);
        assert!(got.is_some_and(|v| v >= at_least), "{q} = {got:?}, expected at least {at_least}");
    }
    // The rules evaluate without error (those on a one-minute interval may not have run yet).
    let healthy = testkit::eventually(Duration::from_secs(15), || async {
        let rules = api.get("/api/v1/rules").send().await.json();
        let rules: Vec<Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().filter(|r| r["health"] == "ok").count();
        rules.iter().all(|r| r["health"] != "err") && evaluated >= 30
    })
    .await;
    let errors: Vec<Value> = api.get("/api/v1/rules").send().await.json()["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["health"] != "ok")
        .map(|r| json!({"name": r["name"], "health": r["health"], "error": r["lastError"]}))
        .collect();
    assert!(healthy, "rules not evaluated or failing: {errors:?}");

    // The cart stops: its down alert fires, and only its own.
    let mut cart = cluster.children.remove("cart").unwrap();
    cart.kill().await.unwrap();
    let fired = testkit::eventually(Duration::from_secs(30), || async {
        let alerts = api.get("/api/v1/alerts").send().await.json();
        alerts["data"]["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == "EmporiumServiceDown"
                    && a["labels"]["job"] == "emporium-cart"
                    && a["state"] == "firing"
            })
        })
    })
    .await;
    let alerts = api.get("/api/v1/alerts").send().await.json();
    assert!(fired, "{alerts}");
    let down: Vec<&Value> = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == "EmporiumServiceDown")
        .collect();
    assert!(down.iter().all(|a| a["labels"]["job"] == "emporium-cart"), "{down:?}");
}
