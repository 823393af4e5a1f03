//! Rate limits: a budget per kind of request (authentication, writes, reads) and per client, the
//! signed-in user or else the client's address.
//!
//! Each budget is a GCRA (generic cell rate algorithm): `requests` per `per`, all of which may come
//! at once, then one every `per / requests`. Its whole state per client is one timestamp, the
//! theoretical arrival time, kept in Redis when gateway replicas share the budgets (one Lua script
//! reads the Redis clock, decides and writes) or in this process otherwise. Every answer carries
//! the IETF draft's `RateLimit-Policy` and `RateLimit` headers; a refused request gets 429 with
//! `Retry-After`.
//!
//! A Redis that is down or slow must not take the shop with it: reads then pass unchecked, and
//! authentication and writes fall back to this replica's own budgets, until Redis answers again.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::ConnectInfo,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, Method};
use platform::{ErrorCode, Problem};
use redis::{Script, aio::ConnectionManager};
use serde::Deserialize;

/// Redis calls taking longer than this count as Redis being down: a limit check must stay cheap.
const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// After Redis failed, how long the local budgets stand in before Redis is tried again.
const REDIS_BACKOFF: Duration = Duration::from_secs(2);
/// The local table is swept of clients whose budgets are whole again once it holds this many.
const LOCAL_SWEEP_AT: usize = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub enabled: bool,
    /// Redis shared by every gateway replica (`redis://host:6379`); none counts in this process,
    /// as the one-process shop does.
    pub redis_url: Option<String>,
    pub key_prefix: String,
    /// Proxies in front of the gateway, as addresses or networks (`10.0.0.7`, `10.42.0.0/16`):
    /// for requests from them, the client is the last address in `X-Forwarded-For` that is not
    /// one of them.
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Sign-in, registration, token refresh, password reset: per client address.
    pub auth: Quota,
    /// Anything but GET and HEAD.
    pub write: Quota,
    pub read: Quota,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            redis_url: None,
            key_prefix: "emporium".to_owned(),
            trusted_proxies: Vec::new(),
            auth: Quota { requests: 30, per: Duration::from_secs(60) },
            write: Quota { requests: 300, per: Duration::from_secs(60) },
            read: Quota { requests: 1200, per: Duration::from_secs(60) },
        }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, quota) in [("auth", &self.auth), ("write", &self.write), ("read", &self.read)] {
            if quota.requests == 0 || quota.per.is_zero() {
                problems.push(format!("gateway.rate_limits.{name}: requests and per must be positive"));
            } else if quota.per.as_millis() < u128::from(quota.requests) {
                problems.push(format!("gateway.rate_limits.{name}: at most one request per millisecond"));
            }
        }
        if let Some(url) = &self.redis_url
            && !url.starts_with("redis://")
            && !url.starts_with("rediss://")
        {
            problems.push(format!("gateway.rate_limits.redis_url: {url:?} is not a redis:// URL"));
        }
        problems
    }
}

/// Addresses (one host each) or networks in CIDR notation.
fn networks<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("{text:?} is neither an IP address nor a network")))
        })
        .collect()
}

/// `requests` per `per` (a minute unless said), all of which may be spent at once.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub requests: u32,
    #[serde(with = "humantime_serde", default = "a_minute")]
    pub per: Duration,
}

fn a_minute() -> Duration {
    Duration::from_secs(60)
}

