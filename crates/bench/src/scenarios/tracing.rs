//! What trace export costs: the same shop three times side by side, as child processes of this
//! one (tracing is set up once per process), with traces off, exported at the default sampling
//! ratio, and exported at 100%, driven round by round in turn on `GET /api/v1/products/{id}`
//! through the gateway. The spans go over OTLP HTTP/protobuf to a sink in this process that
//! takes them without decoding, as a collector on another machine would.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use axum::{Router, body::Bytes, extract::State, routing::post};
use shop::Settings;
use tokio::process::Child;

use super::{
    Report,
    catalog::{CatalogBench, seeded},
};
use crate::load::{Load, Probe, drive_interleaved, ensure_clean, print_table};

/// What the sink received.
#[derive(Default)]
struct Received {
    requests: AtomicU64,
    bytes: AtomicU64,
}

async fn sink(State(received): State<Arc<Received>>, body: Bytes) -> ([(&'static str, &'static str); 1], Vec<u8>) {
    received.requests.fetch_add(1, Ordering::Relaxed);
    received.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    // An empty ExportTraceServiceResponse: all spans accepted.
    ([("content-type", "application/x-protobuf")], Vec::new())
}

/// One shop process and the gateway it listens on.
struct Variant {
    name: String,
    gateway: String,
    child: Child,
    data_dir: PathBuf,
}

/// Starts `emporium serve` with every service, on the bench catalog, with `otel` set.
async fn start(name: String, bench: &CatalogBench, url: &str, otel: &[(&str, String)]) -> anyhow::Result<Variant> {
    let data_dir = std::env::temp_dir().join(format!("emporium-bench-{}", uuid::Uuid::new_v4().simple()));
    let (mut command, port) = super::serve_command(&data_dir)?;
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
        command.env_remove(key);
    }
    command
        .env("EMPORIUM_CATALOG__DATABASE_URL", url)
        .env("EMPORIUM_CATALOG__CACHE_URL", &bench.redis_url)
        .env("EMPORIUM_CATALOG__CACHE_PREFIX", format!("bench-{}", uuid::Uuid::new_v4().simple()))
        .envs(otel.iter().map(|(k, v)| (*k, v.as_str())));
    let mut child = command.spawn().context("starting the shop")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while !super::ready(port).await {
        if std::time::Instant::now() > deadline || child.try_wait()?.is_some() {
            anyhow::bail!("the shop with {name} did not start");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Variant { name, gateway: format!("http://127.0.0.1:{port}"), child, data_dir })
}

pub async fn tracing(settings: Settings, bench: CatalogBench, load: Load) -> anyhow::Result<Report> {
    let (opened, url) = seeded(&settings, &bench).await?;
    let some = opened.products.store().products_after(None, 1).await?;
    let id = some.first().context("the bench catalog has products")?.id;
    opened.products.store().db().close().await;

    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let app = Router::new().route("/v1/traces", post(sink)).with_state(received.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let exported = |sampler: Option<&str>| {
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
            // A queue deep enough for a second of spans at full rate, sent five times a second.
            ("OTEL_BSP_MAX_QUEUE_SIZE", "65536".to_owned()),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
        ];
        if let Some(sampler) = sampler {
            env.push(("OTEL_TRACES_SAMPLER", sampler.to_owned()));
        }
        env
    };
    println!("starting three shops on the bench catalog (each builds its index first) …");
    let ratio = format!("traces at the default ratio ({:.0}%)", platform::telemetry::trace::DEFAULT_RATIO * 100.0);
    let variants = vec![
        start("traces off".to_owned(), &bench, &url, &[]).await?,
        start(ratio, &bench, &url, &exported(None)).await?,
        start("traces at 100%".to_owned(), &bench, &url, &exported(Some("parentbased_always_on"))).await?,
    ];
    let probes = variants
        .iter()
        .map(|v| Probe::get(&v.name, &format!("{}/api/v1/products/{id}", v.gateway)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!("target: GET /api/v1/products/{id} through each shop's gateway; spans to {endpoint}");
    let cpu_before: Vec<_> = variants.iter().map(|v| v.child.id().and_then(cpu_seconds)).collect();
    let measured = drive_interleaved(&probes, load, load.rounds).await;
    let cpu_after: Vec<_> = variants.iter().map(|v| v.child.id().and_then(cpu_seconds)).collect();
    for mut variant in variants {
        let _ = variant.child.kill().await;
        let _ = std::fs::remove_dir_all(&variant.data_dir);
    }
    let measurements = measured?;
    print_table(&measurements);
    ensure_clean(&measurements)?;
    let off = &measurements[0];
    // The shop's own CPU per request does not depend on how much of the two cores the load
    // generator took, which throughput does: the two together tell what export costs.
    let cpu_per_request: Vec<Option<f64>> = measurements
        .iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .map(|(m, (before, after))| Some((after.as_ref()? - before.as_ref()?) / m.requests as f64 * 1e6))
        .collect();
    let mut notes: Vec<String> = measurements
        .iter()
        .zip(&cpu_per_request)
        .map(|(m, cpu)| {
            let cpu = match (cpu, cpu_per_request[0]) {
                (Some(cpu), Some(off)) => {
                    format!("; shop CPU {cpu:.0} µs per request ({:+.1}%)", 100.0 * (cpu / off - 1.0))
                }
                _ => String::new(),
            };
            format!(
                "{}: {:.0} req/s, p99 {} µs ({:+.1}% throughput against traces off){cpu}",
                m.kind,
                m.requests_per_sec,
                m.p99_us,
                100.0 * (m.requests_per_sec / off.requests_per_sec - 1.0)
            )
        })
        .collect();
    notes.push("shop CPU is counted over the whole run, warm-ups included, per request measured".to_owned());
    notes.push(format!(
        "the sink received {} export requests, {:.1} MB of spans",
        received.requests.load(Ordering::Relaxed),
        received.bytes.load(Ordering::Relaxed) as f64 / 1e6
    ));
    for note in &notes {
        println!("{note}");
    }
    Ok(Report { scenario: "product --tracing".to_owned(), measurements, notes })
}

/// CPU time (user and system) process `pid` has used so far, from `/proc` (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is the first, utime the 12th.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let (user, system): (u64, u64) = (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?);
    // USER_HZ, which Linux fixes at 100 for what `/proc` reports.
    Some((user + system) as f64 / 100.0)
}
