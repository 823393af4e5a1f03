//! Who is calling: access-token verification and the caller extractors.
//!
//! Access tokens are EdDSA-signed JWTs issued by the identity service. Every service (and the
//! gateway) verifies them locally against the issuer's public keys: a [`Verifier`] fed either
//! by the identity service's JWKS over HTTP (cached; refetched on an unknown `kid`, at most once
//! per cool-down so forged `kid`s cannot make it hammer the issuer) or, inside identity itself,
//! by the keys it holds.
//!
//! Verified tokens are remembered until they expire: a client presents the same token for many
//! requests, and an Ed25519 verification costs far more than a lookup. Only tokens that passed
//! full verification are remembered, never past their `exp`, and the memory is dropped whenever
//! the key set changes (a removed key must stop vouching for its tokens).
//!
//! A signed token stays valid until its `exp`, so ending a session (logout, a password change,
//! a stolen refresh token) also has to reach every verifier: identity publishes the sessions it
//! revokes, each process follows those events into its [`Revocations`], and every verification
//! (cached or not) consults them. An entry lives as long as a token of that session could:
//! [`MAX_ACCESS_TOKEN_TTL`] plus the leeway.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::{HeaderValue, header, request::Parts};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, JwkSet},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    ErrorCode, Problem,
    http::client::{HttpClient, get_json},
};

/// The one signature algorithm accepted. Pinning it is what makes `alg: none` and HMAC
/// key-confusion tokens fail.
pub const ALGORITHM: Algorithm = Algorithm::EdDSA;

/// The longest an access token may live; identity refuses a longer `access_token_ttl`. It bounds
/// how long a revoked session must be remembered.
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// How tokens are issued and where their keys are published.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The `iss` claim identity writes and everyone checks.
    pub issuer: String,
    /// The `aud` claim identity writes and everyone checks.
    pub audience: String,
    /// Where verifiers fetch the signing keys (identity's `/.well-known/jwks.json`). In the
    /// embedded mode it is filled in with identity's address.
    pub jwks_url: Option<String>,
    /// How long fetched keys are used before they are fetched again.
    #[serde(with = "humantime_serde")]
    pub jwks_max_age: Duration,
    /// Minimum time between fetches triggered by an unknown `kid`.
    #[serde(with = "humantime_serde")]
    pub jwks_refetch_cooldown: Duration,
    /// Clock skew tolerated on `exp`, at most a minute (ended sessions are remembered as long
    /// as a token lives plus a minute).
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "emporium".to_owned(),
            audience: "emporium".to_owned(),
            jwks_url: None,
            jwks_max_age: Duration::from_secs(300),
            jwks_refetch_cooldown: Duration::from_secs(2),
            leeway: Duration::from_secs(30),
        }
    }
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.leeway > MAX_LEEWAY {
            return Err(format!("auth.leeway must be at most {}s", MAX_LEEWAY.as_secs()));
        }
        Ok(())
    }
}

/// The most clock skew tolerated on `exp`; [`Revocations::window`] counts on it.
const MAX_LEEWAY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every user.
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "customer" => Some(Self::Customer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// PKCS#8 v1 DER of an Ed25519 private key (RFC 8410): a fixed 16-byte prefix and the 32-byte
/// seed. It is the form the JWT library signs with and derives the public JWK from.
pub fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 16] =
        [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let mut der = Vec::with_capacity(48);
    der.extend_from_slice(&PREFIX);
    der.extend_from_slice(seed);
    der
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: Uuid,
    pub roles: Vec<String>,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    /// The login session (refresh-token family) the token was issued in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    /// Whether the user's email was proven theirs when the token was issued.
    #[serde(default)]
    pub email_verified: bool,
}

impl AccessClaims {
    /// Claims for `sub` issued now and expiring after `ttl_secs` (negative: already expired),
    /// with a fresh `jti`.
    pub fn new(sub: Uuid, roles: Vec<String>, issuer: &str, audience: &str, ttl_secs: i64, sid: Option<Uuid>) -> Self {
        let now = chrono::Utc::now().timestamp();
        Self {
            sub,
            roles,
            iss: issuer.to_owned(),
            aud: audience.to_owned(),
            iat: now,
            exp: now + ttl_secs,
            jti: Uuid::now_v7(),
            sid,
            email_verified: false,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub roles: Vec<Role>,
    pub session_id: Option<Uuid>,
    pub token_id: Uuid,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), Problem> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Problem::with_detail(ErrorCode::Forbidden, "this action needs the admin role"))
        }
    }
}