impl Quota {
    /// The GCRA's emission interval and burst tolerance, in milliseconds.
    fn cells(&self) -> (u64, u64) {
        let window = self.per.as_millis() as u64;
        let interval = (window / u64::from(self.requests)).max(1);
        (interval, window.saturating_sub(interval))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Budget {
    Auth,
    Write,
    Read,
}

impl Budget {
    pub fn of(method: &Method, path: &str) -> Self {
        // The storefront's forms that sign in or make an account are guessed at like the API's.
        let signs_in = method == Method::POST && matches!(path, "/login" | "/register" | "/checkout/guest");
        if path.starts_with("/api/v1/auth") || signs_in {
            Self::Auth
        } else if method == Method::GET || method == Method::HEAD {
            Self::Read
        } else {
            Self::Write
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Write => "write",
            Self::Read => "read",
        }
    }
}

/// Whose budget a request spends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    User(uuid::Uuid),
    Address(IpAddr),
}

impl Client {
    fn key(&self) -> String {
        match self {
            Self::User(id) => format!("u:{id}"),
            Self::Address(ip) => format!("a:{ip}"),
        }
    }
}

/// What a check decided, for the answer's headers.
#[derive(Debug, Clone)]
pub struct Decision {
    budget: Budget,
    quota: Quota,
    allowed: bool,
    /// Requests left in the burst.
    remaining: u64,
    /// Seconds until the whole quota is back.
    reset: u64,
    /// Seconds until a refused request may be sent again.
    retry_after: u64,
}

impl Decision {
    /// From the GCRA state after the check: how far (ms) the theoretical arrival time runs ahead
    /// of now.
    fn new(budget: Budget, quota: Quota, allowed: bool, ahead_ms: u64) -> Self {
        let (interval, tolerance) = quota.cells();
        let remaining = if allowed { (tolerance + interval).saturating_sub(ahead_ms) / interval } else { 0 };
        let retry_after = ahead_ms.saturating_sub(tolerance).div_ceil(1000).max(1);
        Self { budget, quota, allowed, remaining, reset: ahead_ms.div_ceil(1000), retry_after }
    }

    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// `RateLimit-Policy: "read";q=1200;w=60` and `RateLimit: "read";r=1199;t=1`.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        let name = self.budget.name();
        let policy = format!("\"{name}\";q={};w={}", self.quota.requests, self.quota.per.as_secs().max(1));
        let state = format!("\"{name}\";r={};t={}", self.remaining, self.reset);
        if let (Ok(policy), Ok(state)) = (HeaderValue::from_str(&policy), HeaderValue::from_str(&state)) {
            headers.insert("ratelimit-policy", policy);
            headers.insert("ratelimit", state);
        }
    }

    /// The 429 for a refused request.
    pub fn refusal(&self) -> Response {
        metrics::counter!("gateway_rate_limited_total", "budget" => self.budget.name()).increment(1);
        let detail = format!("too many {} requests: try again in {} s", self.budget.name(), self.retry_after);
        let mut response =
            Problem::with_detail(ErrorCode::TooManyRequests, detail).retry_after(self.retry_after).into_response();
        self.add_headers(response.headers_mut());
        response
    }
}

/// GCRA over ms timestamps: whether a request at `now` passes given the stored theoretical
/// arrival time, and the new one. The Lua script below is the same arithmetic.
fn gcra(tat: Option<u64>, now: u64, quota: Quota) -> (bool, u64) {
    let (interval, tolerance) = quota.cells();
    let tat = tat.unwrap_or(now).max(now);
    if now + tolerance < tat {
        return (false, tat);
    }
    (true, tat + interval)
}

static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
if now + tolerance < tat then return {0, tat - now} end
tat = tat + interval
redis.call('SET', KEYS[1], tat, 'PX', tat - now)
return {1, tat - now}
"#,
    )
});

/// Budgets kept in this process.
#[derive(Default)]
struct Local {
    table: Mutex<LocalTable>,
}

