//! Sagas as rows, one per order and kind, moved on by compare-and-set of `step`; a lease says
//! who is at work on each.

use chrono::{DateTime, Utc};
use platform::{db::Tx, with_db, with_tx};
use sqlx::types::Json;
use uuid::Uuid;

use super::{Store, StoreError, corrupt};
use crate::domain::{Kind, Plan, Saga, Step};

const COLUMNS: &str = "order_id, kind, step, user_id, idempotency_key, plan, attempts, lease_until, traceparent";
/// Steps after which a saga has nothing left to do (`Step::FINAL`).
pub(super) const FINAL_STEPS: &str = "('done', 'failed', 'rejected', 'abandoned')";

#[derive(Debug, sqlx::FromRow)]
struct SagaRow {
    order_id: Uuid,
    kind: String,
    step: String,
    user_id: Uuid,
    idempotency_key: Option<String>,
    plan: Option<Json<serde_json::Value>>,
    attempts: i32,
    lease_until: DateTime<Utc>,
    traceparent: Option<String>,
}

impl TryFrom<SagaRow> for Saga {
    type Error = StoreError;

    fn try_from(row: SagaRow) -> Result<Self, StoreError> {
        let plan = match row.plan {
            Some(Json(value)) => {
                Some(serde_json::from_value::<Plan>(value).map_err(|e| corrupt(format!("saga plan: {e}")))?)
            }
            None => None,
        };
        Ok(Saga {
            order_id: row.order_id,
            kind: Kind::parse(&row.kind).ok_or_else(|| corrupt(format!("saga kind {:?}", row.kind)))?,
            step: Step::parse(&row.step).ok_or_else(|| corrupt(format!("saga step {:?}", row.step)))?,
            user_id: row.user_id,
            idempotency_key: row.idempotency_key,
            plan,
            attempts: row.attempts,
            lease_until: row.lease_until,
            traceparent: row.traceparent,
        })
    }
}

/// A saga's move from one step to the next, renewing its lease.
#[derive(Debug, Clone, Copy)]
pub struct Advance {
    pub order_id: Uuid,
    pub kind: Kind,
    pub from: Step,
    pub to: Step,
    pub lease_until: DateTime<Utc>,
}

/// The compare-and-set of a saga's step, bound for either backend.
macro_rules! advance_query {
    ($change:expr) => {{
        let Advance { order_id, kind, from, to, lease_until } = $change;
        sqlx::query(
            "UPDATE sagas SET step = $1, lease_until = $2, updated_at = $3, last_error = NULL, attempts = 0
             WHERE order_id = $4 AND kind = $5 AND step = $6",
        )
        .bind(to.as_str())
        .bind(lease_until)
        .bind(platform::time::now())
        .bind(order_id)
        .bind(kind.as_str())
        .bind(from.as_str())
    }};
}

pub(super) fn plan_json(saga: &Saga) -> Result<Option<Json<serde_json::Value>>, StoreError> {
    saga.plan
        .as_ref()
        .map(|plan| serde_json::to_value(plan).map(Json).map_err(|e| StoreError::Failed(format!("saga plan: {e}"))))
        .transpose()
}

/// The index that lets one checkout at a time run per cart.
const ONE_CHECKOUT_PER_CART: &str = "sagas_one_checkout_per_cart";

/// The cart a running checkout holds (`user:{id}` or `guest:{id}`); `None` for other sagas.
pub(super) fn cart_ref(saga: &Saga) -> Option<String> {
    let plan = saga.plan.as_ref().filter(|_| saga.kind == Kind::Checkout && !Step::FINAL.contains(&saga.step))?;
    Some(if plan.cart_id == "me" { format!("user:{}", saga.user_id) } else { format!("guest:{}", plan.cart_id) })
}

/// Whether `error` is another checkout of the same cart still running.
pub(super) fn is_cart_busy(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| {
        e.is_unique_violation() && (e.constraint() == Some(ONE_CHECKOUT_PER_CART) || e.message().contains("cart_ref"))
    })
}

pub(super) async fn insert(tx: &mut Tx, saga: &Saga) -> Result<(), StoreError> {
    Ok(insert_raw(tx, saga).await??)
}

/// The insert, with the database's own error kept for [`is_cart_busy`].
pub(super) async fn insert_raw(tx: &mut Tx, saga: &Saga) -> Result<Result<(), sqlx::Error>, StoreError> {
    let plan = plan_json(saga)?;
    let now = platform::time::now();
    Ok(with_tx!(tx, |conn| {
        sqlx::query(
        "INSERT INTO sagas (order_id, kind, step, user_id, idempotency_key, plan, attempts, lease_until, traceparent, created_at, updated_at, cart_ref)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11)"
    )
    .bind(saga.order_id)
    .bind(saga.kind.as_str())
    .bind(saga.step.as_str())
    .bind(saga.user_id)
    .bind(&saga.idempotency_key)
    .bind(&plan)
    .bind(saga.attempts)
    .bind(saga.lease_until)
    .bind(&saga.traceparent)
    .bind(now)
    .bind(cart_ref(saga))
    .execute(conn)
    .await
    .map(|_| ())
    }))
}

