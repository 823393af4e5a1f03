//! Starting services: any subset of them in this process, each on its own port and talking to
//! the others over HTTP exactly as separate deployments do.
//!
//! In-process services are bound first, so that the gateway's upstreams and the verifiers' key
//! URL point at the addresses actually bound (port 0 works everywhere).

use std::{fmt, net::SocketAddr, str::FromStr};

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Identity,
    Catalog,
    Cart,
    Orders,
    Gateway,
}

impl Service {
    pub const ALL: [Service; 5] =
        [Service::Identity, Service::Catalog, Service::Cart, Service::Orders, Service::Gateway];

    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => identity::SERVICE,
            Self::Catalog => catalog::SERVICE,
            Self::Cart => cart::SERVICE,
            Self::Orders => orders::SERVICE,
            Self::Gateway => gateway::SERVICE,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|service| service.name() == s)
            .ok_or_else(|| format!("unknown service {s:?}; expected one of: identity, catalog, cart, orders, gateway"))
    }
}

/// Services running in this process.
///
/// Shutdown is ordered: the gateway stops accepting and drains first, and only then do the
/// services behind it stop, so a request the gateway accepted can still reach its service.
pub struct Shop {
    pub identity: Option<SocketAddr>,
    pub catalog: Option<SocketAddr>,
    /// The catalog's gRPC inventory service.
    pub catalog_grpc: Option<SocketAddr>,
    pub cart: Option<SocketAddr>,
    /// The cart's gRPC service for orders.
    pub cart_grpc: Option<SocketAddr>,
    pub orders: Option<SocketAddr>,
    pub gateway: Option<SocketAddr>,
    supervisor: tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: CancellationToken,
}

type Tasks = JoinSet<(Service, std::io::Result<()>)>;

impl Shop {
    /// Binds and starts `services`; they stop when `shutdown` is cancelled.
    pub async fn start(
        mut settings: Settings,
        services: &[Service],
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let (edge_stop, backend_stop) = (CancellationToken::new(), CancellationToken::new());
        let (mut edge, mut backends) = (Tasks::new(), Tasks::new());
        // One bus per process, shared by every service in it.
        let needs_events = services.iter().any(|s| *s != Service::Gateway);
        let events = if needs_events { Some(settings.events().await?) } else { None };
        let mut identity_addr = None;
        if let (true, Some(events)) = (services.contains(&Service::Identity), &events) {
            let built = identity::Identity::build(settings.identity.clone(), &settings.shared(), events).await;
            let identity = started(built, Service::Identity, &backend_stop, &mut backends).await?;
            let addr = identity.local_addr();
            identity_addr = Some(addr);
            let stop = backend_stop.clone();
            backends.spawn(async move { (Service::Identity, identity.run_until_stopped(stop).await) });
            // In-process peers reach identity where it really listens.
            if let Some(upstream) = settings.gateway.upstreams.get_mut("identity") {
                upstream.urls = vec![format!("http://{addr}")];
            }
            settings.auth.jwks_url.get_or_insert_with(|| format!("http://{addr}/.well-known/jwks.json"));
        }
        let (mut catalog_addr, mut catalog_grpc) = (None, None);
        if let (true, Some(events)) = (services.contains(&Service::Catalog), &events) {
            derive_jwks_url(&mut settings);
            let built = catalog::Catalog::build(settings.catalog.clone(), &settings.shared(), events).await;
            let catalog = started(built, Service::Catalog, &backend_stop, &mut backends).await?;
            let addr = catalog.local_addr();
            (catalog_addr, catalog_grpc) = (Some(addr), Some(catalog.grpc_addr()));
            let stop = backend_stop.clone();
            backends.spawn(async move { (Service::Catalog, catalog.run_until_stopped(stop).await) });
            if let Some(upstream) = settings.gateway.upstreams.get_mut("catalog") {
                upstream.urls = vec![format!("http://{addr}")];
            }
            if let Some(grpc) = catalog_grpc {
                settings.cart.catalog_url = format!("http://{grpc}");
                settings.orders.catalog_url = format!("http://{grpc}");
            }
        }
        let (mut cart_addr, mut cart_grpc) = (None, None);
        if let (true, Some(events)) = (services.contains(&Service::Cart), &events) {
            derive_jwks_url(&mut settings);
            let built = cart::CartService::build(settings.cart.clone(), &settings.shared(), events).await;
            let service = started(built, Service::Cart, &backend_stop, &mut backends).await?;
            let addr = service.local_addr();
            (cart_addr, cart_grpc) = (Some(addr), Some(service.grpc_addr()));
            let stop = backend_stop.clone();
            backends.spawn(async move { (Service::Cart, service.run_until_stopped(stop).await) });
            if let Some(upstream) = settings.gateway.upstreams.get_mut("cart") {
                upstream.urls = vec![format!("http://{addr}")];
            }
            if let Some(grpc) = cart_grpc {
                settings.orders.cart_url = format!("http://{grpc}");
            }
        }
        let mut orders_addr = None;
        if let (true, Some(events)) = (services.contains(&Service::Orders), &events) {
            derive_jwks_url(&mut settings);
            let built = orders::OrdersService::build(settings.orders.clone(), &settings.shared(), events).await;
            let service = started(built, Service::Orders, &backend_stop, &mut backends).await?;
            let addr = service.local_addr();
            orders_addr = Some(addr);
            let stop = backend_stop.clone();
            backends.spawn(async move { (Service::Orders, service.run_until_stopped(stop).await) });
            if let Some(upstream) = settings.gateway.upstreams.get_mut("orders") {
                upstream.urls = vec![format!("http://{addr}")];
            }
        }
        let mut gateway_addr = None;
        if services.contains(&Service::Gateway) {
            derive_jwks_url(&mut settings);
            let built = gateway::Gateway::build(settings.gateway.clone(), &settings.auth).await;
            let gateway = started(built, Service::Gateway, &backend_stop, &mut backends).await?;
            gateway_addr = Some(gateway.local_addr());
            let stop = edge_stop.clone();
            edge.spawn(async move { (Service::Gateway, gateway.run_until_stopped(stop).await) });
        }
        let supervisor = tokio::spawn(supervise(shutdown.clone(), edge_stop, edge, backend_stop, backends));
        Ok(Self {
            identity: identity_addr,
            catalog: catalog_addr,
            catalog_grpc,
            cart: cart_addr,
            cart_grpc,
            orders: orders_addr,
            gateway: gateway_addr,
            supervisor,
            shutdown,
        })
    }

