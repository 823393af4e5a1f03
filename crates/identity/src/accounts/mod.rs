//! The identity use cases: registration, login, token refresh and logout, social sign-in
//! (`social`), the user's own profile, and the administration of users. Transport-agnostic:
//! HTTP handlers and the CLI call these.

mod links;
mod social;

pub use links::LinkError;
pub use social::{BeginSignIn, Callback, Identity, ProviderInfo};

use std::net::IpAddr;

use chrono::Duration as ChronoDuration;
use events::{
    CloudEvent,
    payloads::{UserRegistered, UserSessionRevoked, UserSessionsRevoked},
};
use platform::{
    db::{Tx, is_unique_violation},
    pagination::{Page, PageRequest},
    time::now,
};
use uuid::Uuid;

use crate::{
    SERVICE,
    config::Config,
    domain::{DisplayName, Email, NewPassword, Password, RoleSet, User},
    error::IdentityError,
    keys::KeyRing,
    passwords::Hasher,
    social::Providers,
    store::{NewUser, RefreshOutcome, Store},
    tokens,
};

/// A signed-in session's credentials, as returned by register, login and refresh.
#[derive(Debug)]
pub struct Tokens {
    pub user: User,
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

/// Where a request came from, for throttling and for the events it causes.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub client_ip: Option<IpAddr>,
    pub traceparent: Option<String>,
}

pub struct Register {
    pub email: Email,
    pub password: NewPassword,
    pub name: DisplayName,
}

/// A user being created.
struct NewAccount<'a> {
    email: &'a Email,
    name: &'a str,
    password_hash: Option<&'a str>,
    roles: &'a RoleSet,
    email_verified: bool,
    /// `password`, or the provider's id.
    signed_up_with: &'a str,
    /// Whether to send a link proving the email (a customer's unverified address).
    request_verification: bool,
}

pub struct UpdateProfile {
    pub name: Option<DisplayName>,
    pub password: Option<NewPassword>,
    pub current_password: Option<Password>,
}

pub struct Accounts {
    store: Store,
    hasher: Hasher,
    keys: KeyRing,
    providers: Providers,
    config: Config,
    /// The key one-time link tokens are derived with ([`links`]).
    link_secret: Vec<u8>,
}

