//! The life of a service, written once for all of them: `build` binds its listeners and returns
//! a [`Server`] that knows its addresses; [`Server::run_until_stopped`] serves HTTP (and gRPC)
//! until the token is cancelled, with the service's background work (relays, consumers,
//! sweepers) running beside it on a token of its own. That work stops only after the servers
//! have drained, so a request still in flight can commit its events and have them relayed.

use std::{collections::BTreeMap, future::Future, net::SocketAddr, time::Duration};

use axum::Router;
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::db::ConnectError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The services' names, by which they go in logs, metrics and events, and by which a service
/// finds a peer bound in the same process ([`Bound`]). One list, so a peer's name cannot drift.
pub mod names {
    pub const IDENTITY: &str = "identity";
    pub const CATALOG: &str = "catalog";
    pub const CART: &str = "cart";
    pub const ORDERS: &str = "orders";
    pub const NOTIFICATIONS: &str = "notifications";
    pub const GATEWAY: &str = "gateway";
    pub const STOREFRONT: &str = "storefront";
}

/// Why a service could not start. The message names what failed; the source says why.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting that types alone cannot check; the message names the key.
    #[error("{0}")]
    Config(String),
    #[error("could not listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Something the service needs at start: its database, the broker, an index, a client.
    #[error("{what}")]
    Dependency {
        what: &'static str,
        #[source]
        source: BoxError,
    },
}

impl StartError {
    /// `.map_err(StartError::dependency("search index"))`
    pub fn dependency<E: Into<BoxError>>(what: &'static str) -> impl FnOnce(E) -> Self {
        move |source| Self::Dependency { what, source: source.into() }
    }
}

impl From<tonic::transport::Error> for StartError {
    fn from(error: tonic::transport::Error) -> Self {
        Self::Dependency { what: "grpc peer", source: Box::new(error) }
    }
}

impl From<ConnectError> for StartError {
    fn from(error: ConnectError) -> Self {
        Self::Dependency { what: "database", source: Box::new(error) }
    }
}

/// Where a bound service listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub http: SocketAddr,
    /// Its gRPC service, for services that offer one.
    pub grpc: Option<SocketAddr>,
}

/// The services already bound in this process, by name. A service built after them reaches
/// them where they really listen (port 0 works everywhere) instead of where configuration
/// says; a peer not bound here is reached at its configured URL.
#[derive(Debug, Clone, Default)]
pub struct Bound(BTreeMap<String, Addresses>);

impl Bound {
    pub fn insert(&mut self, service: &str, addresses: Addresses) {
        self.0.insert(service.to_owned(), addresses);
    }

    pub fn get(&self, service: &str) -> Option<Addresses> {
        self.0.get(service).copied()
    }

    /// `http://…` of a service's HTTP API, when it is bound here.
    pub fn http_url(&self, service: &str) -> Option<String> {
        self.get(service).map(|a| format!("http://{}", a.http))
    }

    /// `http://…` of a service's gRPC API: bound here, or else `configured`.
    pub fn grpc_url(&self, service: &str, configured: &str) -> String {
        match self.get(service).and_then(|a| a.grpc) {
            Some(addr) => format!("http://{addr}"),
            None => configured.to_owned(),
        }
    }
}

type Task = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// A bound, ready service.
pub struct Server {
    service: &'static str,
    http: TcpListener,
    router: Router,
    grpc: Option<(TcpListener, crate::grpc::Router)>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: crate::server::ConnectionLimits,
    tasks: Vec<Task>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    crate::server::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

impl Server {
    /// Binds the service's HTTP API (`router`, as [`crate::server::finish`] made it); port 0
    /// picks a free port.
    pub async fn bind(service: &'static str, listen: SocketAddr, router: Router) -> Result<Self, StartError> {
        let http = bind(listen).await?;
        let limits = crate::server::ConnectionLimits::default();
        Ok(Self { service, http, router, grpc: None, tls: None, limits, tasks: Vec::new() })
    }

