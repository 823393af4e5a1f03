//! The cart service: guest carts (the unguessable id is the capability) and each user's own
//! cart, priced by the catalog at the time of each request.
//!
//! Its surface: [`Config`], [`CartService::build`], then [`CartService::run_until_stopped`].
//! The HTTP API serves shoppers; the gRPC service serves orders at checkout.
#![forbid(unsafe_code)]

pub mod carts;
mod catalog;
pub mod config;
mod consumer;
mod error;
mod grpc;
mod http;
pub mod store;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use platform::{auth::Verifier, config::Shared, health::Health};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use carts::Carts;
pub use config::Config;
pub use error::CartError;
pub use http::ApiDoc;

/// The name this service goes by in logs, metrics and events.
pub const SERVICE: &str = "cart";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("cart database")]
    Database(#[from] platform::db::ConnectError),
    #[error("cart store (Redis)")]
    Redis(#[from] redis::RedisError),
    #[error("catalog client")]
    Catalog(#[from] tonic::transport::Error),
    #[error("event bus")]
    Bus(#[from] events::BusError),
    #[error("could not listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A bound, ready cart service.
pub struct CartService {
    listener: TcpListener,
    grpc_listener: TcpListener,
    router: axum::Router,
    grpc: tonic::transport::server::Router,
    subscription: events::Subscription,
    bus: events::Bus,
}

impl CartService {
    pub async fn build(config: Config, shared: &Shared, events: &events::Events) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let url = config.store_url.clone().unwrap_or_else(|| shared.sqlite_url(SERVICE));
        let store = if url.starts_with("redis") {
            store::CartStore::Redis(store::RedisCarts::open(&url, &config.key_prefix)?)
        } else {
            store::CartStore::Sql(store::SqlCarts::open(&url, &config.pool).await?)
        };
        let catalog = Arc::new(catalog::Catalog::new(&config.catalog_url, config.catalog_timeout, config.price_ttl)?);
        let replica =
            config.replica_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
        let per_replica = matches!(events.bus, events::Bus::Rabbit(_));
        let subscription = consumer::subscription(&replica, per_replica, catalog.clone());
        events.bus.prepare(&subscription).await?;
        let carts = Arc::new(Carts::new(store.clone(), catalog, config.guest_ttl, config.user_ttl));

        let listener = platform::server::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let grpc_listener = platform::server::bind(config.grpc_listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.grpc_listen, source })?;
        let verifier = Verifier::remote(&shared.auth, platform::http::client::client(Duration::from_secs(1)));
        let health = Health::new()
            .check("store", move || {
                let store = store.clone();
                async move { store.ping().await.map_err(|_| "unreachable".to_owned()) }
            })
            .check("broker", events.bus.readiness());
        let router =
            platform::server::finish(SERVICE, http::router(http::AppState { carts: carts.clone() }, verifier), health);
        let grpc = platform::grpc::server().add_service(grpc::CartsService::server(carts));
        Ok(Self { listener, grpc_listener, router, grpc, subscription, bus: events.bus.clone() })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves HTTP and gRPC until `shutdown`, keeping cached prices fresh from events meanwhile.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(service = SERVICE, addr = %self.local_addr(), grpc = %self.grpc_addr(), "listening");
        let background = CancellationToken::new();
        let consumer = {
            let (bus, subscription, stop) = (self.bus.clone(), self.subscription, background.clone());
            tokio::spawn(async move { bus.consume(subscription, stop).await })
        };
        let grpc = tokio::spawn(platform::grpc::serve(self.grpc_listener, self.grpc, shutdown.clone()));
        let served = platform::server::serve(self.listener, self.router, shutdown.clone()).await;
        shutdown.cancel();
        if let Ok(Err(error)) = grpc.await {
            tracing::error!(error = %error, "grpc server failed");
        }
        background.cancel();
        let _ = consumer.await;
        served
    }
}
