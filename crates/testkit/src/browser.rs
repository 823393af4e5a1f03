//! A browser, as far as sign-in flows need one: it keeps cookies per host and path, and can
//! follow redirects, so that a test walks an authorization code flow across the shop and a
//! provider the way a person's browser does.

use std::sync::Mutex;

use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::TestResponse;

#[derive(Debug, Clone)]
struct Cookie {
    authority: String,
    path: String,
    name: String,
    value: String,
}

pub struct Browser {
    inner: Client<HttpConnector, Full<Bytes>>,
    cookies: Mutex<Vec<Cookie>>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

/// `location` resolved against the URL it was answered for.
pub fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let uri: Uri = base.parse().expect("an absolute base URL");
    let origin = format!("{}://{}", uri.scheme_str().unwrap_or("http"), uri.authority().expect("a host"));
    if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        let path = uri.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{origin}{dir}{location}")
    }
}

impl Browser {
    pub fn new() -> Self {
        // A connection per request: a provider may close idle ones at any moment.
        let inner = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(HttpConnector::new());
        Self { inner, cookies: Mutex::new(Vec::new()) }
    }

    pub async fn get(&self, url: &str) -> TestResponse {
        self.send(Method::GET, url, &[], Bytes::new(), None).await
    }

    /// A GET with extra headers (an `Authorization`, say).
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> TestResponse {
        self.send(Method::GET, url, headers, Bytes::new(), None).await
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> TestResponse {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        self.send(Method::POST, url, &[], Bytes::from(body), Some("application/x-www-form-urlencoded")).await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        content_type: Option<&str>,
    ) -> TestResponse {
        let uri: Uri = url.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
        let authority = uri.authority().expect("a host").to_string();
        let mut request = Request::builder().method(method).uri(uri.clone());
        let cookie = self.cookie_header(&authority, uri.path());
        if !cookie.is_empty() {
            request = request.header(header::COOKIE, cookie);
        }
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let sent = self.inner.request(request.body(Full::new(body)).expect("a valid request"));
        let response = tokio::time::timeout(std::time::Duration::from_secs(30), sent)
            .await
            .unwrap_or_else(|_| panic!("{url}: no answer within 30 s"))
            .unwrap_or_else(|e| panic!("{url}: {e:?}"));
        let status = response.status();
        let response_headers = response.headers().clone();
        for value in response_headers.get_all(header::SET_COOKIE) {
            if let Ok(text) = value.to_str() {
                self.store_cookie(&authority, text);
            }
        }
        let body = response.into_body().collect().await.expect("a readable body").to_bytes();
        TestResponse { status, headers: response_headers, body }
    }

    fn cookie_header(&self, authority: &str, path: &str) -> String {
        let cookies = self.cookies.lock().expect("cookies");
        cookies
            .iter()
            .filter(|c| c.authority == authority && path.starts_with(&c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn store_cookie(&self, authority: &str, set_cookie: &str) {
        let mut parts = set_cookie.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else { return };
        let mut path = "/".to_owned();
        let mut expired = false;
        for attribute in parts {
            let lower = attribute.to_ascii_lowercase();
            if lower.starts_with("path=") {
                path = attribute["path=".len()..].to_owned();
            }
            if lower.starts_with("max-age=0") || lower.contains("expires=thu, 01 jan 1970") {
                expired = true;
            }
        }
        let mut cookies = self.cookies.lock().expect("cookies");
        cookies.retain(|c| !(c.authority == authority && c.name == name && c.path == path));
        if !expired && !value.is_empty() {
            cookies.push(Cookie {
                authority: authority.to_owned(),
                path,
                name: name.to_owned(),
                value: value.to_owned(),
            });
        }
    }

    /// Follows redirects from `url` while they stay on hosts `within` accepts; the first
    /// redirect that leaves them is not followed, and its target is returned with the last URL
    /// visited and its answer.
    pub async fn follow_within(&self, url: &str, within: impl Fn(&str) -> bool) -> Followed {
        let mut url = url.to_owned();
        for _ in 0..20 {
            let response = self.get(&url).await;
            if !response.status.is_redirection() {
                return Followed { url, response, left_to: None };
            }
            let location = absolute(&url, response.header("location").expect("a redirect has a Location"));
            if !within(&location) {
                return Followed { url, response, left_to: Some(location) };
            }
            url = location;
        }
        panic!("more than 20 redirects from {url}");
    }
}

/// Where a walk of redirects ended.
pub struct Followed {
    /// The last URL asked for.
    pub url: String,
    pub response: TestResponse,
    /// The redirect that left the hosts followed, if it ended that way.
    pub left_to: Option<String>,
}

impl Followed {
    #[track_caller]
    pub fn left(&self) -> &str {
        self.left_to.as_deref().unwrap_or_else(|| {
            panic!(
                "stayed at {} ({}): {}",
                self.url,
                self.response.status,
                String::from_utf8_lossy(&self.response.body).chars().take(500).collect::<String>()
            )
        })
    }
}

/// A query parameter of a URL, decoded.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}
