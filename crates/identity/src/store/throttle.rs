//! Counters in fixed windows per key (`login_throttle`): failed logins, and links asked for by
//! email (keys prefixed `link:`).

use platform::with_db;

use super::Store;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ThrottleState {
    pub key: String,
    pub failures: i32,
    /// Unix seconds.
    pub window_started_at: i64,
}

impl Store {
    pub async fn throttle_states(&self, account: &str, address: &str) -> Result<Vec<ThrottleState>, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query_as(
            "SELECT key, failures, window_started_at FROM login_throttle WHERE key = $1 OR key = $2"
        )
        .bind(account)
        .bind(address)
        .fetch_all(pool)
        .await)
    }

    /// Counts one failure for `key`, starting a new window when the current one (of
    /// `window_secs`) has ended. One atomic upsert, so concurrent failures all count.
    pub async fn record_login_failure(&self, key: &str, now: i64, window_secs: i64) -> Result<(), sqlx::Error> {
        with_db!(&self.db, |pool| {
            sqlx::query(
            "INSERT INTO login_throttle (key, failures, window_started_at) VALUES ($1, 1, $2)
             ON CONFLICT (key) DO UPDATE SET
               failures = CASE WHEN login_throttle.window_started_at <= $3 THEN 1 ELSE login_throttle.failures + 1 END,
               window_started_at = CASE WHEN login_throttle.window_started_at <= $3 THEN $2 ELSE login_throttle.window_started_at END"
        )
        .bind(key)
        .bind(now)
        .bind(now - window_secs)
        .execute(pool)
        .await
        .map(|_| ())
        })
    }

    /// Counts one attempt for `key` like [`Store::record_login_failure`] and returns the count
    /// in the current window, this attempt included.
    pub async fn count_attempt(&self, key: &str, now: i64, window_secs: i64) -> Result<ThrottleState, sqlx::Error> {
        with_db!(&self.db, |pool| {
            sqlx::query_as(
            "INSERT INTO login_throttle (key, failures, window_started_at) VALUES ($1, 1, $2)
             ON CONFLICT (key) DO UPDATE SET
               failures = CASE WHEN login_throttle.window_started_at <= $3 THEN 1 ELSE login_throttle.failures + 1 END,
               window_started_at = CASE WHEN login_throttle.window_started_at <= $3 THEN $2 ELSE login_throttle.window_started_at END
             RETURNING key, failures, window_started_at"
        )
        .bind(key)
        .bind(now)
        .bind(now - window_secs)
        .fetch_one(pool)
        .await
        })
    }

    pub async fn clear_login_failures(&self, key: &str) -> Result<(), sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query("DELETE FROM login_throttle WHERE key = $1")
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ()))
    }

    /// Deletes counters whose window ended before `before` (unix seconds).
    pub async fn prune_login_failures(&self, before: i64) -> Result<u64, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query("DELETE FROM login_throttle WHERE window_started_at < $1")
            .bind(before)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
    }
}
