//! `bench cart`: add-to-cart and get-cart through the gateway, with carts in Redis, beside
//! `redis-benchmark` running the same Redis commands on the same server in the same run.
//!
//! Adds rotate over many carts and SKUs, so that no line reaches its cap of 99 and every add is
//! a real increment (the same Lua script as in production). Stock is ample, so none is refused.

use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Report;
use shop::{Service, Settings, Shop};

use crate::load::{Load, Measurement, Probe, drive_interleaved, ensure_clean, print_table};

const SKUS: usize = 20;
const CARTS: usize = 1_000;

/// One `redis-benchmark` figure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RawRedis {
    pub command: String,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
}

/// Runs `redis-benchmark -q` for one command; parses "…: 98039.22 requests per second, p50=0.263 msec".
fn redis_benchmark(port: u16, clients: usize, label: &str, args: &[String]) -> anyhow::Result<RawRedis> {
    let mut command = std::process::Command::new("redis-benchmark");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "-n", "200000", "-r", "100000"])
        .args(["-c", &clients.to_string()])
        .args(args);
    let output = command.output().context("running redis-benchmark (apt-get install redis-tools)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    // Progress is redrawn with carriage returns; the figure is the last redraw.
    let line = text
        .split(['\r', '\n'])
        .rev()
        .find(|l| l.contains(" requests per second"))
        .context("redis-benchmark printed no figure")?;
    let before = &line[..line.find(" requests per second").unwrap_or(0)];
    let rate = before.rsplit(' ').next().and_then(|r| r.parse().ok());
    let p50 = line.split("p50=").nth(1).and_then(|p| p.split_whitespace().next()).and_then(|p| p.parse().ok());
    match (rate, p50) {
        (Some(requests_per_sec), Some(p50_ms)) => Ok(RawRedis { command: label.to_owned(), requests_per_sec, p50_ms }),
        _ => bail!("could not read redis-benchmark's output: {}", line.trim()),
    }
}

