//! gRPC between services: how our error codes map onto gRPC status codes, serving a tonic
//! router on a bound listener with the same graceful shutdown as HTTP, and the client side:
//! lazily connected channels to every replica of a peer, and calls bounded by a deadline that
//! move on to another replica when one cannot be reached. Both sides are observed
//! ([`observe`]): spans and metrics for every call.

pub mod observe;

use std::{future::Future, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tower::layer::util::{Identity, Stack};

use crate::ErrorCode;
use observe::{ObserveLayer, Observed};

/// A channel to a peer whose calls are observed.
pub type Channel = Observed<tonic::transport::Channel>;

/// A server with its routes, whose calls are observed.
pub type Router = tonic::transport::server::Router<Stack<ObserveLayer, Identity>>;

/// The gRPC status code for an error code, so that one error enum answers both transports.
pub fn code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::Validation
        | ErrorCode::PayloadTooLarge
        | ErrorCode::UnsupportedMediaType => tonic::Code::InvalidArgument,
        ErrorCode::Unauthorized => tonic::Code::Unauthenticated,
        ErrorCode::Forbidden => tonic::Code::PermissionDenied,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::MethodNotAllowed => tonic::Code::Unimplemented,
        ErrorCode::Conflict => tonic::Code::Aborted,
        ErrorCode::PaymentRequired => tonic::Code::FailedPrecondition,
        ErrorCode::TooManyRequests => tonic::Code::ResourceExhausted,
        ErrorCode::Internal | ErrorCode::BadGateway => tonic::Code::Internal,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
    }
}

/// Most time a call may take on the server, whatever deadline the client sent.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// A server builder with the settings every service uses, observing `service`'s calls.
pub fn server(service: &'static str) -> tonic::transport::Server<Stack<ObserveLayer, Identity>> {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .timeout(SERVER_TIMEOUT)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(ObserveLayer::server(service))
}

/// Serves `router` on `listener` until `shutdown`, then finishes the calls in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    router.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()).await
}

/// A channel from `service` to a peer's gRPC service. It connects lazily, so a peer that is
/// down at start delays nothing, and it reconnects by itself once the peer is back.
pub fn channel(service: &'static str, url: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    channel_with(service, url, timeout, timeout)
}

fn channel_with(
    service: &'static str,
    url: &str,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    Ok(lazy(service, Endpoint::from_shared(url.to_owned())?, connect_timeout, timeout))
}

fn lazy(service: &'static str, endpoint: Endpoint, connect_timeout: Duration, timeout: Duration) -> Channel {
    let channel = endpoint.connect_timeout(connect_timeout).timeout(timeout).tcp_nodelay(true).connect_lazy();
    tower::Layer::layer(&ObserveLayer::client(service), channel)
}

/// Checks a peer setting for [`Replicas::new`]: `None` when every entry is an `http(s)://` URL or
/// a `dns:///host:port` name, else the problem, naming `key`.
pub fn check_peer_urls(key: &str, urls: &str) -> Option<String> {
    let entries: Vec<&str> = urls.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    let valid = |url: &&str| ["http://", "https://", "dns:///"].iter().any(|scheme| url.starts_with(scheme));
    (entries.is_empty() || !entries.iter().all(valid))
        .then(|| format!("{key} must be http:// URLs or dns:///host:port names, separated by commas"))
}

/// Every replica of a peer: a channel to each, used in turn. Replicas are configured as a
/// comma-separated list of URLs (`http://a:9082,http://b:9082`) or of DNS names in gRPC's naming
/// syntax (`dns:///catalog-headless:9082`), whose every address is a replica; names are resolved
/// again every [`RESOLVE_EVERY`], so the pods behind a headless Kubernetes Service are followed
/// as they come and go. A replica whose call failed as unreachable (`UNAVAILABLE`) is skipped for
/// a while, and [`Replicas::call`] makes the call again on the next one while time remains — only
/// for calls that are safe to repeat, which every call between our services is (reads, or
/// effects keyed by an order id).
#[derive(Clone)]
pub struct Replicas {
    inner: std::sync::Arc<ReplicasInner>,
}

