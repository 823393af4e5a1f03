//! The gateway's configuration: where it listens, its limits, and the routing table.
//!
//! Routing is data: each route maps a path prefix to an upstream pool and says whether it needs
//! a token. Adding a service is a few lines here, not code.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (413 beyond).
    pub body_limit: usize,
    pub cors: CorsConfig,
    /// Upstream pools by name. Built-in pools stay unless configured otherwise, so setting one
    /// pool's URLs from the environment does not drop the others.
    #[serde(deserialize_with = "upstreams_with_defaults")]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub rate_limits: crate::limits::LimitsConfig,
    /// Terminate TLS here (HTTP/2 and HTTP/1.1 to clients, and HSTS on every answer); none
    /// serves plain HTTP, for a load balancer or a laptop.
    pub tls: Option<TlsConfig>,
    /// Timeouts and sizes that hold slow and greedy clients to a bounded share of the gateway
    /// (every service runs with the defaults).
    pub connections: platform::server::ConnectionLimits,
}

/// The gateway's certificate chain and private key, as PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    /// The `Strict-Transport-Security` max-age: browsers use only HTTPS this long after a visit.
    #[serde(with = "humantime_serde", default = "a_year")]
    pub hsts_max_age: Duration,
}

fn a_year() -> Duration {
    Duration::from_secs(365 * 24 * 3600)
}

impl Default for Config {
    fn default() -> Self {
        let pool = |url: &str| UpstreamConfig { urls: vec![url.to_owned()], ..UpstreamConfig::default() };
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit: 1024 * 1024,
            cors: CorsConfig::default(),
            upstreams: BTreeMap::from([
                ("identity".to_owned(), pool("http://127.0.0.1:8081")),
                ("catalog".to_owned(), pool("http://127.0.0.1:8082")),
                ("cart".to_owned(), pool("http://127.0.0.1:8083")),
                ("orders".to_owned(), pool("http://127.0.0.1:8084")),
                ("notifications".to_owned(), pool("http://127.0.0.1:8085")),
                ("storefront".to_owned(), pool("http://127.0.0.1:8086")),
            ]),
            routes: vec![
                RouteConfig::new("/api/v1/auth", "identity", AuthPolicy::None),
                RouteConfig::new("/api/v1/users", "identity", AuthPolicy::Required),
                RouteConfig::new("/.well-known/jwks.json", "identity", AuthPolicy::None),
                RouteConfig::new("/api/v1/products", "catalog", AuthPolicy::Optional),
                RouteConfig::new("/api/v1/categories", "catalog", AuthPolicy::Optional),
                RouteConfig::new("/api/v1/inventory", "catalog", AuthPolicy::Required),
                RouteConfig::new("/api/v1/carts", "cart", AuthPolicy::Optional),
                RouteConfig::new("/api/v1/orders", "orders", AuthPolicy::Required),
                RouteConfig::new("/api/v1/admin/orders", "orders", AuthPolicy::Required),
                RouteConfig::new("/api/v1/admin/notifications", "notifications", AuthPolicy::Required),
                // Providers sign their notifications; they carry no token.
                RouteConfig::new("/api/v1/payments", "orders", AuthPolicy::None),
            ]
            .into_iter()
            .chain(STOREFRONT_PAGES.iter().map(|prefix| RouteConfig::new(prefix, "storefront", AuthPolicy::None)))
            .collect(),
            rate_limits: crate::limits::LimitsConfig::default(),
            connections: platform::server::ConnectionLimits::default(),
            tls: None,
        }
    }
}

/// The storefront's pages (API.md, Storefront). Its session is a cookie, not a bearer token: the
/// gateway leaves checking it to the storefront.
pub const STOREFRONT_PAGES: [&str; 14] = [
    "/",
    "/search",
    "/c",
    "/p",
    "/cart",
    "/checkout",
    "/account",
    "/login",
    "/register",
    "/logout",
    "/orders",
    "/robots.txt",
    "/sitemap.xml",
    "/static",
];

fn upstreams_with_defaults<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, UpstreamConfig>, D::Error> {
    let mut upstreams = BTreeMap::<String, UpstreamConfig>::deserialize(deserializer)?;
    for (name, default) in Config::default().upstreams {
        upstreams.entry(name).or_insert(default);
    }
    Ok(upstreams)
}

/// Who may pass a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthPolicy {
    /// Tokens are not looked at (login, registration, public keys).
    None,
    /// Anonymous callers pass; a token, when sent, must be valid.
    Optional,
    /// A valid token is required.
    Required,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Matches this path and everything below it (`/api/v1/users` matches `/api/v1/users/me`).
    pub prefix: String,
    pub upstream: String,
    #[serde(default = "default_policy")]
    pub auth: AuthPolicy,
}

fn default_policy() -> AuthPolicy {
    AuthPolicy::Optional
}

impl RouteConfig {
    pub fn new(prefix: &str, upstream: &str, auth: AuthPolicy) -> Self {
        Self { prefix: prefix.to_owned(), upstream: upstream.to_owned(), auth }
    }
}

