//! The orders service: checkout as an orchestrated saga (reserve stock → place the order →
//! charge → commit the stock → empty the cart), payments through a provider, fulfilment, and
//! the recovery of checkouts that a crash interrupted.
//!
//! Its surface is the one every service has: [`Config`], [`build`] (the returned [`Server`]
//! runs until stopped) and [`migrate`]. Inside, each module stands on those below it:
//! `http` → `orders` (the use cases) → `saga` → `peers`, `payments` → `store` → `domain`.
#![forbid(unsafe_code)]

pub mod config;
mod domain;
mod error;
mod http;
mod orders;
pub mod payments;
mod peers;
mod saga;
mod store;

use std::{sync::Arc, time::Duration};

use platform::{
    auth::Verifier,
    config::Shared,
    health::Health,
    service::{Server, StartError, names},
};

use payments::Payments;

pub use config::Config;
pub use http::ApiDoc;
pub use saga::STUCK_AFTER;

/// The name this service goes by in logs, metrics and events.
pub const SERVICE: &str = platform::service::names::ORDERS;

const GAUGES_EVERY: Duration = Duration::from_secs(15);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Opens the orders database with its schema (and the payment provider's) up to date.
async fn open_store(config: &Config, shared: &Shared) -> Result<store::Store, StartError> {
    config.validate().map_err(StartError::Config)?;
    let store = store::Store::open(&shared.database_url(SERVICE, config.database_url.as_deref()), &config.pool).await?;
    payments::migrate(&config.payments, store.db()).await?;
    Ok(store)
}

/// Creates or upgrades the orders schema (and the sandbox's ledger, where the sandbox is the
/// provider), then returns.
pub async fn migrate(config: &Config, shared: &Shared) -> Result<(), StartError> {
    open_store(config, shared).await.map(drop)
}

/// Binds orders: its HTTP API, with its outbox relayed and interrupted sagas finished meanwhile
/// (at once on start: a restart after a crash picks its work up).
pub async fn build(config: Config, shared: &Shared, events: &events::Events) -> Result<Server, StartError> {
    let store = open_store(&config, shared).await?;
    let provider = payments::Provider::open(&config.payments, store.db())?;
    register_metrics(payments::Payments::name(&provider));
    let inventory =
        peers::Catalog::new(&shared.bound.grpc_url(names::CATALOG, &config.catalog_url), config.rpc_timeout)?;
    let carts = Arc::new(peers::Cart::new(&shared.bound.grpc_url(names::CART, &config.cart_url), config.rpc_timeout)?);
    let sagas = saga::Sagas::new(
        store.clone(),
        saga::Peers { inventory: Arc::new(inventory), carts: carts.clone(), payments: Arc::new(provider.clone()) },
        saga::Settings {
            number_prefix: config.number_prefix.clone(),
            lease: config.saga_lease,
            reservation_ttl: config.reservation_ttl,
            crash_after: config.crash_after,
        },
    );
    let orders = Arc::new(orders::Orders::new(
        store.clone(),
        sagas,
        provider.clone(),
        carts,
        config.pricing.clone(),
        config.idempotency_wait,
    ));
    let verifier = Verifier::remote(
        &shared.auth,
        shared.revocations.clone(),
        platform::http::client::client(Duration::from_secs(1)),
    );
    let health = Health::new().database(store.db().clone()).check("broker", events.bus.readiness());
    let router =
        platform::server::finish(SERVICE, http::router(http::AppState { orders: orders.clone() }, verifier), health);
    let relay = events.relay(SERVICE, store.db().clone());
    let server = Server::bind(SERVICE, config.listen, router).await?;
    provider.set_own_webhook_url(format!(
        "http://{}/api/v1/payments/webhooks/{}",
        server.local_addr(),
        provider.name()
    ));
    tracing::info!(service = SERVICE, provider = provider.name(), "payment provider");
    let (sweeping, counting, pruning) = (orders.clone(), orders.clone(), orders);
    let key_ttl = config.idempotency_ttl;
    Ok(server
        .task(move |stop| relay.run_until_stopped(stop))
        .every(config.sweep_interval, move || {
            let orders = sweeping.clone();
            async move { orders.sweep().await }
        })
        .every(GAUGES_EVERY, move || {
            let orders = counting.clone();
            async move { orders.update_gauges().await }
        })
        .every(PRUNE_EVERY, move || {
            let orders = pruning.clone();
            async move { orders.prune(key_ttl).await }
        }))
}

/// Registers at zero the counters that alerts and dashboards divide by or take rates of, so that
/// they have series before the first refusal or provider failure.
fn register_metrics(provider: &'static str) {
    for outcome in ["replayed", "mismatch", "busy"] {
        metrics::counter!("orders_idempotent_replays_total", "outcome" => outcome).absolute(0);
    }
    for reason in orders::REFUSALS {
        metrics::counter!("orders_checkouts_refused_total", "reason" => reason).absolute(0);
    }
    for operation in ["charge", "refund"] {
        for outcome in ["refused", "unavailable"] {
            metrics::counter!("orders_payment_provider_errors_total", "provider" => provider, "operation" => operation, "outcome" => outcome)
                .absolute(0);
        }
    }
    for kind in [domain::Kind::Checkout, domain::Kind::Cancel] {
        for step in domain::Step::resumable() {
            metrics::counter!("orders_saga_steps_resumed_total", "kind" => kind.as_str(), "step" => step.as_str())
                .absolute(0);
        }
    }
}