struct ReplicasInner {
    service: &'static str,
    sources: Vec<Source>,
    replicas: std::sync::RwLock<std::sync::Arc<[std::sync::Arc<Replica>]>>,
    next: std::sync::atomic::AtomicUsize,
    timeout: Duration,
    connect_timeout: Duration,
}

/// One configured entry.
enum Source {
    Url(String),
    /// `host:port` whose addresses are the replicas; `origin` is what calls name as authority.
    Dns {
        authority: String,
        origin: http::Uri,
    },
}

struct Replica {
    /// Which of the sources it came from, and the URL it dials.
    source: usize,
    target: String,
    channel: Channel,
    /// Until when (ms since `EPOCH`) the replica is skipped.
    down_until: std::sync::atomic::AtomicU64,
}

/// How long a replica that could not be reached is skipped.
const REPLICA_DOWN_FOR: Duration = Duration::from_secs(2);

/// How often DNS names are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(10);

static EPOCH: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

impl Replicas {
    /// Channels from `service` to each replica named by `urls`, each call within `timeout` in
    /// all. DNS names are resolved at once in the background (until then, and whenever a name
    /// cannot be resolved, the name itself is dialled, or the addresses it last had).
    pub fn new(service: &'static str, urls: &str, timeout: Duration) -> Result<Self, tonic::transport::Error> {
        // A replica that does not accept a connection soon leaves time for another.
        let connect_timeout = (timeout / 3).min(Duration::from_secs(1));
        let mut sources = Vec::new();
        let mut replicas = Vec::new();
        for url in urls.split(',').map(str::trim).filter(|url| !url.is_empty()) {
            let source = match url.strip_prefix("dns:///") {
                Some(authority) => {
                    let origin = Endpoint::from_shared(format!("http://{authority}"))?.uri().clone();
                    Source::Dns { authority: authority.to_owned(), origin }
                }
                None => Source::Url(url.to_owned()),
            };
            let target = match &source {
                Source::Url(url) => url.clone(),
                Source::Dns { origin, .. } => origin.to_string().trim_end_matches('/').to_owned(),
            };
            let channel = channel_with(service, &target, connect_timeout, timeout)?;
            replicas.push(std::sync::Arc::new(Replica {
                source: sources.len(),
                target,
                channel,
                down_until: Default::default(),
            }));
            sources.push(source);
        }
        let resolves = sources.iter().any(|s| matches!(s, Source::Dns { .. }));
        let inner = std::sync::Arc::new(ReplicasInner {
            service,
            sources,
            replicas: std::sync::RwLock::new(replicas.into()),
            next: Default::default(),
            timeout,
            connect_timeout,
        });
        if resolves && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = std::sync::Arc::downgrade(&inner);
            runtime.spawn(async move {
                while let Some(inner) = weak.upgrade() {
                    Replicas { inner }.resolve().await;
                    tokio::time::sleep(RESOLVE_EVERY).await;
                }
            });
        }
        Ok(Self { inner })
    }

    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshot().is_empty()
    }

    /// The URLs dialled now, one per replica.
    pub fn targets(&self) -> Vec<String> {
        self.snapshot().iter().map(|r| r.target.clone()).collect()
    }

    fn snapshot(&self) -> std::sync::Arc<[std::sync::Arc<Replica>]> {
        self.inner.replicas.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Resolves every DNS name again; replicas whose address stays keep their channel (and its
    /// connection), new addresses get one, vanished ones are dropped.
    pub async fn resolve(&self) {
        let current = self.snapshot();
        let mut next: Vec<std::sync::Arc<Replica>> = Vec::new();
        for (index, source) in self.inner.sources.iter().enumerate() {
            let kept = || current.iter().filter(|r| r.source == index).cloned().collect::<Vec<_>>();
            let Source::Dns { authority, origin } = source else {
                next.extend(kept());
                continue;
            };
            let addresses = match tokio::net::lookup_host(authority.as_str()).await {
                Ok(found) => {
                    let mut found: Vec<String> = found.map(|address| format!("http://{address}")).collect();
                    found.sort();
                    found.dedup();
                    found
                }
                Err(error) => {
                    tracing::warn!(peer = %authority, error = %error, "could not resolve the peer's name; keeping its replicas");
                    Vec::new()
                }
            };
            if addresses.is_empty() {
                next.extend(kept());
                continue;
            }
            for target in addresses {
                if let Some(existing) = current.iter().find(|r| r.source == index && r.target == target) {
                    next.push(existing.clone());
                    continue;
                }
                let Ok(endpoint) = Endpoint::from_shared(target.clone()) else { continue };
                let (service, connect_timeout) = (self.inner.service, self.inner.connect_timeout);
                let channel = lazy(service, endpoint.origin(origin.clone()), connect_timeout, self.inner.timeout);
                next.push(std::sync::Arc::new(Replica {
                    source: index,
                    target,
                    channel,
                    down_until: Default::default(),
                }));
            }
        }
        *self.inner.replicas.write().unwrap_or_else(std::sync::PoisonError::into_inner) = next.into();
    }

    /// The replicas in the order to try them: round-robin, those skipped last.
    fn order(&self) -> Vec<std::sync::Arc<Replica>> {
        use std::sync::atomic::Ordering;
        let replicas = self.snapshot();
        if replicas.is_empty() {
            return Vec::new();
        }
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let mut order: Vec<std::sync::Arc<Replica>> =
            (0..replicas.len()).map(|i| replicas[(start + i) % replicas.len()].clone()).collect();
        order.sort_by_key(|r| r.down_until.load(Ordering::Relaxed) > now);
        order
    }

    /// Makes a call that is safe to repeat: `call(channel, time left)` on one replica after the
    /// other until one is reached, all within the timeout. Answers other than `UNAVAILABLE`
    /// (success, or the peer's own refusal) are final.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        use std::sync::atomic::Ordering;
        let deadline = std::time::Instant::now() + self.inner.timeout;
        let mut last = tonic::Status::unavailable("the peer has no replicas configured");
        for replica in self.order() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(tonic::Status::deadline_exceeded(format!("no answer within {:?}", self.inner.timeout)));
            }
            match within(left, call(replica.channel.clone(), left)).await {
                // A refused or broken connection (a replica killed mid-call answers `UNKNOWN:
                // transport error`): repeat the call elsewhere.
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                    ) =>
                {
                    replica.down_until.store(now_ms() + REPLICA_DOWN_FOR.as_millis() as u64, Ordering::Relaxed);
                    last = status;
                }
                answer => {
                    if answer.is_ok() {
                        replica.down_until.store(0, Ordering::Relaxed);
                    }
                    return answer;
                }
            }
        }
        Err(last)
    }
}