#[derive(Default)]
struct LocalTable {
    /// Theoretical arrival times (ms since `epoch`) by budget and client.
    arrivals: HashMap<(Budget, Client), u64>,
    /// The size at which whole budgets are next swept out: twice what a sweep left, so that a
    /// table of many live clients is not scanned on every request.
    sweep_at: usize,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Local {
    fn check(&self, budget: Budget, client: &Client, quota: Quota) -> Decision {
        let now = EPOCH.elapsed().as_millis() as u64;
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.arrivals.len() >= table.sweep_at.max(LOCAL_SWEEP_AT) {
            table.arrivals.retain(|_, tat| *tat > now);
            table.sweep_at = table.arrivals.len() * 2;
        }
        let key = (budget, client.clone());
        let (allowed, tat) = gcra(table.arrivals.get(&key).copied(), now, quota);
        if allowed {
            table.arrivals.insert(key, tat);
        }
        Decision::new(budget, quota, allowed, tat - now)
    }
}

/// Budgets shared through Redis.
struct Shared {
    connection: ConnectionManager,
    prefix: String,
    /// Until when (ms since `EPOCH`) Redis is not asked, after it failed.
    skip_until: AtomicU64,
}

impl Shared {
    async fn check(&self, budget: Budget, client: &Client, quota: Quota) -> Result<Decision, String> {
        let (interval, tolerance) = quota.cells();
        let key = format!("{}:ratelimit:{}:{}", self.prefix, budget.name(), client.key());
        let mut invocation = GCRA.key(key);
        invocation.arg(interval).arg(tolerance);
        let mut connection = self.connection.clone();
        let call = platform::telemetry::calls::redis(
            crate::SERVICE,
            "rate_limit",
            tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async::<(u8, u64)>(&mut connection)),
        );
        match call.await {
            Ok(Ok((allowed, ahead))) => Ok(Decision::new(budget, quota, allowed == 1, ahead)),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {REDIS_TIMEOUT:?}")),
        }
    }
}

pub struct Limiter {
    config: LimitsConfig,
    local: Local,
    shared: Option<Shared>,
}

impl Limiter {
    pub fn new(config: &LimitsConfig) -> Result<Self, String> {
        let shared = match &config.redis_url {
            Some(url) if config.enabled => {
                let client =
                    redis::Client::open(url.as_str()).map_err(|e| format!("gateway.rate_limits.redis_url: {e}"))?;
                let settings = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(0)
                    .set_max_delay(Duration::from_secs(1));
                let connection = ConnectionManager::new_lazy_with_config(client, settings)
                    .map_err(|e| format!("gateway.rate_limits.redis_url: {e}"))?;
                platform::telemetry::calls::register_redis(crate::SERVICE, &["rate_limit"]);
                Some(Shared { connection, prefix: config.key_prefix.clone(), skip_until: AtomicU64::new(0) })
            }
            _ => None,
        };
        for budget in [Budget::Auth, Budget::Write, Budget::Read] {
            metrics::counter!("gateway_rate_limited_total", "budget" => budget.name()).absolute(0);
        }
        Ok(Self { config: config.clone(), local: Local::default(), shared })
    }

    fn quota(&self, budget: Budget) -> Quota {
        match budget {
            Budget::Auth => self.config.auth,
            Budget::Write => self.config.write,
            Budget::Read => self.config.read,
        }
    }

    /// Spends one request of `client`'s `budget`; `None` when nothing was counted (limits off, or
    /// a read while shared budgets cannot be reached).
    pub async fn check(&self, budget: Budget, client: &Client) -> Option<Decision> {
        if !self.config.enabled {
            return None;
        }
        let quota = self.quota(budget);
        let Some(shared) = &self.shared else { return Some(self.local.check(budget, client, quota)) };
        let now = EPOCH.elapsed().as_millis() as u64;
        if shared.skip_until.load(Ordering::Relaxed) <= now {
            match shared.check(budget, client, quota).await {
                Ok(decision) => return Some(decision),
                Err(error) => {
                    let until = now + REDIS_BACKOFF.as_millis() as u64;
                    shared.skip_until.store(until, Ordering::Relaxed);
                    tracing::warn!(error = %error, retry_in = ?REDIS_BACKOFF, "rate limits cannot reach Redis: reads pass unchecked, other requests count against this replica's own budgets");
                    metrics::counter!("gateway_rate_limit_store_errors_total").increment(1);
                }
            }
        }
        (budget != Budget::Read).then(|| self.local.check(budget, client, quota))
    }

    /// Whether the connection's peer is one of the trusted proxies.
    pub fn trusts(&self, peer: Option<&ConnectInfo<SocketAddr>>) -> bool {
        peer.is_some_and(|peer| self.config.trusted_proxies.iter().any(|net| net.contains(&peer.0.ip())))
    }

