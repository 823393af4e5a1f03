//! The identity service: users, credentials, login sessions with rotating refresh tokens, roles,
//! and the keys that sign access tokens.
//!
//! Its surface is the one every service has: [`Config`], [`build`] (bind and prepare; the
//! returned [`Server`] runs until stopped) and [`migrate`]; [`open`] gives the CLI the same use
//! cases without a server.
#![forbid(unsafe_code)]

mod accounts;
pub mod config;
pub mod domain;
mod error;
mod grpc;
mod http;
mod keys;
mod passwords;
mod secrets;
mod social;
mod store;
mod tokens;

use std::{sync::Arc, time::Duration};

use platform::{
    config::Shared,
    health::Health,
    service::{Server, StartError},
};

pub use accounts::{Accounts, Origin, Register, Tokens};
pub use config::{BootstrapAdmin, Config};
pub use error::IdentityError;
pub use http::ApiDoc;

/// The name this service goes by in logs, metrics and events.
pub const SERVICE: &str = platform::service::names::IDENTITY;

/// Opens identity's database (migrating it) and the use cases over it, without serving.
pub async fn open(config: &Config, shared: &Shared) -> Result<Accounts, StartError> {
    config.validate().map_err(StartError::Config)?;
    let master = secrets::master_key(config, shared)?;
    let store = store::Store::open(&shared.database_url(SERVICE, config.database_url.as_deref()), &config.pool).await?;
    let (data_key, link_secret) = secrets::open(&store, &master).await?;
    let hasher =
        passwords::Hasher::new(&config.password_hashing).await.map_err(StartError::dependency("password hashing"))?;
    let keys = keys::KeyRing::load(
        &store,
        Arc::new(data_key),
        &shared.auth,
        shared.revocations.clone(),
        config.access_token_ttl,
        config.key_reload_interval,
    )
    .await
    .map_err(StartError::dependency("signing keys"))?;
    let providers = social::Providers::from_config(&config.social).map_err(StartError::Config)?;
    Ok(Accounts::new(store, hasher, keys, providers, config.clone(), link_secret))
}

/// Wraps identity's data key with the master key `next` (an existing file) instead of the
/// configured one; returns the new master key's fingerprint. Running replicas keep working;
/// each must be given the new key before it restarts.
pub async fn rotate_master_key(
    config: &Config,
    shared: &Shared,
    next: &platform::secrets::MasterKeyConfig,
) -> Result<String, StartError> {
    let current = secrets::master_key(config, shared)?;
    // The new key must already be where the replicas will read it (made with `new-master-key`
    // and stored in the secret store): a key made by this command in a throw-away container
    // would be lost the moment the data key was wrapped with it.
    let next = platform::secrets::MasterKey::load(next, None).map_err(|e| StartError::Config(e.to_string()))?;
    let store = store::Store::open(&shared.database_url(SERVICE, config.database_url.as_deref()), &config.pool).await?;
    // Seals whatever is not sealed yet, and proves the current key opens the data key.
    secrets::open(&store, &current).await?;
    secrets::rotate_master_key(&store, &current, &next).await?;
    Ok(next.id().to_owned())
}

/// Creates or upgrades identity's schema, then returns.
pub async fn migrate(config: &Config, shared: &Shared) -> Result<(), StartError> {
    open(config, shared).await.map(drop)
}

/// Binds identity: its HTTP API and the gRPC service notifications uses, with its outbox relayed, signing keys kept fresh and expired
/// sessions pruned meanwhile.
pub async fn build(config: Config, shared: &Shared, events: &events::Events) -> Result<Server, StartError> {
    let accounts = Arc::new(open(&config, shared).await?);
    register_metrics(&config);
    if let Some(admin) = &config.bootstrap_admin {
        bootstrap_admin(&accounts, admin).await?;
    }
    let db = accounts.store().db().clone();
    let health = Health::new().database(db.clone()).check("broker", events.bus.readiness());
    let state = http::AppState { accounts: accounts.clone(), trusted_proxy_hops: config.trusted_proxy_hops };
    let router = platform::server::finish(SERVICE, http::router(state), health);
    let relay = events.relay(SERVICE, db);
    let grpc = platform::grpc::server(SERVICE).add_service(grpc::IdentityService::server(accounts.clone()));
    let (keys, sessions) = (accounts.clone(), accounts);
    Ok(Server::bind(SERVICE, config.listen, router)
        .await?
        .grpc(config.grpc_listen, grpc)
        .await?
        .task(move |stop| relay.run_until_stopped(stop))
        .every(config.key_reload_interval, move || {
            let accounts = keys.clone();
            async move {
                if let Err(error) = accounts.keys().reload(accounts.store()).await {
                    tracing::warn!(error = %error, "could not reload signing keys");
                }
            }
        })
        .every(PRUNE_EVERY, move || {
            let accounts = sessions.clone();
            async move {
                if let Err(error) = accounts.prune().await {
                    tracing::warn!(error = %error, "could not prune expired sessions");
                }
            }
        }))
}

const PRUNE_EVERY: Duration = Duration::from_secs(600);

async fn bootstrap_admin(accounts: &Accounts, admin: &BootstrapAdmin) -> Result<(), StartError> {
    use secrecy::ExposeSecret;
    let email = domain::Email::parse(&admin.email)
        .map_err(|e| StartError::Config(format!("EMPORIUM_BOOTSTRAP_ADMIN_EMAIL {e}")))?;
    let password = domain::NewPassword::parse(admin.password.expose_secret().to_owned())
        .map_err(|e| StartError::Config(format!("EMPORIUM_BOOTSTRAP_ADMIN_PASSWORD {e}")))?;
    let name = domain::DisplayName::parse("Administrator").map_err(|e| StartError::Config(e.to_owned()))?;
    match accounts.create_admin(&email, &password, &name).await {
        Ok(user) => tracing::info!(user_id = %user.id, "bootstrap administrator created"),
        Err(IdentityError::EmailTaken) => tracing::debug!("bootstrap administrator already exists"),
        Err(error) => return Err(StartError::dependency("bootstrap administrator")(error)),
    }
    Ok(())
}

/// Registers identity's counters at zero, so that rates and alerts have series from the start.
fn register_metrics(config: &Config) {
    metrics::counter!("identity_registrations_total").absolute(0);
    metrics::counter!("identity_email_verifications_total").absolute(0);
    metrics::counter!("identity_password_resets_requested_total").absolute(0);
    metrics::counter!("identity_password_resets_total").absolute(0);
    for outcome in ["success", "invalid", "throttled"] {
        metrics::counter!("identity_logins_total", "outcome" => outcome).absolute(0);
    }
    for outcome in ["success", "invalid", "reused"] {
        metrics::counter!("identity_token_refreshes_total", "outcome" => outcome).absolute(0);
    }
    for provider in config.social.providers.keys() {
        for outcome in
            ["signed_in", "registered", "linked", "refused", "provider_error", "unavailable", "invalid_state"]
        {
            metrics::counter!("identity_social_logins_total", "provider" => provider.clone(), "outcome" => outcome)
                .absolute(0);
        }
    }
}
