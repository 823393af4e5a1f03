//! A plain HTTP/1.1 client for talking to a service the way a client application would.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;

#[derive(Clone)]
pub struct TestClient {
    base: String,
    inner: Client<HttpConnector, Full<Bytes>>,
}

/// A fully read response.
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with `status` and returns its body.
    #[track_caller]
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        let body = self.json();
        assert_eq!(body["status"], status);
        assert!(body["type"].is_string() && body["title"].is_string(), "{body}");
        body
    }
}

/// A request being built.
pub struct TestRequest<'a> {
    client: &'a TestClient,
    method: Method,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl TestClient {
    /// A client for the server at `base` (`http://127.0.0.1:port`).
    pub fn new(base: impl Into<String>) -> Self {
        // Idle connections are kept for five minutes, as browsers keep theirs: a client that
        // prepared for a minute and a half would otherwise reconnect at the moment it tests.
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(300))
            .build(HttpConnector::new());
        Self { base: base.into(), inner }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn request(&self, method: Method, path: &str) -> TestRequest<'_> {
        TestRequest { client: self, method, path: path.to_owned(), headers: Vec::new(), body: Bytes::new() }
    }

    pub fn get(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::PUT, path)
    }

    pub fn patch(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::PATCH, path)
    }

    pub fn delete(&self, path: &str) -> TestRequest<'_> {
        self.request(Method::DELETE, path)
    }
}

impl TestRequest<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.parse().expect("header name"), value.parse().expect("header value")));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn json(mut self, body: &Value) -> Self {
        self.body = Bytes::from(serde_json::to_vec(body).expect("serialise"));
        self.header("content-type", "application/json")
    }

    /// A raw body with the given content type.
    pub fn raw(mut self, content_type: &str, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self.header("content-type", content_type)
    }

    pub async fn send(self) -> TestResponse {
        self.try_send().await.expect("request sent")
    }

    /// Sends, reporting a failed connection (a server that went away) instead of panicking.
    pub async fn try_send(self) -> Result<TestResponse, String> {
        let mut request = Request::builder()
            .method(self.method)
            .uri(format!("{}{}", self.client.base, self.path))
            .body(Full::new(self.body))
            .expect("request");
        for (name, value) in self.headers {
            request.headers_mut().append(name, value);
        }
        if !request.headers().contains_key(header::ACCEPT) {
            request.headers_mut().insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        }
        let response = self.client.inner.request(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(TestResponse { status: parts.status, headers: parts.headers, body })
    }
}
