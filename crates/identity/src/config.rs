//! The identity service's configuration.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use platform::db::PoolConfig;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// Identity's internal gRPC service (contacts and one-time links, for notifications).
    pub grpc_listen: SocketAddr,
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
    /// Email verification and password reset links.
    pub links: LinksConfig,
    /// How many `X-Forwarded-For` entries, counted from the right, were added by proxies we
    /// trust (the gateway adds one). The entry before them is the client's address.
    pub trusted_proxy_hops: usize,
    /// How often a replica re-reads the signing keys, to pick up a rotation made elsewhere.
    #[serde(with = "humantime_serde")]
    pub key_reload_interval: Duration,
    /// Sign-in with Google, GitHub, Facebook and OpenID Connect providers.
    pub social: SocialConfig,
    /// The master key that seals the signing keys and the link secret in the database.
    pub secrets: platform::secrets::MasterKeyConfig,
    /// Set from `EMPORIUM_BOOTSTRAP_ADMIN_EMAIL` / `_PASSWORD`.
    #[serde(skip)]
    pub bootstrap_admin: Option<BootstrapAdmin>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 9081)),
            database_url: None,
            pool: PoolConfig::default(),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            session_max_age: Duration::from_secs(90 * 24 * 3600),
            password_hashing: HashingConfig::default(),
            login_throttle: ThrottleConfig::default(),
            links: LinksConfig::default(),
            trusted_proxy_hops: 1,
            key_reload_interval: Duration::from_secs(60),
            social: SocialConfig::default(),
            secrets: platform::secrets::MasterKeyConfig::default(),
            bootstrap_admin: None,
        }
    }
}

/// argon2id cost parameters. The defaults are OWASP's recommendation (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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

