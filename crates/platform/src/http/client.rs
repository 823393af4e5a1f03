//! HTTP/1.1 clients: a plain one for service-to-service reads (key sets, API documents), the
//! same hyper client the gateway proxies with; and one for third parties over HTTPS (payment
//! and sign-in providers), through rustls with the webpki roots (no system OpenSSL), where plain
//! HTTP is allowed only for local stand-ins. Both bound every exchange by a deadline.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::de::DeserializeOwned;

pub type HttpClient = Client<HttpConnector, Body>;

/// A client for third-party APIs: HTTPS, or plain HTTP for a local stand-in.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Documents fetched this way are small; a peer that sends more is misbehaving.
const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid url {0}")]
    InvalidUrl(String),
    #[error("request failed")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("unexpected status {0}")]
    Status(StatusCode),
    #[error("could not read the body")]
    Body,
    #[error("invalid JSON")]
    Json(#[from] serde_json::Error),
}

/// How long an idle pooled connection is kept: less than the services' own idle timeout (the
/// header-read timeout, 10 s by default), so that a request is never sent on a connection the
/// server is closing at that moment.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled client whose connection attempts give up after `connect_timeout`.
pub fn client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE_TIMEOUT).build(connector)
}

/// A pooled HTTPS client whose connection attempts give up after `connect_timeout`.
pub fn https(connect_timeout: Duration) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE_TIMEOUT).build(connector)
}

/// Sends `request` and reads the whole answer (at most `max_bytes` of body), within `timeout`.
pub async fn exchange(
    client: &HttpsClient,
    request: Request<Full<Bytes>>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<(StatusCode, Bytes), FetchError> {
    let call = async {
        let response = client.request(request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), max_bytes).collect().await.map_err(|_| FetchError::Body)?;
        Ok((status, body.to_bytes()))
    };
    tokio::time::timeout(timeout, call).await.map_err(|_| FetchError::Timeout(timeout))?
}

/// GETs `url` and parses its JSON body, all within `timeout`.
pub async fn get_json<T: DeserializeOwned>(client: &HttpClient, url: &str, timeout: Duration) -> Result<T, FetchError> {
    let uri: Uri = url.parse().map_err(|_| FetchError::InvalidUrl(url.to_owned()))?;
    let request = Request::get(uri)
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .map_err(|_| FetchError::InvalidUrl(url.to_owned()))?;
    let fetch = async {
        let response = client.request(request).await?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|_| FetchError::Body)?
            .to_bytes();
        Ok(serde_json::from_slice(&body)?)
    };
    tokio::time::timeout(timeout, fetch).await.map_err(|_| FetchError::Timeout(timeout))?
}
