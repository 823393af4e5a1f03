//! One-time link requests (`link_requests`) and the secret their tokens derive from.

use chrono::{DateTime, Utc};
use platform::{db::Tx, with_db, with_tx};
use uuid::Uuid;

use super::Store;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkRequest {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    pub purpose: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub superseded_at: Option<DateTime<Utc>>,
}

impl LinkRequest {
    /// Whether its token may still be used at `now`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.used_at.is_none() && self.superseded_at.is_none() && self.expires_at > now
    }
}

pub struct NewLinkRequest<'a> {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    pub purpose: &'a str,
    pub email: &'a str,
    pub token_hash: &'a [u8],
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, user_id, purpose, email, created_at, expires_at, used_at, superseded_at";

impl Store {
    /// Records a request, replacing the open ones of the same user and purpose: only the newest
    /// link works.
    pub async fn insert_link_request(&self, tx: &mut Tx, request: &NewLinkRequest<'_>) -> Result<(), sqlx::Error> {
        if let Some(user_id) = request.user_id {
            self.close_link_requests(tx, user_id, request.purpose, request.now).await?;
        }
        with_tx!(tx, |conn| sqlx::query(
            "INSERT INTO link_requests (id, user_id, purpose, email, token_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
        .bind(request.id)
        .bind(request.user_id)
        .bind(request.purpose)
        .bind(request.email)
        .bind(request.token_hash)
        .bind(request.now)
        .bind(request.expires_at)
        .execute(conn)
        .await
        .map(|_| ()))
    }

    pub async fn link_request(&self, id: Uuid) -> Result<Option<LinkRequest>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM link_requests WHERE id = $1"));
        with_db!(&self.db, |pool| sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
    }

    pub async fn link_request_by_digest(&self, token_hash: &[u8]) -> Result<Option<LinkRequest>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM link_requests WHERE token_hash = $1"));
        with_db!(&self.db, |pool| sqlx::query_as(sql).bind(token_hash).fetch_optional(pool).await)
    }

    /// Spends the open request whose token has this digest: `None` when there is none (unknown,
    /// already used, replaced or expired). One conditional update, so a token works once even
    /// when presented twice at the same moment.
    pub async fn spend_link_request(
        &self,
        tx: &mut Tx,
        token_hash: &[u8],
        purpose: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<LinkRequest>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE link_requests SET used_at = $3
             WHERE token_hash = $1 AND purpose = $2 AND user_id IS NOT NULL
               AND used_at IS NULL AND superseded_at IS NULL AND expires_at > $3
             RETURNING {COLUMNS}"
        ));
        with_tx!(tx, |conn| sqlx::query_as(sql).bind(token_hash).bind(purpose).bind(now).fetch_optional(conn).await)
    }

    /// Closes the open requests of a user's purpose (a newer one replaces them; a reset spends
    /// every reset link).
    pub async fn close_link_requests(
        &self,
        tx: &mut Tx,
        user_id: Uuid,
        purpose: &str,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query(
            "UPDATE link_requests SET superseded_at = $3
             WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL AND superseded_at IS NULL"
        )
        .bind(user_id)
        .bind(purpose)
        .bind(now)
        .execute(conn)
        .await
        .map(|_| ()))
    }

    pub async fn set_email_verified(&self, tx: &mut Tx, user_id: Uuid, email: &str) -> Result<bool, sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query(
            "UPDATE users SET email_verified = TRUE WHERE id = $1 AND email_normalized = $2"
        )
        .bind(user_id)
        .bind(email)
        .execute(conn)
        .await
        .map(|r| r.rows_affected() == 1))
    }

    /// Deletes requests that expired before `before`.
    pub async fn prune_link_requests(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query("DELETE FROM link_requests WHERE expires_at < $1")
            .bind(before)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
    }
}
