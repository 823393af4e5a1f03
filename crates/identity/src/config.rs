//! The identity service's configuration.

use std::{net::SocketAddr, time::Duration};

use platform::db::PoolConfig;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub listen: SocketAddr,
    /// `postgres://…` or `sqlite://…`; the embedded SQLite file under the data directory when unset.
    pub database_url: Option<String>,
    pub pool: PoolConfig,
    /// Lifetime of access tokens (at most 15 minutes).
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// Lifetime of one refresh token; each use rotates it and starts a new one.
    #[serde(with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    /// Lifetime of a login session however often it is refreshed.
    #[serde(with = "humantime_serde")]
    pub session_max_age: Duration,
    pub password_hashing: HashingConfig,
    pub login_throttle: ThrottleConfig,
    /// How many `X-Forwarded-For` entries, counted from the right, were added by proxies we
    /// trust (the gateway adds one). The entry before them is the client's address.
    pub trusted_proxy_hops: usize,
    /// How often a replica re-reads the signing keys, to pick up a rotation made elsewhere.
    #[serde(with = "humantime_serde")]
    pub key_reload_interval: Duration,
    /// Set from `EMPORIUM_BOOTSTRAP_ADMIN_EMAIL` / `_PASSWORD`.
    #[serde(skip)]
    pub bootstrap_admin: Option<BootstrapAdmin>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            database_url: None,
            pool: PoolConfig::default(),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            session_max_age: Duration::from_secs(90 * 24 * 3600),
            password_hashing: HashingConfig::default(),
            login_throttle: ThrottleConfig::default(),
            trusted_proxy_hops: 1,
            key_reload_interval: Duration::from_secs(60),
            bootstrap_admin: None,
        }
    }
}

/// argon2id cost parameters. The defaults are OWASP's recommendation (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HashingConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; each holds `memory_kib` of memory while it runs.
    pub max_concurrent: usize,
}

impl Default for HashingConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1, max_concurrent: cores * 2 }
    }
}

/// Failed logins tolerated per window before further attempts get 429.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ThrottleConfig {
    pub max_failures_per_account: u32,
    pub max_failures_per_address: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self { max_failures_per_account: 5, max_failures_per_address: 50, window: Duration::from_secs(15 * 60) }
    }
}

/// The administrator created at start-up when it does not exist yet.
#[derive(Debug, Clone)]
pub struct BootstrapAdmin {
    pub email: String,
    pub password: SecretString,
}

impl Config {
    /// Checks what types alone cannot; each message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.access_token_ttl > Duration::from_secs(15 * 60) || self.access_token_ttl < Duration::from_secs(10) {
            problems.push("identity.access_token_ttl must be between 10s and 15m".to_owned());
        }
        if self.refresh_token_ttl < self.access_token_ttl {
            problems.push("identity.refresh_token_ttl must be longer than identity.access_token_ttl".to_owned());
        }
        if self.session_max_age < self.refresh_token_ttl {
            problems.push("identity.session_max_age must be at least identity.refresh_token_ttl".to_owned());
        }
        let h = &self.password_hashing;
        if argon2::Params::new(h.memory_kib, h.iterations, h.parallelism, None).is_err() {
            problems.push("identity.password_hashing has invalid argon2 parameters".to_owned());
        }
        if h.max_concurrent == 0 {
            problems.push("identity.password_hashing.max_concurrent must be at least 1".to_owned());
        }
        let t = &self.login_throttle;
        if t.max_failures_per_account == 0 || t.max_failures_per_address == 0 || t.window.is_zero() {
            problems.push("identity.login_throttle limits and window must be positive".to_owned());
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:"))
        {
            problems.push("identity.database_url must start with sqlite: or postgres:".to_owned());
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}
