//! HTTP/1.1 clients: a plain one for service-to-service reads (key sets, API documents), the
//! same hyper client the gateway proxies with; and one for third parties over HTTPS (payment
//! and sign-in providers), through rustls with the webpki roots (no system OpenSSL), where plain
//! HTTP is allowed only for local stand-ins. Both bound every exchange by a deadline.
//!
//! The third-party client goes only where [`Egress`] lets it (OWASP API7, server-side request
//! forgery): to hosts named in the configuration, and elsewhere only to public addresses. A URL
//! learned at run time (the endpoints in an OpenID provider's discovery document) that leads to
//! loopback, a private network, link-local addresses (cloud metadata services) and the like is
//! refused before a connection is tried, whether its host is an address or a name that resolves
//! to one; checking at resolution, the address connected to is the address checked.

use std::{
    collections::BTreeSet,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{HttpConnector, dns::Name},
    },
    rt::TokioExecutor,
};
use serde::de::DeserializeOwned;

pub type HttpClient = Client<HttpConnector, Body>;

/// A client for third-party APIs: HTTPS, or plain HTTP for a local stand-in.
pub type HttpsClient = Client<HttpsConnector<Guarded>, Full<Bytes>>;

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

/// A pooled HTTPS client whose connection attempts give up after `connect_timeout`, going only
/// where `egress` allows.
pub fn https(connect_timeout: Duration, egress: Egress) -> HttpsClient {
    fn configured<R>(mut http: HttpConnector<R>, connect_timeout: Duration) -> HttpConnector<R> {
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http
    }
    let open = configured(HttpConnector::new(), connect_timeout);
    let public = configured(HttpConnector::new_with_resolver(PublicResolver), connect_timeout);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(Guarded { open, public, egress });
    Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE_TIMEOUT).build(connector)
}

/// Where third-party requests may go: the origins (scheme's port included) of configured URLs,
/// whatever they resolve to (a provider or a stand-in the operator chose, on a private network
/// or this machine), and anywhere else only at a public address.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    trusted: Arc<BTreeSet<(String, u16)>>,
}

impl Egress {
    /// Trusts the origins of `urls` (those the configuration names); unparseable ones add nothing.
    pub fn trusting<'a>(urls: impl IntoIterator<Item = &'a str>) -> Self {
        let trusted = urls.into_iter().filter_map(|url| authority(&url.parse::<Uri>().ok()?)).collect();
        Self { trusted: Arc::new(trusted) }
    }

    fn trusts(&self, uri: &Uri) -> bool {
        authority(uri).is_some_and(|origin| self.trusted.contains(&origin))
    }
}

/// A URL's host, lower-cased and unbracketed, and its port (the scheme's when not written).
fn authority(uri: &Uri) -> Option<(String, u16)> {
    let host = uri.host()?.trim_matches(['[', ']']).trim_end_matches('.').to_ascii_lowercase();
    let port = uri.port_u16().or(match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    })?;
    Some((host, port))
}

/// Whether `address` is on the public internet: not loopback, private (RFC 1918, unique local),
/// shared (carrier-grade NAT), link-local (where cloud metadata services answer), multicast,
/// documentation, benchmarking, reserved or unspecified.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
            if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [.., a, b, c, d] = v6.octets();
                return is_public(IpAddr::from([a, b, c, d]));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || (first == 0x2001 && v6.segments()[1] == 0x0db8))
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn refused(host: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("{host} is not a public address, and not an origin the configuration names"),
    )
}

/// Resolves names as the system does, keeping only public addresses.
#[derive(Clone)]
pub struct PublicResolver;

impl tower::Service<Name> for PublicResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(refused(&host));
            }
            Ok(public.into_iter())
        })
    }
}

/// The connector under TLS: a trusted origin is connected to as it resolves; any other only at
/// public addresses, an address in the URL itself (which skips resolution) included.
#[derive(Clone)]
pub struct Guarded {
    open: HttpConnector,
    public: HttpConnector<PublicResolver>,
    egress: Egress,
}

impl tower::Service<Uri> for Guarded {
    type Response = <HttpConnector as tower::Service<Uri>>::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both are ready at once: an `HttpConnector` always is.
        match self.open.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.public.poll_ready(cx).map_err(Into::into),
            other => other.map_err(Into::into),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if self.egress.trusts(&uri) {
            let connecting = self.open.call(uri);
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        }
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']).to_owned();
        if let Ok(address) = host.parse::<IpAddr>()
            && !is_public(address)
        {
            return Box::pin(async move { Err(refused(&host).into()) });
        }
        let connecting = self.public.call(uri);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    async fn answering() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        (address, accepted)
    }

    async fn get(client: &HttpsClient, url: &str) -> Result<StatusCode, FetchError> {
        let request = Request::get(url).body(Full::default()).unwrap();
        exchange(client, request, Duration::from_secs(2), 1024).await.map(|(status, _)| status)
    }

    /// A configured host is reached wherever it is; a host learned at run time is not reached at
    /// all when it is (or resolves to) a private address.
    #[tokio::test]
    async fn configured_hosts_are_reached_and_private_ones_learned_later_are_not() {
        let (address, accepted) = answering().await;
        let client =
            https(Duration::from_secs(1), Egress::trusting([format!("http://127.0.0.1:{}", address.port()).as_str()]));
        assert_eq!(get(&client, &format!("http://127.0.0.1:{}/", address.port())).await.unwrap(), StatusCode::OK);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);

        for url in [
            format!("http://127.0.0.1:{}/", address.port() + 1),
            format!("http://localhost:{}/", address.port()),
            format!("http://127.0.0.2:{}/", address.port()),
            format!("http://[::1]:{}/", address.port()),
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "https://10.0.0.1/".to_owned(),
        ] {
            let started = std::time::Instant::now();
            let error = get(&client, &url).await.unwrap_err();
            let chain = crate::http::problem::error_chain(&error);
            assert!(chain.contains("not a public address"), "{url}: {chain}");
            assert!(started.elapsed() < Duration::from_millis(500), "{url}: refused before connecting");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "no refused request reached the server");
    }
}
