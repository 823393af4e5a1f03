//! Starting services: any subset of them in this process, each on its own port and talking to
//! the others over HTTP exactly as separate deployments do.
//!
//! Services start in dependency order, and each is handed the addresses of those already bound
//! (`Shared::bound`), so that peers, the gateway's upstreams and the verifiers' key URL point at
//! the addresses actually bound (port 0 works everywhere).

use std::{fmt, net::SocketAddr, str::FromStr};

use anyhow::Context;
use platform::service::Bound;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Identity,
    Catalog,
    Cart,
    Orders,
    Notifications,
    Storefront,
    Gateway,
}

impl Service {
    /// In the order they start: the storefront before the gateway that routes to it.
    pub const ALL: [Service; 7] = [
        Service::Identity,
        Service::Catalog,
        Service::Cart,
        Service::Orders,
        Service::Notifications,
        Service::Storefront,
        Service::Gateway,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => identity::SERVICE,
            Self::Catalog => catalog::SERVICE,
            Self::Cart => cart::SERVICE,
            Self::Orders => orders::SERVICE,
            Self::Notifications => notifications::SERVICE,
            Self::Storefront => storefront::SERVICE,
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
        Self::ALL.into_iter().find(|service| service.name() == s).ok_or_else(|| {
            format!("unknown service {s:?}; expected one of: identity, catalog, cart, orders, notifications, storefront, gateway")
        })
    }
}

/// Services running in this process.
///
/// Shutdown is ordered: the gateway stops accepting and drains first, and only then do the
/// services behind it stop, so a request the gateway accepted can still reach its service.
pub struct Shop {
    pub identity: Option<SocketAddr>,
    /// Identity's gRPC service for notifications.
    pub identity_grpc: Option<SocketAddr>,
    pub catalog: Option<SocketAddr>,
    /// The catalog's gRPC inventory service.
    pub catalog_grpc: Option<SocketAddr>,
    pub cart: Option<SocketAddr>,
    /// The cart's gRPC service for orders.
    pub cart_grpc: Option<SocketAddr>,
    pub orders: Option<SocketAddr>,
    pub notifications: Option<SocketAddr>,
    pub storefront: Option<SocketAddr>,
    pub gateway: Option<SocketAddr>,
    supervisor: tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: CancellationToken,
}

type Tasks = JoinSet<(Service, std::io::Result<()>)>;

impl Shop {
    /// Binds and starts `services` in dependency order, each told where those before it
    /// listen; they stop when `shutdown` is cancelled.
    pub async fn start(settings: Settings, services: &[Service], shutdown: CancellationToken) -> anyhow::Result<Self> {
        let (edge_stop, backend_stop) = (CancellationToken::new(), CancellationToken::new());
        let (mut edge, mut backends) = (Tasks::new(), Tasks::new());
        let mut bound = Bound::default();
        // One bus per process, shared by every service in it; the edge needs none.
        let needs_events = services.iter().any(|s| !matches!(s, Service::Gateway | Service::Storefront));
        // The storefront calls the gateway of this process, which is bound after it.
        let gateway_url = services.contains(&Service::Gateway).then(storefront::GatewayUrl::default);
        let mut settings = settings;
        if gateway_url.is_some() && services.contains(&Service::Storefront) {
            if settings.gateway.tls.is_some() && settings.storefront.api_url.is_none() {
                anyhow::bail!(
                    "the gateway of this process speaks only TLS, which the storefront in it does not: \
                     run the storefront as a process of its own with storefront.api_url, or terminate TLS in front"
                );
            }
            // Its calls come from this machine, saying whom they are for: each shopper keeps their
            // own rate limits, and identity counts sign-in failures per shopper, not per storefront.
            if settings.gateway.rate_limits.trusted_proxies.is_empty() {
                settings.gateway.rate_limits.trusted_proxies =
                    ["127.0.0.1/32", "::1/128"].iter().filter_map(|net| net.parse().ok()).collect();
            }
        }
        let events = if needs_events { Some(settings.events().await?) } else { None };
        if let Some(events) = &events {
            // The gateway alone follows none: the services behind it refuse a revoked session.
            tokio::spawn(events::revocations::follow(
                events.bus.clone(),
                settings.revocations.clone(),
                backend_stop.clone(),
            ));
        }
        for service in Service::ALL.into_iter().filter(|s| services.contains(s)) {
            let shared = settings.shared_with(&bound);
            let built = match (service, &events) {
                (Service::Identity, Some(events)) => identity::build(settings.identity.clone(), &shared, events).await,
                (Service::Catalog, Some(events)) => catalog::build(settings.catalog.clone(), &shared, events).await,
                (Service::Cart, Some(events)) => {
                    // One setting names the shop's currency; the cart counts empty carts in it.
                    let config = cart::Config { currency: settings.catalog.currency(), ..settings.cart.clone() };
                    cart::build(config, &shared, events).await
                }
                (Service::Orders, Some(events)) => orders::build(settings.orders.clone(), &shared, events).await,
                (Service::Notifications, Some(events)) => {
                    notifications::build(settings.notifications.clone(), &shared, events).await
                }
                (Service::Storefront, _) => {
                    storefront::build(settings.storefront.clone(), &shared, gateway_url.clone()).await
                }
                (Service::Gateway, _) => gateway::build(settings.gateway.clone(), &shared).await,
                (_, None) => unreachable!("the bus is connected when a service needs it"),
            };
            let server = match built {
                Ok(server) => server,
                Err(error) => {
                    // A half-started shop is stopped, not left behind.
                    backend_stop.cancel();
                    while backends.join_next().await.is_some() {}
                    return Err(anyhow::Error::new(error).context(format!("starting {service}")));
                }
            };
            bound.insert(service.name(), server.addresses());
            if service == Service::Gateway
                && let Some(url) = &gateway_url
            {
                let _ = url.set(format!("http://{}", server.local_addr()));
            }
            // The storefront is a client of the gateway: it stops with the edge, before the API.
            let (tasks, stop) = if matches!(service, Service::Gateway | Service::Storefront) {
                (&mut edge, &edge_stop)
            } else {
                (&mut backends, &backend_stop)
            };
            let stop = stop.clone();
            tasks.spawn(async move { (service, server.run_until_stopped(stop).await) });
        }
        let supervisor = tokio::spawn(supervise(shutdown.clone(), edge_stop, edge, backend_stop, backends));
        let http = |service: Service| bound.get(service.name()).map(|a| a.http);
        let grpc = |service: Service| bound.get(service.name()).and_then(|a| a.grpc);
        Ok(Self {
            identity: http(Service::Identity),
            identity_grpc: grpc(Service::Identity),
            catalog: http(Service::Catalog),
            catalog_grpc: grpc(Service::Catalog),
            cart: http(Service::Cart),
            cart_grpc: grpc(Service::Cart),
            orders: http(Service::Orders),
            notifications: http(Service::Notifications),
            storefront: http(Service::Storefront),
            gateway: http(Service::Gateway),
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
