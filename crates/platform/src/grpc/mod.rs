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
    let endpoint = Endpoint::from_shared(url.to_owned())?;
    let channel = endpoint.connect_timeout(connect_timeout).timeout(timeout).tcp_nodelay(true).connect_lazy();
    Ok(tower::Layer::layer(&ObserveLayer::client(service), channel))
}

/// Every replica of a peer: a channel to each (configured as a comma-separated list of URLs),
/// used in turn. A replica whose call failed as unreachable (`UNAVAILABLE`) is skipped for a
/// while, and [`Replicas::call`] makes the call again on the next one while time remains — only
/// for calls that are safe to repeat, which every call between our services is (reads, or
/// effects keyed by an order id).
#[derive(Clone)]
pub struct Replicas {
    inner: std::sync::Arc<ReplicasInner>,
}

struct ReplicasInner {
    replicas: Vec<Replica>,
    next: std::sync::atomic::AtomicUsize,
    timeout: Duration,
}

struct Replica {
    channel: Channel,
    /// Until when (ms since `EPOCH`) the replica is skipped.
    down_until: std::sync::atomic::AtomicU64,
}

/// How long a replica that could not be reached is skipped.
const REPLICA_DOWN_FOR: Duration = Duration::from_secs(2);

static EPOCH: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

impl Replicas {
    /// Channels from `service` to each of `urls` (`http://a:9082,http://b:9082`), each call within
    /// `timeout` in all.
    pub fn new(service: &'static str, urls: &str, timeout: Duration) -> Result<Self, tonic::transport::Error> {
        let replicas = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| {
                // A replica that does not accept a connection soon leaves time for another.
                let connect_timeout = (timeout / 3).min(Duration::from_secs(1));
                let channel = channel_with(service, url, connect_timeout, timeout)?;
                Ok(Replica { channel, down_until: std::sync::atomic::AtomicU64::new(0) })
            })
            .collect::<Result<Vec<_>, tonic::transport::Error>>()?;
        Ok(Self { inner: std::sync::Arc::new(ReplicasInner { replicas, next: Default::default(), timeout }) })
    }

    pub fn len(&self) -> usize {
        self.inner.replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.replicas.is_empty()
    }

    /// The replicas in the order to try them: round-robin, those skipped last.
    fn order(&self) -> Vec<&Replica> {
        use std::sync::atomic::Ordering;
        let replicas = &self.inner.replicas;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let mut order: Vec<&Replica> = (0..replicas.len()).map(|i| &replicas[(start + i) % replicas.len()]).collect();
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
