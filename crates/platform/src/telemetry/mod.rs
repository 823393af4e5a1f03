//! Logs and traces, initialised once per process.
//!
//! Logs are JSON lines on stdout by default, one event per line with Elastic Common Schema field
//! names ([`ecs`]), which Filebeat or syslog-ng ship to Elasticsearch without parsing rules.
//! `pretty` is for a person reading a terminal.
//!
//! Traces leave the process only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set ([`trace`]); otherwise no OpenTelemetry layer is
//! installed at all, and the helpers that create client and consumer spans do nothing.

pub mod calls;
pub mod ecs;
mod export;
pub mod trace;

use serde::Deserialize;
use tracing::{Level, Metadata, subscriber::Interest};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{LevelFilter, dynamic_filter_fn},
    fmt,
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

pub use trace::{TraceContext, enabled};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Json, filter: "info,sqlx=warn,hyper=warn,h2=warn,tower=warn".to_owned() }
    }
}

/// What must outlive the process's work: the trace exporter, flushed by [`Telemetry::shutdown`].
#[must_use = "traces still queued are lost unless the guard is shut down"]
pub struct Telemetry {
    tracer: Option<export::Exporter>,
}

impl Telemetry {
    /// Exports the spans still queued (within the exporter's timeout) and stops exporting.
    pub async fn shutdown(self) {
        if let Some(tracer) = self.tracer {
            tracer.shutdown().await;
        }
    }
}

/// Installs the global subscriber for a command that serves nothing (migrations, admin):
/// logs only.
pub fn init(config: &LogConfig) {
    let _ = install(config, "emporium", None);
}

/// Installs the global subscriber of a serving process named `service` (`emporium` when one
/// process runs every service), with trace export when the `OTEL_*` environment asks for it.
/// Later calls (tests starting many services) are no-ops. Must run inside the Tokio runtime.
pub fn init_service(config: &LogConfig, service: &str) -> Telemetry {
    let mut exporter = match export::Exporter::from_env(service) {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("warning: traces are not exported: {error}");
            None
        }
    };
    if !install(config, service, exporter.as_ref().map(export::Exporter::layer)) {
        return Telemetry { tracer: None };
    }
    if let Some(exporter) = &mut exporter {
        exporter.start();
        trace::mark_enabled();
    }
    Telemetry { tracer: exporter }
}

/// Returns whether this call installed the subscriber.
fn install(config: &LogConfig, service: &str, traces: Option<export::TraceLayer>) -> bool {
    ecs::set_default_service(service);
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // One filter for the span fields and the lines that print them: an unfiltered layer would
    // make the registry build every TRACE span of every dependency.
    let logs = match config.format {
        LogFormat::Json => ecs::EcsLayer::default().with_filter(filter).boxed(),
        LogFormat::Pretty => fmt::layer().compact().with_target(false).with_filter(filter).boxed(),
    };
    // Spans from INFO up of sampled work (see `trace::start`) become trace spans whatever the log
    // filter says; of the events, only warnings and errors are worth carrying on a span.
    let traces = traces.map(|traces| {
        traces.with_filter(
            dynamic_filter_fn(|metadata, _| exported(metadata) && trace::admitted())
                // What can never be exported is told once per callsite, not asked at each call.
                .with_callsite_filter(
                    |metadata| {
                        if exported(metadata) { Interest::sometimes() } else { Interest::never() }
                    },
                )
                .with_max_level_hint(LevelFilter::INFO),
        )
    });
    tracing_subscriber::registry().with(logs).with(traces).try_init().is_ok()
}

fn exported(metadata: &Metadata<'_>) -> bool {
    if metadata.is_span() { *metadata.level() <= Level::INFO } else { *metadata.level() <= Level::WARN }
}
