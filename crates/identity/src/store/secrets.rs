//! The `data_keys` table, and the sealed columns: `signing_keys.private_key` and
//! `link_secrets.secret` (see `platform::secrets`).

use chrono::{DateTime, Utc};
use platform::with_db;

use super::Store;

impl Store {
    /// The wrapped data key and the id of the master key that wraps it.
    pub async fn data_key(&self) -> Result<Option<(String, Vec<u8>)>, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query_as("SELECT master_key_id, wrapped FROM data_keys WHERE id = 1")
            .fetch_optional(pool)
            .await)
    }

    /// Stores the first data key; a replica that stored one first wins.
    pub async fn insert_data_key(
        &self,
        master_key_id: &str,
        wrapped: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query(
            "INSERT INTO data_keys (id, master_key_id, wrapped, created_at) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO NOTHING"
        )
        .bind(master_key_id)
        .bind(wrapped)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))
    }

    /// Replaces the data key's wrapping by master key `from` with one by `to`; false when it
    /// was not wrapped by `from` (any more).
    pub async fn rewrap_data_key(
        &self,
        from: &str,
        to: &str,
        wrapped: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        with_db!(&self.db, |pool| {
            sqlx::query(
            "UPDATE data_keys SET master_key_id = $2, wrapped = $3, rewrapped_at = $4 WHERE id = 1 AND master_key_id = $1"
        )
        .bind(from)
        .bind(to)
        .bind(wrapped)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1)
        })
    }

    /// Every signing key's id and stored private key, sealed or not.
    pub async fn stored_private_keys(&self) -> Result<Vec<(String, Vec<u8>)>, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query_as("SELECT kid, private_key FROM signing_keys").fetch_all(pool).await)
    }

    /// Replaces a stored private key, if it is still `was` (two replicas may seal it at once).
    pub async fn replace_private_key(&self, kid: &str, was: &[u8], now: &[u8]) -> Result<(), sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query(
            "UPDATE signing_keys SET private_key = $3 WHERE kid = $1 AND private_key = $2"
        )
        .bind(kid)
        .bind(was)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))
    }

    /// The stored link secret, made (as `fresh`) by whichever replica asks first.
    pub async fn stored_link_secret(&self, fresh: &[u8]) -> Result<Vec<u8>, sqlx::Error> {
        with_db!(&self.db, |pool| {
            sqlx::query("INSERT INTO link_secrets (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
                .bind(fresh)
                .execute(pool)
                .await?;
            sqlx::query_scalar("SELECT secret FROM link_secrets WHERE id = 1").fetch_one(pool).await
        })
    }

    /// Replaces the stored link secret, if it is still `was`.
    pub async fn replace_link_secret(&self, was: &[u8], now: &[u8]) -> Result<(), sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query("UPDATE link_secrets SET secret = $2 WHERE id = 1 AND secret = $1")
            .bind(was)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ()))
    }
}
