//! The `signing_keys` table.

use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::Jwk;
use platform::with_db;
use sqlx::types::Json;

use super::Store;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: String,
    /// PKCS#8 DER, sealed with the data key (`crate::secrets`).
    pub private_key: Vec<u8>,
    pub public_jwk: Json<Jwk>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Keys still worth publishing: unretired, or retired after `retired_after` (tokens they
    /// signed may still be in use). Newest first.
    pub async fn signing_keys(&self, retired_after: DateTime<Utc>) -> Result<Vec<StoredKey>, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query_as(
            "SELECT kid, algorithm, private_key, public_jwk, created_at, retired_at FROM signing_keys
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC, kid DESC"
        )
        .bind(retired_after)
        .fetch_all(pool)
        .await)
    }

    pub async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_jwk, created_at) VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_key)
        .bind(&key.public_jwk)
        .bind(key.created_at)
        .execute(pool)
        .await
        .map(|_| ()))
    }

    /// Stops every key but `kid` from signing; they stay published for a while.
    pub async fn retire_signing_keys_except(&self, kid: &str, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query(
            "UPDATE signing_keys SET retired_at = $2 WHERE kid <> $1 AND retired_at IS NULL"
        )
        .bind(kid)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
    }

    /// Deletes keys retired before `before`: nothing they signed is still valid.
    pub async fn prune_signing_keys(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query("DELETE FROM signing_keys WHERE retired_at < $1")
            .bind(before)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
    }
}