pub async fn cart(mut settings: Settings, redis_url: &str, load: Load) -> anyhow::Result<Report> {
    let port: u16 = redis_url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|hp| hp.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(6379);
    let data_dir = std::env::temp_dir().join(format!("emporium-bench-{}", uuid::Uuid::new_v4().simple()));
    settings.data_dir = data_dir.clone();
    super::ephemeral_ports(&mut settings);
    settings.catalog.demo_catalog = Some(false);
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    settings.cart.store_url = Some(redis_url.to_owned());
    settings.cart.key_prefix = prefix.clone();

    let skus = super::ample_stock_products(&settings, SKUS, 42).await?;

    let shop = Shop::start(settings, &Service::ALL, CancellationToken::new()).await?;
    let gateway = format!("http://{}", shop.gateway.context("gateway started")?);
    println!("target: gateway {gateway}; carts in {redis_url} under {prefix}:*");
    let mut carts = Vec::with_capacity(CARTS);
    for _ in 0..CARTS {
        let (status, body) = super::post_json(&format!("{gateway}/api/v1/carts"), &json!({})).await?;
        if status != 201 {
            bail!("creating a cart answered {status}: {body}");
        }
        carts.push(body["id"].as_str().context("a cart id")?.to_owned());
    }
    // Every (cart, SKU) pair in turn: 20,000 lines, far from their cap over a run.
    let adds: Vec<(String, Bytes)> = carts
        .iter()
        .flat_map(|cart| {
            skus.iter().map(move |sku| {
                let body = serde_json::to_vec(&json!({"sku": sku, "quantity": 1})).unwrap_or_default();
                (format!("/api/v1/carts/{cart}/items"), Bytes::from(body))
            })
        })
        .collect();
    let reads: Vec<(String, Bytes)> =
        carts.iter().map(|cart| (format!("/api/v1/carts/{cart}"), Bytes::new())).collect();
    let add =
        Probe::post_json("add to cart via gateway", &format!("{gateway}/api/v1/carts/{}/items", carts[0]), &json!({}))?
            .rotating(adds);
    let read = Probe::get("get cart via gateway", &format!("{gateway}/api/v1/carts/{}", carts[0]))?.rotating(reads);
    // Fill every cart with all SKUs first, so that reads price 20 lines.
    drive_interleaved(std::slice::from_ref(&add), Load { rounds: 1, duration: load.warmup, ..load }, 1).await?;
    let started = Instant::now();
    let measured = drive_interleaved(&[add, read], load, load.rounds).await;
    let took = started.elapsed();
    shop.stop();
    let _ = shop.wait().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    let measurements: Vec<Measurement> = measured?;
    print_table(&measurements);
    ensure_clean(&measurements)?;

    // The same Redis commands, straight from redis-benchmark, in the same run.
    let sha = {
        let client = redis::Client::open(redis_url)?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("SCRIPT").arg("LOAD").arg(cart::CHANGE_LINE_LUA).query_async::<String>(&mut connection).await?
    };
    let now = chrono::Utc::now().to_rfc3339();
    let raw_prefix = format!("{prefix}:raw");
    let evalsha: Vec<String> = [
        "evalsha",
        &sha,
        "2",
        &format!("{raw_prefix}:{{__rand_int__}}:meta"),
        &format!("{raw_prefix}:{{__rand_int__}}:lines"),
        "SKU-1",
        "1",
        "add",
        "1000000000",
        "1000000000",
        "600",
        &now,
        "EUR",
        "1",
        "00000000-0000-4000-8000-000000000000",
        "guest",
        "100",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let raw_add = redis_benchmark(port, load.concurrency, "EVALSHA (the add script)", &evalsha)?;
    let hgetall = ["hgetall".to_owned(), format!("{raw_prefix}:{{__rand_int__}}:lines")];
    let raw_get = redis_benchmark(port, load.concurrency, "HGETALL (a cart's lines)", &hgetall)?;
    let deleted = delete_prefix(redis_url, &prefix).await;

    let (a, g) = (&measurements[0], &measurements[1]);
    let notes = vec![
        format!(
            "redis-benchmark, same server, {} clients: EVALSHA of the add script {:.0} ops/s (p50 {:.3} ms); HGETALL {:.0} ops/s (p50 {:.3} ms)",
            load.concurrency, raw_add.requests_per_sec, raw_add.p50_ms, raw_get.requests_per_sec, raw_get.p50_ms
        ),
        format!(
            "add to cart: {:.0} req/s = {:.1}% of raw EVALSHA; p99 {} µs (target < 5 ms)",
            a.requests_per_sec,
            100.0 * a.requests_per_sec / raw_add.requests_per_sec,
            a.p99_us
        ),
        format!(
            "get cart (20 lines, priced from the catalog cache): {:.0} req/s = {:.1}% of raw HGETALL; p99 {} µs (target < 5 ms)",
            g.requests_per_sec,
            100.0 * g.requests_per_sec / raw_get.requests_per_sec,
            g.p99_us
        ),
        format!(
            "{CARTS} carts × {SKUS} SKUs; {:.0} s in all; {deleted} bench keys removed afterwards",
            took.as_secs_f64()
        ),
    ];
    for note in &notes {
        println!("{note}");
    }
    Ok(Report { scenario: "cart".to_owned(), measurements, notes })
}

/// Removes the bench's keys (SCAN + DEL); returns how many.
pub async fn delete_prefix(redis_url: &str, prefix: &str) -> usize {
    let Ok(client) = redis::Client::open(redis_url) else { return 0 };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else { return 0 };
    let mut cursor = 0u64;
    let mut deleted = 0;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
        else {
            return deleted;
        };
        if !keys.is_empty() {
            deleted += keys.len();
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query_async(&mut connection).await;
        }
        if next == 0 {
            return deleted;
        }
        cursor = next;
    }
}
