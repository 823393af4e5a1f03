//! A small HTTP/1.1 client for service-to-service reads (key sets, API documents).
//!
//! It is the same hyper client the gateway proxies with; here it only GETs JSON with a deadline.

use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::de::DeserializeOwned;

pub type HttpClient = Client<HttpConnector, Body>;

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

/// A pooled client whose connection attempts give up after `connect_timeout`.
pub fn client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector)
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
