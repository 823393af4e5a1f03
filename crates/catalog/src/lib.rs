//! The catalog service: products with variants, categories, stock and reservations, and the
//! search index over them.
//!
//! Its surface is the one every service has: [`Config`], [`build`] (open the database, the
//! index and the listeners; the returned [`Server`] runs until stopped) and [`migrate`]; [`open`]
//! gives the CLI the same use cases without a server. The HTTP API serves shoppers and admins; the gRPC inventory service serves
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
mod schemas;
pub mod search;
mod store;
pub mod views;

use std::{sync::Arc, time::Duration};

use platform::{
    auth::Verifier,
    config::Shared,
    health::Health,
    service::{Server, StartError},
};

pub use config::Config;
pub use error::CatalogError;
pub use http::ApiDoc;
pub use inventory::Inventory;
pub use products::Products;
pub use search::{Indexer, SearchIndex};

/// The name this service goes by in logs, metrics and events.
pub const SERVICE: &str = platform::service::names::CATALOG;

/// The catalog's use cases over its database, without serving.
pub struct Opened {
    pub products: Arc<Products>,
    pub inventory: Arc<Inventory>,
}

/// Opens the catalog's database (migrating it) and the use cases over it.
pub async fn open(config: &Config, shared: &Shared) -> Result<Opened, StartError> {
    config.validate().map_err(StartError::Config)?;
    let store = store::Store::open(&shared.database_url(SERVICE, config.database_url.as_deref()), &config.pool).await?;
    Ok(Opened {
        products: Arc::new(Products::new(store.clone(), config.currency())),
        inventory: Arc::new(Inventory::new(store, config.reservation_ttl)),
    })
}

/// Creates or upgrades the catalog's schema, then returns.
pub async fn migrate(config: &Config, shared: &Shared) -> Result<(), StartError> {
    open(config, shared).await.map(drop)
}

/// Binds the catalog: its HTTP API and the gRPC inventory service, with its outbox relayed, the
/// search index kept fresh from events and expired reservations released meanwhile.
pub async fn build(config: Config, shared: &Shared, events: &events::Events) -> Result<Server, StartError> {
    let opened = open(&config, shared).await?;
    search::register_metrics();
    for outcome in ["hit", "miss", "error"] {
        metrics::counter!("catalog_cache_requests_total", "outcome" => outcome).absolute(0);
    }
    metrics::counter!("catalog_stock_changes_total", "kind" => "set").absolute(0);
    let store = opened.products.store().clone();
    if config.demo_catalog.unwrap_or(store.db().backend() == platform::db::Backend::Sqlite) {
        demo::load_if_empty(&opened.products).await.map_err(StartError::dependency("demo catalog"))?;
    }
    let cache = cache::ProductCache::open(&config.cache_url, &config.cache_prefix, config.cache_ttl)
        .map_err(StartError::dependency("catalog cache"))?;
    let dir = search::index_dir(config.index_dir.as_deref(), &shared.data_dir);
    let (index, created) = search::SearchIndex::open(&dir).map_err(StartError::dependency("search index"))?;
    let (indexer, handle) = Indexer::new(index.clone(), store.clone(), config.index_memory_mb)
        .map_err(StartError::dependency("search index"))?;
    let replica = platform::service::replica_id(config.replica_id.as_deref());
    let per_replica = matches!(events.bus, events::Bus::Rabbit(_));
    let subscription = consumer::subscription(&replica, per_replica, handle, cache.clone());
    // The queue exists before the index is read from the database: a change committed
    // during the build is then either in the build or waiting in the queue.
    events.bus.prepare(&subscription).await.map_err(StartError::dependency("event bus"))?;
    if created { indexer.build().await } else { indexer.reconcile().await }
        .map_err(StartError::dependency("search index"))?;

    let verifier = Verifier::remote(
        &shared.auth,
        shared.revocations.clone(),
        platform::http::client::client(Duration::from_secs(1)),
    );
    let health = health(store.db().clone(), &events.bus, cache.clone());
    let state = http::AppState { products: opened.products.clone(), inventory: opened.inventory.clone(), index, cache };
    let router = platform::server::finish(SERVICE, http::router(state, verifier), health);
    let grpc = platform::grpc::server(SERVICE).add_service(grpc::InventoryService::server(opened.inventory.clone()));
    let relay = events.relay(SERVICE, store.db().clone());
    let inventory = opened.inventory;
    Ok(Server::bind(SERVICE, config.listen, router)
        .await?
        .grpc(config.grpc_listen, grpc)
        .await?
        .task(move |stop| indexer.run_until_stopped(stop))
        .task(events.consumer(subscription))
        .task(move |stop| relay.run_until_stopped(stop))
        .every(config.sweep_interval, move || {
            let inventory = inventory.clone();
            async move {
                if let Err(error) = inventory.sweep().await {
                    tracing::warn!(error = %error, "could not release expired reservations");
                }
            }
        }))
}

fn health(db: platform::db::Db, bus: &events::Bus, cache: cache::ProductCache) -> Health {
    Health::new().database(db).check("broker", bus.readiness()).check("cache", move || {
        let cache = cache.clone();
        async move { cache.ping().await.map_err(|_| "unreachable".to_owned()) }
    })
}