    /// Stops every service.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Waits until every service has stopped. If one fails, the others are stopped too.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.supervisor.await.context("the shop supervisor panicked")?
    }
}

/// The service `build` made, or its error, after stopping the services already running: a
/// half-started shop is stopped, not left behind.
async fn started<T, E>(
    built: Result<T, E>,
    service: Service,
    backend_stop: &CancellationToken,
    backends: &mut Tasks,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match built {
        Ok(service) => Ok(service),
        Err(error) => {
            backend_stop.cancel();
            while backends.join_next().await.is_some() {}
            Err(anyhow::Error::new(error).context(format!("starting {service}")))
        }
    }
}

/// Without a configured key URL, services that verify tokens ask the identity upstream the
/// gateway is configured with (by default, identity on this machine).
fn derive_jwks_url(settings: &mut Settings) {
    if settings.auth.jwks_url.is_none() {
        settings.auth.jwks_url = settings
            .gateway
            .upstreams
            .get("identity")
            .and_then(|u| u.urls.first())
            .map(|base| format!("{}/.well-known/jwks.json", base.trim_end_matches('/')));
    }
}

/// Runs until shutdown (or until a service stops on its own, which stops the shop: a
/// half-running shop is worse than none), then stops the edge before the backends.
async fn supervise(
    shutdown: CancellationToken,
    edge_stop: CancellationToken,
    mut edge: Tasks,
    backend_stop: CancellationToken,
    mut backends: Tasks,
) -> anyhow::Result<()> {
    let mut first_error = None;
    tokio::select! {
        () = shutdown.cancelled() => {}
        Some(joined) = edge.join_next() => record(joined, &mut first_error),
        Some(joined) = backends.join_next() => record(joined, &mut first_error),
    }
    shutdown.cancel();
    edge_stop.cancel();
    while let Some(joined) = edge.join_next().await {
        record(joined, &mut first_error);
    }
    backend_stop.cancel();
    while let Some(joined) = backends.join_next().await {
        record(joined, &mut first_error);
    }
    first_error.map_or(Ok(()), Err)
}

fn record(
    joined: Result<(Service, std::io::Result<()>), tokio::task::JoinError>,
    first_error: &mut Option<anyhow::Error>,
) {
    match joined {
        Ok((_, Ok(()))) => {}
        Ok((service, Err(error))) => {
            tracing::error!(service = %service, error = %error, "service stopped with an error");
            first_error.get_or_insert_with(|| anyhow::Error::new(error).context(format!("{service} failed")));
        }
        Err(panic) => {
            first_error.get_or_insert_with(|| anyhow::anyhow!("a service task panicked: {panic}"));
        }
    }
}