/// Why a token was refused. Kept for logs and metrics; clients only ever see a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The session the token was issued in has ended.
    #[error("session revoked")]
    Revoked,
    /// The token names a key that could not be fetched: identity is unreachable, which says
    /// nothing of the token.
    #[error("the signing keys cannot be fetched")]
    KeysUnavailable,
}

impl AuthError {
    pub fn to_problem(&self) -> Problem {
        if matches!(self, Self::KeysUnavailable) {
            return Problem::unavailable("tokens cannot be checked right now", 1);
        }
        let (detail, challenge) = match self {
            Self::Missing => ("a bearer access token is required", "Bearer"),
            Self::Expired => ("the access token has expired", "Bearer error=\"invalid_token\""),
            Self::Revoked => ("the session has ended; sign in again", "Bearer error=\"invalid_token\""),
            _ => ("the access token is invalid", "Bearer error=\"invalid_token\""),
        };
        Problem::with_detail(ErrorCode::Unauthorized, detail)
            .header(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge))
    }
}

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

struct Remote {
    client: HttpClient,
    /// Every identity replica's key set URL, tried in turn.
    urls: Vec<String>,
}

/// How many verified tokens one process remembers (a few hundred bytes each).
const VERIFIED_CAPACITY: usize = 50_000;

/// The sessions that ended while tokens issued in them may still be unexpired. One per process,
/// shared by its verifiers and fed from identity's events.
#[derive(Debug)]
pub struct Revocations {
    /// Session id → the Unix time after which no token of it can be valid any more, and when
    /// the map was last swept of those.
    sessions: RwLock<(HashMap<Uuid, i64>, i64)>,
    /// Lets the common case (nothing revoked lately) skip the lock.
    empty: std::sync::atomic::AtomicBool,
}

impl Default for Revocations {
    fn default() -> Self {
        Self { sessions: RwLock::default(), empty: std::sync::atomic::AtomicBool::new(true) }
    }
}

impl Revocations {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Refuses the tokens of `session`, revoked at `at`, until every token it issued has expired.
    pub fn revoke(&self, session: Uuid, at: chrono::DateTime<chrono::Utc>) {
        let until = at.timestamp() + Self::window().as_secs() as i64;
        let now = chrono::Utc::now().timestamp();
        if until <= now {
            return;
        }
        let mut guard = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        let (sessions, swept) = &mut *guard;
        // Swept at most once a minute: replaying the window at start, or a password change that
        // ends many sessions, revokes many at once.
        if now - *swept >= 60 {
            sessions.retain(|_, until| *until > now);
            *swept = now;
        }
        let entry = sessions.entry(session).or_insert(until);
        *entry = (*entry).max(until);
        self.empty.store(false, std::sync::atomic::Ordering::Release);
    }

    pub fn is_revoked(&self, session: Option<Uuid>) -> bool {
        let Some(session) = session else { return false };
        if self.empty.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        sessions.0.get(&session).is_some_and(|until| *until > chrono::Utc::now().timestamp())
    }

    /// How far back revocations matter: the longest a token lives, with the most clock skew
    /// tolerated on `exp`.
    pub fn window() -> Duration {
        MAX_ACCESS_TOKEN_TTL + MAX_LEEWAY
    }
}

/// Verifies access tokens against the issuer's current public keys.
pub struct Verifier {
    validation: Validation,
    /// Token → (caller, `exp`) for tokens that passed verification.
    verified: quick_cache::sync::Cache<String, (Caller, i64)>,
    revocations: Arc<Revocations>,
    max_age: Duration,
    cooldown: Duration,
    cache: RwLock<KeyCache>,
    remote: Option<Remote>,
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("remote", &self.remote.as_ref().map(|r| &r.urls)).finish()
    }
}

impl Verifier {
    /// A verifier that fetches keys from `config.jwks_url` (a comma-separated list: the key set
    /// of each identity replica) and refuses the sessions in `revocations`.
    pub fn remote(config: &AuthConfig, revocations: Arc<Revocations>, client: HttpClient) -> Arc<Self> {
        let remote = config.jwks_url.as_deref().map(|urls| Remote {
            client,
            urls: urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect(),
        });
        Arc::new(Self::build(config, revocations, remote))
    }