/// One-time links sent by email, and how often they may be asked for.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct LinksConfig {
    /// How long an email verification link works.
    #[serde(with = "humantime_serde")]
    pub verify_email_ttl: Duration,
    /// How long a password reset link works.
    #[serde(with = "humantime_serde")]
    pub reset_password_ttl: Duration,
    /// Links asked for one account (or one address, for a reset) per window.
    pub max_per_account: u32,
    /// Links asked for from one client address per window.
    pub max_per_address: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for LinksConfig {
    fn default() -> Self {
        Self {
            verify_email_ttl: Duration::from_secs(24 * 3600),
            reset_password_ttl: Duration::from_secs(30 * 60),
            max_per_account: 3,
            max_per_address: 20,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// Social sign-in: the providers, and where a sign-in may begin and end.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct SocialConfig {
    /// The shop's public address as browsers reach the gateway; providers send the browser back
    /// to `{public_url}/api/v1/auth/oauth/{provider}/callback`, which is the redirect URI to
    /// register with each provider.
    pub public_url: String,
    /// The client redirect URIs a sign-in may end at, compared exactly (no prefixes, no
    /// wildcards): anything else is refused, so the one-time code never reaches a stranger.
    pub redirect_uris: Vec<String>,
    /// Providers by id: the id is the `{provider}` of the URLs and what `GET /auth/providers`
    /// lists (`EMPORIUM_IDENTITY__SOCIAL__PROVIDERS__GOOGLE__CLIENT_SECRET`, …).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Deadline of each call to a provider.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for SocialConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".to_owned(),
            redirect_uris: Vec::new(),
            providers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What kind of provider, which decides the protocol and the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenID Connect provider, found by its `issuer` (Keycloak, Entra ID, Okta, Auth0, …).
    Oidc,
    /// Google: OpenID Connect at `https://accounts.google.com`.
    Google,
    /// GitHub: OAuth 2.0, then the REST API for the user and their verified emails.
    Github,
    /// Facebook: OAuth 2.0 with PKCE, then the Graph API for the user.
    Facebook,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Shown on sign-in buttons; by default the kind's name (or the id, for `oidc`).
    #[serde(default)]
    pub name: Option<String>,
    pub client_id: String,
    /// The client secret; or read it from `client_secret_file`. Never logged.
    #[serde(default, deserialize_with = "platform::config::lenient_secret")]
    pub client_secret: Option<SecretString>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// OpenID Connect: the issuer, whose discovery document names the endpoints and keys
    /// (`https://accounts.google.com` for `google`).
    #[serde(default)]
    pub issuer: Option<String>,
    /// OAuth 2.0 providers' endpoints, for a stand-in or a regional host; the provider's own by
    /// default.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// GitHub's REST API (`https://api.github.com`) or Facebook's Graph API
    /// (`https://graph.facebook.com/v21.0`).
    #[serde(default)]
    pub api_base: Option<String>,
    /// Scopes asked for; the kind's by default (`openid email profile`, `read:user user:email`,
    /// `email public_profile`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Whether this provider's word that an email is verified is taken: only a vouched-for
    /// email makes an account or joins one. True by default, except for Facebook, which says
    /// nothing about it. Set false for an identity provider whose users edit their own email.
    #[serde(default)]
    pub trust_verified_email: Option<bool>,
}

impl ProviderConfig {
    pub fn trusts_verified_email(&self) -> bool {
        self.trust_verified_email.unwrap_or(self.kind != ProviderKind::Facebook)
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
        if self.access_token_ttl > platform::auth::MAX_ACCESS_TOKEN_TTL
            || self.access_token_ttl < Duration::from_secs(10)
        {
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
        let l = &self.links;
        if l.max_per_account == 0 || l.max_per_address == 0 || l.window.is_zero() {
            problems.push("identity.links limits and window must be positive".to_owned());
        }
        if l.verify_email_ttl < Duration::from_secs(60) || l.reset_password_ttl < Duration::from_secs(60) {
            problems.push("identity.links lifetimes must be at least a minute".to_owned());
        }
        problems.extend(platform::db::check_database_url("identity", self.database_url.as_deref()));
        self.social.check(&mut problems);
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

fn is_http_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://")) && url.parse::<http::Uri>().is_ok()
}

/// Whether secrets and codes may be sent to `url`: HTTPS, or plain HTTP to this machine only
/// (a local stand-in).
pub fn is_private_channel(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else { return false };
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => true,
        (Some("http"), Some(host)) => matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1"),
        _ => false,
    }
}

impl SocialConfig {
    fn check(&self, problems: &mut Vec<String>) {
        if !is_http_url(&self.public_url) {
            problems.push("identity.social.public_url must be an http(s) URL".to_owned());
        }
        for uri in &self.redirect_uris {
            if !is_http_url(uri) || uri.contains('#') {
                problems.push(format!(
                    "identity.social.redirect_uris: {uri:?} must be an absolute http(s) URL without a fragment"
                ));
            }
        }
        if !self.providers.is_empty() && self.redirect_uris.is_empty() {
            problems.push("identity.social.redirect_uris must list where sign-ins may end".to_owned());
        }
        if self.timeout.is_zero() {
            problems.push("identity.social.timeout must be positive".to_owned());
        }
        for (id, provider) in &self.providers {
            let key = format!("identity.social.providers.{id}");
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                problems.push(format!("{key}: the id must be lower-case letters, digits and dashes"));
            }
            if provider.client_id.trim().is_empty() {
                problems.push(format!("{key}.client_id is required"));
            }
            if provider.client_secret.is_none() && provider.client_secret_file.is_none() {
                problems.push(format!("{key}.client_secret (or client_secret_file) is required"));
            }
            if provider.kind == ProviderKind::Oidc && provider.issuer.is_none() {
                problems.push(format!("{key}.issuer is required for an oidc provider"));
            }
            for (name, url) in [
                ("issuer", &provider.issuer),
                ("authorization_endpoint", &provider.authorization_endpoint),
                ("token_endpoint", &provider.token_endpoint),
                ("api_base", &provider.api_base),
            ] {
                if let Some(url) = url
                    && !is_private_channel(url)
                {
                    problems.push(format!("{key}.{name} must be an https URL (plain http only to this machine)"));
                }
            }
        }
    }
}
