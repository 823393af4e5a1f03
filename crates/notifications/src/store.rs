//! The `deliveries` table: one row per email to send, over both SQL backends.

use chrono::{DateTime, Utc};
use platform::{
    db::{Backend, ConnectError, Db, Tx},
    with_db, with_tx,
};
use sqlx::{migrate::Migrator, types::Json};
use uuid::Uuid;

static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// What becomes of a delivery.
pub const QUEUED: &str = "queued";
pub const SENT: &str = "sent";
pub const FAILED: &str = "failed";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub template: String,
    pub user_id: Uuid,
    pub recipient: Option<String>,
    pub data: Json<serde_json::Value>,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub traceparent: Option<String>,
}

pub struct NewDelivery<'a> {
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub template: &'a str,
    pub user_id: Uuid,
    pub data: &'a serde_json::Value,
    pub traceparent: Option<&'a str>,
    pub now: DateTime<Utc>,
}

/// The outcome of one attempt.
pub enum Outcome<'a> {
    Sent,
    /// Try again at `next_attempt_at`.
    Retry {
        error: &'a str,
        next_attempt_at: DateTime<Utc>,
    },
    /// Given up: the server refused for good, or the message cannot be made any more.
    Failed {
        error: &'a str,
    },
}

const COLUMNS: &str = "id, event_id, event_type, template, user_id, recipient, data, status, attempts, last_error, \
                       next_attempt_at, created_at, sent_at, traceparent";

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Connects and brings the schema (deliveries, the inbox and the outbox) up to date.
    pub async fn open(url: &str, pool: &platform::db::PoolConfig) -> Result<Self, ConnectError> {
        let db = events::open_database(url, pool, &POSTGRES, &SQLITE).await?;
        db.observe_as(crate::SERVICE);
        Ok(Self { db })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Records a message to send, once per (event, template): a second insert changes nothing.
    pub async fn insert(&self, tx: &mut Tx, delivery: &NewDelivery<'_>) -> Result<bool, sqlx::Error> {
        with_tx!(tx, |conn| {
            sqlx::query(
            "INSERT INTO deliveries (id, event_id, event_type, template, user_id, data, status, next_attempt_at, created_at, traceparent)
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $7, $8)
             ON CONFLICT (event_id, template) DO NOTHING"
        )
        .bind(Uuid::now_v7())
        .bind(delivery.event_id)
        .bind(delivery.event_type)
        .bind(delivery.template)
        .bind(delivery.user_id)
        .bind(Json(delivery.data))
        .bind(delivery.now)
        .bind(delivery.traceparent)
        .execute(conn)
        .await
        .map(|r| r.rows_affected() == 1)
        })
    }

    /// Takes up to `limit` due messages for this sender until `lease_until`, counting the attempt.
    /// Rows another sender holds are skipped (PostgreSQL), or wait their turn (SQLite's writes
    /// are serial anyway).
    pub async fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        // SQLite has no row locks (its writes are serial anyway).
        let skip_locked = if tx.backend() == Backend::Postgres { "FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET leased_until = $2, attempts = attempts + 1
             WHERE id IN (
               SELECT id FROM deliveries
               WHERE status = 'queued' AND next_attempt_at <= $1 AND (leased_until IS NULL OR leased_until <= $1)
               ORDER BY next_attempt_at LIMIT $3 {skip_locked})
             RETURNING {COLUMNS}"
        ));
        let claimed = with_tx!(&mut tx, |conn| sqlx::query_as(sql)
            .bind(now)
            .bind(lease_until)
            .bind(i64::from(limit))
            .fetch_all(conn)
            .await)?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Records an attempt's outcome (and the address it went to) and releases the row.
    pub async fn record(
        &self,
        id: Uuid,
        recipient: Option<&str>,
        outcome: &Outcome<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let (status, error, next, sent_at) = match outcome {
            Outcome::Sent => (SENT, None, None, Some(now)),
            Outcome::Retry { error, next_attempt_at } => (QUEUED, Some(*error), Some(*next_attempt_at), None),
            Outcome::Failed { error } => (FAILED, Some(*error), None, None),
        };
        with_db!(&self.db, |pool| sqlx::query(
            "UPDATE deliveries SET status = $2, last_error = $3, next_attempt_at = COALESCE($4, next_attempt_at),
               sent_at = COALESCE($5, sent_at), recipient = COALESCE($6, recipient), leased_until = NULL
             WHERE id = $1"
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(next)
        .bind(sent_at)
        .bind(recipient)
        .execute(pool)
        .await
        .map(|_| ()))
    }

    /// Queues a message again now (an operator's resend); `None` when there is no such message.
    pub async fn requeue(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<Delivery>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET status = 'queued', next_attempt_at = $2, attempts = 0, leased_until = NULL
             WHERE id = $1 RETURNING {COLUMNS}"
        ));
        with_db!(&self.db, |pool| sqlx::query_as(sql).bind(id).bind(now).fetch_optional(pool).await)
    }

    /// Newest first, optionally of one status: `limit` rows after the cursor id.
    pub async fn list(
        &self,
        status: Option<&str>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Delivery>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM deliveries
             WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3"
        ));
        with_db!(&self.db, |pool| sqlx::query_as(sql)
            .bind(status)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
    }

    /// Messages waiting to be sent, for the queue-depth gauge.
    pub async fn queued(&self) -> Result<i64, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'queued'")
            .fetch_one(pool)
            .await)
    }
}