    /// A verifier whose keys are handed to it with [`Verifier::set_keys`].
    pub fn local(config: &AuthConfig, revocations: Arc<Revocations>) -> Arc<Self> {
        Arc::new(Self::build(config, revocations, None))
    }

    fn build(config: &AuthConfig, revocations: Arc<Revocations>, remote: Option<Remote>) -> Self {
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = config.leeway.as_secs();
        Self {
            validation,
            verified: quick_cache::sync::Cache::new(VERIFIED_CAPACITY),
            revocations,
            max_age: config.jwks_max_age,
            cooldown: config.jwks_refetch_cooldown,
            cache: RwLock::new(KeyCache { keys: HashMap::new(), fetched_at: None, last_attempt: None }),
            remote,
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Replaces the known keys with the Ed25519 keys of `set` that carry a `kid`.
    pub fn set_keys(&self, set: &JwkSet) {
        let keys: HashMap<String, DecodingKey> = set
            .keys
            .iter()
            .filter(|jwk| matches!(jwk.algorithm, AlgorithmParameters::OctetKeyPair(_)))
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
            .collect();
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        let changed = cache.keys.len() != keys.len() || keys.keys().any(|kid| !cache.keys.contains_key(kid));
        cache.keys = keys;
        cache.fetched_at = Some(Instant::now());
        if changed {
            self.verified.clear();
        }
    }

    /// Verifies a compact JWS and returns the caller it names.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        if let Some((caller, exp)) = self.verified.get(token)
            && chrono::Utc::now().timestamp() < exp
        {
            return self.unrevoked(caller);
        }
        let (caller, exp) = self.verify_signature(token).await?;
        let caller = self.unrevoked(caller)?;
        if token.len() <= 4096 {
            self.verified.insert(token.to_owned(), (caller.clone(), exp));
        }
        Ok(caller)
    }

    fn unrevoked(&self, caller: Caller) -> Result<Caller, AuthError> {
        if self.revocations.is_revoked(caller.session_id) { Err(AuthError::Revoked) } else { Ok(caller) }
    }

    async fn verify_signature(&self, token: &str) -> Result<(Caller, i64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(AuthError::Algorithm);
        }
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
        let key = match self.key(&kid) {
            Some(key) if !self.is_stale() => key,
            known => {
                let reached = self.refresh(known.is_none()).await;
                match self.key(&kid) {
                    Some(key) => key,
                    None if !reached => return Err(AuthError::KeysUnavailable),
                    None => return Err(AuthError::UnknownKey),
                }
            }
        };
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
                other => AuthError::Invalid(format!("{other:?}")),
            }
        })?;
        let claims = data.claims;
        let caller = Caller {
            user_id: claims.sub,
            roles: claims.roles.iter().filter_map(|r| Role::parse(r)).collect(),
            session_id: claims.sid,
            token_id: claims.jti,
        };
        Ok((caller, claims.exp))
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).keys.get(kid).cloned()
    }

    fn is_stale(&self) -> bool {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        self.remote.is_some() && cache.fetched_at.is_none_or(|at| at.elapsed() > self.max_age)
    }

    /// Fetches the key set again, one fetch at a time, from the first identity replica that
    /// answers; an unknown `kid` may trigger a fetch at most once per cool-down. Whether the keys
    /// at hand come from a fetch that reached identity (false: the last attempt failed).
    async fn refresh(&self, unknown_kid: bool) -> bool {
        let Some(remote) = &self.remote else { return true };
        let _guard = self.fetching.lock().await;
        {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            let recently_tried = cache.last_attempt.is_some_and(|at| at.elapsed() < self.cooldown);
            let fresh = cache.fetched_at.is_some_and(|at| at.elapsed() <= self.max_age);
            if recently_tried || (fresh && !unknown_kid) {
                return cache.fetched_at >= cache.last_attempt;
            }
        }
        self.cache.write().unwrap_or_else(|e| e.into_inner()).last_attempt = Some(Instant::now());
        for url in &remote.urls {
            match get_json::<JwkSet>(&remote.client, url, Duration::from_secs(3)).await {
                Ok(set) => {
                    self.set_keys(&set);
                    return true;
                }
                Err(error) => {
                    tracing::warn!(url = %url, error = %crate::http::problem::error_chain(&error), "could not fetch signing keys")
                }
            }
        }
        false
    }

    /// Verifies the bearer token of a request.
    pub async fn verify_headers(&self, headers: &http::HeaderMap) -> Result<Caller, AuthError> {
        let token = bearer_token(headers)?.ok_or(AuthError::Missing)?;
        self.verify(token).await
    }
}

