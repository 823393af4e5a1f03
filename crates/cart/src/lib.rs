//! The cart service: guest carts (the unguessable id is the capability) and each user's own
//! cart, priced by the catalog at the time of each request.
//!
//! Its surface is the one every service has: [`Config`], [`build`] (the returned [`Server`]
//! runs until stopped) and [`migrate`]. The HTTP API serves shoppers; the gRPC service serves
//! orders at checkout, and a checkout that empties a cart publishes `cart.checked_out`.
#![forbid(unsafe_code)]

pub mod carts;
pub mod config;
mod consumer;
mod error;
mod grpc;
mod http;
mod peers;
mod rules;
mod store;

use std::{sync::Arc, time::Duration};

use platform::{
    auth::Verifier,
    config::Shared,
    health::Health,
    service::{Server, StartError},
};

pub use carts::Carts;
pub use config::Config;
pub use error::CartError;
pub use http::ApiDoc;
/// The script behind every line change in Redis, for `bench cart` to time with redis-benchmark.
pub use store::CHANGE_LINE_LUA;

/// The name this service goes by in logs, metrics and events.
pub const SERVICE: &str = platform::service::names::CART;

/// Opens the configured store: Redis, or a SQL database (migrating it).
async fn open_store(config: &Config, shared: &Shared) -> Result<store::CartStore, StartError> {
    config.validate().map_err(StartError::Config)?;
    let url = shared.database_url(SERVICE, config.store_url.as_deref());
    Ok(if url.starts_with("redis") {
        store::CartStore::Redis(
            store::RedisCarts::open(&url, &config.key_prefix).map_err(StartError::dependency("cart store (Redis)"))?,
        )
    } else {
        store::CartStore::Sql(store::SqlCarts::open(&url, &config.pool).await?)
    })
}

/// Creates or upgrades the cart's SQL schema, then returns; carts in Redis need none.
pub async fn migrate(config: &Config, shared: &Shared) -> Result<(), StartError> {
    open_store(config, shared).await.map(drop)
}

/// Binds the cart: its HTTP API and the gRPC service orders uses, with cached prices kept fresh
/// from the catalog's events meanwhile.
pub async fn build(config: Config, shared: &Shared, events: &events::Events) -> Result<Server, StartError> {
    let store = open_store(&config, shared).await?;
    metrics::counter!("cart_carts_created_total").absolute(0);
    let catalog_url = shared.bound.grpc_url(platform::service::names::CATALOG, &config.catalog_url);
    let catalog = Arc::new(peers::Catalog::new(&catalog_url, config.catalog_timeout, config.price_ttl)?);
    let replica = platform::service::replica_id(config.replica_id.as_deref());
    let per_replica = matches!(events.bus, events::Bus::Rabbit(_));
    let subscription = consumer::subscription(&replica, per_replica, catalog.clone());
    events.bus.prepare(&subscription).await.map_err(StartError::dependency("event bus"))?;
    let carts = Arc::new(Carts::new(store.clone(), catalog, config.guest_ttl, config.user_ttl, config.currency));
    let relay = Relay::of(&store, events);

    let verifier = Verifier::remote(
        &shared.auth,
        shared.revocations.clone(),
        platform::http::client::client(Duration::from_secs(1)),
    );
    let health = Health::new()
        .check("store", move || {
            let store = store.clone();
            async move { store.ping().await.map_err(|_| "unreachable".to_owned()) }
        })
        .check("broker", events.bus.readiness());
    let router =
        platform::server::finish(SERVICE, http::router(http::AppState { carts: carts.clone() }, verifier), health);
    let grpc = platform::grpc::server(SERVICE).add_service(grpc::CartsService::server(carts));
    Ok(Server::bind(SERVICE, config.listen, router)
        .await?
        .grpc(config.grpc_listen, grpc)
        .await?
        .task(events.consumer(subscription))
        .task(move |stop| relay.run_until_stopped(stop)))
}

/// What publishes the events checkouts wrote: the SQL outbox's relay, or the Redis streams'.
enum Relay {
    Sql(events::Relay),
    Redis(store::RedisOutbox, events::Bus, events::RelayConfig),
}

impl Relay {
    fn of(store: &store::CartStore, events: &events::Events) -> Self {
        match store {
            store::CartStore::Sql(sql) => Self::Sql(events.relay(SERVICE, sql.db().clone())),
            store::CartStore::Redis(redis) => Self::Redis(redis.outbox(), events.bus.clone(), events.relay.clone()),
        }
    }

    async fn run_until_stopped(self, stop: tokio_util::sync::CancellationToken) {
        match self {
            Self::Sql(relay) => relay.run_until_stopped(stop).await,
            Self::Redis(outbox, bus, config) => outbox.run_until_stopped(bus, config, stop).await,
        }
    }
}
