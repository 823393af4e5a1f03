//! Social sign-in's tables: sign-ins in flight (`oauth_states`), one-time codes
//! (`oauth_codes`) and the external identities linked to users (`user_identities`). States and
//! codes are stored as digests and taken with `DELETE … RETURNING`, so each works once even
//! when two requests race for it.

use chrono::{DateTime, Utc};
use platform::{db::Tx, with_db, with_tx};
use uuid::Uuid;

use super::Store;

/// A sign-in in flight, as `authorize` left it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StateRow {
    /// The digest of the cookie of the browser that began it.
    pub browser_hash: Vec<u8>,
    pub provider: String,
    pub redirect_uri: String,
    pub client_state: Option<String>,
    pub code_verifier: String,
    pub nonce: String,
    pub link_user_id: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdentityRow {
    pub provider: String,
    pub subject: String,
    pub user_id: Uuid,
    pub email: Option<String>,
    pub linked_at: DateTime<Utc>,
}

impl Store {
    pub async fn insert_state(&self, state_hash: &[u8], row: &StateRow) -> Result<(), sqlx::Error> {
        with_db!(&self.db, |pool| {
            sqlx::query(
            "INSERT INTO oauth_states (state_hash, provider, redirect_uri, client_state, code_verifier, nonce, link_user_id, expires_at, browser_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )
        .bind(state_hash)
        .bind(&row.provider)
        .bind(&row.redirect_uri)
        .bind(&row.client_state)
        .bind(&row.code_verifier)
        .bind(&row.nonce)
        .bind(row.link_user_id)
        .bind(row.expires_at)
        .bind(&row.browser_hash)
        .execute(pool)
        .await
        .map(drop)
        })
    }

    /// Takes a sign-in in flight: it is gone afterwards, whatever becomes of it. `None` when
    /// there is none (used already, never issued) or it has expired.
    pub async fn take_state(&self, state_hash: &[u8], now: DateTime<Utc>) -> Result<Option<StateRow>, sqlx::Error> {
        let row: Option<StateRow> = with_db!(&self.db, |pool| {
            sqlx::query_as(
            "DELETE FROM oauth_states WHERE state_hash = $1
             RETURNING browser_hash, provider, redirect_uri, client_state, code_verifier, nonce, link_user_id, expires_at"
        )
        .bind(state_hash)
        .fetch_optional(pool)
        .await
        })?;
        Ok(row.filter(|r| r.expires_at > now))
    }

    pub async fn insert_code(
        &self,
        tx: &mut Tx,
        code_hash: &[u8],
        user_id: Uuid,
        provider: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query(
            "INSERT INTO oauth_codes (code_hash, user_id, provider, expires_at) VALUES ($1, $2, $3, $4)"
        )
        .bind(code_hash)
        .bind(user_id)
        .bind(provider)
        .bind(expires_at)
        .execute(conn)
        .await
        .map(drop))
    }

    /// Takes a one-time code: the user it signs in and the provider, unless it was used
    /// already or has expired.
    pub async fn take_code(&self, code_hash: &[u8], now: DateTime<Utc>) -> Result<Option<(Uuid, String)>, sqlx::Error> {
        let row: Option<(Uuid, String, DateTime<Utc>)> = with_db!(&self.db, |pool| sqlx::query_as(
            "DELETE FROM oauth_codes WHERE code_hash = $1 RETURNING user_id, provider, expires_at"
        )
        .bind(code_hash)
        .fetch_optional(pool)
        .await)?;
        Ok(row.filter(|(_, _, expires_at)| *expires_at > now).map(|(user, provider, _)| (user, provider)))
    }

    pub async fn identity(&self, provider: &str, subject: &str) -> Result<Option<IdentityRow>, sqlx::Error> {
        with_db!(&self.db, |pool| {
            sqlx::query_as(
            "SELECT provider, subject, user_id, email, linked_at FROM user_identities WHERE provider = $1 AND subject = $2"
        )
        .bind(provider)
        .bind(subject)
        .fetch_optional(pool)
        .await
        })
    }

    pub async fn identities_of(&self, user_id: Uuid) -> Result<Vec<IdentityRow>, sqlx::Error> {
        with_db!(&self.db, |pool| {
            sqlx::query_as(
            "SELECT provider, subject, user_id, email, linked_at FROM user_identities WHERE user_id = $1 ORDER BY linked_at"
        )
        .bind(user_id)
        .fetch_all(pool)
        .await
        })
    }

    /// Links an identity; a unique violation means it (or another of the same provider for
    /// this user) is linked already.
    pub async fn insert_identity(&self, tx: &mut Tx, row: &IdentityRow) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query(
            "INSERT INTO user_identities (provider, subject, user_id, email, linked_at) VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(&row.provider)
        .bind(&row.subject)
        .bind(row.user_id)
        .bind(&row.email)
        .bind(row.linked_at)
        .execute(conn)
        .await
        .map(drop))
    }

    /// Unlinks a user's identity of `provider`, if the user keeps another way to sign in: a
    /// password or another identity. The check and the delete are one statement, so two
    /// unlinks at once cannot both succeed and leave the account without a way in.
    pub async fn unlink_identity(&self, user_id: Uuid, provider: &str) -> Result<Unlink, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        // Serialises unlinks of one user: a row lock on PostgreSQL; SQLite writers are serial.
        with_tx!(&mut tx, |conn| sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1")
            .bind(user_id)
            .execute(conn)
            .await
            .map(drop))?;
        let (has_password, identities, this_one): (bool, i64, i64) = with_tx!(&mut tx, |conn| sqlx::query_as(
            "SELECT u.password_hash IS NOT NULL,
                    (SELECT COUNT(*) FROM user_identities i WHERE i.user_id = u.id),
                    (SELECT COUNT(*) FROM user_identities i WHERE i.user_id = u.id AND i.provider = $2)
             FROM users u WHERE u.id = $1"
        )
        .bind(user_id)
        .bind(provider)
        .fetch_one(conn)
        .await)?;
        if this_one == 0 {
            return Ok(Unlink::NotLinked);
        }
        if !has_password && identities <= 1 {
            return Ok(Unlink::LastWayIn);
        }
        with_tx!(&mut tx, |conn| sqlx::query("DELETE FROM user_identities WHERE user_id = $1 AND provider = $2")
            .bind(user_id)
            .bind(provider)
            .execute(conn)
            .await
            .map(drop))?;
        tx.commit().await?;
        Ok(Unlink::Done)
    }

    /// When a login session began; `None` for one that does not exist.
    pub async fn session_started(&self, session_id: Uuid) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query_scalar("SELECT created_at FROM sessions WHERE id = $1")
            .bind(session_id)
            .fetch_optional(pool)
            .await)
    }

    /// Deletes sign-ins and codes that can no longer be used.
    pub async fn prune_social(&self, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        with_db!(&self.db, |pool| {
            sqlx::query("DELETE FROM oauth_states WHERE expires_at <= $1").bind(now).execute(pool).await?;
            sqlx::query("DELETE FROM oauth_codes WHERE expires_at <= $1").bind(now).execute(pool).await.map(drop)
        })
    }
}

/// What became of an unlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlink {
    Done,
    NotLinked,
    /// The user has no password and no other identity: refused.
    LastWayIn,
}
