//! The notifications service: transactional email driven by other services' events, none of
//! which knows it exists. It owns its delivery records, consumes `user.*` and `order.*` events
//! from its own queue, makes each message from templates kept as files, and hands it to an SMTP
//! server (or, in the embedded shop, writes it to a mailbox directory as an `.eml` file).
//!
//! Its surface is the one every service has: [`Config`], [`build`] and [`migrate`].
#![forbid(unsafe_code)]

pub mod config;
mod consumer;
mod http;
mod mailer;
mod peers;
mod sender;
mod store;
mod templates;

use std::{sync::Arc, time::Duration};

use platform::{
    auth::Verifier,
    config::Shared,
    health::Health,
    service::{Server, StartError},
};
use tokio::sync::Notify;

pub use config::Config;
pub use http::ApiDoc;

/// The name this service goes by in logs, metrics and events.
pub const SERVICE: &str = platform::service::names::NOTIFICATIONS;

async fn open_store(config: &Config, shared: &Shared) -> Result<store::Store, StartError> {
    config.validate().map_err(StartError::Config)?;
    Ok(store::Store::open(&shared.database_url(SERVICE, config.database_url.as_deref()), &config.pool).await?)
}

/// Creates or upgrades the notifications schema, then returns.
pub async fn migrate(config: &Config, shared: &Shared) -> Result<(), StartError> {
    open_store(config, shared).await.map(drop)
}

/// Binds notifications: its admin API, with its consumer queueing mail and its sender sending
/// it meanwhile.
pub async fn build(config: Config, shared: &Shared, events: &events::Events) -> Result<Server, StartError> {
    let store = open_store(&config, shared).await?;
    let templates = templates::Templates::load(config.templates_dir.as_deref())
        .map_err(StartError::dependency("email templates"))?;
    let mailbox = config.mailbox_dir.clone().unwrap_or_else(|| shared.data_dir.join("mailbox"));
    let mailer = mailer::Mailer::new(&config.smtp, mailbox).map_err(StartError::Config)?;
    let identity_url = shared.bound.grpc_url(platform::service::names::IDENTITY, &config.identity_url);
    let identity = peers::Identity::new(&identity_url, config.identity_timeout)?;
    register_metrics();

    let wake = Arc::new(Notify::new());
    let subscription = consumer::subscription(store.clone(), wake.clone());
    events.bus.prepare(&subscription).await.map_err(StartError::dependency("event bus"))?;
    let sender = Arc::new(sender::Sender::new(store.clone(), identity, templates, mailer, config.clone()));

    let verifier = Verifier::remote(
        &shared.auth,
        shared.revocations.clone(),
        platform::http::client::client(Duration::from_secs(1)),
    );
    let health = Health::new().database(store.db().clone()).check("broker", events.bus.readiness());
    let state = http::AppState { store, wake: wake.clone() };
    let router = platform::server::finish(SERVICE, http::router(state, verifier), health);
    Ok(Server::bind(SERVICE, config.listen, router)
        .await?
        .task(events.consumer(subscription))
        .task(move |stop| sender.run(wake, stop)))
}

/// Counters an alert or a dashboard watches start at zero.
fn register_metrics() {
    for &template in templates::MESSAGES {
        for outcome in ["sent", "retried", "failed"] {
            metrics::counter!("notifications_sent_total", "template" => template, "outcome" => outcome).absolute(0);
        }
    }
    metrics::gauge!("notifications_queue_depth").set(0.0);
}
