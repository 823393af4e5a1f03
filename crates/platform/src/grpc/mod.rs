//! gRPC between services: how our error codes map onto gRPC status codes, serving a tonic
//! router on a bound listener with the same graceful shutdown as HTTP, and the client side:
//! lazily connected channels and calls bounded by a deadline. Both sides are observed
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
    let endpoint = Endpoint::from_shared(url.to_owned())?;
    let channel = endpoint.connect_timeout(timeout).timeout(timeout).tcp_nodelay(true).connect_lazy();
    Ok(tower::Layer::layer(&ObserveLayer::client(service), channel))
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
