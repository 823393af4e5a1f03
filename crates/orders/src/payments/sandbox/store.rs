//! The sandbox's ledger (`sandbox_payments`, `sandbox_refunds`), in the orders database only for
//! convenience of running: the orders code never reads it, and a test can audit it as it
//! would audit a processor's dashboard. Its schema is its own (`_sandbox_migrations`), applied
//! only where the sandbox is the configured provider. (Orders' first migration made these
//! tables in every database; another provider drops them while they are empty.)

use platform::{
    db::{ConnectError, Db},
    with_db, with_tx,
};
use sqlx::migrate::Migrator;
use uuid::Uuid;

const MIGRATIONS_TABLE: &str = "_sandbox_migrations";

/// A charge as the ledger keeps it.
#[derive(Debug, sqlx::FromRow)]
pub struct Payment {
    pub id: String,
    pub order_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub decline_code: Option<String>,
}

/// A charge being recorded.
pub struct NewPayment<'a> {
    pub id: &'a str,
    pub idempotency_key: &'a str,
    pub order_id: Uuid,
    pub amount: i64,
    pub currency: &'a str,
    pub payment_method: &'a str,
    pub decline_code: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
#[error("sandbox ledger: {0}")]
pub struct LedgerError(#[from] sqlx::Error);

/// Creates or upgrades the ledger's tables in `db`.
pub async fn migrate(db: &Db) -> Result<(), ConnectError> {
    let mut postgres: Migrator = sqlx::migrate!("./migrations/sandbox/postgres");
    let mut sqlite: Migrator = sqlx::migrate!("./migrations/sandbox/sqlite");
    postgres.dangerous_set_table_name(MIGRATIONS_TABLE);
    sqlite.dangerous_set_table_name(MIGRATIONS_TABLE);
    db.migrate(&postgres, &sqlite).await
}

#[derive(Clone)]
pub struct Ledger {
    pub(super) db: Db,
}

impl Ledger {
    /// Records a charge under its idempotency key; `None` when the key was used before.
    pub async fn insert(&self, payment: &NewPayment<'_>) -> Result<Option<Payment>, LedgerError> {
        let status = if payment.decline_code.is_some() { "declined" } else { "succeeded" };
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
            "INSERT INTO sandbox_payments (id, idempotency_key, order_id, amount, currency, payment_method, status, decline_code, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING id, order_id, amount, currency, status, decline_code"
        )
        .bind(payment.id)
        .bind(payment.idempotency_key)
        .bind(payment.order_id)
        .bind(payment.amount)
        .bind(payment.currency)
        .bind(payment.payment_method)
        .bind(status)
        .bind(payment.decline_code)
        .bind(platform::time::now())
        .fetch_optional(pool)
        .await
        })?)
    }

    pub async fn by_key(&self, idempotency_key: &str) -> Result<Payment, LedgerError> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
            "SELECT id, order_id, amount, currency, status, decline_code FROM sandbox_payments WHERE idempotency_key = $1"
        )
        .bind(idempotency_key)
        .fetch_one(pool)
        .await
        })?)
    }

    /// Refunds `amount` of a succeeded charge once per key: the refund's id, or `None` when the
    /// charge cannot be refunded that much.
    pub async fn refund(
        &self,
        id: &str,
        idempotency_key: &str,
        payment_id: &str,
        amount: i64,
    ) -> Result<Option<String>, LedgerError> {
        let mut tx = self.db.begin().await?;
        let refunded = with_tx!(&mut tx, |conn| async {
            let inserted = sqlx::query(
                "INSERT INTO sandbox_refunds (id, idempotency_key, payment_id, amount, created_at)
                 SELECT $1, $2, id, $3, $4 FROM sandbox_payments WHERE id = $5 AND status = 'succeeded'
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(id)
            .bind(idempotency_key)
            .bind(amount)
            .bind(platform::time::now())
            .bind(payment_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 1 {
                let moved = sqlx::query(
                    "UPDATE sandbox_payments SET refunded = refunded + $1 WHERE id = $2 AND refunded + $1 <= amount",
                )
                .bind(amount)
                .bind(payment_id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                return Ok::<_, sqlx::Error>((moved == 1).then(|| id.to_owned()));
            }
            sqlx::query_scalar("SELECT id FROM sandbox_refunds WHERE idempotency_key = $1")
                .bind(idempotency_key)
                .fetch_optional(&mut *conn)
                .await
        }
        .await)?;
        if refunded.is_some() {
            tx.commit().await?;
        }
        Ok(refunded)
    }
}

/// Whether the ledger's tables are in `db`.
async fn exists(db: &Db) -> Result<bool, LedgerError> {
    let sql = match db.backend() {
        platform::db::Backend::Postgres => "SELECT to_regclass('sandbox_payments') IS NOT NULL",
        platform::db::Backend::Sqlite => {
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sandbox_payments')"
        }
    };
    Ok(with_db!(db, |pool| sqlx::query_scalar(sql).fetch_one(pool).await)?)
}

/// Drops the ledger's tables when they hold no charge and the sandbox is not the provider.
/// Databases made before the ledger had its own schema got its tables from orders' first
/// migration; a ledger with charges is kept, for their refunds.
pub async fn retire_empty_ledger(db: &Db) -> Result<(), LedgerError> {
    if !exists(db).await? {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    with_tx!(&mut tx, |conn| async {
        let charges: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sandbox_payments").fetch_one(&mut *conn).await?;
        if charges == 0 {
            for table in ["sandbox_refunds", "sandbox_payments", MIGRATIONS_TABLE] {
                let sql = format!("DROP TABLE IF EXISTS {table}");
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await?;
            }
        }
        Ok::<_, sqlx::Error>(())
    }
    .await)?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use testkit::{TestDatabase, on_both_backends};

    use super::*;
    use crate::{
        config::PaymentsConfig,
        payments::{ChargeRequest, Provider},
    };

    on_both_backends!(the_ledger_is_only_where_the_sandbox_is_the_provider);

    async fn the_ledger_is_only_where_the_sandbox_is_the_provider(db: TestDatabase) {
        let store = crate::store::Store::open(&db.url, &Default::default()).await.unwrap();
        let db = store.db();
        let mut stripe = PaymentsConfig { provider: "stripe".to_owned(), ..PaymentsConfig::default() };
        stripe.stripe.secret_key = Some("sk_test_unused".to_owned().into());
        crate::payments::migrate(&stripe, db).await.unwrap();
        assert!(!exists(db).await.unwrap(), "a database that never had the sandbox has no ledger");

        crate::payments::migrate(&PaymentsConfig::default(), db).await.unwrap();
        let Provider::Sandbox(sandbox) = Provider::open(&PaymentsConfig::default(), db).unwrap() else {
            panic!("the default provider is the sandbox")
        };
        assert!(exists(db).await.unwrap());
        let charge = ChargeRequest {
            order_id: uuid::Uuid::now_v7(),
            order_number: "T-1".to_owned(),
            amount: platform::money::Money::new(1_000, platform::money::Currency::parse("EUR").unwrap()),
            payment_method: "pm_card_visa".to_owned(),
            idempotency_key: "order-1-charge".to_owned(),
        };
        sandbox.charge(&charge).await.unwrap();
        // Switched to Stripe later: a ledger with charges is kept, for their refunds.
        crate::payments::migrate(&stripe, db).await.unwrap();
        assert!(exists(db).await.unwrap());
    }
}