    /// Holds each connection to `limits` (the defaults otherwise).
    pub fn connection_limits(mut self, limits: crate::server::ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Serves the HTTP API over TLS ([`crate::tls::acceptor`]).
    pub fn tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Also serves gRPC on `listen`.
    pub async fn grpc(mut self, listen: SocketAddr, router: crate::grpc::Router) -> Result<Self, StartError> {
        self.grpc = Some((bind(listen).await?, router));
        Ok(self)
    }

    /// Background work that runs while the service serves and finishes its unit of work when
    /// its token is cancelled, after the servers have drained.
    pub fn task<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(Box::new(move |stop| Box::pin(task(stop))));
        self
    }

    /// Work repeated every `interval`, the first time at once (a restart picks up what is due).
    /// A round that overruns delays the next rather than bunching them.
    pub fn every<F, Fut>(self, interval: Duration, mut work: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.task(move |stop| async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => work().await,
                }
            }
        })
    }

    pub fn addresses(&self) -> Addresses {
        Addresses { http: self.local_addr(), grpc: self.grpc_addr() }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("a bound listener has an address")
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(|(listener, _)| listener.local_addr().expect("a bound listener has an address"))
    }

    /// Serves until `shutdown` is cancelled (or a server fails), drains what is in flight, then
    /// stops the background work and waits for it.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let addresses = self.addresses();
        let grpc_addr = addresses.grpc.map(|a| a.to_string());
        tracing::info!(service = self.service, addr = %addresses.http, grpc = grpc_addr, "listening");
        let Self { service, http, router, grpc, tls, limits, tasks } = self;
        // One server failing stops the other, but not the services beside this one.
        let stop = shutdown.child_token();
        let background = CancellationToken::new();
        let running: Vec<_> = tasks.into_iter().map(|task| tokio::spawn(task(background.clone()))).collect();
        let grpc = grpc.map(|(listener, router)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let served = crate::grpc::serve(listener, router, stop.clone()).await;
                stop.cancel();
                served
            })
        });
        let served = match tls {
            Some(acceptor) => crate::server::serve_tls(http, acceptor, router, limits, stop.clone()).await,
            None => crate::server::serve(http, router, limits, stop.clone()).await,
        };
        stop.cancel();
        if let Some(grpc) = grpc {
            match grpc.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(service, error = %error, "grpc server failed"),
                Err(panic) => tracing::error!(service, error = %panic, "grpc server panicked"),
            }
        }
        background.cancel();
        for task in running {
            if let Err(panic) = task.await {
                tracing::error!(service, error = %panic, "background task panicked");
            }
        }
        served
    }
}

/// This replica's name, for what must be its own (a per-replica event queue): the configured
/// one, or a random one.
pub fn replica_id(configured: Option<&str>) -> String {
    configured.map_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn background_work_stops_after_the_server_and_is_joined() {
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let rounds = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let (counted, done) = (rounds.clone(), finished.clone());
        let server = Server::bind("test", "127.0.0.1:0".parse().unwrap(), router)
            .await
            .unwrap()
            .every(Duration::from_millis(10), move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            })
            .task(move |stop| async move {
                stop.cancelled().await;
                done.fetch_add(1, Ordering::SeqCst);
            });
        assert!(server.grpc_addr().is_none());
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(server.run_until_stopped(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 0, "background work runs while serving");
        assert!(rounds.load(Ordering::SeqCst) >= 1, "periodic work starts at once");
        shutdown.cancel();
        running.await.unwrap().unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 1, "background work is joined before run_until_stopped returns");
    }

    #[test]
    fn bound_services_win_over_configured_urls() {
        let mut bound = Bound::default();
        let addresses =
            Addresses { http: "127.0.0.1:1000".parse().unwrap(), grpc: Some("127.0.0.1:2000".parse().unwrap()) };
        bound.insert("catalog", addresses);
        assert_eq!(bound.grpc_url("catalog", "http://catalog:9082"), "http://127.0.0.1:2000");
        assert_eq!(bound.grpc_url("cart", "http://cart:9083"), "http://cart:9083");
        assert_eq!(bound.http_url("catalog").as_deref(), Some("http://127.0.0.1:1000"));
        assert_eq!(bound.http_url("identity"), None);
    }
}
