//! Prometheus metrics: one process-wide recorder, HTTP request metrics by route template, and
//! the `/metrics` rendering.
//!
//! Business counters are recorded anywhere with the `metrics` macros. Each series carries a
//! `service` label because in the embedded mode every service shares one process (and thus
//! one registry): `/metrics` on any of its ports shows the whole process.

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS_TOTAL: &str = "http_server_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "http_server_request_duration_seconds";

/// Latency buckets from 100 µs to 10 s: the gateway's own overhead lives at the bottom end; 2 s
/// is what a flash sale's buyers are promised at p99.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0];

/// Event lags from 10 ms to an hour: a consumer that was down for a while catches up through
/// all of it, and the alert on lag looks for a minute.
const LAG_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
const LAG_HISTOGRAMS: [&str; 2] = ["events_consume_lag_seconds", "events_relay_lag_seconds"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle) and starts
/// its upkeep task on the current runtime.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Whole-name matchers take precedence over the suffix.
            let mut builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .expect("static buckets are valid");
            for name in LAG_HISTOGRAMS {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.to_owned()), LAG_BUCKETS)
                    .expect("static buckets are valid");
            }
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (a test harness, say): keep a private one so
                // rendering still works, even though nothing records into it.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe();
            let upkeep = handle.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tick.tick().await;
                        upkeep.run_upkeep();
                    }
                });
            }
            handle
        })
        .clone()
}

fn describe() {
    PROCESS.get_or_init(metrics_process::Collector::default).describe();
    metrics::describe_gauge!("tokio_alive_tasks", "Tasks alive in this process's runtime");
    metrics::describe_gauge!("tokio_workers", "Worker threads of this process's runtime");
    metrics::describe_gauge!("tokio_global_queue_depth", "Tasks waiting in the runtime's global queue");
    metrics::describe_gauge!(
        "db_pool_connections",
        "Database connections of a service's pool, by state (in_use, idle)"
    );
    metrics::describe_gauge!("db_pool_connections_max", "Most connections a service's pool may open");
    metrics::describe_gauge!("db_pool_waiting", "Transactions waiting for a connection of a service's pool");
    metrics::describe_counter!(HTTP_REQUESTS_TOTAL, "HTTP requests served, by method, route template and status");
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency, by method, route template and status"
    );
}

pub fn record_http_request(service: &'static str, method: &str, route: &str, status: u16, elapsed: Duration) {
    let labels = [
        ("service", service.to_owned()),
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    metrics::counter!(HTTP_REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION, &labels).record(elapsed.as_secs_f64());
}

/// The Prometheus text exposition of everything recorded in this process, with the gauges that
/// are read rather than recorded (process, runtime, pools) sampled now.
pub fn render() -> String {
    let handle = install();
    sample();
    handle.render()
}

fn sample() {
    if let Some(process) = PROCESS.get() {
        process.collect();
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let runtime = runtime.metrics();
        metrics::gauge!("tokio_alive_tasks").set(runtime.num_alive_tasks() as f64);
        metrics::gauge!("tokio_workers").set(runtime.num_workers() as f64);
        metrics::gauge!("tokio_global_queue_depth").set(runtime.global_queue_depth() as f64);
    }
    crate::db::sample_pools();
}
