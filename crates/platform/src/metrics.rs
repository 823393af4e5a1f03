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

/// Latency buckets from 100 µs to 10 s: the gateway's own overhead lives at the bottom end.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle) and starts
/// its upkeep task on the current runtime.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .expect("static buckets are valid");
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

/// The Prometheus text exposition of everything recorded in this process.
pub fn render() -> String {
    install().render()
}
