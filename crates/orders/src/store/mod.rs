//! The orders database: orders, saga progress, idempotency keys and handled webhooks; one
//! implementation over both SQL backends. Rows are mapped to and from the domain's types here,
//! and no SQL type leaves this module.
//!
//! Every change of an order or a saga is conditional on what was read (`version`, `step`), so
//! that of two processes acting on the same row exactly one wins and the other sees `false`.
//! Changes that must commit together (a saga's step, the order it changes, the events that
//! announce it, the answer under the key) are made in one [`Unit`].

mod keys;
mod orders;
mod sagas;

use chrono::{DateTime, Utc};
use platform::{
    db::{ConnectError, Db, PoolConfig, Tx},
    with_db,
};
use sqlx::migrate::Migrator;
use uuid::Uuid;

use crate::domain::{CheckoutOutcome, Order};

pub use keys::{Claim, KeyState, NewKey};
pub use sagas::Advance;

static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Sorts after every UUID: the first page of a newest-first listing starts below it.
const MAX_ID: Uuid = Uuid::max();

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer: worth a retry later.
    #[error("orders database unavailable: {0}")]
    Unavailable(String),
    #[error("orders database: {0}")]
    Failed(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if platform::db::is_unavailable(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::Failed(platform::http::problem::error_chain(&error))
        }
    }
}

/// A stored value the domain does not recognise.
fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("unreadable row: {what}"))
}

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Connects and brings the schema (the orders' tables and the outbox) up to date.
    pub async fn open(url: &str, pool: &PoolConfig) -> Result<Self, ConnectError> {
        let db = events::open_database(url, pool, &POSTGRES, &SQLITE).await?;
        db.observe_as(crate::SERVICE);
        Ok(Self { db })
    }

    /// The database, for what shares it: the outbox relay, health checks, the sandbox ledger.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Starts a set of changes that commit together, or not at all.
    pub async fn unit(&self) -> Result<Unit, StoreError> {
        Ok(Unit { tx: self.db.begin().await? })
    }

    /// Records a provider notification; `false` when it was handled before.
    pub async fn record_webhook(&self, provider: &str, event_id: &str) -> Result<bool, StoreError> {
        Ok(with_db!(&self.db, |pool| sqlx::query(
            "INSERT INTO webhook_events (provider, event_id, received_at) VALUES ($1, $2, $3)
             ON CONFLICT (provider, event_id) DO NOTHING"
        )
        .bind(provider)
        .bind(event_id)
        .bind(platform::time::now())
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1))?)
    }

    /// The types of the events recorded about `subject`, oldest first.
    #[cfg(test)]
    pub async fn outbox_types(&self, subject: &str) -> Result<Vec<String>, StoreError> {
        Ok(with_db!(&self.db, |pool| sqlx::query_scalar(
            "SELECT event_type FROM event_outbox WHERE subject = $1 ORDER BY seq"
        )
        .bind(subject)
        .fetch_all(pool)
        .await)?)
    }

    /// Drops answered keys older than `before`, and finished sagas with them.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let sagas = format!("DELETE FROM sagas WHERE updated_at < $1 AND step IN {}", sagas::FINAL_STEPS);
        Ok(with_db!(&self.db, |pool| {
            let keys = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1 AND outcome IS NOT NULL")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected();
            sqlx::query(sqlx::AssertSqlSafe(sagas)).bind(before).execute(pool).await?;
            Ok::<_, sqlx::Error>(keys)
        })?)
    }
}

/// Changes that commit together: a transaction, seen through the domain's types.
pub struct Unit {
    tx: Tx,
}

impl Unit {
    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        Ok(self.tx.rollback().await?)
    }

    /// Records events for publication with the changes they announce.
    pub async fn publish(&mut self, events: &[events::CloudEvent]) -> Result<(), StoreError> {
        Ok(events::enqueue_all(&mut self.tx, events).await?)
    }

    /// Stores the final outcome under a checkout's key (once: a later one never replaces it).
    pub async fn answer(&mut self, user: Uuid, key: &str, outcome: &CheckoutOutcome) -> Result<(), StoreError> {
        keys::answer(&mut self.tx, user, key, outcome).await
    }

    /// Forgets a key whose request did nothing, so that a retry under it starts afresh.
    pub async fn forget(&mut self, user: Uuid, key: &str) -> Result<(), StoreError> {
        keys::forget(&mut self.tx, user, key).await
    }

    pub async fn next_number(&mut self) -> Result<i64, StoreError> {
        orders::next_number(&mut self.tx).await
    }

    pub async fn insert_order(&mut self, order: &Order) -> Result<(), StoreError> {
        orders::insert(&mut self.tx, order).await
    }

    /// Writes an order's changeable fields, if nobody changed it since `order.version` was
    /// read; `false` otherwise. Once committed, the stored version is one higher.
    pub async fn update_order(&mut self, order: &Order) -> Result<bool, StoreError> {
        orders::update(&mut self.tx, order).await
    }

    pub async fn insert_saga(&mut self, saga: &crate::domain::Saga) -> Result<(), StoreError> {
        sagas::insert(&mut self.tx, saga).await
    }

    /// Moves a saga on and renews its lease; `false` when it was not at `change.from` (another
    /// process moved it first).
    pub async fn advance(&mut self, change: Advance) -> Result<bool, StoreError> {
        sagas::advance_in(&mut self.tx, change).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Step;

    #[test]
    fn the_final_steps_in_sql_are_the_domains() {
        let steps: Vec<String> = Step::FINAL.iter().map(|s| format!("'{}'", s.as_str())).collect();
        assert_eq!(format!("({})", steps.join(", ")), sagas::FINAL_STEPS);
    }
}