pub(super) async fn advance_in(tx: &mut Tx, change: Advance) -> Result<bool, StoreError> {
    Ok(with_tx!(tx, |conn| advance_query!(change).execute(conn).await.map(|r| r.rows_affected() == 1))?)
}

impl Store {
    /// [`super::Unit::advance`] as a statement of its own, for a step that records nothing else.
    pub async fn advance(&self, change: Advance) -> Result<bool, StoreError> {
        Ok(with_db!(&self.db, |pool| advance_query!(change).execute(pool).await.map(|r| r.rows_affected() == 1))?)
    }

    #[cfg(test)]
    pub async fn saga(&self, order_id: Uuid, kind: Kind) -> Result<Option<Saga>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM sagas WHERE order_id = $1 AND kind = $2");
        let row: Option<SagaRow> = with_db!(&self.db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(order_id)
            .bind(kind.as_str())
            .fetch_optional(pool)
            .await)?;
        row.map(Saga::try_from).transpose()
    }

    /// Unfinished sagas whose lease ran out by `now`, oldest lease first.
    pub async fn due_sagas(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<(Uuid, Kind)>, StoreError> {
        let sql = format!(
            "SELECT order_id, kind FROM sagas WHERE lease_until < $1 AND step NOT IN {FINAL_STEPS}
             ORDER BY lease_until LIMIT $2"
        );
        let rows: Vec<(Uuid, String)> = with_db!(&self.db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        rows.into_iter()
            .map(|(id, kind)| Ok((id, Kind::parse(&kind).ok_or_else(|| corrupt(format!("saga kind {kind:?}")))?)))
            .collect()
    }

    /// Takes the lease of an unfinished saga whose lease ran out, counting the attempt; `None`
    /// when it is not due (finished, or another process holds it).
    pub async fn claim(
        &self,
        order_id: Uuid,
        kind: Kind,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Saga>, StoreError> {
        let sql = format!(
            "UPDATE sagas SET lease_until = $1, attempts = attempts + 1
             WHERE order_id = $2 AND kind = $3 AND lease_until < $4 AND step NOT IN {FINAL_STEPS}
             RETURNING {COLUMNS}"
        );
        let row: Option<SagaRow> = with_db!(&self.db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(lease_until)
            .bind(order_id)
            .bind(kind.as_str())
            .bind(now)
            .fetch_optional(pool)
            .await)?;
        row.map(Saga::try_from).transpose()
    }

    /// Extends the lease of an unfinished saga that this process is driving.
    pub async fn renew(&self, order_id: Uuid, kind: Kind, lease_until: DateTime<Utc>) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE sagas SET lease_until = $1 WHERE order_id = $2 AND kind = $3 AND step NOT IN {FINAL_STEPS}"
        );
        Ok(with_db!(&self.db, |pool| sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease_until)
            .bind(order_id)
            .bind(kind.as_str())
            .execute(pool)
            .await
            .map(|_| ()))?)
    }

    /// Records why a step could not be taken, and when to try again.
    pub async fn postpone(
        &self,
        order_id: Uuid,
        kind: Kind,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Ok(with_db!(&self.db, |pool| sqlx::query(
            "UPDATE sagas SET last_error = $1, lease_until = $2, updated_at = $3 WHERE order_id = $4 AND kind = $5"
        )
        .bind(error)
        .bind(retry_at)
        .bind(platform::time::now())
        .bind(order_id)
        .bind(kind.as_str())
        .execute(pool)
        .await
        .map(|_| ()))?)
    }

    /// Overwrites a saga's step as text and its lease, to stage what a test needs.
    #[cfg(test)]
    pub async fn set_raw(&self, order_id: Uuid, step: &str, lease_until: DateTime<Utc>) -> Result<(), StoreError> {
        Ok(with_db!(&self.db, |pool| sqlx::query("UPDATE sagas SET step = $1, lease_until = $2 WHERE order_id = $3")
            .bind(step)
            .bind(lease_until)
            .bind(order_id)
            .execute(pool)
            .await
            .map(drop))?)
    }

    /// The reason recorded for a saga's postponed step.
    #[cfg(test)]
    pub async fn last_error(&self, order_id: Uuid) -> Result<Option<String>, StoreError> {
        Ok(with_db!(&self.db, |pool| sqlx::query_scalar("SELECT last_error FROM sagas WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(pool)
            .await)?)
    }

    /// Unfinished sagas whose current step has failed at least `attempts` times in a row.
    pub async fn stuck_sagas(&self, attempts: i32) -> Result<i64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM sagas WHERE step NOT IN {FINAL_STEPS} AND attempts >= $1");
        Ok(with_db!(&self.db, |pool| sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(attempts)
            .fetch_one(pool)
            .await)?)
    }
}
