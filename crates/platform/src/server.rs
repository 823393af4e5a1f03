//! Turning a service's API router into a running server: the routes every service has
//! (`/health/*`, `/metrics`), problem+json for unknown routes, methods and panics, request
//! observation, and graceful shutdown that drains in-flight requests.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderValue, header},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
    serve::ListenerExt,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;

use crate::{ErrorCode, Problem, health::Health, http::context::observe};

pub use crate::http::DEFAULT_BODY_LIMIT;

/// How long in-flight requests may take to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Wraps a service's API routes with everything every service answers the same way.
pub fn finish(service: &'static str, api: Router, health: Health) -> Router {
    api.merge(health.router())
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        // `Router::layer` runs after routing, so the route template is known to `observe`.
        .layer(middleware::from_fn_with_state(service, observe))
        .layer(CatchPanicLayer::custom(panic_response))
}

async fn metrics() -> Response {
    let mut response = crate::metrics::render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

pub async fn not_found() -> Problem {
    Problem::with_detail(ErrorCode::NotFound, "no such resource")
}

async fn method_not_allowed() -> Problem {
    Problem::with_detail(ErrorCode::MethodNotAllowed, "this resource does not support that method")
}

fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = message, "request handler panicked");
    Problem::internal().into_response()
}

/// Binds a listener; port 0 picks a free port (tests run many services side by side).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `router` until `shutdown` is cancelled, then stops accepting and lets in-flight
/// requests finish (up to [`DRAIN_TIMEOUT`]).
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let drained = shutdown.clone();
    // Responses are written whole; Nagle's algorithm would only hold back their last segment.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    let server = axum::serve(listener, service).with_graceful_shutdown(async move { drained.cancelled().await });
    drain(server.into_future(), shutdown).await
}

/// [`serve`] over TLS: HTTP/2 or HTTP/1.1, as the client's ALPN asks.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::extract::{ConnectInfo, Request};
    // Handlers read the client's address as on plain connections.
    let router = router.layer(axum::middleware::map_request(|mut request: Request| async move {
        if let Some(ConnectInfo(crate::tls::TlsPeer(peer))) = request.extensions().get().copied() {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        request
    }));
    let service = router.into_make_service_with_connect_info::<crate::tls::TlsPeer>();
    let drained = shutdown.clone();
    let listener = crate::tls::TlsListener::new(listener, acceptor)?;
    let server = axum::serve(listener, service).with_graceful_shutdown(async move { drained.cancelled().await });
    drain(server.into_future(), shutdown).await
}

/// Runs `server` until it has finished the requests in flight after `shutdown`, or until
/// [`DRAIN_TIMEOUT`] has passed since.
async fn drain(server: impl Future<Output = std::io::Result<()>>, shutdown: CancellationToken) -> std::io::Result<()> {
    tokio::select! {
        result = server => result,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            tracing::warn!("in-flight requests did not finish within the drain timeout");
            Ok(())
        }
    }
}
