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
        .layer(middleware::map_response(no_sniffing))
}

/// Every answer says its `Content-Type` is to be believed: a browser must not guess a script
/// out of a JSON body or a problem document (OWASP API8, security misconfiguration).
pub async fn no_sniffing(mut response: Response) -> Response {
    response.headers_mut().entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    response
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

/// What one connection may hold of a server, so that slow or greedy clients (a request head
/// dribbled a byte at a time, thousands of idle connections, a flood of headers, a body that
/// never ends) cost a bounded share of it and never delay anyone else.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimits {
    /// A request's line and headers must have arrived this long after the server began waiting
    /// for them. The clock starts when a connection opens and again when a kept-alive connection
    /// has been answered, so it is also how long an idle connection is kept.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// The largest request head, in bytes (at least 8 KiB); a larger one is answered 431.
    pub max_header_bytes: usize,
    /// The most header fields in one request; more are answered 431.
    pub max_headers: usize,
    /// Connections served at once by each listener; past it, new ones wait to be accepted.
    pub max_connections: usize,
    /// The longest pause while a request body is being read (then 400, and it is dropped).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_connections: 10_000,
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// hyper refuses a read buffer below this.
const MIN_HEAD_BYTES: usize = 8 * 1024;

/// Serves `router` until `shutdown` is cancelled, then stops accepting and lets in-flight
/// requests finish (up to [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Responses are written whole; Nagle's algorithm would only hold back their last segment.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    drain(serve_connections(listener, router, limits, shutdown.clone()), shutdown).await
}

/// [`serve`] over TLS: HTTP/2 or HTTP/1.1, as the client's ALPN asks.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = crate::tls::TlsListener::new(listener, acceptor)?;
    drain(serve_connections(listener, router, limits, shutdown.clone()), shutdown).await
}

/// Accepts connections while fewer than `max_connections` are open, serving each with the
/// limits' timeouts and sizes, until `shutdown`; then waits for the open ones to finish their
/// requests. Axum's own `serve` takes no limits, so this is its loop with them.
async fn serve_connections<L>(
    mut listener: L,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: Clone + Send + Sync + 'static,
{
    use axum::extract::ConnectInfo;
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::conn::auto::Builder,
    };
    use tower::ServiceExt;

    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_read_timeout));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEAD_BYTES));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // An HTTP/2 connection that stops answering pings is closed like an idle HTTP/1 one.
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    let slots = limits.max_connections.clamp(1, tokio::sync::Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(slots));
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => permit,
            () = shutdown.cancelled() => break,
        };
        // The semaphore is never closed; were it, there would be nothing left to serve.
        let Ok(permit) = permit else { break };
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let router = router.clone();
        let activity = std::sync::Arc::new(Activity::default());
        let seen = activity.clone();
        let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer.clone()));
            let answering = seen.begin();
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await;
                drop(answering);
                response
            }
        });
        let io = TokioIo::new(FirstByteWithin::new(io, limits.header_read_timeout));
        let connection = builder.serve_connection_with_upgrades(io, service).into_owned();
        let (shutdown, idle_limit) = (shutdown.clone(), limits.header_read_timeout);
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let mut closing = false;
            loop {
                let wait = activity.idle_for().map_or(idle_limit, |idle| idle_limit.saturating_sub(idle));
                tokio::select! {
                    // A client that goes away or breaks the protocol ends only its own connection.
                    _ = connection.as_mut() => break,
                    () = shutdown.cancelled(), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    // hyper closes an idle HTTP/1 connection itself (its header-read clock); an
                    // HTTP/2 one it keeps for as long as the client answers pings.
                    () = tokio::time::sleep(wait), if !closing => {
                        if activity.idle_for().is_some_and(|idle| idle >= idle_limit) {
                            closing = true;
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    // Every connection gives its slot back when it ends: holding them all means all have ended.
    let _ = open.acquire_many(u32::try_from(slots).unwrap_or(u32::MAX)).await;
    Ok(())
}

/// Requests being answered on one connection, and since when none is: how an idle HTTP/2
/// connection is found.
struct Activity {
    answering: std::sync::atomic::AtomicUsize,
    idle_since: std::sync::Mutex<std::time::Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self { answering: 0.into(), idle_since: std::sync::Mutex::new(std::time::Instant::now()) }
    }
}

impl Activity {
    fn begin(self: &std::sync::Arc<Self>) -> Answering {
        self.answering.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Answering(self.clone())
    }

    /// How long no request has been answered, or `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.answering.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.idle_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner).elapsed())
    }
}

/// One request being answered; dropped when its answer is ready (or the request is abandoned).
struct Answering(std::sync::Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = std::time::Instant::now();
        self.0.answering.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A connection that must show its protocol within a time. hyper's header-read clock starts only
/// once it knows the protocol, which it learns from the first bytes: up to the 24 of an HTTP/2
/// preface, for as long as they match one. Without this, a client that connects and says nothing,
/// or sends `PRI * HTTP` and stops, would hold its connection (and its place under the cap) for
/// ever.
struct FirstByteWithin<I> {
    inner: I,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// How many bytes so far match the HTTP/2 preface.
    preface: usize,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl<I> FirstByteWithin<I> {
    fn new(inner: I, within: Duration) -> Self {
        Self { inner, deadline: Some(Box::pin(tokio::time::sleep(within))), preface: 0 }
    }

    /// Whether `read` settles the protocol: a byte off the preface (HTTP/1), or all of it (HTTP/2).
    fn settles(&mut self, read: &[u8]) -> bool {
        for &byte in read {
            if H2_PREFACE.get(self.preface) != Some(&byte) {
                return true;
            }
            self.preface += 1;
        }
        self.preface == H2_PREFACE.len()
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FirstByteWithin<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let filled = buf.filled().len();
        let read = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.deadline.is_some() {
            match read {
                Poll::Ready(Ok(())) if buf.filled().len() > filled && self.settles(&buf.filled()[filled..]) => {
                    self.deadline = None;
                }
                Poll::Pending
                    if self.deadline.as_mut().is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready()) =>
                {
                    return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
                }
                _ => {}
            }
        }
        read
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FirstByteWithin<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
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
