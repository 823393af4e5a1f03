//! The orders service's configuration.

use std::{net::SocketAddr, time::Duration};

use platform::db::PoolConfig;
use secrecy::SecretString;
use serde::Deserialize;

use crate::domain::Pricing;

/// Where fault injection can stop the process: right after the named step's effect, before the
/// saga records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPoint {
    Reserve,
    Create,
    Charge,
    Commit,
    Empty,
    Release,
    Refund,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// `postgres://…` or `sqlite://…`; the embedded SQLite file under the data directory when unset.
    pub database_url: Option<String>,
    pub pool: PoolConfig,
    /// The catalog's gRPC inventory service (stock reservations).
    pub catalog_url: String,
    /// The cart's gRPC service (the cart being checked out).
    pub cart_url: String,
    /// Deadline of each gRPC call to catalog and cart.
    #[serde(with = "humantime_serde")]
    pub rpc_timeout: Duration,
    /// How long stock stays reserved for a checkout that has not finished.
    #[serde(with = "humantime_serde")]
    pub reservation_ttl: Duration,
    /// Prefix of human-readable order numbers (`EM-100001`).
    pub number_prefix: String,
    pub pricing: Pricing,
    pub payments: PaymentsConfig,
    /// How long a saga stays with the process driving it without word from it: the process
    /// renews the lease every third of it while a step runs, so a step may take longer, and a
    /// process that died leaves its sagas to the others this long after.
    #[serde(with = "humantime_serde")]
    pub saga_lease: Duration,
    /// How often unfinished sagas whose lease ran out are looked for.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long an idempotency key and its answer are kept.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// How long a request that repeats a key still in progress waits for the first one's answer
    /// before it answers 409 with `Retry-After`: well inside the gateway's timeout, so that the
    /// client gets that answer and not a 504.
    #[serde(with = "humantime_serde")]
    pub idempotency_wait: Duration,
    /// Fault injection for crash-recovery tests: the process exits right after this saga step's
    /// effect, before the step is recorded. Never set in production.
    pub crash_after: Option<FaultPoint>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8084)),
            database_url: None,
            pool: PoolConfig::default(),
            catalog_url: "http://127.0.0.1:9082".to_owned(),
            cart_url: "http://127.0.0.1:9083".to_owned(),
            rpc_timeout: Duration::from_secs(2),
            reservation_ttl: Duration::from_secs(15 * 60),
            number_prefix: "EM-".to_owned(),
            pricing: Pricing::default(),
            payments: PaymentsConfig::default(),
            saga_lease: Duration::from_secs(5),
            sweep_interval: Duration::from_secs(1),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            idempotency_wait: Duration::from_secs(1),
            crash_after: None,
        }
    }
}

/// Which payment provider charges orders, and each provider's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    /// `sandbox` (built in, the default) or `stripe`.
    pub provider: String,
    /// Deadline of each call to the provider.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub sandbox: SandboxConfig,
    pub stripe: StripeConfig,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            provider: "sandbox".to_owned(),
            timeout: Duration::from_secs(10),
            sandbox: SandboxConfig::default(),
            stripe: StripeConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Signs the sandbox's webhooks. Unset: a random secret per process, which only works
    /// when one process serves the webhooks (the embedded shop); replicas must share one.
    #[serde(deserialize_with = "platform::config::lenient_secret")]
    pub webhook_secret: Option<SecretString>,
    /// Where the sandbox delivers its webhooks; this service's own endpoint when unset.
    pub webhook_url: Option<String>,
    /// Whether the sandbox sends webhooks at all.
    pub webhooks: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self { webhook_secret: None, webhook_url: None, webhooks: true }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    /// The API's base URL (`https://api.stripe.com`; `localstripe` in tests).
    pub api_base: String,
    #[serde(deserialize_with = "platform::config::lenient_secret")]
    pub secret_key: Option<SecretString>,
    /// The endpoint secret (`whsec_…`) that signs Stripe's webhooks.
    #[serde(deserialize_with = "platform::config::lenient_secret")]
    pub webhook_secret: Option<SecretString>,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self { api_base: "https://api.stripe.com".to_owned(), secret_key: None, webhook_secret: None }
    }
}

impl Config {
    /// Checks what types alone cannot; each message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        problems.extend(platform::db::check_database_url("orders", self.database_url.as_deref()));
        for (key, url) in [("catalog_url", &self.catalog_url), ("cart_url", &self.cart_url)] {
            problems.extend(platform::grpc::check_peer_urls(&format!("orders.{key}"), url));
        }
        if self.rpc_timeout.is_zero() || self.payments.timeout.is_zero() {
            problems.push("orders.rpc_timeout and orders.payments.timeout must be positive".to_owned());
        }
        if self.saga_lease < Duration::from_millis(300) {
            problems.push("orders.saga_lease must be at least 300ms (it is renewed every third of it)".to_owned());
        }
        if self.sweep_interval.is_zero() || self.reservation_ttl < Duration::from_secs(1) {
            problems.push("orders.sweep_interval and orders.reservation_ttl must be positive".to_owned());
        }
        if self.number_prefix.len() > 16 {
            problems.push("orders.number_prefix must be at most 16 characters".to_owned());
        }
        match self.payments.provider.as_str() {
            "sandbox" => {}
            "stripe" if self.payments.stripe.secret_key.is_none() => {
                problems.push("orders.payments.stripe.secret_key is required with the stripe provider".to_owned());
            }
            "stripe" => {}
            _ => problems.push("orders.payments.provider must be sandbox or stripe".to_owned()),
        }
        if let Err(problem) = self.pricing.validate() {
            problems.push(problem);
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}
