//! The cart service's configuration.

use std::{net::SocketAddr, time::Duration};

use platform::{db::PoolConfig, money::Currency};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// The gRPC service orders uses at checkout.
    pub grpc_listen: SocketAddr,
    /// Where carts live: `redis://host:6379/0` (distributed), or `sqlite://…` / `postgres://…`;
    /// the embedded SQLite file under the data directory when unset.
    pub store_url: Option<String>,
    pub pool: PoolConfig,
    /// Prefix of every Redis key, so deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// A guest cart expires after this long without activity.
    #[serde(with = "humantime_serde")]
    pub guest_ttl: Duration,
    /// A user's cart expires after this long without activity.
    #[serde(with = "humantime_serde")]
    pub user_ttl: Duration,
    /// The catalog's gRPC inventory service.
    pub catalog_url: String,
    /// Deadline of each call to the catalog.
    #[serde(with = "humantime_serde")]
    pub catalog_timeout: Duration,
    /// How long a price read from the catalog is used without asking again (events drop it
    /// sooner when the product or its stock changes).
    #[serde(with = "humantime_serde")]
    pub price_ttl: Duration,
    /// Names this replica's event queue for price invalidation; random when unset.
    pub replica_id: Option<String>,
    /// The shop's currency (`catalog.currency`, copied here when the shop starts the cart): what
    /// an empty cart's subtotal is counted in.
    #[serde(skip)]
    pub currency: Currency,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8083)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 9083)),
            store_url: None,
            pool: PoolConfig::default(),
            key_prefix: "emporium".to_owned(),
            guest_ttl: Duration::from_secs(7 * 24 * 3600),
            user_ttl: Duration::from_secs(90 * 24 * 3600),
            catalog_url: "http://127.0.0.1:9082".to_owned(),
            catalog_timeout: Duration::from_millis(500),
            price_ttl: Duration::from_secs(10),
            replica_id: None,
            currency: Currency::parse("EUR").expect("EUR is a currency"),
        }
    }
}

impl Config {
    /// Checks what types alone cannot; each message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Some(url) = &self.store_url
            && !["redis://", "rediss://", "sqlite:", "postgres:", "postgresql:"].iter().any(|p| url.starts_with(p))
        {
            problems.push("cart.store_url must be a redis://, sqlite: or postgres: URL".to_owned());
        }
        if self.guest_ttl < Duration::from_secs(1) || self.user_ttl < Duration::from_secs(1) {
            problems.push("cart.guest_ttl and cart.user_ttl must be at least 1s".to_owned());
        }
        problems.extend(platform::grpc::check_peer_urls("cart.catalog_url", &self.catalog_url));
        if self.catalog_timeout.is_zero() {
            problems.push("cart.catalog_timeout must be positive".to_owned());
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}