/// A request that tells the server its deadline (`grpc-timeout`).
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Runs a call within `timeout` even when the connection itself hangs; beyond it the answer is
/// `DEADLINE_EXCEEDED`.
pub async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!("no answer within {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dns_name_stands_for_every_address_it_resolves_to() {
        let replicas =
            Replicas::new("test", "http://10.0.0.1:9000, dns:///localhost:9082", Duration::from_secs(1)).unwrap();
        // Before the first resolution, the name itself is dialled.
        assert_eq!(replicas.targets(), ["http://10.0.0.1:9000", "http://localhost:9082"]);
        replicas.resolve().await;
        let targets = replicas.targets();
        assert_eq!(targets[0], "http://10.0.0.1:9000", "a URL stays as given");
        assert!(targets[1..].contains(&"http://127.0.0.1:9082".to_owned()), "{targets:?}");
        assert!(!targets.contains(&"http://localhost:9082".to_owned()), "{targets:?}");
        // Resolving again keeps each address's replica (and its connection) as it was.
        let before: Vec<*const Replica> = replicas.snapshot().iter().map(std::sync::Arc::as_ptr).collect();
        replicas.resolve().await;
        let after: Vec<*const Replica> = replicas.snapshot().iter().map(std::sync::Arc::as_ptr).collect();
        assert_eq!(before, after);
    }
}
