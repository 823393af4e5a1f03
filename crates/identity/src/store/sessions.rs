//! Login sessions and their refresh tokens.
//!
//! A session is a family of refresh tokens: each refresh spends the presented token and issues
//! the next. Presenting a spent token means it was copied; the whole family is revoked.

use chrono::{DateTime, Utc};
use platform::{db::Tx, with_tx};
use uuid::Uuid;

use super::Store;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    /// The token was live and is now spent.
    Spent { session: SessionRecord, token_expires_at: DateTime<Utc> },
    /// The token had already been spent: it is being replayed.
    Reused { session_id: Uuid },
    /// No such token.
    Unknown,
}

impl Store {
    pub async fn create_session(
        &self,
        tx: &mut Tx,
        id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)"
        )
        .bind(id)
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(conn)
        .await
        .map(|_| ()))
    }

    pub async fn insert_refresh_token(
        &self,
        tx: &mut Tx,
        digest: &[u8],
        session_id: Uuid,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, issued_at, expires_at) VALUES ($1, $2, $3, $4)"
        )
        .bind(digest)
        .bind(session_id)
        .bind(now)
        .bind(expires_at)
        .execute(conn)
        .await
        .map(|_| ()))
    }

    /// Spends the token with `digest` if it is unspent. The conditional update is what makes two
    /// concurrent refreshes with one token end as one success and one detected reuse.
    pub async fn spend_refresh_token(
        &self,
        tx: &mut Tx,
        digest: &[u8],
        now: DateTime<Utc>,
    ) -> Result<RefreshOutcome, sqlx::Error> {
        let spent: Option<(Uuid, DateTime<Utc>)> = with_tx!(tx, |conn| sqlx::query_as(
            "UPDATE refresh_tokens SET spent_at = $2 WHERE token_hash = $1 AND spent_at IS NULL
             RETURNING session_id, expires_at"
        )
        .bind(digest)
        .bind(now)
        .fetch_optional(conn)
        .await)?;
        match spent {
            Some((session_id, token_expires_at)) => match self.session(tx, session_id).await? {
                Some(session) => Ok(RefreshOutcome::Spent { session, token_expires_at }),
                None => Ok(RefreshOutcome::Unknown),
            },
            None => {
                let existing: Option<Uuid> = with_tx!(tx, |conn| sqlx::query_scalar(
                    "SELECT session_id FROM refresh_tokens WHERE token_hash = $1"
                )
                .bind(digest)
                .fetch_optional(conn)
                .await)?;
                Ok(existing.map_or(RefreshOutcome::Unknown, |session_id| RefreshOutcome::Reused { session_id }))
            }
        }
    }

    /// The session a token (spent or not) belongs to.
    pub async fn session_of_token(&self, tx: &mut Tx, digest: &[u8]) -> Result<Option<Uuid>, sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(digest)
            .fetch_optional(conn)
            .await)
    }

    pub async fn session(&self, tx: &mut Tx, id: Uuid) -> Result<Option<SessionRecord>, sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query_as("SELECT id, user_id, expires_at, revoked_at FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await)
    }

    /// Ends a live session; returns its user when it was live (so that its end is published once).
    pub async fn revoke_session(
        &self,
        tx: &mut Tx,
        id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query_scalar(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL
             RETURNING user_id"
        )
        .bind(id)
        .bind(now)
        .bind(reason)
        .fetch_optional(conn)
        .await)
    }

    /// Revokes every live session of a user but `keep` (the caller's own, on a password change);
    /// returns the sessions it ended.
    pub async fn revoke_sessions_of_user(
        &self,
        tx: &mut Tx,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query_scalar(
            "UPDATE sessions SET revoked_at = $3, revoked_reason = $4
             WHERE user_id = $1 AND revoked_at IS NULL AND ($2 IS NULL OR id <> $2)
             RETURNING id"
        )
        .bind(user_id)
        .bind(keep)
        .bind(now)
        .bind(reason)
        .fetch_all(conn)
        .await)
    }

    /// Deletes sessions (and with them their tokens) that ended before `before`.
    pub async fn prune_sessions(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let pruned = with_tx!(&mut tx, |conn| sqlx::query(
            "DELETE FROM sessions WHERE expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1)"
        )
        .bind(before)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
        tx.commit().await?;
        Ok(pruned)
    }
}
