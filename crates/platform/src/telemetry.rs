//! Logging, initialised once per process.
//!
//! JSON lines on stdout by default: one event per line with its span fields (`service`,
//! `request_id`, `trace_id`, `route`), which a shipper such as Filebeat indexes without
//! parsing. `pretty` is for a person reading a terminal.

use serde::Deserialize;
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
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

/// Installs the global subscriber; later calls (tests starting many services) are no-ops.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match config.format {
        LogFormat::Json => registry
            .with(
                fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false).with_target(true),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact().with_target(false)).try_init(),
    };
}
