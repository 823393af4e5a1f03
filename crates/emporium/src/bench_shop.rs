//! `emporium bench shop`: what a shopper's requests cost, as a new user would measure them. Five
//! requests — a page of the listing, a product page, a search, an add to cart, a cart — and two
//! of the storefront's HTML pages made from them (a product's, a search's) are each
//! driven through the gateway of a shop this command starts (embedded: `emporium serve` on
//! SQLite; distributed: the local cluster on PostgreSQL, Redis and RabbitMQ), or of a running one,
//! and reported with every process's peak memory (`VmHWM`).
//!
//! Each shop gets the same generated catalog, 4,000 guest carts and 200 SKUs with stock of 20 or
//! more; requests rotate over every product, page, word, cart and (cart, SKU) pair, so nothing is
//! served from one hot entry. It lives in the binary's library, not in `bench`, because it starts
//! the local cluster.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use bench::{
    ShopKind,
    load::{Load, Measurement, Probe, drive_interleaved, ensure_clean, print_table},
    scenarios::{Report, get_json, post_json},
};
use bytes::Bytes;
use serde_json::json;

use crate::{
    Settings,
    cluster::{Cluster, Plan},
};

const CARTS: usize = 4_000;
const SKUS: usize = 200;
/// Stock a SKU of the add-to-cart rotation has at least, so that no add is refused for stock.
const MIN_STOCK: i64 = 20;
const SEED: u64 = 17;
/// Pages deeper than this are refused by the API; the bench lists no further.
const WINDOW: usize = 10_000;

/// A shop under measurement: where its gateway is and which processes it is made of.
struct Target {
    name: &'static str,
    gateway: String,
    /// (name, pid) of every process of the shop; empty for a shop this command did not start.
    processes: Vec<(String, u32)>,
    teardown: Teardown,
}

enum Teardown {
    Nothing,
    Embedded { child: tokio::process::Child, data_dir: PathBuf },
    Distributed { cluster: Box<Cluster>, admin_url: String, databases: Vec<String>, vhost: Option<String> },
}

/// One shop's figures.
struct Measured {
    name: &'static str,
    measurements: Vec<Measurement>,
    /// (process, peak RSS in bytes) under the load.
    peaks: Vec<(String, u64)>,
    /// (process, peak RSS in bytes) before it: start-up, indexing the bench's catalog (written by
    /// this process), listing it and making the carts.
    peaks_before: Vec<(String, u64)>,
}