/// The token of an `Authorization: Bearer` header; `Ok(None)` without the header.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(Some(token.trim()))
}

fn verifier(parts: &Parts) -> Result<Arc<Verifier>, Problem> {
    parts.extensions.get::<Arc<Verifier>>().cloned().ok_or_else(|| {
        tracing::error!("no verifier installed on this router");
        Problem::internal()
    })
}

async fn authenticate(parts: &Parts) -> Result<Option<Caller>, Problem> {
    let verifier = verifier(parts)?;
    let token = match bearer_token(&parts.headers) {
        Ok(Some(token)) => token,
        Ok(None) => return Ok(None),
        Err(error) => return Err(error.to_problem()),
    };
    match verifier.verify(token).await {
        Ok(caller) => Ok(Some(caller)),
        Err(error) => {
            tracing::debug!(reason = %error, "access token refused");
            Err(error.to_problem())
        }
    }
}

/// Requires a valid access token (401 otherwise). The router must carry an
/// `Extension(Arc<Verifier>)`.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        authenticate(parts).await?.ok_or_else(|| AuthError::Missing.to_problem())
    }
}

/// `Option<Caller>`: anonymous without a token, 401 for a bad one.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        authenticate(parts).await
    }
}

/// A caller with the admin role: 401 without a valid token, 403 without the role.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = <Caller as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        caller.require_admin()?;
        Ok(Admin(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, jwk::Jwk};
    use rand::RngCore;

    struct TestKey {
        kid: String,
        encoding: EncodingKey,
        jwk: Jwk,
    }

    fn key(kid: &str) -> TestKey {
        let mut seed = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut seed);
        let encoding = EncodingKey::from_ed_der(&ed25519_pkcs8(&seed));
        let mut jwk = Jwk::from_encoding_key(&encoding, ALGORITHM).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        TestKey { kid: kid.to_owned(), encoding, jwk }
    }

    fn claims(exp_offset: i64) -> AccessClaims {
        let roles = vec!["customer".into(), "admin".into(), "wizard".into()];
        AccessClaims::new(Uuid::now_v7(), roles, "emporium", "emporium", exp_offset, Some(Uuid::now_v7()))
    }

    fn sign(key: &TestKey, claims: &AccessClaims) -> String {
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    fn verifier_with(keys: &[&TestKey]) -> Arc<Verifier> {
        let verifier = Verifier::local(&AuthConfig::default(), Revocations::new());
        verifier.set_keys(&JwkSet { keys: keys.iter().map(|k| k.jwk.clone()).collect() });
        verifier
    }

    /// Key sets are fetched from the first identity replica that answers; when none does, a
    /// token with a key not yet known is answered 503 (try again), not 401.
    #[tokio::test]
    async fn keys_come_from_any_replica_and_none_is_a_503() {
        let k = key("replica-key");
        let set = JwkSet { keys: vec![k.jwk.clone()] };
        let app = axum::Router::new().route("/jwks", axum::routing::get(move || async move { axum::Json(set) }));
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(live, app).await.unwrap() });
        let dead_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let client = crate::http::client::client(Duration::from_millis(200));
        let config = |urls: String| AuthConfig { jwks_url: Some(urls), ..AuthConfig::default() };
        let token = sign(&k, &claims(600));

        let both = config(format!("http://{dead_addr}/jwks, http://{live_addr}/jwks"));
        assert!(
            Verifier::remote(&both, Revocations::new(), client.clone()).verify(&token).await.is_ok(),
            "the live replica's keys"
        );
        let none = Verifier::remote(&config(format!("http://{dead_addr}/jwks")), Revocations::new(), client);
        let refused = none.verify(&token).await.unwrap_err();
        assert!(matches!(refused, AuthError::KeysUnavailable), "{refused:?}");
        let answer = axum::response::IntoResponse::into_response(refused.to_problem());
        assert_eq!(answer.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }

    /// A revoked session's tokens fail at once, whether or not they were verified before; other
    /// sessions' tokens pass, and a revocation older than any token's life is not kept.
    #[tokio::test]
    async fn a_revoked_session_stops_its_tokens_even_cached_ones() {
        let k = key("k1");
        let revocations = Revocations::new();
        let verifier = Verifier::local(&AuthConfig::default(), revocations.clone());
        verifier.set_keys(&JwkSet { keys: vec![k.jwk.clone()] });
        let (ended, other) = (claims(600), claims(600));
        let (ended_token, other_token) = (sign(&k, &ended), sign(&k, &other));
        assert!(verifier.verify(&ended_token).await.is_ok());

        revocations.revoke(ended.sid.unwrap(), chrono::Utc::now());
        assert_eq!(verifier.verify(&ended_token).await.unwrap_err(), AuthError::Revoked);
        assert!(verifier.verify(&other_token).await.is_ok());
        let answer = axum::response::IntoResponse::into_response(AuthError::Revoked.to_problem());
        assert_eq!(answer.status(), http::StatusCode::UNAUTHORIZED);

        let long_ago = chrono::Utc::now() - chrono::Duration::from_std(Revocations::window()).unwrap();
        revocations.revoke(other.sid.unwrap(), long_ago);
        assert!(verifier.verify(&other_token).await.is_ok());
        assert_eq!(revocations.sessions.read().unwrap().0.len(), 1);
    }

    #[tokio::test]
    async fn accepts_a_valid_token_and_keeps_known_roles() {
        let k = key("k1");
        let c = claims(600);
        let caller = verifier_with(&[&k]).verify(&sign(&k, &c)).await.unwrap();
        assert_eq!(caller.user_id, c.sub);
        assert_eq!(caller.roles, vec![Role::Customer, Role::Admin]);
        assert!(caller.is_admin());
    }

    #[tokio::test]
    async fn rejects_expired_foreign_and_unsigned_tokens() {
        let (k1, k2) = (key("k1"), key("k2"));
        let verifier = verifier_with(&[&k1]);
        assert_eq!(verifier.verify(&sign(&k1, &claims(-120))).await.unwrap_err(), AuthError::Expired);
        // Signed by a key the issuer never published.
        assert_eq!(verifier.verify(&sign(&k2, &claims(600))).await.unwrap_err(), AuthError::UnknownKey);
        // Another key presented under a known kid.
        let mut impostor = key("k1");
        impostor.kid = "k1".into();
        assert!(matches!(verifier.verify(&sign(&impostor, &claims(600))).await, Err(AuthError::Invalid(_))));
        // alg: none
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(600)).unwrap());
        assert!(verifier.verify(&format!("{header}.{body}.")).await.is_err());
        // HS256 with the public key as the secret (key confusion)
        let hs = jsonwebtoken::encode(
            &Header { kid: Some("k1".into()), ..Header::new(Algorithm::HS256) },
            &claims(600),
            &EncodingKey::from_secret(b"public"),
        )
        .unwrap();
        assert_eq!(verifier.verify(&hs).await.unwrap_err(), AuthError::Algorithm);
    }

    #[tokio::test]
    async fn remembered_tokens_are_forgotten_when_keys_change() {
        let (k1, k2) = (key("k1"), key("k2"));
        let verifier = verifier_with(&[&k1]);
        let token = sign(&k1, &claims(600));
        assert!(verifier.verify(&token).await.is_ok());
        assert!(verifier.verify(&token).await.is_ok(), "served from memory");
        verifier.set_keys(&JwkSet { keys: vec![k2.jwk.clone()] });
        assert_eq!(verifier.verify(&token).await.unwrap_err(), AuthError::UnknownKey);
    }

    #[tokio::test]
    async fn remembered_tokens_expire() {
        let k = key("k1");
        let verifier = verifier_with(&[&k]);
        // Expired a second ago, but within the leeway: accepted, and remembered only until exp.
        let token = sign(&k, &claims(-1));
        assert!(verifier.verify(&token).await.is_ok());
        let (_, exp) = verifier.verified.get(token.as_str()).unwrap();
        assert!(exp < chrono::Utc::now().timestamp(), "the entry is already stale, so it is never used");
    }

    #[tokio::test]
    async fn rejects_wrong_audience_or_issuer() {
        let k = key("k1");
        let verifier = verifier_with(&[&k]);
        let mut c = claims(600);
        c.aud = "someone-else".into();
        assert!(verifier.verify(&sign(&k, &c)).await.is_err());
        let mut c = claims(600);
        c.iss = "mallory".into();
        assert!(verifier.verify(&sign(&k, &c)).await.is_err());
    }

    #[test]
    fn bearer_parsing() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer_token(&headers), Ok(None));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer_token(&headers), Ok(Some("abc")));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), Err(AuthError::Malformed));
    }
}
