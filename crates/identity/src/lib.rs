//! The identity service: users, credentials, login sessions with rotating refresh tokens, roles,
//! and the keys that sign access tokens.
//!
//! Its surface is small: [`Config`], [`Identity::build`] (bind and prepare), then
//! [`Identity::run_until_stopped`]; [`open`] gives the CLI the same use cases without a server.
#![forbid(unsafe_code)]

mod accounts;
pub mod config;
pub mod domain;
mod error;
mod http;
mod keys;
mod passwords;
mod store;
mod tokens;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use platform::{config::Shared, db::ConnectError, health::Health};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use accounts::{Accounts, Origin, Register, Tokens};
pub use config::{BootstrapAdmin, Config};
pub use error::IdentityError;
pub use http::ApiDoc;

/// The name this service goes by in logs, metrics and events.
pub const SERVICE: &str = "identity";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("identity database")]
    Database(#[from] ConnectError),
    #[error("identity setup")]
    Setup(#[from] IdentityError),
    #[error("password hashing")]
    Hashing(#[from] passwords::HashError),
    #[error("could not listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Opens identity's database (migrating it) and the use cases over it, without serving.
pub async fn open(config: &Config, shared: &Shared) -> Result<Accounts, StartError> {
    config.validate().map_err(StartError::Config)?;
    let url = config.database_url.clone().unwrap_or_else(|| shared.sqlite_url(SERVICE));
    let store = store::Store::open(&url, &config.pool).await?;
    let hasher = passwords::Hasher::new(&config.password_hashing).await?;
    let keys = keys::KeyRing::load(&store, &shared.auth, config.access_token_ttl, config.key_reload_interval).await?;
    Ok(Accounts::new(store, hasher, keys, config.clone()))
}

/// A bound, ready identity service.
pub struct Identity {
    listener: TcpListener,
    accounts: Arc<Accounts>,
    router: axum::Router,
    key_reload_interval: Duration,
    relay: events::Relay,
}

impl Identity {
    pub async fn build(config: Config, shared: &Shared, events: &events::Events) -> Result<Self, StartError> {
        let accounts = Arc::new(open(&config, shared).await?);
        if let Some(admin) = &config.bootstrap_admin {
            bootstrap_admin(&accounts, admin).await?;
        }
        let listener = platform::server::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let health = Health::new().database(accounts.store().db().clone()).check("broker", events.bus.readiness());
        let relay =
            events::Relay::new(SERVICE, accounts.store().db().clone(), events.bus.clone(), events.relay.clone());
        let state = http::AppState { accounts: accounts.clone(), trusted_proxy_hops: config.trusted_proxy_hops };
        let router = platform::server::finish(SERVICE, http::router(state), health);
        Ok(Self { listener, accounts, router, key_reload_interval: config.key_reload_interval, relay })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn accounts(&self) -> Arc<Accounts> {
        self.accounts.clone()
    }

    /// Serves until `shutdown` is cancelled, relaying its outbox, keeping signing keys fresh and
    /// pruning expired sessions meanwhile. The relay stops after the last request has drained.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(service = SERVICE, addr = %self.local_addr(), "listening");
        let background = CancellationToken::new();
        let maintenance = tokio::spawn(maintain(self.accounts.clone(), self.key_reload_interval, background.clone()));
        let relay = tokio::spawn(self.relay.run_until_stopped(background.clone()));
        let served = platform::server::serve(self.listener, self.router, shutdown).await;
        background.cancel();
        let _ = tokio::join!(maintenance, relay);
        served
    }
}

/// Binds and serves until `shutdown`.
pub async fn serve(
    config: Config,
    shared: &Shared,
    events: &events::Events,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let identity = Identity::build(config, shared, events).await?;
    let addr = identity.local_addr();
    identity.run_until_stopped(shutdown).await.map_err(|source| StartError::Bind { addr, source })
}

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
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

async fn maintain(accounts: Arc<Accounts>, reload_every: Duration, shutdown: CancellationToken) {
    const PRUNE_EVERY: Duration = Duration::from_secs(600);
    let mut reload = tokio::time::interval(reload_every);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    reload.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = reload.tick() => {
                if let Err(error) = accounts.keys().reload(accounts.store()).await {
                    tracing::warn!(error = %error, "could not reload signing keys");
                }
            }
            _ = prune.tick() => {
                if let Err(error) = accounts.prune().await {
                    tracing::warn!(error = %error, "could not prune expired sessions");
                }
            }
        }
    }
}