pub async fn run(mut settings: Settings, args: bench::Args) -> anyhow::Result<()> {
    settings.log.filter = "warn,sqlx=error".to_owned();
    platform::telemetry::init(&settings.log);
    let load =
        Load { concurrency: args.concurrency, duration: args.duration, warmup: args.warmup, rounds: args.rounds };
    let products = args.products.unwrap_or(1_000);
    let kinds: Vec<ShopKind> = match (&args.gateway, args.shop) {
        (Some(_), _) => Vec::new(),
        (None, ShopKind::Both) => vec![ShopKind::Embedded, ShopKind::Distributed],
        (None, kind) => vec![kind],
    };
    let mut results = Vec::new();
    if let Some(gateway) = &args.gateway {
        let target =
            Target { name: "running", gateway: gateway.clone(), processes: Vec::new(), teardown: Teardown::Nothing };
        results.push(measure(target, load).await?);
    }
    for kind in kinds {
        let target = match kind {
            ShopKind::Embedded => embedded(products).await?,
            _ => distributed(&args, products).await?,
        };
        results.push(measure(target, load).await?);
    }
    let report = summary(&results, products, load);
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Prepares the shop's data, drives the five requests, reads each process's peak memory, and
/// stops the shop whatever happened.
async fn measure(target: Target, load: Load) -> anyhow::Result<Measured> {
    println!("{}: gateway {}", target.name, target.gateway);
    let measured = async {
        let probes = probes(&target.gateway).await?;
        let peaks = || -> Vec<(String, u64)> {
            target.processes.iter().filter_map(|(name, pid)| Some((name.clone(), peak_rss(*pid)?))).collect()
        };
        // What the load needs, apart from start-up and preparing the bench's data.
        let peaks_before = peaks();
        for (_, pid) in &target.processes {
            reset_peak_rss(*pid);
        }
        let measurements = drive_interleaved(&probes, load, load.rounds).await?;
        let peaks = peaks();
        print_table(&measurements);
        ensure_clean(&measurements)?;
        Ok(Measured { name: target.name, measurements, peaks, peaks_before })
    }
    .await;
    teardown(target.teardown).await;
    measured
}

/// The five requests, each rotating over what the catalog and the carts hold.
async fn probes(gateway: &str) -> anyhow::Result<Vec<Probe>> {
    let mut slugs = Vec::new();
    let mut words = BTreeSet::new();
    let mut skus = Vec::new();
    let mut offset = 0;
    let total = loop {
        let (status, page) = get_json(&format!("{gateway}/api/v1/products?limit=100&offset={offset}")).await?;
        if status != 200 {
            bail!("listing products answered {status}: {page}");
        }
        let items = page["items"].as_array().context("a page of products")?;
        for product in items {
            slugs.push(product["slug"].as_str().context("a slug")?.to_owned());
            let title = product["title"].as_str().unwrap_or_default().to_lowercase();
            words.extend(
                title
                    .split_whitespace()
                    .filter(|w| w.len() >= 3 && w.chars().all(char::is_alphabetic))
                    .map(str::to_owned),
            );
            for variant in product["variants"].as_array().into_iter().flatten() {
                if variant["stock_available"].as_i64().unwrap_or(0) >= MIN_STOCK && skus.len() < SKUS {
                    skus.push(variant["sku"].as_str().context("a SKU")?.to_owned());
                }
            }
        }
        offset += items.len();
        let total = page["total"].as_u64().unwrap_or(0) as usize;
        if items.is_empty() || offset >= total.min(WINDOW) {
            break total;
        }
    };
    if slugs.len() < 40 || skus.len() < 10 || words.is_empty() {
        bail!("the catalog is too small to measure: {} products, {} SKUs with stock", slugs.len(), skus.len());
    }
    let carts = guest_carts(gateway).await?;
    println!(
        "{total} products, {} search words, {} guest carts, {} SKUs with stock of {MIN_STOCK} or more",
        words.len(),
        carts.len(),
        skus.len()
    );

    let pages = (total.min(WINDOW) / 20).max(1);
    let list = Probe::get("GET /products?limit=20&offset=…", &format!("{gateway}/api/v1/products"))?
        .generated(pages, |n| (format!("/api/v1/products?limit=20&offset={}", n * 20), Bytes::new()));
    let product = Probe::get("GET /products/{slug}", &format!("{gateway}/api/v1/products"))?
        .rotating(slugs.iter().map(|s| (format!("/api/v1/products/{s}"), Bytes::new())).collect());
    let search = Probe::get("GET /products?q=WORD&limit=20", &format!("{gateway}/api/v1/products"))?
        .rotating(words.iter().map(|w| (format!("/api/v1/products?q={w}&limit=20"), Bytes::new())).collect());
    let adds = {
        let (carts, skus) = (carts.clone(), skus.clone());
        // Every request its own (cart, SKU) pair, counted across clients, warm-ups and rounds, so
        // that no round repeats another's adds. A cart takes at most 100 lines (its cap): carts
        // alternate between halves of the SKUs. A pair comes back after 400,000 adds, each time
        // one unit more, far from the stock of 20.
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let per_cart = skus.len().min(100);
        move |_: usize| {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let cart = n % carts.len();
            let sku = ((n / carts.len()) % per_cart + (cart % 2) * per_cart) % skus.len();
            let body = serde_json::to_vec(&json!({"sku": skus[sku], "quantity": 1})).unwrap_or_default();
            (format!("/api/v1/carts/{}/items", carts[cart]), Bytes::from(body))
        }
    };
    let add = Probe::post_json("POST /carts/{id}/items", &format!("{gateway}/api/v1/carts"), &json!({}))?
        .generated(carts.len() * skus.len(), adds);
    let get_cart = Probe::get("GET /carts/{id}", &format!("{gateway}/api/v1/carts"))?
        .rotating(carts.iter().map(|c| (format!("/api/v1/carts/{c}"), Bytes::new())).collect());
    // The storefront's pages, rendered from the API above, through the same gateway.
    let product_page = Probe::get("page GET /p/{slug}", &format!("{gateway}/p"))?
        .rotating(slugs.iter().map(|s| (format!("/p/{s}"), Bytes::new())).collect());
    let search_page = Probe::get("page GET /search?q=WORD", &format!("{gateway}/search"))?
        .rotating(words.iter().map(|w| (format!("/search?q={w}"), Bytes::new())).collect());
    Ok(vec![list, product, search, add, get_cart, product_page, search_page])
}

/// Creates the guest carts, a few at a time.
async fn guest_carts(gateway: &str) -> anyhow::Result<Vec<String>> {
    let mut carts = Vec::with_capacity(CARTS);
    let mut creating = tokio::task::JoinSet::new();
    for _ in 0..CARTS {
        if creating.len() >= 16
            && let Some(created) = creating.join_next().await
        {
            carts.push(created??);
        }
        let url = format!("{gateway}/api/v1/carts");
        creating.spawn(async move {
            let (status, body) = post_json(&url, &json!({})).await?;
            if status != 201 {
                bail!("creating a cart answered {status}: {body}");
            }
            Ok::<_, anyhow::Error>(body["id"].as_str().context("a cart id")?.to_owned())
        });
    }
    while let Some(created) = creating.join_next().await {
        carts.push(created??);
    }
    Ok(carts)
}

fn temp_dir(kind: &str) -> PathBuf {
    std::env::temp_dir().join(format!("emporium-bench-{kind}-{}", uuid::Uuid::new_v4().simple()))
}

/// `emporium serve` in a process of its own on a fresh data directory, its catalog written first.
/// Only the defaults a newcomer has: no configured database of the operator's is touched.
async fn embedded(products: usize) -> anyhow::Result<Target> {
    let data_dir = temp_dir("embedded");
    let started = async {
        let seeding = Settings { data_dir: data_dir.clone(), ..Settings::default() };
        println!("embedded: writing {products} products into {} …", data_dir.display());
        crate::seed::fill(&seeding, products, SEED, 8, |_| {}).await?;
        let (mut command, port) = bench::scenarios::serve_command(&data_dir)?;
        let mut child = command.spawn().context("starting the shop")?;
        let gateway = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while !bench::scenarios::ready(port).await {
            if std::time::Instant::now() > deadline || child.try_wait()?.is_some() {
                bail!("the embedded shop did not start");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pid = child.id().context("the shop's process id")?;
        Ok::<_, anyhow::Error>((child, gateway, pid))
    }
    .await;
    match started {
        Ok((child, gateway, pid)) => Ok(Target {
            name: "embedded",
            gateway,
            processes: vec![("emporium serve (the whole shop)".to_owned(), pid)],
            teardown: Teardown::Embedded { child, data_dir },
        }),
        Err(error) => {
            // The child, if any, was killed when dropped.
            let _ = std::fs::remove_dir_all(&data_dir);
            Err(error)
        }
    }
}

/// The local cluster (`--replicas` of every service, one gateway) in throw-away databases, a
/// virtual host of its own when `rabbitmqctl` can make one, and its own Redis key prefix.
async fn distributed(args: &bench::Args, products: usize) -> anyhow::Result<Target> {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let namespace = format!("bench-shop-{id}");
    let server = args.postgres.rsplit_once('/').map_or(args.postgres.as_str(), |(server, _)| server).to_owned();
    // Above the ports the tests' clusters take (20,000 to 27,200), below the ephemeral range.
    let base_port = 28_000 + (std::process::id() % 20) as u16 * 100;
    let mut plan = Plan {
        dir: temp_dir("cluster"),
        replicas: args.replicas.max(1),
        gateways: 1,
        gateway_port: base_port + 99,
        base_port,
        postgres: server,
        database_prefix: format!("emporium_bench_{id}"),
        redis: args.redis.clone(),
        amqp: args.amqp.clone(),
        namespace: namespace.clone(),
        webhook_secret: format!("whsec_{id}"),
        extra_env: vec![("EMPORIUM_GATEWAY__RATE_LIMITS__ENABLED".to_owned(), "false".to_owned())],
    };
    for (service, replica) in plan.processes() {
        let port = plan.http_port(service, replica);
        std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("port {port} (for {service}-{replica}) is taken"))?;
    }
    let databases: Vec<String> = ["identity", "catalog", "orders", "notifications"]
        .iter()
        .map(|s| format!("{}_{s}", plan.database_prefix))
        .collect();
    let catalog_url = plan.database("catalog");
    let gateway = plan.gateway_url(0);
    let binary = std::env::current_exe()?;
    // Last before starting, so that nothing above leaves the virtual host behind.
    let vhost = match own_vhost(&args.amqp, &namespace) {
        Some(url) => {
            plan.amqp = url;
            Some(namespace.clone())
        }
        None => {
            println!("rabbitmqctl could not make a virtual host: queues named {namespace}.* stay on the broker");
            None
        }
    };
    let mut cluster = Box::new(Cluster::new(plan, binary));
    println!("distributed: starting {} processes; logs in {}", cluster.processes.len(), cluster.plan.dir.display());
    let started = async {
        cluster.up().await?;
        let mut seeding = Settings { data_dir: cluster.plan.dir.join("data").join("seed"), ..Settings::default() };
        seeding.catalog.database_url = Some(catalog_url);
        println!("distributed: writing {products} products …");
        crate::seed::fill(&seeding, products, SEED, 8, |_| {}).await?;
        indexed(&gateway, products).await
    }
    .await;
    let processes =
        cluster.processes.iter().filter_map(|p| Some((format!("{}-{}", p.service, p.replica), p.pid?))).collect();
    let target = Target {
        name: "distributed",
        gateway,
        processes,
        teardown: Teardown::Distributed { cluster, admin_url: args.postgres.clone(), databases, vhost },
    };
    if let Err(error) = started {
        teardown(target.teardown).await;
        return Err(error);
    }
    Ok(target)
}

/// Waits until every replica's index holds the products written behind its back (their events
/// reach each replica's indexer): several answers in a row, so each replica was asked. A large
/// catalog takes minutes; only a minute without progress is a failure.
async fn indexed(gateway: &str, products: usize) -> anyhow::Result<()> {
    const STALLED: Duration = Duration::from_secs(60);
    let (mut in_a_row, mut last, mut progressed) = (0, None, std::time::Instant::now());
    while in_a_row < 8 {
        let (_, page) = get_json(&format!("{gateway}/api/v1/products?limit=1")).await?;
        let total = page["total"].as_u64();
        in_a_row = if total == Some(products as u64) { in_a_row + 1 } else { 0 };
        if total > last {
            (last, progressed) = (total, std::time::Instant::now());
        } else if progressed.elapsed() > STALLED {
            bail!("the catalog's replicas stopped indexing at {total:?} of {products} products");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A virtual host of the bench's own beside `amqp_url`'s, deleted at the end with whatever the
/// services declared in it; `None` when `rabbitmqctl` is not here or refuses.
fn own_vhost(amqp_url: &str, name: &str) -> Option<String> {
    let user = amqp_url.split("://").nth(1)?.split('@').next()?.split(':').next()?.to_owned();
    let ran = |args: &[&str]| {
        std::process::Command::new("rabbitmqctl")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !(ran(&["add_vhost", name]) && ran(&["set_permissions", "-p", name, &user, ".*", ".*", ".*"])) {
        return None;
    }
    let scheme_end = amqp_url.find("://")? + 3;
    let path = amqp_url[scheme_end..].find('/').map_or(amqp_url.len(), |at| scheme_end + at);
    Some(format!("{}/{name}", &amqp_url[..path]))
}

async fn teardown(teardown: Teardown) {
    match teardown {
        Teardown::Nothing => {}
        Teardown::Embedded { mut child, data_dir } => {
            let _ = child.kill().await;
            let _ = std::fs::remove_dir_all(data_dir);
        }
        Teardown::Distributed { mut cluster, admin_url, databases, vhost } => {
            let _ = cluster.down(Duration::from_secs(10));
            for database in databases {
                let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
                if let Err(error) = bench::scenarios::checkout::admin_sql(&admin_url, drop).await {
                    eprintln!("could not drop {database}: {error:#}");
                }
            }
            bench::scenarios::cart::delete_prefix(&cluster.plan.redis, &cluster.plan.namespace).await;
            if let Some(vhost) = vhost {
                let _ = std::process::Command::new("rabbitmqctl").args(["delete_vhost", &vhost]).output();
            }
            let _ = std::fs::remove_dir_all(&cluster.plan.dir);
        }
    }
}

/// The process's peak resident memory (`VmHWM` in `/proc/PID/status`), in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    status_kib(Path::new(&format!("/proc/{pid}/status")), "VmHWM:").map(|kib| kib * 1024)
}

/// Starts the process's `VmHWM` again from its current RSS (Linux 4.0 and later).
fn reset_peak_rss(pid: u32) {
    if let Err(error) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        eprintln!("could not reset the peak RSS of process {pid}: {error}");
    }
}

fn status_kib(path: &Path, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

fn figure(m: &Measurement) -> String {
    let p99 =
        if m.p99_us >= 1_000 { format!("{:.1} ms", m.p99_us as f64 / 1000.0) } else { format!("{} µs", m.p99_us) };
    format!("{} req/s, p99 {p99}", thousands(m.requests_per_sec.round() as u64))
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn megabytes(bytes: u64) -> String {
    format!("{} MB", bytes.div_ceil(1_000_000))
}

/// Prints the issue's table: one row per request, one column per shop, then peak memory.
fn summary(results: &[Measured], products: usize, load: Load) -> Report {
    let header: Vec<String> = results.iter().map(|r| format!("{} ({products} products)", r.name)).collect();
    println!();
    println!("| request (via the gateway) | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(results.len()));
    let kinds: Vec<String> =
        results.first().map(|r| r.measurements.iter().map(|m| m.kind.clone()).collect()).unwrap_or_default();
    for (row, kind) in kinds.iter().enumerate() {
        let cells: Vec<String> =
            results.iter().map(|r| r.measurements.get(row).map(figure).unwrap_or_default()).collect();
        println!("| `{kind}` | {} |", cells.join(" | "));
    }
    let row = |peaks: fn(&Measured) -> &Vec<(String, u64)>| -> String {
        let cells: Vec<String> = results
            .iter()
            .map(|r| {
                if peaks(r).is_empty() {
                    return "not known (a shop this bench did not start)".to_owned();
                }
                peaks(r)
                    .iter()
                    .map(|(name, bytes)| format!("{name} {}", megabytes(*bytes)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        cells.join(" | ")
    };
    println!("| peak RSS under this load (VmHWM) | {} |", row(|r| &r.peaks));
    println!("| peak RSS before it: start-up, the bench's catalog and carts | {} |", row(|r| &r.peaks_before));
    let notes = vec![format!(
        "{} clients, {} warm-up and {} measured per request and round, {} round(s); the load generator runs on the same cores",
        load.concurrency,
        humantime::format_duration(load.warmup),
        humantime::format_duration(load.duration),
        load.rounds
    )];
    for note in &notes {
        println!("{note}");
    }
    let mut measurements = Vec::new();
    let mut all_notes = notes;
    for result in results {
        for m in &result.measurements {
            let mut m = m.clone();
            m.kind = format!("{}: {}", result.name, m.kind);
            measurements.push(m);
        }
        for (name, bytes) in &result.peaks {
            all_notes.push(format!("{}: {name} peak RSS under load {bytes} bytes", result.name));
        }
        for (name, bytes) in &result.peaks_before {
            all_notes.push(format!("{}: {name} peak RSS before the load {bytes} bytes", result.name));
        }
    }
    Report { scenario: "shop".to_owned(), measurements, notes: all_notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_the_issue_writes_them() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(megabytes(96_000_001), "97 MB");
        let status = std::env::temp_dir().join(format!("status-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&status, "Name:\temporium\nVmHWM:\t  310244 kB\nVmRSS:\t 1 kB\n").unwrap();
        assert_eq!(status_kib(&status, "VmHWM:"), Some(310_244));
        let _ = std::fs::remove_file(status);
    }
}
