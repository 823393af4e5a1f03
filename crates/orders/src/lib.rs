//! The orders service: checkout as an orchestrated saga (reserve stock → place the order →
//! charge → commit the stock → empty the cart), payments through a provider, fulfilment, and
//! the recovery of checkouts that a crash interrupted.
//!
//! Its surface: [`Config`], [`OrdersService::build`], then [`OrdersService::run_until_stopped`].
#![forbid(unsafe_code)]

mod checkout;
pub mod config;
pub mod domain;
mod error;
mod http;
pub mod orders;
pub mod payments;
mod peers;
pub mod saga;
pub mod store;
pub mod views;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use platform::{auth::Verifier, config::Shared, health::Health};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use checkout::{Answer, CheckoutRequest};
pub use config::Config;
pub use error::OrderError;
pub use http::ApiDoc;
pub use orders::Orders;

/// The name this service goes by in logs, metrics and events.
pub const SERVICE: &str = "orders";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("orders database")]
    Database(#[from] platform::db::ConnectError),
    #[error("catalog or cart client")]
    Peers(#[from] tonic::transport::Error),
    #[error("could not listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A bound, ready orders service.
pub struct OrdersService {
    listener: TcpListener,
    router: axum::Router,
    orders: Arc<Orders>,
    relay: events::Relay,
    sweep_interval: Duration,
    idempotency_ttl: Duration,
}

impl OrdersService {
    pub async fn build(config: Config, shared: &Shared, events: &events::Events) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let url = config.database_url.clone().unwrap_or_else(|| shared.sqlite_url(SERVICE));
        let store = store::Store::open(&url, &config.pool).await?;
        let provider = payments::Provider::from_config(&config.payments, store.db()).map_err(StartError::Config)?;
        let peers = peers::Peers::new(&config.catalog_url, &config.cart_url, config.rpc_timeout)?;
        let listener = platform::server::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        provider.set_own_webhook_url(format!("http://{addr}/api/v1/payments/webhooks/{}", provider.name()));
        let orders = Arc::new(Orders {
            store: store.clone(),
            peers,
            provider,
            pricing: config.pricing.clone(),
            number_prefix: config.number_prefix.clone(),
            lease: config.saga_lease,
            reservation_ttl: config.reservation_ttl,
            idempotency_wait: config.idempotency_wait,
            crash_after: config.crash_after,
        });
        let verifier = Verifier::remote(&shared.auth, platform::http::client::client(Duration::from_secs(1)));
        let health = Health::new().database(store.db().clone()).check("broker", events.bus.readiness());
        let router = platform::server::finish(
            SERVICE,
            http::router(http::AppState { orders: orders.clone() }, verifier),
            health,
        );
        let relay = events::Relay::new(SERVICE, store.db().clone(), events.bus.clone(), events.relay.clone());
        Ok(Self {
            listener,
            router,
            orders,
            relay,
            sweep_interval: config.sweep_interval,
            idempotency_ttl: config.idempotency_ttl,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown`, relaying the outbox and finishing interrupted sagas meanwhile.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(service = SERVICE, addr = %self.local_addr(), provider = self.orders.provider().name(), "listening");
        let background = CancellationToken::new();
        let relay = tokio::spawn(self.relay.run_until_stopped(background.clone()));
        let sweeper =
            tokio::spawn(sweep(self.orders.clone(), self.sweep_interval, self.idempotency_ttl, background.clone()));
        let served = platform::server::serve(self.listener, self.router, shutdown.clone()).await;
        background.cancel();
        let _ = tokio::join!(relay, sweeper);
        served
    }
}

const GAUGES_EVERY: Duration = Duration::from_secs(15);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Finishes interrupted sagas (at once on start: a restart after a crash picks its work up),
/// keeps the status gauges current and prunes old idempotency keys.
async fn sweep(orders: Arc<Orders>, every: Duration, key_ttl: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_gauges: Option<tokio::time::Instant> = None;
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = orders.recover().await {
            tracing::warn!(error = %error, "could not look for interrupted sagas");
        }
        orders.update_stuck_gauge().await;
        if last_gauges.is_none_or(|at| at.elapsed() >= GAUGES_EVERY) {
            last_gauges = Some(tokio::time::Instant::now());
            orders.update_gauges().await;
        }
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(tokio::time::Instant::now());
            let before = platform::time::now() - key_ttl;
            if let Err(error) = orders.store().prune(before).await {
                tracing::warn!(error = %error, "could not prune idempotency keys");
            }
        }
    }
}
