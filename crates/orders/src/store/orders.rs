//! Orders as rows: the aggregate's scalar fields in columns, its lines, address and history
//! as JSON.

use chrono::{DateTime, Utc};
use platform::{
    db::{Tx, TxConn},
    money::Currency,
    with_db, with_tx,
};
use sqlx::types::Json;
use uuid::Uuid;

use super::{MAX_ID, Store, StoreError, corrupt};
use crate::domain::{Address, Fulfilment, HistoryEntry, Line, Order, Payment, PaymentStatus, Status, Totals};

const COLUMNS: &str = "id, number, user_id, status, currency, subtotal, shipping, tax, total, lines, \
    shipping_address, payment_provider, payment_method, payment_status, payment_reference, carrier, \
    tracking_number, shipped_at, delivered_at, history, version, created_at, updated_at, payment_decline_code";

#[derive(Debug, sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    number: String,
    user_id: Uuid,
    status: String,
    currency: String,
    subtotal: i64,
    shipping: i64,
    tax: i64,
    total: i64,
    lines: Json<Vec<Line>>,
    shipping_address: Json<Address>,
    payment_provider: String,
    payment_method: String,
    payment_status: String,
    payment_reference: Option<String>,
    carrier: Option<String>,
    tracking_number: Option<String>,
    shipped_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    history: Json<Vec<HistoryEntry>>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    payment_decline_code: Option<String>,
}

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;

    fn try_from(row: OrderRow) -> Result<Self, StoreError> {
        Ok(Order {
            id: row.id,
            number: row.number,
            user_id: row.user_id,
            status: Status::parse(&row.status).ok_or_else(|| corrupt(format!("order status {:?}", row.status)))?,
            currency: Currency::parse(&row.currency).map_err(|_| corrupt(format!("currency {:?}", row.currency)))?,
            lines: row.lines.0,
            totals: Totals { subtotal: row.subtotal, shipping: row.shipping, tax: row.tax, total: row.total },
            shipping_address: row.shipping_address.0,
            payment: Payment {
                provider: row.payment_provider,
                method: row.payment_method,
                status: PaymentStatus::parse(&row.payment_status)
                    .ok_or_else(|| corrupt(format!("payment status {:?}", row.payment_status)))?,
                reference: row.payment_reference,
                decline_code: row.payment_decline_code,
            },
            fulfilment: Fulfilment {
                carrier: row.carrier,
                tracking_number: row.tracking_number,
                shipped_at: row.shipped_at,
                delivered_at: row.delivered_at,
            },
            history: row.history.0,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

fn orders(rows: Vec<OrderRow>) -> Result<Vec<Order>, StoreError> {
    rows.into_iter().map(Order::try_from).collect()
}

/// The next order number; on PostgreSQL from a sequence, so checkouts never queue for it.
pub(super) async fn next_number(tx: &mut Tx) -> Result<i64, StoreError> {
    Ok(match tx.conn() {
        TxConn::Postgres(tx) => sqlx::query_scalar("SELECT nextval('order_numbers')").fetch_one(&mut **tx).await?,
        TxConn::Sqlite(tx) => {
            sqlx::query_scalar("UPDATE order_numbers SET next = next + 1 WHERE id = 1 RETURNING next - 1")
                .fetch_one(&mut **tx)
                .await?
        }
    })
}

pub(super) async fn insert(tx: &mut Tx, order: &Order) -> Result<(), StoreError> {
    Ok(with_tx!(tx, |conn| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO orders ({COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)"
    )))
    .bind(order.id)
    .bind(&order.number)
    .bind(order.user_id)
    .bind(order.status.as_str())
    .bind(order.currency.as_str())
    .bind(order.totals.subtotal)
    .bind(order.totals.shipping)
    .bind(order.totals.tax)
    .bind(order.totals.total)
    .bind(Json(&order.lines))
    .bind(Json(&order.shipping_address))
    .bind(&order.payment.provider)
    .bind(&order.payment.method)
    .bind(order.payment.status.as_str())
    .bind(&order.payment.reference)
    .bind(&order.fulfilment.carrier)
    .bind(&order.fulfilment.tracking_number)
    .bind(order.fulfilment.shipped_at)
    .bind(order.fulfilment.delivered_at)
    .bind(Json(&order.history))
    .bind(order.version)
    .bind(order.created_at)
    .bind(order.updated_at)
    .bind(&order.payment.decline_code)
    .execute(conn)
    .await
    .map(|_| ())
    })?)
}

pub(super) async fn update(tx: &mut Tx, order: &Order) -> Result<bool, StoreError> {
    Ok(with_tx!(tx, |conn| sqlx::query(
        "UPDATE orders SET status = $1, payment_status = $2, payment_reference = $3, carrier = $4,
             tracking_number = $5, shipped_at = $6, delivered_at = $7, history = $8, updated_at = $9,
             payment_decline_code = $12, version = version + 1
         WHERE id = $10 AND version = $11"
    )
    .bind(order.status.as_str())
    .bind(order.payment.status.as_str())
    .bind(&order.payment.reference)
    .bind(&order.fulfilment.carrier)
    .bind(&order.fulfilment.tracking_number)
    .bind(order.fulfilment.shipped_at)
    .bind(order.fulfilment.delivered_at)
    .bind(Json(&order.history))
    .bind(order.updated_at)
    .bind(order.id)
    .bind(order.version)
    .bind(&order.payment.decline_code)
    .execute(conn)
    .await
    .map(|r| r.rows_affected() == 1))?)
}

impl Store {
    pub async fn order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM orders WHERE id = $1");
        let row: Option<OrderRow> =
            with_db!(&self.db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await)?;
        row.map(Order::try_from).transpose()
    }

    /// Up to `limit` orders newest first, strictly older than `after`, optionally of one user
    /// and one status.
    pub async fn list(
        &self,
        user: Option<Uuid>,
        status: Option<Status>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let by_user = if user.is_some() { "user_id = $4 AND" } else { "" };
        let sql = format!(
            "SELECT {COLUMNS} FROM orders WHERE {by_user} id < $1 AND ($2 = '' OR status = $2)
             ORDER BY id DESC LIMIT $3"
        );
        let status = status.map_or("", Status::as_str);
        let rows: Vec<OrderRow> = with_db!(&self.db, |pool| {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(after.unwrap_or(MAX_ID))
                .bind(status)
                .bind(i64::from(limit));
            if let Some(user) = user {
                query = query.bind(user);
            }
            query.fetch_all(pool).await
        })?;
        orders(rows)
    }

    /// How many orders are in each status (statuses without orders are left out).
    pub async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            with_db!(&self.db, |pool| sqlx::query_as("SELECT status, COUNT(*) FROM orders GROUP BY status")
                .fetch_all(pool)
                .await)?;
        rows.into_iter()
            .map(|(status, n)| {
                Ok((Status::parse(&status).ok_or_else(|| corrupt(format!("order status {status:?}")))?, n))
            })
            .collect()
    }
}
