//! The scenarios of `emporium bench`. Each prints its figures beside what they are compared
//! with, measured in the same run.

pub mod cart;
pub mod catalog;
pub mod checkout;
pub mod events;
pub mod tracing;

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use shop::{Service, Settings, Shop};

use crate::load::{Load, Measurement, Probe, drive_interleaved, ensure_clean, print_table};

/// Where the scenario sends its traffic.
#[derive(Debug, Clone)]
pub struct Targets {
    pub gateway: String,
    pub identity: String,
}

/// A shop started for the benchmark, in a throw-away data directory.
pub struct BenchShop {
    pub targets: Targets,
    shop: Shop,
    data_dir: std::path::PathBuf,
}

impl BenchShop {
    pub async fn start(mut settings: Settings) -> anyhow::Result<Self> {
        let data_dir = std::env::temp_dir().join(format!("emporium-bench-{}", uuid::Uuid::new_v4().simple()));
        settings.data_dir = data_dir.clone();
        ephemeral_ports(&mut settings);
        settings.catalog.demo_catalog = Some(false);
        // A benchmark logs in far more often than a person would.
        settings.identity.login_throttle.max_failures_per_address = u32::MAX;
        let shop = Shop::start(settings, &Service::ALL, CancellationToken::new()).await?;
        let targets = Targets {
            gateway: format!("http://{}", shop.gateway.context("gateway started")?),
            identity: format!("http://{}", shop.identity.context("identity started")?),
        };
        Ok(Self { targets, shop, data_dir })
    }

    pub async fn stop(self) {
        self.shop.stop();
        let _ = self.shop.wait().await;
        let _ = std::fs::remove_dir_all(self.data_dir);
    }
}