    /// The client a request comes from: the peer, or past trusted proxies, the last address they
    /// forwarded for.
    pub fn address(&self, headers: &HeaderMap, peer: Option<&ConnectInfo<SocketAddr>>) -> Option<IpAddr> {
        let peer = peer?.0.ip();
        let trusted = |ip: &IpAddr| self.config.trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        Some(forwarded.into_iter().rev().find(|a| !trusted(a)).unwrap_or(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_PER_MINUTE: Quota = Quota { requests: 5, per: Duration::from_secs(60) };

    #[test]
    fn a_burst_of_the_quota_passes_then_one_per_interval() {
        let (mut tat, mut now) = (None, 1_000_000);
        for _ in 0..5 {
            let (allowed, next) = gcra(tat, now, FIVE_PER_MINUTE);
            assert!(allowed);
            tat = Some(next);
        }
        assert!(!gcra(tat, now, FIVE_PER_MINUTE).0, "the sixth at once is refused");
        now += 11_999;
        assert!(!gcra(tat, now, FIVE_PER_MINUTE).0, "not before one interval (12 s)");
        now += 1;
        assert!(gcra(tat, now, FIVE_PER_MINUTE).0);
    }

    #[test]
    fn decisions_report_what_is_left_and_when_to_retry() {
        let local = Local::default();
        let client = Client::Address("192.0.2.1".parse().unwrap());
        let first = local.check(Budget::Read, &client, FIVE_PER_MINUTE);
        assert_eq!((first.allowed, first.remaining, first.reset), (true, 4, 12));
        for _ in 0..4 {
            assert!(local.check(Budget::Read, &client, FIVE_PER_MINUTE).allowed);
        }
        let refused = local.check(Budget::Read, &client, FIVE_PER_MINUTE);
        assert_eq!((refused.allowed, refused.remaining), (false, 0));
        assert!((11..=12).contains(&refused.retry_after), "{}", refused.retry_after);
        let mut headers = HeaderMap::new();
        refused.add_headers(&mut headers);
        assert_eq!(headers["ratelimit-policy"], "\"read\";q=5;w=60");
        assert!(headers["ratelimit"].to_str().unwrap().starts_with("\"read\";r=0;t="));
        // Budgets are per kind and per client.
        assert!(local.check(Budget::Write, &client, FIVE_PER_MINUTE).allowed);
        assert!(local.check(Budget::Read, &Client::User(uuid::Uuid::new_v4()), FIVE_PER_MINUTE).allowed);
    }

    #[test]
    fn the_client_is_found_past_trusted_proxies_only() {
        let trusted = serde_json::json!({"trusted_proxies": ["10.0.0.1", "10.42.0.0/16"]});
        let config: LimitsConfig = serde_json::from_value(trusted).unwrap();
        let wrong = serde_json::json!({"trusted_proxies": ["proxy"]});
        assert!(serde_json::from_value::<LimitsConfig>(wrong).is_err());
        let limiter = Limiter::new(&config).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.0.0.1"));
        let via_proxy = ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 4000)));
        assert_eq!(limiter.address(&headers, Some(&via_proxy)), Some("198.51.100.7".parse().unwrap()));
        let direct = ConnectInfo(SocketAddr::from(([192, 0, 2, 5], 4000)));
        assert_eq!(
            limiter.address(&headers, Some(&direct)),
            Some("192.0.2.5".parse().unwrap()),
            "spoofable header ignored"
        );
        // A proxy of a trusted network, behind another.
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 10.42.7.1"));
        let pod = ConnectInfo(SocketAddr::from(([10, 42, 3, 4], 4000)));
        assert_eq!(limiter.address(&headers, Some(&pod)), Some("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn requests_fall_into_their_budgets() {
        assert_eq!(Budget::of(&Method::POST, "/api/v1/auth/login"), Budget::Auth);
        assert_eq!(Budget::of(&Method::GET, "/api/v1/products"), Budget::Read);
        assert_eq!(Budget::of(&Method::HEAD, "/api/v1/products"), Budget::Read);
        assert_eq!(Budget::of(&Method::DELETE, "/api/v1/carts/x"), Budget::Write);
    }
}
