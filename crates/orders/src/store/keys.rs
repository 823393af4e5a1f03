//! Idempotency keys of checkouts, per user: the request's hash, the order id the first request
//! chose, and the outcome once there is one.

use platform::{
    db::{Db, Tx},
    with_db, with_tx,
};
use sqlx::types::Json;
use uuid::Uuid;

use super::{
    Store, StoreError, corrupt,
    sagas::{self, plan_json},
};
use crate::domain::{Answer, CheckoutOutcome, Saga};

/// An idempotency key being claimed.
pub struct NewKey<'a> {
    pub user: Uuid,
    pub key: &'a str,
    pub hash: &'a [u8],
    /// The outcome, when it is known before the saga starts.
    pub outcome: Option<&'a CheckoutOutcome>,
}

/// What claiming a key for a new checkout came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Claimed,
    /// The key was claimed before (by this request's first try, or another body).
    KeyTaken,
    /// Another checkout of the same cart, under another key, has not finished.
    CartBusy,
}

/// What a key holds, for a request with a given hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Missing,
    /// The key was first used with another request.
    Mismatch,
    /// The first request under the key is still running.
    Pending,
    /// Decided, but the checkout has steps left (its cart is not emptied yet, say): a shopper
    /// told now would carry on with the cart before the checkout is done with it.
    Finishing(Answer),
    Answered(Answer),
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    request_hash: Vec<u8>,
    outcome: Option<Json<serde_json::Value>>,
    /// Whether the checkout's saga has steps left.
    running: bool,
}

fn encode(outcome: &CheckoutOutcome) -> Result<Json<serde_json::Value>, StoreError> {
    serde_json::to_value(outcome).map(Json).map_err(|e| StoreError::Failed(format!("checkout outcome: {e}")))
}

fn decode(value: serde_json::Value) -> Result<Answer, StoreError> {
    #[derive(serde::Deserialize)]
    struct Given {
        status: u16,
        body: String,
    }
    if let Some(given) = value.get("given") {
        let Given { status, body } =
            serde_json::from_value(given.clone()).map_err(|e| corrupt(format!("given answer: {e}")))?;
        return Ok(Answer::Given { status, body });
    }
    serde_json::from_value(value).map(Answer::Outcome).map_err(|e| corrupt(format!("checkout outcome: {e}")))
}

pub(super) async fn answer(tx: &mut Tx, user: Uuid, key: &str, outcome: &CheckoutOutcome) -> Result<(), StoreError> {
    let outcome = encode(outcome)?;
    Ok(with_tx!(tx, |conn| sqlx::query(
        "UPDATE idempotency_keys SET outcome = $1 WHERE user_id = $2 AND key = $3 AND outcome IS NULL"
    )
    .bind(&outcome)
    .bind(user)
    .bind(key)
    .execute(conn)
    .await
    .map(|_| ()))?)
}

pub(super) async fn forget(tx: &mut Tx, user: Uuid, key: &str) -> Result<(), StoreError> {
    Ok(with_tx!(tx, |conn| sqlx::query(
        "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND outcome IS NULL"
    )
    .bind(user)
    .bind(key)
    .execute(conn)
    .await
    .map(|_| ()))?)
}

