//! The storefront's only way to the shop: the public API at the gateway, over HTTP, as any
//! other client calls it (API.md). Public catalog answers are shared between shoppers for up to
//! `cache_ttl`; nothing else is kept.

pub mod types;

use std::{
    any::Any,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use platform::http::client::HttpClient;
use serde::de::DeserializeOwned;

pub use types::*;

/// Answers larger than this are not the API's.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Where the gateway is: configured, or the gateway of this process, known once it is bound
/// (it is bound after the storefront, which it routes to).
#[derive(Clone)]
pub enum Gateway {
    Url(String),
    Later(Arc<OnceLock<String>>),
}

impl Gateway {
    fn url(&self) -> Option<&str> {
        match self {
            Self::Url(url) => Some(url),
            Self::Later(cell) => cell.get().map(String::as_str),
        }
    }
}

/// Why a call gave no answer a page can use.
#[derive(Debug)]
pub enum Failure {
    /// The API answered with an error status; `body` is its problem document (or, for a
    /// declined checkout, the order).
    Refused { status: StatusCode, problem: Problem, body: Bytes },
    /// The API could not be reached, timed out, or answered something that is not its own.
    Unavailable(String),
}

impl Failure {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            Self::Unavailable(_) => None,
        }
    }

    /// What went wrong, in the API's words.
    pub fn detail(&self) -> String {
        match self {
            Self::Refused { problem, status, .. } => {
                problem.detail.clone().unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned())
            }
            Self::Unavailable(_) => "the shop cannot be reached right now; try again in a moment".to_owned(),
        }
    }
}

pub struct Api {
    client: HttpClient,
    gateway: Gateway,
    timeout: Duration,
    ttl: Duration,
    /// Answers as parsed, by path: a hit costs no parsing (a listing's JSON is tens of KB).
    cache: quick_cache::sync::Cache<String, Cached, BodySize>,
}

/// When an answer was fetched, the answer parsed, and the size of its body.
#[derive(Clone)]
struct Cached(Instant, Arc<dyn Any + Send + Sync>, usize);

/// Entries live a second: the cache is bounded by what its answers weigh, not their number.
#[derive(Clone)]
struct BodySize;

impl quick_cache::Weighter<String, Cached> for BodySize {
    fn weight(&self, key: &String, value: &Cached) -> u64 {
        (key.len() + value.2) as u64
    }
}

/// The answers' bodies kept at most, in bytes (parsed, they take about twice as much).
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// One call: its method, path (with query), bearer token, JSON body and extra headers.
/// (No `Debug`: it may carry a token.)
pub struct Call {
    pub method: Method,
    pub path: String,
    pub token: Option<String>,
    pub body: Option<serde_json::Value>,
    pub idempotency_key: Option<String>,
}

impl Call {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self { method, path: path.into(), token: None, body: None, idempotency_key: None }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    /// A POST of `body`.
    pub fn post(path: impl Into<String>, body: serde_json::Value) -> Self {
        Self::new(Method::POST, path).json(Some(body))
    }

    pub fn json(mut self, body: Option<serde_json::Value>) -> Self {
        self.body = body;
        self
    }

    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub fn idempotency_key(mut self, key: &str) -> Self {
        self.idempotency_key = Some(key.to_owned());
        self
    }
}

impl Api {
    pub fn new(gateway: Gateway, timeout: Duration, ttl: Duration) -> Self {
        Self {
            client: platform::http::client::client(Duration::from_secs(1)),
            gateway,
            timeout,
            ttl,
            cache: quick_cache::sync::Cache::with_weighter(1024, CACHE_BYTES, BodySize),
        }
    }

    /// A public catalog read (no token), shared between shoppers for `ttl`.
    pub async fn public<T>(&self, forward: &HeaderMap, path: String) -> Result<Arc<T>, Failure>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        self.public_for(forward, path, self.ttl).await
    }

    /// A public read of something that changes only with the configuration (the sign-in
    /// providers), shared for `ttl`.
    pub async fn public_for<T>(&self, forward: &HeaderMap, path: String, ttl: Duration) -> Result<Arc<T>, Failure>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        if !ttl.is_zero()
            && let Some(Cached(at, value, _)) = self.cache.get(&path)
            && at.elapsed() < ttl
            && let Ok(value) = value.downcast::<T>()
        {
            return Ok(value);
        }
        let (status, body) = self.exchange(forward, Call::get(path.clone())).await?;
        let size = body.len();
        let value = Arc::new(parse::<T>(status, body)?);
        if !ttl.is_zero() {
            self.cache.insert(path, Cached(Instant::now(), value.clone(), size));
        }
        Ok(value)
    }

    /// A call whose answer is parsed as `T` when it succeeds.
    pub async fn call<T: DeserializeOwned>(&self, forward: &HeaderMap, call: Call) -> Result<T, Failure> {
        let (status, body) = self.exchange(forward, call).await?;
        parse(status, body)
    }

    /// A call whose success has no body worth reading.
    pub async fn act(&self, forward: &HeaderMap, call: Call) -> Result<(), Failure> {
        let (status, body) = self.exchange(forward, call).await?;
        if status.is_success() { Ok(()) } else { Err(refused(status, body)) }
    }

    async fn exchange(&self, forward: &HeaderMap, call: Call) -> Result<(StatusCode, Bytes), Failure> {
        let base = self.gateway.url().ok_or_else(|| Failure::Unavailable("the gateway is not bound yet".into()))?;
        let uri: http::Uri = format!("{base}{}", call.path)
            .parse()
            .map_err(|_| Failure::Unavailable(format!("{} is not a path the api can be asked", call.path)))?;
        let mut request = Request::new(Body::empty());
        *request.method_mut() = call.method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        for (name, value) in forward {
            headers.insert(name, value.clone());
        }
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(token) = &call.token
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            headers.insert(header::AUTHORIZATION, value);
        }
        if let Some(key) = &call.idempotency_key
            && let Ok(value) = HeaderValue::from_str(key)
        {
            headers.insert("idempotency-key", value);
        }
        if let Some(json) = call.body {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            *request.body_mut() = Body::from(json.to_string());
        }
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| Failure::Unavailable(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| Failure::Unavailable(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Failure::Unavailable(format!("no answer within {:?}", self.timeout)))??;
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "the api answered a server error");
            return Err(refused(status, body));
        }
        Ok((status, body))
    }
}

fn refused(status: StatusCode, body: Bytes) -> Failure {
    let problem = serde_json::from_slice(&body).unwrap_or_default();
    Failure::Refused { status, problem, body }
}

fn parse<T: DeserializeOwned>(status: StatusCode, body: Bytes) -> Result<T, Failure> {
    if !status.is_success() {
        return Err(refused(status, body));
    }
    serde_json::from_slice(&body).map_err(|e| {
        tracing::error!(error = %e, "the api answered a body the storefront cannot read");
        Failure::Unavailable(e.to_string())
    })
}
