//! The orders database: orders, saga progress, idempotency keys and handled webhooks; one
//! implementation over both SQL backends.
//!
//! Every change of an order or a saga is conditional on what was read (`version`, `step`), so
//! that of two processes acting on the same row exactly one wins and the other sees `false`.

use chrono::{DateTime, Utc};
use platform::{
    db::{ConnectError, Db, Tx, TxConn},
    with_db, with_tx,
};
use serde::{Deserialize, Serialize};
use sqlx::{migrate::Migrator, types::Json};
use uuid::Uuid;

use crate::domain::{Address, Status};

static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// A line as the order keeps it: what was bought, at the price of the moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRow {
    pub sku: String,
    pub product_id: String,
    pub title: String,
    pub quantity: i64,
    pub unit_price: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub status: Status,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub number: String,
    pub user_id: Uuid,
    pub status: String,
    pub currency: String,
    pub subtotal: i64,
    pub shipping: i64,
    pub tax: i64,
    pub total: i64,
    pub lines: Json<Vec<LineRow>>,
    pub shipping_address: Json<Address>,
    pub payment_provider: String,
    pub payment_method: String,
    pub payment_status: String,
    pub payment_reference: Option<String>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub history: Json<Vec<HistoryEntry>>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderRow {
    pub fn status(&self) -> Result<Status, sqlx::Error> {
        Status::parse(&self.status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown order status {:?}", self.status).into()))
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SagaRow {
    pub order_id: Uuid,
    pub kind: String,
    pub step: String,
    pub user_id: Uuid,
    pub idempotency_key: Option<String>,
    pub plan: Option<Json<serde_json::Value>>,
    pub attempts: i32,
    pub lease_until: DateTime<Utc>,
    /// The trace context of the request that started it, for the events of its steps.
    pub traceparent: Option<String>,
}

/// A saga's move from one step to the next.
pub struct Advance<'a> {
    pub order_id: Uuid,
    pub kind: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    /// Replaces the saga's plan when given.
    pub plan: Option<&'a serde_json::Value>,
    pub lease_until: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub request_hash: Vec<u8>,
    pub order_id: Uuid,
    pub response_status: Option<i32>,
    pub response_body: Option<String>,
}

const ORDER_COLUMNS: &str = "id, number, user_id, status, currency, subtotal, shipping, tax, total, lines, \
    shipping_address, payment_provider, payment_method, payment_status, payment_reference, carrier, \
    tracking_number, shipped_at, delivered_at, history, version, created_at, updated_at";
const SAGA_COLUMNS: &str = "order_id, kind, step, user_id, idempotency_key, plan, attempts, lease_until, traceparent";
/// Steps after which a saga has nothing left to do.
pub const FINAL_STEPS: &str = "('done', 'failed', 'rejected', 'abandoned')";
/// Sorts after every UUID: the first page of a newest-first listing starts below it.
const MAX_ID: Uuid = Uuid::max();

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

/// An idempotency key being claimed.
pub struct NewKey<'a> {
    pub user: Uuid,
    pub key: &'a str,
    pub hash: &'a [u8],
    /// The final answer, when it is known before the saga starts.
    pub answer: Option<(u16, &'a str)>,
}

/// The compare-and-set of a saga's step, bound for either backend.
macro_rules! advance_query {
    ($change:expr) => {{
        let Advance { order_id, kind, from, to, plan, lease_until } = $change;
        sqlx::query(
            "UPDATE sagas SET step = $1, plan = COALESCE($2, plan), lease_until = $3, updated_at = $4, last_error = NULL, attempts = 0
             WHERE order_id = $5 AND kind = $6 AND step = $7",
        )
        .bind(to)
        .bind(plan.map(Json))
        .bind(lease_until)
        .bind(platform::time::now())
        .bind(order_id)
        .bind(kind)
        .bind(from)
    }};
}

impl Store {
    /// Connects and brings the schema (the orders' tables and the outbox) up to date.
    pub async fn open(url: &str, pool: &platform::db::PoolConfig) -> Result<Self, ConnectError> {
        let db = Db::open(url, pool, &POSTGRES, &SQLITE).await?;
        events::migrate(&db).await?;
        Ok(Self { db })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The next order number; on PostgreSQL from a sequence, so checkouts never queue for it.
    pub async fn next_number(&self, tx: &mut Tx) -> Result<i64, sqlx::Error> {
        match tx.conn() {
            TxConn::Postgres(tx) => sqlx::query_scalar("SELECT nextval('order_numbers')").fetch_one(&mut **tx).await,
            TxConn::Sqlite(tx) => {
                sqlx::query_scalar("UPDATE order_numbers SET next = next + 1 WHERE id = 1 RETURNING next - 1")
                    .fetch_one(&mut **tx)
                    .await
            }
        }
    }

    pub async fn insert_order(&self, tx: &mut Tx, order: &OrderRow) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO orders ({ORDER_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)"
        )))
        .bind(order.id)
        .bind(&order.number)
        .bind(order.user_id)
        .bind(&order.status)
        .bind(&order.currency)
        .bind(order.subtotal)
        .bind(order.shipping)
        .bind(order.tax)
        .bind(order.total)
        .bind(&order.lines)
        .bind(&order.shipping_address)
        .bind(&order.payment_provider)
        .bind(&order.payment_method)
        .bind(&order.payment_status)
        .bind(&order.payment_reference)
        .bind(&order.carrier)
        .bind(&order.tracking_number)
        .bind(order.shipped_at)
        .bind(order.delivered_at)
        .bind(&order.history)
        .bind(order.version)
        .bind(order.created_at)
        .bind(order.updated_at)
        .execute(conn)
        .await
        .map(|_| ()))
    }

    /// Writes an order's changeable fields, if nobody changed it since `order.version` was
    /// read; the stored version is then one higher.
    pub async fn update_order(&self, tx: &mut Tx, order: &OrderRow) -> Result<bool, sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query(
            "UPDATE orders SET status = $1, payment_status = $2, payment_reference = $3, carrier = $4,
                 tracking_number = $5, shipped_at = $6, delivered_at = $7, history = $8, updated_at = $9,
                 version = version + 1
             WHERE id = $10 AND version = $11"
        )
        .bind(&order.status)
        .bind(&order.payment_status)
        .bind(&order.payment_reference)
        .bind(&order.carrier)
        .bind(&order.tracking_number)
        .bind(order.shipped_at)
        .bind(order.delivered_at)
        .bind(&order.history)
        .bind(order.updated_at)
        .bind(order.id)
        .bind(order.version)
        .execute(conn)
        .await
        .map(|r| r.rows_affected() == 1))
    }

    pub async fn order(&self, id: Uuid) -> Result<Option<OrderRow>, sqlx::Error> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
        with_db!(&self.db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await)
    }

    /// Up to `limit` orders newest first, strictly older than `after`, optionally of one user
    /// and one status.
    pub async fn list(
        &self,
        user: Option<Uuid>,
        status: Option<Status>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<OrderRow>, sqlx::Error> {
        let by_user = if user.is_some() { "user_id = $4 AND" } else { "" };
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE {by_user} id < $1 AND ($2 = '' OR status = $2)
             ORDER BY id DESC LIMIT $3"
        );
        let status = status.map_or("", Status::as_str);
        with_db!(&self.db, |pool| {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(after.unwrap_or(MAX_ID))
                .bind(status)
                .bind(i64::from(limit));
            if let Some(user) = user {
                query = query.bind(user);
            }
            query.fetch_all(pool).await
        })
    }

    pub async fn count_by_status(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query_as("SELECT status, COUNT(*) FROM orders GROUP BY status")
            .fetch_all(pool)
            .await)
    }

    /// Unfinished sagas whose current step has failed at least `attempts` times in a row.
    pub async fn stuck_sagas(&self, attempts: i32) -> Result<i64, sqlx::Error> {
        let sql = format!("SELECT COUNT(*) FROM sagas WHERE step NOT IN {FINAL_STEPS} AND attempts >= $1");
        with_db!(&self.db, |pool| sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(attempts).fetch_one(pool).await)
    }

    pub async fn insert_saga(&self, tx: &mut Tx, saga: &SagaRow, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| {
            sqlx::query(
            "INSERT INTO sagas (order_id, kind, step, user_id, idempotency_key, plan, attempts, lease_until, traceparent, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, $9, $9)"
        )
        .bind(saga.order_id)
        .bind(&saga.kind)
        .bind(&saga.step)
        .bind(saga.user_id)
        .bind(&saga.idempotency_key)
        .bind(&saga.plan)
        .bind(saga.attempts)
        .bind(saga.lease_until)
        .bind(now)
        .bind(&saga.traceparent)
        .execute(conn)
        .await
        .map(|_| ())
        })
    }

    /// Moves a saga from step `from` to `to` and renews its lease, within `tx`; `false` when it
    /// was not at `from` (another process moved it first).
    pub async fn advance(&self, tx: &mut Tx, change: Advance<'_>) -> Result<bool, sqlx::Error> {
        with_tx!(tx, |conn| advance_query!(change).execute(conn).await.map(|r| r.rows_affected() == 1))
    }

    /// [`Store::advance`] as a statement of its own, for a step that records nothing else.
    pub async fn advance_now(&self, change: Advance<'_>) -> Result<bool, sqlx::Error> {
        with_db!(&self.db, |pool| advance_query!(change).execute(pool).await.map(|r| r.rows_affected() == 1))
    }

    pub async fn saga(&self, order_id: Uuid, kind: &str) -> Result<Option<SagaRow>, sqlx::Error> {
        let sql = format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE order_id = $1 AND kind = $2");
        with_db!(&self.db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(order_id)
            .bind(kind)
            .fetch_optional(pool)
            .await)
    }

    /// Unfinished sagas whose lease ran out by `now`, oldest lease first.
    pub async fn due_sagas(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
        let sql = format!(
            "SELECT order_id, kind FROM sagas WHERE lease_until < $1 AND step NOT IN {FINAL_STEPS}
             ORDER BY lease_until LIMIT $2"
        );
        with_db!(&self.db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).bind(limit).fetch_all(pool).await)
    }

    /// Takes the lease of an unfinished saga whose lease ran out; `None` when it is not due
    /// (finished, or another process holds it).
    pub async fn claim(
        &self,
        order_id: Uuid,
        kind: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<SagaRow>, sqlx::Error> {
        let sql = format!(
            "UPDATE sagas SET lease_until = $1, attempts = attempts + 1
             WHERE order_id = $2 AND kind = $3 AND lease_until < $4 AND step NOT IN {FINAL_STEPS}
             RETURNING {SAGA_COLUMNS}"
        );
        with_db!(&self.db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(lease_until)
            .bind(order_id)
            .bind(kind)
            .bind(now)
            .fetch_optional(pool)
            .await)
    }

    /// Records why a step could not be taken, and when to try again.
    pub async fn postpone(
        &self,
        order_id: Uuid,
        kind: &str,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query(
            "UPDATE sagas SET last_error = $1, lease_until = $2, updated_at = $3 WHERE order_id = $4 AND kind = $5"
        )
        .bind(error)
        .bind(retry_at)
        .bind(platform::time::now())
        .bind(order_id)
        .bind(kind)
        .execute(pool)
        .await
        .map(|_| ()))
    }

    /// Registers a key for a first request; `false` when the key exists already.
    /// Claims an idempotency key for a new checkout and records its saga, atomically: `false`
    /// (and nothing recorded) when the key is taken. A checkout decided at once carries its
    /// `answer` in the key from the start.
    pub async fn claim_key(&self, claim: &NewKey<'_>, saga: &SagaRow, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
        let (status, body) = claim.answer.map_or((None, None), |(status, body)| (Some(i32::from(status)), Some(body)));
        match &self.db {
            // One statement: the saga row is written only if the key's was.
            Db::Postgres(pool) => sqlx::query(
                "WITH claimed AS (
                     INSERT INTO idempotency_keys (user_id, key, request_hash, order_id, response_status, response_body, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, key) DO NOTHING
                     RETURNING order_id)
                 INSERT INTO sagas (order_id, kind, step, user_id, idempotency_key, plan, attempts, lease_until, traceparent, created_at, updated_at)
                 SELECT order_id, $8, $9, $1, $2, $10, $11, $12, $13, $7, $7 FROM claimed",
            )
            .bind(claim.user)
            .bind(claim.key)
            .bind(claim.hash)
            .bind(saga.order_id)
            .bind(status)
            .bind(body)
            .bind(now)
            .bind(&saga.kind)
            .bind(&saga.step)
            .bind(&saga.plan)
            .bind(saga.attempts)
            .bind(saga.lease_until)
            .bind(&saga.traceparent)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1),
            Db::Sqlite(_) => {
                let mut tx = self.db.begin().await?;
                let inserted = with_tx!(&mut tx, |conn| sqlx::query(
                    "INSERT INTO idempotency_keys (user_id, key, request_hash, order_id, response_status, response_body, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, key) DO NOTHING",
                )
                .bind(claim.user)
                .bind(claim.key)
                .bind(claim.hash)
                .bind(saga.order_id)
                .bind(status)
                .bind(body)
                .bind(now)
                .execute(conn)
                .await
                .map(|r| r.rows_affected() == 1))?;
                if inserted {
                    self.insert_saga(&mut tx, saga, now).await?;
                    tx.commit().await?;
                }
                Ok(inserted)
            }
        }
    }

    pub async fn key(&self, user: Uuid, key: &str) -> Result<Option<KeyRow>, sqlx::Error> {
        with_db!(&self.db, |pool| {
            sqlx::query_as(
            "SELECT request_hash, order_id, response_status, response_body FROM idempotency_keys WHERE user_id = $1 AND key = $2"
        )
        .bind(user)
        .bind(key)
        .fetch_optional(pool)
        .await
        })
    }

    /// Stores the final answer under a key (once: a later answer never replaces it).
    pub async fn answer_key(
        &self,
        tx: &mut Tx,
        user: Uuid,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query(
            "UPDATE idempotency_keys SET response_status = $1, response_body = $2
             WHERE user_id = $3 AND key = $4 AND response_status IS NULL"
        )
        .bind(i32::from(status))
        .bind(body)
        .bind(user)
        .bind(key)
        .execute(conn)
        .await
        .map(|_| ()))
    }

    /// Forgets a key whose request did nothing, so that a retry under it starts afresh.
    pub async fn delete_key(&self, tx: &mut Tx, user: Uuid, key: &str) -> Result<(), sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query(
            "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND response_status IS NULL"
        )
        .bind(user)
        .bind(key)
        .execute(conn)
        .await
        .map(|_| ()))
    }

    /// Drops answered keys older than `before`, and finished sagas with them.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        let sagas = format!("DELETE FROM sagas WHERE updated_at < $1 AND step IN {FINAL_STEPS}");
        with_db!(&self.db, |pool| {
            let keys =
                sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1 AND response_status IS NOT NULL")
                    .bind(before)
                    .execute(pool)
                    .await?
                    .rows_affected();
            sqlx::query(sqlx::AssertSqlSafe(sagas)).bind(before).execute(pool).await?;
            Ok(keys)
        })
    }

    /// Records a provider notification; `false` when it was handled before.
    pub async fn record_webhook(&self, provider: &str, event_id: &str) -> Result<bool, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query(
            "INSERT INTO webhook_events (provider, event_id, received_at) VALUES ($1, $2, $3)
             ON CONFLICT (provider, event_id) DO NOTHING"
        )
        .bind(provider)
        .bind(event_id)
        .bind(platform::time::now())
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1))
    }
}