/// `emporium serve` (this program) for a bench, as a newcomer runs it but on `data_dir`, its
/// services on ports of the system's choosing and its gateway on the returned one, with no demo
/// catalog and no rate limits (the load comes from one address at rates no shopper reaches),
/// logging a JSON line at `info` for every request (the production default) to nowhere. None of
/// this process's own settings reach it: a configured database must not become the bench's.
pub fn serve_command(data_dir: &std::path::Path) -> anyhow::Result<(tokio::process::Command, u16)> {
    let mut command = tokio::process::Command::new(std::env::current_exe().context("finding this program")?);
    command.arg("serve");
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("EMPORIUM_")) {
            command.env_remove(key);
        }
    }
    for variable in Settings::SERVICE_LISTEN_VARIABLES {
        command.env(variable, "127.0.0.1:0");
    }
    // The gateway's port is chosen here, so that the shop's output can go where a deployment's
    // goes rather than to this process.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    command
        .env("EMPORIUM_GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env("EMPORIUM_DATA_DIR", data_dir)
        .env("EMPORIUM_CATALOG__DEMO_CATALOG", "false")
        .env("EMPORIUM_GATEWAY__RATE_LIMITS__ENABLED", "false")
        .env_remove("RUST_LOG")
        .env_remove("EMPORIUM_LOG__FILTER")
        .env("EMPORIUM_LOG__FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    Ok((command, port))
}

/// Whether the gateway on `port` answers its readiness check with 200.
pub async fn ready(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    let asked = stream.write_all(b"GET /health/ready HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").await;
    let mut head = [0u8; 12];
    asked.is_ok() && stream.read_exact(&mut head).await.is_ok() && head.ends_with(b" 200")
}

/// Every service on a loopback port of the system's choosing, so a bench never collides with a
/// running shop.
fn ephemeral_ports(settings: &mut Settings) {
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    for addr in [
        &mut settings.identity.listen,
        &mut settings.identity.grpc_listen,
        &mut settings.catalog.listen,
        &mut settings.catalog.grpc_listen,
        &mut settings.cart.listen,
        &mut settings.cart.grpc_listen,
        &mut settings.orders.listen,
        &mut settings.notifications.listen,
        &mut settings.storefront.listen,
        &mut settings.gateway.listen,
    ] {
        *addr = any;
    }
}

/// Writes `count` generated products with one variant each and stock that never runs out,
/// through the catalog's own use case; their SKUs.
async fn ample_stock_products(settings: &Settings, count: usize, seed: u64) -> anyhow::Result<Vec<String>> {
    let opened = ::catalog::open(&settings.catalog, &settings.shared()).await?;
    let mut skus = Vec::with_capacity(count);
    for mut product in ::catalog::demo::generate_at(0, count, seed, true) {
        product.variants.truncate(1);
        product.variants[0].on_hand = 1_000_000_000;
        skus.push(product.variants[0].sku.to_string());
        opened.products.create(product, None).await?;
    }
    opened.products.store().db().close().await;
    Ok(skus)
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub measurements: Vec<Measurement>,
    pub notes: Vec<String>,
}

pub async fn post_json(url: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    post_json_with(url, body, None, &[]).await
}

/// GETs a JSON answer: its status and body.
pub async fn get_json(url: &str) -> anyhow::Result<(u16, Value)> {
    let request = Request::get(url).body(Full::new(Bytes::new()))?;
    let response = tokio::time::timeout(Duration::from_secs(30), CLIENT.request(request)).await??;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// One pooled client for the set-up requests of every scenario: connections are reused.
static CLIENT: std::sync::LazyLock<Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>> =
    std::sync::LazyLock::new(|| Client::builder(TokioExecutor::new()).build_http());

/// POSTs JSON with an optional bearer token and extra headers; the status and the JSON answer.
async fn post_json_with(
    url: &str,
    body: &Value,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, Value)> {
    let mut request = Request::post(url).header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
    let response = tokio::time::timeout(Duration::from_secs(30), CLIENT.request(request)).await??;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Registers a user for the scenario; returns its email, password and access token.
async fn bench_user(targets: &Targets) -> anyhow::Result<(String, String, String)> {
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "bench-password-123".to_owned();
    let (status, body) = post_json(
        &format!("{}/api/v1/auth/register", targets.gateway),
        &json!({"email": email, "password": password, "name": "Bench"}),
    )
    .await?;
    if status != 201 {
        bail!("registering the bench user answered {status}: {body}");
    }
    let token = body["access_token"].as_str().context("register returned no access token")?.to_owned();
    Ok((email, password, token))
}

/// `GET /api/v1/users/me` through the gateway and directly against identity, in two phases:
/// throughput at `load.concurrency` clients (what the gateway keeps of direct throughput), and
/// latency with one client (what the gateway adds to a request when nothing queues: at
/// saturation the median is mostly waiting in line, not work).
pub async fn me(targets: &Targets, load: Load) -> anyhow::Result<Report> {
    let (_, _, token) = bench_user(targets).await?;
    let via_gateway = Probe::get("me via gateway", &format!("{}/api/v1/users/me", targets.gateway))?.bearer(&token)?;
    let direct =
        Probe::get("me direct (identity)", &format!("{}/api/v1/users/me", targets.identity))?.bearer(&token)?;
    let loaded = drive_interleaved(&[via_gateway.clone(), direct.clone()], load, load.rounds).await?;
    let single = Load { concurrency: 1, ..load };
    let mut alone = drive_interleaved(&[via_gateway, direct], single, load.rounds).await?;
    for m in &mut alone {
        m.kind.push_str(", 1 client");
    }
    let (gateway, identity) = (&loaded[0], &loaded[1]);
    let (gateway_alone, identity_alone) = (&alone[0], &alone[1]);
    let measurements: Vec<Measurement> = loaded.iter().chain(&alone).cloned().collect();
    print_table(&measurements);
    ensure_clean(&measurements)?;
    let kept = 100.0 * gateway.requests_per_sec / identity.requests_per_sec;
    let added = gateway_alone.p50_us as i64 - identity_alone.p50_us as i64;
    let notes = vec![
        format!(
            "throughput at {} clients: the gateway keeps {kept:.1}% of direct throughput (target >= 60%; {} interleaved rounds)",
            load.concurrency, load.rounds
        ),
        format!("latency with 1 client: the gateway adds {added} µs at the median (target < 200 µs)"),
    ];
    for note in &notes {
        println!("{note}");
    }
    Ok(Report { scenario: "me".to_owned(), measurements, notes })
}

/// `POST /api/v1/auth/login` through the gateway: bound by argon2id.
pub async fn login(targets: &Targets, load: Load, hashing: &identity::config::HashingConfig) -> anyhow::Result<Report> {
    let (email, password, _) = bench_user(targets).await?;
    let probe = Probe::post_json(
        "login via gateway",
        &format!("{}/api/v1/auth/login", targets.gateway),
        &json!({"email": email, "password": password}),
    )?;
    let measurement = drive_interleaved(std::slice::from_ref(&probe), load, load.rounds).await?.remove(0);
    let measurements = vec![measurement.clone()];
    print_table(&measurements);
    ensure_clean(&measurements)?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let notes = vec![
        format!(
            "password hashing: argon2id m={} KiB, t={}, p={}; at most {} hashes at once",
            hashing.memory_kib, hashing.iterations, hashing.parallelism, hashing.max_concurrent
        ),
        format!(
            "{:.1} logins/s on {cores} cores = {:.1} ms of CPU per login",
            measurement.requests_per_sec,
            1000.0 * cores as f64 / measurement.requests_per_sec
        ),
    ];
    for note in &notes {
        println!("{note}");
    }
    Ok(Report { scenario: "login".to_owned(), measurements, notes })
}