impl Store {
    /// Claims an idempotency key for a new checkout and records its saga, atomically; nothing is
    /// recorded when the key is taken, or when another checkout of the same cart is still
    /// running. A checkout decided at once carries its outcome in the key from the start.
    pub async fn claim_key(&self, claim: &NewKey<'_>, saga: &Saga) -> Result<Claim, StoreError> {
        let outcome = claim.outcome.map(encode).transpose()?;
        let plan = plan_json(saga)?;
        let now = platform::time::now();
        let claimed = |inserted: bool| if inserted { Claim::Claimed } else { Claim::KeyTaken };
        match &self.db {
            // One statement: the saga row is written only if the key's was.
            Db::Postgres(pool) => match sqlx::query(
                "WITH claimed AS (
                     INSERT INTO idempotency_keys (user_id, key, request_hash, order_id, outcome, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, key) DO NOTHING
                     RETURNING order_id)
                 INSERT INTO sagas (order_id, kind, step, user_id, idempotency_key, plan, attempts, lease_until, traceparent, created_at, updated_at, cart_ref)
                 SELECT order_id, $7, $8, $1, $2, $9, $10, $11, $12, $6, $6, $13 FROM claimed",
            )
            .bind(claim.user)
            .bind(claim.key)
            .bind(claim.hash)
            .bind(saga.order_id)
            .bind(&outcome)
            .bind(now)
            .bind(saga.kind.as_str())
            .bind(saga.step.as_str())
            .bind(&plan)
            .bind(saga.attempts)
            .bind(saga.lease_until)
            .bind(&saga.traceparent)
            .bind(sagas::cart_ref(saga))
            .execute(pool)
            .await
            {
                Ok(done) => Ok(claimed(done.rows_affected() == 1)),
                Err(error) if sagas::is_cart_busy(&error) => Ok(Claim::CartBusy),
                Err(error) => Err(error.into()),
            },
            Db::Sqlite(_) => {
                let mut unit = self.unit().await?;
                let inserted = with_tx!(&mut unit.tx, |conn| sqlx::query(
                    "INSERT INTO idempotency_keys (user_id, key, request_hash, order_id, outcome, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, key) DO NOTHING",
                )
                .bind(claim.user)
                .bind(claim.key)
                .bind(claim.hash)
                .bind(saga.order_id)
                .bind(&outcome)
                .bind(now)
                .execute(conn)
                .await
                .map(|r| r.rows_affected() == 1))?;
                if !inserted {
                    return Ok(Claim::KeyTaken);
                }
                match sagas::insert_raw(&mut unit.tx, saga).await? {
                    Ok(()) => {
                        unit.commit().await?;
                        Ok(Claim::Claimed)
                    }
                    // Dropping the unit rolls the key back.
                    Err(error) if sagas::is_cart_busy(&error) => Ok(Claim::CartBusy),
                    Err(error) => Err(error.into()),
                }
            }
        }
    }

    /// Takes back a claim this request just made and nothing acted on yet (its saga has not
    /// reserved): the key and the saga go, as if never claimed.
    pub async fn unclaim(&self, user: Uuid, key: &str, order_id: Uuid) -> Result<(), StoreError> {
        let mut unit = self.unit().await?;
        with_tx!(&mut unit.tx, |conn| sqlx::query("DELETE FROM sagas WHERE order_id = $1 AND attempts = 0")
            .bind(order_id)
            .execute(conn)
            .await
            .map(|_| ()))?;
        forget(&mut unit.tx, user, key).await?;
        unit.commit().await
    }

    /// What the key holds for a request with this hash.
    pub async fn key(&self, user: Uuid, key: &str, hash: &[u8]) -> Result<KeyState, StoreError> {
        let sql = format!(
            "SELECT k.request_hash, k.outcome, EXISTS (
                 SELECT 1 FROM sagas s
                 WHERE s.order_id = k.order_id AND s.kind = 'checkout' AND s.step NOT IN {}) AS running
             FROM idempotency_keys k WHERE k.user_id = $1 AND k.key = $2",
            sagas::FINAL_STEPS
        );
        let row: Option<KeyRow> = with_db!(&self.db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user)
            .bind(key)
            .fetch_optional(pool)
            .await)?;
        Ok(match row {
            None => KeyState::Missing,
            Some(row) if row.request_hash != hash => KeyState::Mismatch,
            Some(KeyRow { outcome: None, .. }) => KeyState::Pending,
            Some(KeyRow { outcome: Some(Json(value)), running: true, .. }) => KeyState::Finishing(decode(value)?),
            Some(KeyRow { outcome: Some(Json(value)), .. }) => KeyState::Answered(decode(value)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_given_before_outcomes_were_kept_still_read() {
        let given = serde_json::json!({"given": {"status": 402, "body": "{\"id\":1}"}});
        assert_eq!(decode(given).unwrap(), Answer::Given { status: 402, body: "{\"id\":1}".to_owned() });
        let outcome = CheckoutOutcome::EmptyCart;
        assert_eq!(decode(encode(&outcome).unwrap().0).unwrap(), Answer::Outcome(outcome));
    }
}
