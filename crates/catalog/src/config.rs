//! The catalog service's configuration.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use platform::{db::PoolConfig, money::Currency};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP API.
    pub listen: SocketAddr,
    /// The gRPC inventory service for cart and orders.
    pub grpc_listen: SocketAddr,
    /// `postgres://…` or `sqlite://…`; the embedded SQLite file under the data directory when unset.
    pub database_url: Option<String>,
    pub pool: PoolConfig,
    /// The shop's currency: every price is in it.
    pub currency: String,
    /// The product read cache: `redis://host:6379/0` (shared by replicas), `memory:` (this
    /// process only, kept fresh by events) or `none`.
    pub cache_url: String,
    /// Prefix of every Redis key, so that deployments (or tests) can share one Redis.
    pub cache_prefix: String,
    /// How long a cached product lives even if no event invalidates it.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Where this replica keeps its search index; `catalog-index` under the data directory when
    /// unset. Replicas never share one.
    pub index_dir: Option<PathBuf>,
    /// Memory the index writer may buffer before it flushes a segment.
    pub index_memory_mb: usize,
    /// Names this replica's event queue for the search index; random when unset. A replica
    /// that keeps its name across restarts finds the events it missed waiting for it.
    pub replica_id: Option<String>,
    /// How long a reservation holds stock unless the caller says otherwise.
    #[serde(with = "humantime_serde")]
    pub reservation_ttl: Duration,
    /// How often expired reservations are looked for and released.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Load the demo catalog when the database has no products yet. Unset: only on SQLite
    /// (the embedded shop), never on PostgreSQL.
    pub demo_catalog: Option<bool>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 9082)),
            database_url: None,
            pool: PoolConfig::default(),
            currency: "EUR".to_owned(),
            cache_url: "memory:".to_owned(),
            cache_prefix: "emporium".to_owned(),
            cache_ttl: Duration::from_secs(300),
            index_dir: None,
            index_memory_mb: 64,
            replica_id: None,
            reservation_ttl: Duration::from_secs(15 * 60),
            sweep_interval: Duration::from_secs(5),
            demo_catalog: None,
        }
    }
}

impl Config {
    /// Checks what types alone cannot; each message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if Currency::parse(&self.currency).is_err() {
            problems.push("catalog.currency must be a three-letter ISO 4217 code such as EUR".to_owned());
        }
        if !(self.cache_url == "memory:"
            || self.cache_url == "none"
            || self.cache_url.starts_with("redis://")
            || self.cache_url.starts_with("rediss://"))
        {
            problems.push("catalog.cache_url must be memory:, none or a redis:// URL".to_owned());
        }
        if self.index_memory_mb < 15 {
            problems.push("catalog.index_memory_mb must be at least 15".to_owned());
        }
        if self.reservation_ttl < Duration::from_secs(1) || self.sweep_interval.is_zero() {
            problems.push("catalog.reservation_ttl and catalog.sweep_interval must be positive".to_owned());
        }
        if let Some(id) = &self.replica_id
            && (id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            problems.push("catalog.replica_id must be letters, digits and '-'".to_owned());
        }
        problems.extend(platform::db::check_database_url("catalog", self.database_url.as_deref()));
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    pub fn currency(&self) -> Currency {
        Currency::parse(&self.currency).unwrap_or_else(|_| Currency::parse("EUR").expect("EUR is a currency"))
    }
}
