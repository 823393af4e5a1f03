//! Email verification and password reset: one-time links sent by email.
//!
//! A request is a row and an event naming it (`user.email_verification_requested`,
//! `user.password_reset_requested`), written in one transaction. The link's token is derived
//! from the request id with a secret only identity holds, so the mailer asks identity for it
//! (gRPC) at the moment it sends: the token is in no event, no log line and no replayable
//! stream, and identity stores only its digest. Only the newest request of a user and purpose
//! works; a token works once, and not after its lifetime.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use events::{
    CloudEvent,
    payloads::{UserEmailVerificationRequested, UserPasswordResetRequested},
};
use hmac::{Hmac, Mac};
use platform::{db::Tx, time::now};
use sha2::Sha256;
use uuid::Uuid;

use super::{Accounts, Origin, social::address_key};
use crate::{
    SERVICE,
    domain::{Email, NewPassword, User},
    error::IdentityError,
    store::NewLinkRequest,
    tokens,
};

/// What a one-time link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
        }
    }
}

/// A link the mailer may send: its token while it still works, and whom it is for.
#[derive(Debug)]
pub struct OneTimeLink {
    pub purpose: String,
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user: User,
}

/// Why a link cannot be handed out.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no such link request")]
    Unknown,
    #[error("the link was used, has expired or was replaced")]
    Closed,
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The token of request `id`: the id and a MAC of it, so that it can be derived again (and
/// cannot be guessed) but names its request. 64 base64url characters.
fn derive_token(secret: &[u8], id: Uuid, purpose: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(purpose.as_bytes());
    mac.update(id.as_bytes());
    let mut bytes = id.as_bytes().to_vec();
    bytes.extend_from_slice(&mac.finalize().into_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `token` has the shape of a link token (a bad shape is a 400, not a 401).
fn well_formed(token: &str) -> bool {
    token.len() == 64 && URL_SAFE_NO_PAD.decode(token).is_ok_and(|b| b.len() == 48)
}

impl Accounts {
    /// Within `tx`: records a verification request for `user`'s email and its event.
    pub(super) async fn request_verification_in(
        &self,
        tx: &mut Tx,
        user: &User,
        origin: &Origin,
    ) -> Result<(), IdentityError> {
        let email = user.email.trim().to_lowercase();
        let id = self.insert_request(tx, Some(user.id), Purpose::VerifyEmail, &email).await?;
        let payload = UserEmailVerificationRequested { request_id: id, user_id: user.id, at: now() };
        let event = CloudEvent::new(SERVICE, &payload, origin.traceparent.clone()).map_err(IdentityError::internal)?;
        events::enqueue(tx, &event).await?;
        Ok(())
    }

    async fn insert_request(
        &self,
        tx: &mut Tx,
        user_id: Option<Uuid>,
        purpose: Purpose,
        email: &str,
    ) -> Result<Uuid, IdentityError> {
        let id = Uuid::now_v7();
        let at = now();
        let ttl = match purpose {
            Purpose::VerifyEmail => self.config.links.verify_email_ttl,
            Purpose::ResetPassword => self.config.links.reset_password_ttl,
        };
        let token = derive_token(&self.link_secret, id, purpose.as_str());
        let request = NewLinkRequest {
            id,
            user_id,
            purpose: purpose.as_str(),
            email,
            token_hash: &tokens::digest(&token),
            now: at,
            expires_at: at + self.ttl(ttl)?,
        };
        self.store.insert_link_request(tx, &request).await?;
        Ok(id)
    }

    /// Counts one link asked for under each key; refuses (429) when one is over its limit.
    async fn limit_links(&self, keys: &[(String, u32)]) -> Result<(), IdentityError> {
        let window = self.config.links.window.as_secs() as i64;
        let at = now().timestamp();
        let mut retry_after = 0;
        for (key, max) in keys {
            let state = self.store.count_attempt(key, at, window).await?;
            if state.failures > *max as i32 {
                retry_after = retry_after.max(state.window_started_at + window - at);
            }
        }
        if retry_after > 0 {
            Err(IdentityError::TooManyLinks { retry_after_secs: retry_after.max(1) as u64 })
        } else {
            Ok(())
        }
    }

    /// A new verification email for the signed-in user (the older link stops working). Nothing
    /// is sent for an email already verified.
    pub async fn resend_verification(&self, user_id: Uuid, origin: &Origin) -> Result<(), IdentityError> {
        let links = &self.config.links;
        self.limit_links(&[
            (format!("link:verify:{user_id}"), links.max_per_account),
            (format!("link:{}", address_key(origin)), links.max_per_address),
        ])
        .await?;
        let user = self.user(user_id).await?;
        if user.email_verified {
            return Ok(());
        }
        let mut tx = self.store.db().begin().await?;
        self.request_verification_in(&mut tx, &user, origin).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Proves the email a verification link was sent to.
    pub async fn verify_email(&self, token: &str) -> Result<(), IdentityError> {
        if !well_formed(token) {
            return Err(IdentityError::MalformedLinkToken);
        }
        let mut tx = self.store.db().begin().await?;
        let request = self
            .store
            .spend_link_request(&mut tx, &tokens::digest(token), Purpose::VerifyEmail.as_str(), now())
            .await?
            .ok_or(IdentityError::InvalidLinkToken)?;
        let user_id = request.user_id.ok_or(IdentityError::InvalidLinkToken)?;
        // The address must still be the account's: a link proves the address it was sent to.
        if !self.store.set_email_verified(&mut tx, user_id, &request.email).await? {
            return Err(IdentityError::InvalidLinkToken);
        }
        tx.commit().await?;
        metrics::counter!("identity_email_verifications_total").increment(1);
        Ok(())
    }

    /// Asks for a password reset link for `email`. Answers alike whether or not an account has
    /// this address, after the same work (a request is recorded either way; only an account's
    /// gets an event, hence an email).
    pub async fn forgot_password(&self, email: &Email, origin: &Origin) -> Result<(), IdentityError> {
        let normalized = email.normalized();
        let links = &self.config.links;
        self.limit_links(&[
            (format!("link:reset:{normalized}"), links.max_per_account),
            (format!("link:{}", address_key(origin)), links.max_per_address),
        ])
        .await?;
        let user = self.store.user_by_email(normalized).await?;
        let mut tx = self.store.db().begin().await?;
        let user_id = user.as_ref().map(|u| u.id);
        let id = self.insert_request(&mut tx, user_id, Purpose::ResetPassword, normalized).await?;
        if let Some(user_id) = user_id {
            let payload = UserPasswordResetRequested { request_id: id, user_id, at: now() };
            let event =
                CloudEvent::new(SERVICE, &payload, origin.traceparent.clone()).map_err(IdentityError::internal)?;
            events::enqueue(&mut tx, &event).await?;
        }
        tx.commit().await?;
        metrics::counter!("identity_password_resets_requested_total").increment(1);
        Ok(())
    }

    /// Sets a new password with a reset link: the link is spent, the email counts as verified
    /// (the link reached it), and every session of the user is revoked.
    pub async fn reset_password(
        &self,
        token: &str,
        password: &NewPassword,
        origin: &Origin,
    ) -> Result<(), IdentityError> {
        if !well_formed(token) {
            return Err(IdentityError::MalformedLinkToken);
        }
        let digest = tokens::digest(token);
        // A cheap look first, so that bogus tokens cannot make us hash passwords.
        let Some(request) = self.store.link_request_by_digest(&digest).await? else {
            return Err(IdentityError::InvalidLinkToken);
        };
        if !request.is_open(now()) || request.purpose != Purpose::ResetPassword.as_str() {
            return Err(IdentityError::InvalidLinkToken);
        }
        let hash = self.hasher.hash(password.expose()).await?;
        let at = now();
        let mut tx = self.store.db().begin().await?;
        let request = self
            .store
            .spend_link_request(&mut tx, &digest, Purpose::ResetPassword.as_str(), at)
            .await?
            .ok_or(IdentityError::InvalidLinkToken)?;
        let user_id = request.user_id.ok_or(IdentityError::InvalidLinkToken)?;
        self.store
            .update_user(&mut tx, user_id, None, Some(&hash), at)
            .await?
            .ok_or(IdentityError::InvalidLinkToken)?;
        self.store.set_email_verified(&mut tx, user_id, &request.email).await?;
        self.store.close_link_requests(&mut tx, user_id, Purpose::ResetPassword.as_str(), at).await?;
        self.end_sessions_of_user(&mut tx, user_id, None, "password_reset", at, origin.traceparent.clone()).await?;
        tx.commit().await?;
        // Whoever failed to log in before is no longer guessing this password.
        self.store.clear_login_failures(&format!("account:{}", request.email)).await?;
        metrics::counter!("identity_password_resets_total").increment(1);
        Ok(())
    }

    /// The link of request `id` for the mailer, while it still works.
    pub async fn one_time_link(&self, id: Uuid) -> Result<OneTimeLink, LinkError> {
        let request = self.store.link_request(id).await.map_err(IdentityError::from)?.ok_or(LinkError::Unknown)?;
        let user_id = request.user_id.ok_or(LinkError::Unknown)?;
        if !request.is_open(now()) {
            return Err(LinkError::Closed);
        }
        let user = self.user(user_id).await?;
        if user.email.trim().to_lowercase() != request.email {
            return Err(LinkError::Closed);
        }
        Ok(OneTimeLink {
            token: derive_token(&self.link_secret, request.id, &request.purpose),
            purpose: request.purpose,
            expires_at: request.expires_at,
            user,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_derived_per_request_and_purpose() {
        let id = Uuid::now_v7();
        let token = derive_token(b"secret", id, "verify_email");
        assert!(well_formed(&token), "{token}");
        assert_eq!(token, derive_token(b"secret", id, "verify_email"));
        assert_ne!(token, derive_token(b"secret", id, "reset_password"));
        assert_ne!(token, derive_token(b"other", id, "verify_email"));
        assert_ne!(token, derive_token(b"secret", Uuid::now_v7(), "verify_email"));
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}!", &token[..63])));
    }
}