/// A pool of replicas of one service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URLs of the replicas (`http://host:port`).
    pub urls: Vec<String>,
    /// Time allowed for the response headers (504 beyond).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Time allowed to open a connection (the replica counts as down beyond).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a replica that refused a connection, timed out or failed its readiness probe is
    /// skipped the first time; each failure in a row doubles it, up to `max_down_for`.
    #[serde(with = "humantime_serde")]
    pub down_for: Duration,
    #[serde(with = "humantime_serde")]
    pub max_down_for: Duration,
    /// Where replicas answer whether they are ready (200) or not; `None` turns probing off.
    pub health_path: Option<String>,
    /// How often every replica's readiness is probed; a replica that is skipped comes back as
    /// soon as a probe finds it ready.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Retries of requests that reached a replica, as a share of requests (0.2: at most 20%
    /// extra load), on top of `min_retries_per_second`.
    pub retry_budget: f64,
    pub min_retries_per_second: u32,
    /// Where the service publishes its OpenAPI document; `None` when it has none.
    pub openapi_path: Option<String>,
    /// Requests in flight to the service at most (see `admission`): the limit adapts below this
    /// to keep answers within `latency_target`; a request waits up to `queue_timeout` for a
    /// place, then is answered 503 with `Retry-After`.
    pub max_in_flight: u32,
    #[serde(with = "humantime_serde")]
    pub latency_target: Duration,
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Requests that may wait for a place at most (at least as many as may be in flight); more
    /// are answered 503 at once.
    pub queue_length: u32,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            down_for: Duration::from_secs(2),
            max_down_for: Duration::from_secs(30),
            health_path: Some("/health/ready".to_owned()),
            probe_interval: Duration::from_secs(5),
            retry_budget: 0.2,
            min_retries_per_second: 5,
            openapi_path: Some("/openapi.json".to_owned()),
            max_in_flight: 1024,
            latency_target: Duration::from_secs(1),
            queue_timeout: Duration::from_millis(500),
            queue_length: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to call the API from a browser (`https://shop.example.com`); `*` allows any.
    pub allowed_origins: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self { allowed_origins: Vec::new(), max_age: Duration::from_secs(600) }
    }
}

impl Config {
    /// Checks what types alone cannot; each message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.body_limit == 0 {
            problems.push("gateway.body_limit must be positive".to_owned());
        }
        let mut seen = std::collections::BTreeSet::new();
        for route in &self.routes {
            if !seen.insert(route.prefix.as_str()) {
                problems.push(format!("gateway route prefix {:?} appears twice", route.prefix));
            }
            if !route.prefix.starts_with('/') || (route.prefix.len() > 1 && route.prefix.ends_with('/')) {
                problems.push(format!("gateway route prefix {:?} must start with / and not end with /", route.prefix));
            }
            if route.prefix.contains('{') || route.prefix.contains('}') {
                problems.push(format!("gateway route prefix {:?} must not contain braces", route.prefix));
            }
            if !self.upstreams.contains_key(&route.upstream) {
                problems.push(format!("gateway route {:?} names unknown upstream {:?}", route.prefix, route.upstream));
            }
        }
        for (name, upstream) in &self.upstreams {
            if upstream.urls.is_empty() {
                problems.push(format!("gateway.upstreams.{name}.urls is empty"));
            }
            if !(0.0..=1.0).contains(&upstream.retry_budget) {
                problems.push(format!("gateway.upstreams.{name}.retry_budget must be between 0 and 1"));
            }
            if upstream.probe_interval.is_zero() || upstream.down_for.is_zero() {
                problems.push(format!("gateway.upstreams.{name}: probe_interval and down_for must be positive"));
            }
            if upstream.max_in_flight == 0 || upstream.latency_target.is_zero() {
                problems.push(format!("gateway.upstreams.{name}: max_in_flight and latency_target must be positive"));
            }
            if upstream.health_path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                problems.push(format!("gateway.upstreams.{name}.health_path must start with /"));
            }
            for url in &upstream.urls {
                match url.parse::<http::Uri>() {
                    Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {}
                    _ => {
                        problems.push(format!("gateway.upstreams.{name}.urls: {url:?} is not an http://host:port URL"))
                    }
                }
            }
        }
        problems.extend(self.rate_limits.validate());
        for origin in &self.cors.allowed_origins {
            if origin != "*" && origin.parse::<http::HeaderValue>().is_err() {
                problems.push(format!("gateway.cors.allowed_origins: {origin:?} is not a valid origin"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn reports_unknown_upstreams_and_bad_urls() {
        let mut config = Config::default();
        config.routes.push(RouteConfig::new("/api/v1/things/", "things", AuthPolicy::None));
        config.upstreams.get_mut("identity").unwrap().urls = vec!["ftp://x".to_owned()];
        let error = config.validate().unwrap_err();
        assert!(error.contains("unknown upstream \"things\""), "{error}");
        assert!(error.contains("not end with /"), "{error}");
        assert!(error.contains("ftp://x"), "{error}");
    }
}