impl Accounts {
    pub fn new(
        store: Store,
        hasher: Hasher,
        keys: KeyRing,
        providers: Providers,
        config: Config,
        link_secret: Vec<u8>,
    ) -> Self {
        Self { store, hasher, keys, providers, config, link_secret }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    pub async fn register(&self, command: Register, origin: &Origin) -> Result<Tokens, IdentityError> {
        let hash = self.hasher.hash(command.password.expose()).await?;
        let user = self
            .create_user(&command.email, command.name.as_str(), Some(&hash), &RoleSet::customer(), true, origin)
            .await?;
        metrics::counter!("identity_registrations_total").increment(1);
        self.start_session(user).await
    }

    /// Creates a user and announces it (`user.registered`) in one transaction, with a request
    /// to verify the email when `request_verification`.
    async fn create_user(
        &self,
        email: &Email,
        name: &str,
        password_hash: Option<&str>,
        roles: &RoleSet,
        request_verification: bool,
        origin: &Origin,
    ) -> Result<User, IdentityError> {
        let mut tx = self.store.db().begin().await?;
        let account = NewAccount {
            email,
            name,
            password_hash,
            roles,
            email_verified: false,
            signed_up_with: "password",
            request_verification,
        };
        let user = self.insert_user(&mut tx, &account, origin).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Within `tx`: inserts a user and its `user.registered`.
    async fn insert_user(&self, tx: &mut Tx, account: &NewAccount<'_>, origin: &Origin) -> Result<User, IdentityError> {
        let id = Uuid::now_v7();
        let at = now();
        let new_user = NewUser {
            id,
            email: account.email.as_str(),
            email_normalized: account.email.normalized(),
            email_verified: account.email_verified,
            name: account.name,
            password_hash: account.password_hash,
            roles: account.roles,
            now: at,
        };
        if let Err(error) = self.store.insert_user(tx, &new_user).await {
            return Err(if is_unique_violation(&error) { IdentityError::EmailTaken } else { error.into() });
        }
        let payload = UserRegistered {
            user_id: id,
            email: account.email.as_str().to_owned(),
            name: account.name.to_owned(),
            registered_at: at,
            signed_up_with: account.signed_up_with.to_owned(),
            email_verified: account.email_verified,
        };
        let event = CloudEvent::new(SERVICE, &payload, origin.traceparent.clone()).map_err(IdentityError::internal)?;
        events::enqueue(tx, &event).await?;
        let user = User {
            id,
            email: account.email.as_str().to_owned(),
            email_verified: account.email_verified,
            name: account.name.to_owned(),
            roles: account.roles.clone(),
            created_at: at,
            updated_at: at,
        };
        if account.request_verification && !account.email_verified {
            self.request_verification_in(tx, &user, origin).await?;
        }
        Ok(user)
    }

    pub async fn login(&self, email: &str, password: &Password, origin: &Origin) -> Result<Tokens, IdentityError> {
        let normalized = email.trim().to_lowercase();
        let account_key = format!("account:{normalized}");
        let address_key = social::address_key(origin);
        if let Err(error) = self.check_throttle(&account_key, &address_key).await {
            metrics::counter!("identity_logins_total", "outcome" => "throttled").increment(1);
            return Err(error);
        }
        let record = self.store.user_by_email(&normalized).await?;
        let stored_hash = record.as_ref().and_then(|r| r.password_hash.clone());
        let verification = self.hasher.verify(password.expose(), stored_hash.as_deref()).await?;
        let (Some(record), true) = (record, verification.matches) else {
            let now_secs = now().timestamp();
            let window = self.config.login_throttle.window.as_secs() as i64;
            self.store.record_login_failure(&account_key, now_secs, window).await?;
            self.store.record_login_failure(&address_key, now_secs, window).await?;
            metrics::counter!("identity_logins_total", "outcome" => "invalid").increment(1);
            return Err(IdentityError::InvalidCredentials);
        };
        self.store.clear_login_failures(&account_key).await?;
        if verification.needs_rehash
            && let Some(old) = &stored_hash
        {
            // Upgrading is best-effort: the login has succeeded either way.
            match self.hasher.hash(password.expose()).await {
                Ok(new) => {
                    if let Err(error) = self.store.upgrade_password_hash(record.id, old, &new).await {
                        tracing::warn!(error = %error, "could not upgrade a password hash");
                    }
                }
                Err(error) => tracing::warn!(error = %error, "could not rehash a password"),
            }
        }
        metrics::counter!("identity_logins_total", "outcome" => "success").increment(1);
        self.start_session(record.into_user()).await
    }

    async fn check_throttle(&self, account_key: &str, address_key: &str) -> Result<(), IdentityError> {
        let throttle = &self.config.login_throttle;
        let window = throttle.window.as_secs() as i64;
        let now_secs = now().timestamp();
        let mut retry_after = 0;
        for state in self.store.throttle_states(account_key, address_key).await? {
            let limit = if state.key == account_key {
                throttle.max_failures_per_account
            } else {
                throttle.max_failures_per_address
            };
            let window_ends = state.window_started_at + window;
            if window_ends > now_secs && state.failures >= limit as i32 {
                retry_after = retry_after.max(window_ends - now_secs);
            }
        }
        if retry_after > 0 { Err(IdentityError::Throttled { retry_after_secs: retry_after as u64 }) } else { Ok(()) }
    }

    /// Opens a login session: a session row, its first refresh token, an access token.
    async fn start_session(&self, user: User) -> Result<Tokens, IdentityError> {
        let at = now();
        let session_id = Uuid::now_v7();
        let (refresh_token, digest) = tokens::new_refresh_token();
        let mut tx = self.store.db().begin().await?;
        self.store
            .create_session(&mut tx, session_id, user.id, at, at + self.ttl(self.config.session_max_age)?)
            .await?;
        let token_expires =
            (at + self.ttl(self.config.refresh_token_ttl)?).min(at + self.ttl(self.config.session_max_age)?);
        self.store.insert_refresh_token(&mut tx, &digest, session_id, at, token_expires).await?;
        tx.commit().await?;
        let (access_token, expires_in) = self.keys.issue(&user, session_id)?;
        Ok(Tokens { user, access_token, refresh_token, expires_in })
    }

    fn ttl(&self, duration: std::time::Duration) -> Result<ChronoDuration, IdentityError> {
        ChronoDuration::from_std(duration).map_err(IdentityError::internal)
    }

    /// Spends a refresh token and issues the next pair. A spent token presented again revokes
    /// its whole session: one of the two presenters is not the user.
    pub async fn refresh(&self, presented: &str) -> Result<Tokens, IdentityError> {
        let at = now();
        let digest = tokens::digest(presented);
        let mut tx = self.store.db().begin().await?;
        let (session, token_expires_at) = match self.store.spend_refresh_token(&mut tx, &digest, at).await? {
            RefreshOutcome::Spent { session, token_expires_at } => (session, token_expires_at),
            RefreshOutcome::Reused { session_id } => {
                self.end_session(&mut tx, session_id, "refresh_token_reused", at).await?;
                tx.commit().await?;
                tracing::warn!(session_id = %session_id, "refresh token reuse detected, session revoked");
                metrics::counter!("identity_token_refreshes_total", "outcome" => "reused").increment(1);
                return Err(IdentityError::InvalidRefreshToken);
            }
            RefreshOutcome::Unknown => {
                metrics::counter!("identity_token_refreshes_total", "outcome" => "invalid").increment(1);
                return Err(IdentityError::InvalidRefreshToken);
            }
        };
        if session.revoked_at.is_some() || session.expires_at <= at || token_expires_at <= at {
            metrics::counter!("identity_token_refreshes_total", "outcome" => "invalid").increment(1);
            return Err(IdentityError::InvalidRefreshToken);
        }
        let Some(record) = self.store.user_by_id(session.user_id).await? else {
            return Err(IdentityError::InvalidRefreshToken);
        };
        let (refresh_token, next_digest) = tokens::new_refresh_token();
        let next_expires = (at + self.ttl(self.config.refresh_token_ttl)?).min(session.expires_at);
        self.store.insert_refresh_token(&mut tx, &next_digest, session.id, at, next_expires).await?;
        tx.commit().await?;
        let user = record.into_user();
        let (access_token, expires_in) = self.keys.issue(&user, session.id)?;
        metrics::counter!("identity_token_refreshes_total", "outcome" => "success").increment(1);
        Ok(Tokens { user, access_token, refresh_token, expires_in })
    }

    /// Ends the session the token belongs to. Unknown tokens are ignored: logging out is idempotent.
    pub async fn logout(&self, presented: &str) -> Result<(), IdentityError> {
        let digest = tokens::digest(presented);
        let mut tx = self.store.db().begin().await?;
        if let Some(session_id) = self.store.session_of_token(&mut tx, &digest).await? {
            self.end_session(&mut tx, session_id, "logout", now()).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Revokes a session and, when it was live, publishes its end so that every verifier refuses
    /// its access tokens from now on.
    async fn end_session(
        &self,
        tx: &mut platform::db::Tx,
        session_id: Uuid,
        reason: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), IdentityError> {
        if let Some(user_id) = self.store.revoke_session(tx, session_id, reason, at).await? {
            let payload = UserSessionRevoked { user_id, session_id, reason: reason.to_owned(), at };
            let event = CloudEvent::new(SERVICE, &payload, None).map_err(IdentityError::internal)?;
            events::enqueue(tx, &event).await?;
        }
        Ok(())
    }

    /// Revokes every live session of a user but `keep`, and publishes which ended (one event,
    /// in `tx`), so that every verifier refuses their access tokens from now on.
    pub(super) async fn end_sessions_of_user(
        &self,
        tx: &mut platform::db::Tx,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &str,
        at: chrono::DateTime<chrono::Utc>,
        traceparent: Option<String>,
    ) -> Result<(), IdentityError> {
        let session_ids = self.store.revoke_sessions_of_user(tx, user_id, keep, reason, at).await?;
        let payload =
            UserSessionsRevoked { user_id, reason: reason.to_owned(), kept_session_id: keep, session_ids, at };
        let event = CloudEvent::new(SERVICE, &payload, traceparent).map_err(IdentityError::internal)?;
        events::enqueue(tx, &event).await?;
        Ok(())
    }

    pub async fn user(&self, id: Uuid) -> Result<User, IdentityError> {
        self.store.user_by_id(id).await?.map(|r| r.into_user()).ok_or(IdentityError::UserNotFound)
    }

    /// Changes the caller's name and/or password. A new password needs the right current one;
    /// it also signs out every other session of the user.
    pub async fn update_profile(
        &self,
        user_id: Uuid,
        session_id: Option<Uuid>,
        update: UpdateProfile,
    ) -> Result<User, IdentityError> {
        let record = self.store.user_by_id(user_id).await?.ok_or(IdentityError::UserNotFound)?;
        let new_hash = match &update.password {
            None => None,
            Some(new_password) => {
                if record.password_hash.is_some() {
                    let Some(current) = &update.current_password else {
                        return Err(IdentityError::WrongCurrentPassword);
                    };
                    if !self.hasher.verify(current.expose(), record.password_hash.as_deref()).await?.matches {
                        return Err(IdentityError::WrongCurrentPassword);
                    }
                } else {
                    // An account made by a social sign-in has no password to confirm. Its first
                    // one takes a fresh sign-in, so that a stolen access token cannot turn into
                    // a lasting password.
                    self.check_fresh_session(session_id).await?;
                }
                Some(self.hasher.hash(new_password.expose()).await?)
            }
        };
        let at = now();
        let mut tx = self.store.db().begin().await?;
        let updated = self
            .store
            .update_user(&mut tx, user_id, update.name.as_ref().map(DisplayName::as_str), new_hash.as_deref(), at)
            .await?
            .ok_or(IdentityError::UserNotFound)?;
        if new_hash.is_some() {
            self.end_sessions_of_user(&mut tx, user_id, session_id, "password_changed", at, None).await?;
        }
        tx.commit().await?;
        Ok(updated.into_user())
    }

    pub async fn list_users(&self, page: &PageRequest<Uuid>) -> Result<Page<User>, IdentityError> {
        let rows = self.store.list_users(page.after, page.limit + 1).await?;
        Ok(Page::from_rows(rows, page.limit, |r| r.id).map(|r| r.into_user()))
    }

    /// Replaces a user's roles, refusing to remove the last administrator.
    pub async fn set_roles(&self, user_id: Uuid, roles: RoleSet) -> Result<User, IdentityError> {
        let mut tx = self.store.db().begin().await?;
        self.store.lock_roles(&mut tx).await?;
        let current = self.store.user_by_id(user_id).await?.ok_or(IdentityError::UserNotFound)?.into_user();
        let demotes_admin =
            current.roles.contains(platform::auth::Role::Admin) && !roles.contains(platform::auth::Role::Admin);
        if demotes_admin && self.store.count_admins(&mut tx).await? <= 1 {
            return Err(IdentityError::LastAdmin);
        }
        let at = now();
        let updated = self.store.set_roles(&mut tx, user_id, &roles, at).await?.ok_or(IdentityError::UserNotFound)?;
        if demotes_admin {
            // Tokens carry their roles: a demoted administrator's would stay administrators'
            // until they expire. Their sessions end instead; they sign in again as what they are.
            self.end_sessions_of_user(&mut tx, user_id, None, "admin_role_removed", at, None).await?;
        }
        tx.commit().await?;
        Ok(updated.into_user())
    }

    /// Creates an administrator account. An existing account with this email is left alone
    /// (`EmailTaken`): promoting it is an explicit, separate act ([`Accounts::grant_admin`]),
    /// or anyone could pre-register the bootstrap email and be promoted at the next start.
    pub async fn create_admin(
        &self,
        email: &Email,
        password: &NewPassword,
        name: &DisplayName,
    ) -> Result<User, IdentityError> {
        if self.store.user_by_email(email.normalized()).await?.is_some() {
            return Err(IdentityError::EmailTaken);
        }
        let hash = self.hasher.hash(password.expose()).await?;
        // An operator's address, set in configuration: nothing to prove by mail.
        let user =
            self.create_user(email, name.as_str(), Some(&hash), &RoleSet::admin(), false, &Origin::default()).await?;
        Ok(user)
    }

    /// Grants the admin role to an existing account.
    pub async fn grant_admin(&self, email: &Email) -> Result<User, IdentityError> {
        let user = self.store.user_by_email(email.normalized()).await?.ok_or(IdentityError::UserNotFound)?.into_user();
        let mut roles = user.roles.names();
        roles.push("admin".to_owned());
        let roles = RoleSet::parse(&roles).map_err(|e| IdentityError::field("roles", &e))?;
        self.set_roles(user.id, roles).await
    }

    /// Starts signing with a new key; tokens signed by the old ones stay valid until they expire.
    pub async fn rotate_signing_key(&self) -> Result<String, IdentityError> {
        let kid = crate::keys::rotate(&self.store, &self.keys).await?;
        self.keys.reload(&self.store).await?;
        Ok(kid)
    }

    /// Deletes what can no longer be used: ended sessions, stale throttle counters, keys whose
    /// tokens have all expired.
    pub async fn prune(&self) -> Result<(), IdentityError> {
        let at = now();
        self.store.prune_sessions(at - self.ttl(self.config.refresh_token_ttl)?).await?;
        let throttle_window = self.config.login_throttle.window.max(self.config.links.window);
        self.store.prune_login_failures(at.timestamp() - throttle_window.as_secs() as i64).await?;
        let key_window =
            self.config.access_token_ttl + self.config.key_reload_interval * 2 + std::time::Duration::from_secs(3600);
        self.store.prune_signing_keys(at - self.ttl(key_window)?).await?;
        self.store.prune_social(at).await?;
        self.store.prune_link_requests(at).await?;
        Ok(())
    }
}
