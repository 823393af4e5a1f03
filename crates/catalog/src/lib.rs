//! The catalog service: products with variants, categories, stock and reservations, and the
//! search index over them.
//!
//! Its surface: [`Config`], [`Catalog::build`] (open the database, the index and the
//! listeners), then [`Catalog::run_until_stopped`]; [`open`] gives the CLI the same use cases
//! without a server. The HTTP API serves shoppers and admins; the gRPC inventory service serves
//! cart and orders.
#![forbid(unsafe_code)]

mod cache;
pub mod commands;
pub mod config;
mod consumer;
pub mod demo;
pub mod domain;
mod error;
mod grpc;
mod http;
pub mod inventory;
pub mod products;
pub mod search;
mod store;
pub mod views;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use platform::{auth::Verifier, config::Shared, db::ConnectError, health::Health};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::CatalogError;
pub use http::ApiDoc;
pub use inventory::Inventory;
pub use products::Products;
pub use search::{Indexer, SearchIndex};

/// The name this service goes by in logs, metrics and events.
pub const SERVICE: &str = "catalog";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("catalog database")]
    Database(#[from] ConnectError),
    #[error("catalog setup")]
    Setup(#[from] CatalogError),
    #[error("search index")]
    Search(#[from] search::SearchError),
    #[error("catalog cache")]
    Cache(#[from] redis::RedisError),
    #[error("event bus")]
    Bus(#[from] events::BusError),
    #[error("could not listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The catalog's use cases over its database, without serving.
pub struct Opened {
    pub products: Arc<Products>,
    pub inventory: Arc<Inventory>,
}

/// Opens the catalog's database (migrating it) and the use cases over it.
pub async fn open(config: &Config, shared: &Shared) -> Result<Opened, StartError> {
    config.validate().map_err(StartError::Config)?;
    let url = config.database_url.clone().unwrap_or_else(|| shared.sqlite_url(SERVICE));
    let store = store::Store::open(&url, &config.pool).await?;
    Ok(Opened {
        products: Arc::new(Products::new(store.clone(), config.currency())),
        inventory: Arc::new(Inventory::new(store, config.reservation_ttl)),
    })
}

/// A bound, ready catalog service.
pub struct Catalog {
    listener: TcpListener,
    grpc_listener: TcpListener,
    router: axum::Router,
    grpc: tonic::transport::server::Router,
    relay: events::Relay,
    indexer: Indexer,
    subscription: events::Subscription,
    bus: events::Bus,
    inventory: Arc<Inventory>,
    sweep_interval: Duration,
}

impl Catalog {
    pub async fn build(config: Config, shared: &Shared, events: &events::Events) -> Result<Self, StartError> {
        let opened = open(&config, shared).await?;
        let store = opened.products.store().clone();
        if config.demo_catalog.unwrap_or(store.db().backend() == platform::db::Backend::Sqlite) {
            demo::load_if_empty(&opened.products).await?;
        }
        let cache = cache::ProductCache::open(&config.cache_url, &config.cache_prefix, config.cache_ttl)?;
        let dir = search::index_dir(config.index_dir.as_deref(), &shared.data_dir);
        let (index, created) = search::SearchIndex::open(&dir)?;
        let (indexer, handle) = Indexer::new(index.clone(), store.clone(), config.index_memory_mb)?;
        let replica =
            config.replica_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
        let per_replica = matches!(events.bus, events::Bus::Rabbit(_));
        let subscription = consumer::subscription(&replica, per_replica, handle, cache.clone());
        // The queue exists before the index is read from the database: a change committed
        // during the build is then either in the build or waiting in the queue.
        events.bus.prepare(&subscription).await?;
        if created {
            indexer.build().await?
        } else {
            indexer.reconcile().await?
        };

        let listener = platform::server::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let grpc_listener = platform::server::bind(config.grpc_listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.grpc_listen, source })?;
        let verifier = Verifier::remote(&shared.auth, platform::http::client::client(Duration::from_secs(1)));
        let health = health(store.db().clone(), &events.bus, cache.clone());
        let state =
            http::AppState { products: opened.products.clone(), inventory: opened.inventory.clone(), index, cache };
        let router = platform::server::finish(SERVICE, http::router(state, verifier), health);
        let grpc = platform::grpc::server().add_service(grpc::InventoryService::server(opened.inventory.clone()));
        let relay = events::Relay::new(SERVICE, store.db().clone(), events.bus.clone(), events.relay.clone());
        Ok(Self {
            listener,
            grpc_listener,
            router,
            grpc,
            relay,
            indexer,
            subscription,
            bus: events.bus.clone(),
            inventory: opened.inventory,
            sweep_interval: config.sweep_interval,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves HTTP and gRPC until `shutdown`, relaying the outbox, keeping the index fresh and
    /// releasing expired reservations meanwhile. Background work stops after the servers drain.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(service = SERVICE, addr = %self.local_addr(), grpc = %self.grpc_addr(), "listening");
        let background = CancellationToken::new();
        let indexer = tokio::spawn(self.indexer.run_until_stopped(background.clone()));
        let consumer = {
            let (bus, subscription, stop) = (self.bus.clone(), self.subscription, background.clone());
            tokio::spawn(async move { bus.consume(subscription, stop).await })
        };
        let relay = tokio::spawn(self.relay.run_until_stopped(background.clone()));
        let sweeper = tokio::spawn(sweep(self.inventory.clone(), self.sweep_interval, background.clone()));
        let grpc = {
            let stop = shutdown.clone();
            tokio::spawn(platform::grpc::serve(self.grpc_listener, self.grpc, stop))
        };
        let served = platform::server::serve(self.listener, self.router, shutdown.clone()).await;
        shutdown.cancel();
        let grpc_served = grpc.await;
        background.cancel();
        let _ = tokio::join!(consumer, relay, sweeper, indexer);
        match grpc_served {
            Ok(Err(error)) => tracing::error!(error = %error, "grpc server failed"),
            Err(panic) => tracing::error!(error = %panic, "grpc server panicked"),
            Ok(Ok(())) => {}
        }
        served
    }
}

fn health(db: platform::db::Db, bus: &events::Bus, cache: cache::ProductCache) -> Health {
    Health::new().database(db).check("broker", bus.readiness()).check("cache", move || {
        let cache = cache.clone();
        async move { cache.ping().await.map_err(|_| "unreachable".to_owned()) }
    })
}

async fn sweep(inventory: Arc<Inventory>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(error) = inventory.sweep().await {
                    tracing::warn!(error = %error, "could not release expired reservations");
                }
            }
        }
    }
}

/// Binds and serves until `shutdown`.
pub async fn serve(
    config: Config,
    shared: &Shared,
    events: &events::Events,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let catalog = Catalog::build(config, shared, events).await?;
    let addr = catalog.local_addr();
    catalog.run_until_stopped(shutdown).await.map_err(|source| StartError::Bind { addr, source })
}
