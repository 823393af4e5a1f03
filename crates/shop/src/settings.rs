//! The whole process's settings: shared ones, logging, and each service's own section.
//!
//! Loaded in layers (defaults → `--config FILE` → `EMPORIUM_*` environment); see
//! `platform::config`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use platform::{auth::AuthConfig, config::Shared, service::Bound, telemetry::LogConfig};
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where embedded databases and indexes live (`./data`).
    pub data_dir: PathBuf,
    pub auth: AuthConfig,
    pub log: LogConfig,
    /// `EMPORIUM_BOOTSTRAP_ADMIN_EMAIL`
    pub bootstrap_admin_email: Option<String>,
    /// `EMPORIUM_BOOTSTRAP_ADMIN_PASSWORD`
    #[serde(deserialize_with = "platform::config::lenient_secret")]
    pub bootstrap_admin_password: Option<SecretString>,
    /// The event bus every service of this process uses.
    pub events: events::BusConfig,
    /// How services relay their outboxes to the bus.
    pub relay: events::RelayConfig,
    pub identity: identity::Config,
    pub catalog: catalog::Config,
    pub cart: cart::Config,
    pub orders: orders::Config,
    pub notifications: notifications::Config,
    pub gateway: gateway::Config,
    pub storefront: storefront::Config,
    /// The sessions every verifier of this process refuses; see `events::revocations`.
    #[serde(skip)]
    pub revocations: std::sync::Arc<platform::auth::Revocations>,
}

impl Default for Settings {
    fn default() -> Self {
        let shared = Shared::default();
        Self {
            data_dir: shared.data_dir,
            auth: shared.auth,
            log: LogConfig::default(),
            bootstrap_admin_email: None,
            bootstrap_admin_password: None,
            events: events::BusConfig::default(),
            relay: events::RelayConfig::default(),
            identity: identity::Config::default(),
            catalog: catalog::Config::default(),
            cart: cart::Config::default(),
            orders: orders::Config::default(),
            notifications: notifications::Config::default(),
            gateway: gateway::Config::default(),
            storefront: storefront::Config::default(),
            revocations: shared.revocations,
        }
    }
}

impl Settings {
    /// Every address a service listens on but the gateway's, as the `EMPORIUM_*` variable that
    /// sets it: what a test or a bench moves to a free port to run a shop beside others.
    pub const SERVICE_LISTEN_VARIABLES: [&str; 9] = [
        "EMPORIUM_IDENTITY__LISTEN",
        "EMPORIUM_IDENTITY__GRPC_LISTEN",
        "EMPORIUM_CATALOG__LISTEN",
        "EMPORIUM_CATALOG__GRPC_LISTEN",
        "EMPORIUM_CART__LISTEN",
        "EMPORIUM_CART__GRPC_LISTEN",
        "EMPORIUM_ORDERS__LISTEN",
        "EMPORIUM_NOTIFICATIONS__LISTEN",
        "EMPORIUM_STOREFRONT__LISTEN",
    ];

    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut settings: Settings = platform::config::load(file)?;
        settings.identity.bootstrap_admin = match (&settings.bootstrap_admin_email, &settings.bootstrap_admin_password)
        {
            (Some(email), Some(password)) => {
                Some(identity::BootstrapAdmin { email: email.clone(), password: password.clone() })
            }
            _ => None,
        };
        settings.auth.validate().map_err(anyhow::Error::msg)?;
        settings.identity.validate().map_err(anyhow::Error::msg)?;
        settings.catalog.validate().map_err(anyhow::Error::msg)?;
        settings.cart.validate().map_err(anyhow::Error::msg)?;
        settings.orders.validate().map_err(anyhow::Error::msg)?;
        settings.notifications.validate().map_err(anyhow::Error::msg)?;
        settings.gateway.validate().map_err(anyhow::Error::msg)?;
        settings.storefront.validate().map_err(anyhow::Error::msg)?;
        settings.events.validate().map_err(anyhow::Error::msg)?;
        if let Some(orders) = settings.gateway.upstreams.get(orders::SERVICE)
            && settings.orders.idempotency_wait >= orders.timeout
        {
            // Else a repeated checkout still in progress is cut off by the gateway with a 504
            // before orders can answer it 409 with Retry-After.
            anyhow::bail!("orders.idempotency_wait must be shorter than gateway.upstreams.orders.timeout");
        }
        Ok(settings)
    }

    /// Connects to the event bus (the embedded one keeps its log under the data directory).
    pub async fn events(&self) -> anyhow::Result<events::Events> {
        let bus = events::Bus::connect(&self.events, &self.data_dir).await.context("connecting to the event bus")?;
        Ok(events::Events { bus, relay: self.relay.clone() })
    }

    /// What every service shares, when none is bound in this process yet.
    pub fn shared(&self) -> Shared {
        self.shared_with(&Bound::default())
    }

    /// What every service shares, given the services already bound in this process.
    ///
    /// Without a configured key URL, services that verify tokens ask identity: where it is
    /// bound in this process, else where the gateway's identity upstream points (by default,
    /// identity on this machine).
    pub fn shared_with(&self, bound: &Bound) -> Shared {
        let mut auth = self.auth.clone();
        if auth.jwks_url.is_none() {
            let jwks = |base: &str| format!("{}/.well-known/jwks.json", base.trim_end_matches('/'));
            auth.jwks_url = bound.http_url(identity::SERVICE).map(|base| jwks(&base)).or_else(|| {
                // Every replica's, so that one that is down costs nothing.
                let upstream = self.gateway.upstreams.get(identity::SERVICE)?;
                Some(upstream.urls.iter().map(|base| jwks(base)).collect::<Vec<_>>().join(","))
            });
        }
        Shared { data_dir: self.data_dir.clone(), auth, bound: bound.clone(), revocations: self.revocations.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration example in the README is loaded as an operator would load it.
    #[test]
    fn the_readme_example_configuration_loads() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n").expect("the README has a TOML example") + "```toml\n".len();
        let example = &readme[start..start + readme[start..].find("```").unwrap()];
        let path = std::env::temp_dir().join(format!("emporium-readme-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, example).unwrap();
        let settings = Settings::load(Some(&path));
        let _ = std::fs::remove_file(&path);
        let settings = settings.unwrap();
        assert_eq!(settings.identity.database_url.as_deref(), Some("postgres://emporium@db:5432/identity"));
        assert_eq!(settings.gateway.upstreams["identity"].urls.len(), 2);
        assert_eq!(settings.gateway.routes.len(), 11);
        let limits = &settings.gateway.rate_limits;
        assert_eq!(limits.redis_url.as_deref(), Some("redis://redis:6379/0"));
        assert_eq!((limits.auth.requests, limits.auth.per), (30, std::time::Duration::from_secs(60)));
        assert_eq!(settings.notifications.smtp.url.as_deref(), Some("smtp://smtp.example.com:587"));
        assert_eq!(settings.identity.links.reset_password_ttl, std::time::Duration::from_secs(30 * 60));
        assert_eq!(settings.orders.database_url.as_deref(), Some("postgres://emporium@db:5432/orders"));
        assert_eq!(settings.orders.pricing.tax_rates["DE"], 1900);
        assert_eq!(settings.cart.store_url.as_deref(), Some("redis://redis:6379/0"));
        assert_eq!(settings.catalog.cache_url, "redis://redis:6379/0");
        assert_eq!(settings.identity.pool.max_connections, Some(16));
        assert_eq!(
            settings.identity.secrets.master_key_file.as_deref(),
            Some(std::path::Path::new("/etc/emporium/identity.master-key"))
        );
    }
}
