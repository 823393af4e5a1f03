//! `bench checkout`: checkouts per second end to end through the gateway on PostgreSQL (every
//! service's database there, carts in Redis), beside `pgbench`'s TPC-B on the same server in
//! the same run.
//!
//! Each buyer has a cart of 3 lines (random SKUs of a catalog with ample stock, filled before
//! the measurement) and checks out once with `pm_card_visa` under its own idempotency key:
//! reserve, place, charge (sandbox), commit, empty the cart. Only the checkouts are timed.

use std::{sync::Arc, time::Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Report, post_json_with};
use shop::{Service, Settings, Shop};

use crate::load::{Load, Measurement, print_table};

const SKUS: usize = 300;

pub struct CheckoutBench {
    pub postgres_url: String,
    pub redis_url: String,
    /// Buyers, one checkout each.
    pub buyers: usize,
}

/// `pgbench -c N -T secs` TPC-B on a scratch database; transactions per second.
fn pgbench(admin_url: &str, database: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let url = admin_url.rsplit_once('/').map_or(admin_url.to_owned(), |(base, _)| format!("{base}/{database}"));
    let init = std::process::Command::new("pgbench")
        .args(["-i", "-q", "-s", "10", &url])
        .output()
        .context("running pgbench -i")?;
    if !init.status.success() {
        bail!("pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).to_string();
    let run = std::process::Command::new("pgbench")
        .args(["-c", &clients.to_string(), "-j", &threads, "-T", &seconds.to_string(), &url])
        .output()
        .context("running pgbench")?;
    let text = String::from_utf8_lossy(&run.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("pgbench printed no tps: {text}"))
}

pub async fn admin_sql(admin_url: &str, statement: String) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

pub async fn checkout(mut settings: Settings, bench: CheckoutBench, load: Load) -> anyhow::Result<Report> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let names: Vec<String> =
        ["identity", "catalog", "orders", "pgbench"].iter().map(|s| format!("emporium_bench_{s}_{run}")).collect();
    let url = |name: &str| {
        bench.postgres_url.rsplit_once('/').map_or(bench.postgres_url.clone(), |(b, _)| format!("{b}/{name}"))
    };
    let data_dir = std::env::temp_dir().join(format!("emporium-bench-{run}"));
    settings.data_dir = data_dir.clone();
    super::ephemeral_ports(&mut settings);
    settings.identity.database_url = Some(url(&names[0]));
    // Identity's throw-away database gets a master key beside the bench's other throw-away data.
    let master_key = data_dir.join("identity.master-key");
    platform::secrets::write_new_key(&master_key)?;
    settings.identity.secrets.master_key_file = Some(master_key);
    settings.catalog.database_url = Some(url(&names[1]));
    settings.orders.database_url = Some(url(&names[2]));
    settings.catalog.demo_catalog = Some(false);
    settings.cart.store_url = Some(bench.redis_url.clone());
    settings.cart.key_prefix = format!("bench-{run}");
    // Registering thousands of buyers is not what is measured: cheap hashing for them.
    settings.identity.password_hashing.memory_kib = 1024;
    settings.identity.password_hashing.iterations = 1;
    settings.identity.login_throttle.max_failures_per_address = u32::MAX;

    let skus = super::ample_stock_products(&settings, SKUS, 7).await?;
    let shop = Shop::start(settings, &Service::ALL, CancellationToken::new()).await?;
    let gateway = format!("http://{}", shop.gateway.context("gateway started")?);
    println!(
        "target: gateway {gateway}; databases emporium_bench_*_{run} on {}",
        platform::db::redact_url(&bench.postgres_url)
    );

    let result = measure(&gateway, &skus, bench.buyers, load.concurrency).await;
    shop.stop();
    let _ = shop.wait().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    let tps = match &result {
        Ok(_) => {
            admin_sql(&bench.postgres_url, format!("CREATE DATABASE {}", names[3])).await?;
            pgbench(&bench.postgres_url, &names[3], load.concurrency, load.duration.as_secs().max(5))
        }
        Err(_) => Ok(0.0),
    };
    for name in &names {
        let _ = admin_sql(&bench.postgres_url, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    }
    let _ = super::cart::delete_prefix(&bench.redis_url, &format!("bench-{run}")).await;
    let measurement = result?;
    let tps = tps?;
    let measurements = vec![measurement.clone()];
    print_table(&measurements);
    let notes = vec![
        format!(
            "{} checkouts (3 lines each, pm_card_visa) at {} clients: {:.0} checkouts/s, p50 {:.1} ms, p99 {:.1} ms (target >= 200/s, p99 < 100 ms)",
            measurement.requests,
            load.concurrency,
            measurement.requests_per_sec,
            measurement.p50_us as f64 / 1000.0,
            measurement.p99_us as f64 / 1000.0
        ),
        format!(
            "pgbench TPC-B, same server, {} clients, scale 10: {tps:.0} tps; checkouts/s = {:.1}% of it",
            load.concurrency,
            100.0 * measurement.requests_per_sec / tps
        ),
    ];
    for note in &notes {
        println!("{note}");
    }
    Ok(Report { scenario: "checkout".to_owned(), measurements, notes })
}

/// Registers the buyers and fills their carts, then times one checkout each, `concurrency` at a time.
async fn measure(gateway: &str, skus: &[String], buyers: usize, concurrency: usize) -> anyhow::Result<Measurement> {
    let mut rng = StdRng::seed_from_u64(11);
    let mut prepared = Vec::with_capacity(buyers);
    for n in 0..buyers {
        let email = format!("bench-buyer-{n}-{}@example.com", uuid::Uuid::new_v4().simple());
        let (status, body) = post_json_with(
            &format!("{gateway}/api/v1/auth/register"),
            &json!({"email": email, "password": "bench-password-123", "name": "Buyer"}),
            None,
            &[],
        )
        .await?;
        if status != 201 {
            bail!("registering a buyer answered {status}: {body}");
        }
        let token = body["access_token"].as_str().context("an access token")?.to_owned();
        let mut picked = Vec::new();
        while picked.len() < 3 {
            let sku = &skus[rng.gen_range(0..skus.len())];
            if !picked.contains(sku) {
                picked.push(sku.clone());
            }
        }
        for sku in &picked {
            let (status, body) = post_json_with(
                &format!("{gateway}/api/v1/carts/me/items"),
                &json!({"sku": sku, "quantity": rng.gen_range(1..=3)}),
                Some(&token),
                &[],
            )
            .await?;
            if status != 200 {
                bail!("filling a cart answered {status}: {body}");
            }
        }
        prepared.push(token);
    }
    let queue = Arc::new(tokio::sync::Mutex::new(prepared));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (queue, gateway) = (queue.clone(), gateway.to_owned());
        tasks.spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("a histogram");
            let mut failures = 0u64;
            loop {
                let Some(token) = queue.lock().await.pop() else { break };
                let body = json!({
                    "cart_id": "me",
                    "payment_method": "pm_card_visa",
                    "shipping_address": {"name": "Bench Buyer", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
                });
                let key = uuid::Uuid::new_v4().to_string();
                let at = Instant::now();
                let answer = post_json_with(&format!("{gateway}/api/v1/orders"), &body, Some(&token), &[("idempotency-key", &key)]).await;
                histogram.saturating_record(at.elapsed().as_micros() as u64);
                if !matches!(answer, Ok((201, _))) {
                    failures += 1;
                }
            }
            (histogram, failures)
        });
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut failures = 0;
    while let Some(joined) = tasks.join_next().await {
        let (h, f) = joined?;
        histogram.add(&h)?;
        failures += f;
    }
    let elapsed = started.elapsed();
    if failures > 0 {
        bail!("{failures} of {buyers} checkouts did not answer 201");
    }
    Ok(Measurement {
        kind: "checkout via gateway".to_owned(),
        concurrency,
        duration_secs: elapsed.as_secs_f64(),
        requests: histogram.len(),
        errors: failures,
        requests_per_sec: histogram.len() as f64 / elapsed.as_secs_f64(),
        p50_us: histogram.value_at_quantile(0.5),
        p90_us: histogram.value_at_quantile(0.9),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
    })
}
