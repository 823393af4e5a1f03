//! The `inventory`, `reservations` and `reservation_lines` tables.
//!
//! Every stock change is one conditional `UPDATE` whose `WHERE` states the invariant it must
//! keep (`on_hand - reserved >= quantity` to reserve, the reservation's state to move it on),
//! so that concurrent callers serialise on the row and the loser sees zero rows changed instead
//! of overselling. The table's `CHECK (reserved <= on_hand)` backs this up.

use chrono::{DateTime, Utc};
use platform::{
    db::{Tx, TxConn},
    with_db, with_tx,
};
use uuid::Uuid;

use super::Store;
use crate::domain::Stock;

/// A SKU's stock after a change, for its `inventory.changed` event.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StockChange {
    pub sku: String,
    pub product_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    Held,
    Committed,
    Released,
    Returned,
}

impl ReservationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Returned => "returned",
        }
    }

    fn parse(text: &str) -> Result<Self, sqlx::Error> {
        Ok(match text {
            "held" => Self::Held,
            "committed" => Self::Committed,
            "released" => Self::Released,
            "returned" => Self::Returned,
            other => return Err(sqlx::Error::Decode(format!("unknown reservation state {other:?}").into())),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: Uuid,
    pub state: ReservationState,
    pub expires_at: DateTime<Utc>,
    /// `(sku, quantity)`, sorted by SKU.
    pub lines: Vec<(String, i64)>,
}

const CHANGE_COLUMNS: &str = "RETURNING sku, product_id, on_hand, reserved";
/// The same, where the statement joins another relation that has a `sku` too.
const JOINED_CHANGE_COLUMNS: &str =
    "RETURNING inventory.sku, inventory.product_id, inventory.on_hand, inventory.reserved";

impl Store {
    /// A SKU's stock and product, or `None` for an unknown SKU.
    pub async fn stock(&self, sku: &str) -> Result<Option<StockChange>, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query_as(
            "SELECT sku, product_id, on_hand, reserved FROM inventory WHERE sku = $1"
        )
        .bind(sku)
        .fetch_optional(pool)
        .await)
    }

    /// Sets stock on hand, unless that would leave less than is reserved (`Err(stock)`).
    /// `Ok(None)` for an unknown SKU.
    pub async fn set_on_hand(
        &self,
        tx: &mut Tx,
        sku: &str,
        on_hand: i64,
        now: DateTime<Utc>,
    ) -> Result<Result<Option<StockChange>, Stock>, sqlx::Error> {
        let sql = format!(
            "UPDATE inventory SET on_hand = $2, updated_at = $3 WHERE sku = $1 AND reserved <= $2 {CHANGE_COLUMNS}"
        );
        let changed: Option<StockChange> = with_tx!(tx, |conn| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(sku)
            .bind(on_hand)
            .bind(now)
            .fetch_optional(conn)
            .await)?;
        if changed.is_some() {
            return Ok(Ok(changed));
        }
        let current: Option<(i64, i64)> =
            with_tx!(tx, |conn| sqlx::query_as("SELECT on_hand, reserved FROM inventory WHERE sku = $1")
                .bind(sku)
                .fetch_optional(conn)
                .await)?;
        Ok(match current {
            None => Ok(None),
            Some((on_hand, reserved)) => Err(Stock { on_hand, reserved }),
        })
    }

    /// The status of the product a SKU belongs to, with its available stock; `None` for an
    /// unknown SKU.
    pub async fn sellable(&self, tx: &mut Tx, sku: &str) -> Result<Option<(String, i64)>, sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query_as(
            "SELECT p.status, i.on_hand - i.reserved FROM inventory i JOIN products p ON p.id = i.product_id
             WHERE i.sku = $1"
        )
        .bind(sku)
        .fetch_optional(conn)
        .await)
    }

    /// Holds `quantity` more of a SKU if that much is available and its product is on sale;
    /// `None` otherwise ([`Store::sellable`] tells why).
    pub async fn try_reserve(
        &self,
        tx: &mut Tx,
        sku: &str,
        quantity: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<StockChange>, sqlx::Error> {
        let sql = format!(
            "UPDATE inventory SET reserved = reserved + $2, updated_at = $3
             WHERE sku = $1 AND on_hand - reserved >= $2
               AND EXISTS (SELECT 1 FROM products p WHERE p.id = inventory.product_id AND p.status = 'active')
             {CHANGE_COLUMNS}"
        );
        with_tx!(tx, |conn| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(sku)
            .bind(quantity)
            .bind(now)
            .fetch_optional(conn)
            .await)
    }

    /// Holds each `(sku, quantity)` that is available and on sale; the changes of those held,
    /// sorted by SKU. `wanted` is sorted by SKU and names each once.
    pub async fn try_reserve_all(
        &self,
        tx: &mut Tx,
        wanted: &[(String, i64)],
        now: DateTime<Utc>,
    ) -> Result<Vec<StockChange>, sqlx::Error> {
        let TxConn::Postgres(pg) = tx.conn() else {
            let mut changes = Vec::with_capacity(wanted.len());
            for (sku, quantity) in wanted {
                changes.extend(self.try_reserve(tx, sku, *quantity, now).await?);
            }
            return Ok(changes);
        };
        let (skus, quantities): (Vec<&str>, Vec<i64>) = wanted.iter().map(|(s, q)| (s.as_str(), *q)).unzip();
        // One statement for every line. The rows are locked first, in SKU order, as the
        // one-line statements do, so that concurrent reservations cannot deadlock.
        let sql = format!(
            "WITH wanted AS (SELECT * FROM UNNEST($1::text[], $2::bigint[]) AS w(sku, quantity)),
                  locked AS MATERIALIZED (SELECT sku FROM inventory WHERE sku IN (SELECT sku FROM wanted)
                                          ORDER BY sku FOR UPDATE)
             UPDATE inventory SET reserved = reserved + w.quantity, updated_at = $3
             FROM wanted w
             WHERE inventory.sku = w.sku AND inventory.sku IN (SELECT sku FROM locked)
               AND on_hand - reserved >= w.quantity
               AND EXISTS (SELECT 1 FROM products p WHERE p.id = inventory.product_id AND p.status = 'active')
             {JOINED_CHANGE_COLUMNS}"
        );
        let mut changes: Vec<StockChange> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&skus)
            .bind(&quantities)
            .bind(now)
            .fetch_all(&mut **pg)
            .await?;
        changes.sort_by(|a, b| a.sku.cmp(&b.sku));
        Ok(changes)
    }

    /// Moves stock for every `(sku, quantity)` line: `on_hand += on_hand_sign × quantity`,
    /// `reserved += reserved_sign × quantity`; the changes, sorted by SKU (an unknown SKU has
    /// none). `lines` is sorted by SKU and names each once.
    pub async fn adjust_all(
        &self,
        tx: &mut Tx,
        lines: &[(String, i64)],
        on_hand_sign: i64,
        reserved_sign: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<StockChange>, sqlx::Error> {
        let TxConn::Postgres(pg) = tx.conn() else {
            let mut changes = Vec::with_capacity(lines.len());
            for (sku, quantity) in lines {
                let moved = self.adjust_stock(tx, sku, on_hand_sign * quantity, reserved_sign * quantity, now).await?;
                changes.extend(moved);
            }
            return Ok(changes);
        };
        let (skus, quantities): (Vec<&str>, Vec<i64>) = lines.iter().map(|(s, q)| (s.as_str(), *q)).unzip();
        let sql = format!(
            "WITH moves AS (SELECT * FROM UNNEST($1::text[], $2::bigint[]) AS m(sku, quantity)),
                  locked AS MATERIALIZED (SELECT sku FROM inventory WHERE sku IN (SELECT sku FROM moves)
                                          ORDER BY sku FOR UPDATE)
             UPDATE inventory SET on_hand = on_hand + $3 * m.quantity, reserved = reserved + $4 * m.quantity,
                                  updated_at = $5
             FROM moves m
             WHERE inventory.sku = m.sku AND inventory.sku IN (SELECT sku FROM locked)
             {JOINED_CHANGE_COLUMNS}"
        );
        let mut changes: Vec<StockChange> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&skus)
            .bind(&quantities)
            .bind(on_hand_sign)
            .bind(reserved_sign)
            .bind(now)
            .fetch_all(&mut **pg)
            .await?;
        changes.sort_by(|a, b| a.sku.cmp(&b.sku));
        Ok(changes)
    }

    /// Applies a settled reservation line: `on_hand` and `reserved` move by the given amounts.
    pub async fn adjust_stock(
        &self,
        tx: &mut Tx,
        sku: &str,
        on_hand_delta: i64,
        reserved_delta: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<StockChange>, sqlx::Error> {
        let sql = format!(
            "UPDATE inventory SET on_hand = on_hand + $2, reserved = reserved + $3, updated_at = $4
             WHERE sku = $1 {CHANGE_COLUMNS}"
        );
        with_tx!(tx, |conn| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(sku)
            .bind(on_hand_delta)
            .bind(reserved_delta)
            .bind(now)
            .fetch_optional(conn)
            .await)
    }

    /// Records a reservation in `state`; `false` when one exists for this order already.
    pub async fn insert_reservation(
        &self,
        tx: &mut Tx,
        order_id: Uuid,
        state: ReservationState,
        expires_at: DateTime<Utc>,
        lines: &[(String, i64)],
        now: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        let inserted = with_tx!(tx, |conn| {
            sqlx::query(
            "INSERT INTO reservations (order_id, state, expires_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (order_id) DO NOTHING"
        )
        .bind(order_id)
        .bind(state.as_str())
        .bind(expires_at)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
        })? == 1;
        if inserted && !lines.is_empty() {
            with_tx!(tx, |conn| {
                let mut query = sqlx::QueryBuilder::new("INSERT INTO reservation_lines (order_id, sku, quantity) ");
                query.push_values(lines, |mut row, (sku, quantity)| {
                    row.push_bind(order_id).push_bind(sku.as_str()).push_bind(*quantity);
                });
                query.build().execute(conn).await.map(|_| ())
            })?;
        }
        Ok(inserted)
    }

    pub async fn reservation(&self, tx: &mut Tx, order_id: Uuid) -> Result<Option<Reservation>, sqlx::Error> {
        let head: Option<(String, DateTime<Utc>)> =
            with_tx!(tx, |conn| sqlx::query_as("SELECT state, expires_at FROM reservations WHERE order_id = $1")
                .bind(order_id)
                .fetch_optional(conn)
                .await)?;
        let Some((state, expires_at)) = head else {
            return Ok(None);
        };
        let lines = self.reservation_lines(tx, order_id).await?;
        Ok(Some(Reservation { order_id, state: ReservationState::parse(&state)?, expires_at, lines }))
    }

    /// A reservation's `(sku, quantity)` lines, sorted by SKU.
    pub async fn reservation_lines(&self, tx: &mut Tx, order_id: Uuid) -> Result<Vec<(String, i64)>, sqlx::Error> {
        with_tx!(tx, |conn| sqlx::query_as(
            "SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku"
        )
        .bind(order_id)
        .fetch_all(conn)
        .await)
    }

    /// Moves a reservation from `from` to `to`; with `unexpired_at`, only while it has not
    /// expired by then. `false` when it was not in that state (someone else moved it first).
    pub async fn move_reservation(
        &self,
        tx: &mut Tx,
        order_id: Uuid,
        from: ReservationState,
        to: ReservationState,
        unexpired_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        let result = with_tx!(tx, |conn| sqlx::query(
            "UPDATE reservations SET state = $3, updated_at = $5
             WHERE order_id = $1 AND state = $2 AND ($4 IS NULL OR expires_at > $4)"
        )
        .bind(order_id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(unexpired_at)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(result == 1)
    }

    /// Held reservations whose time ran out, oldest first.
    pub async fn expired_reservations(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
        with_db!(&self.db, |pool| sqlx::query_scalar(
            "SELECT order_id FROM reservations WHERE state = 'held' AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
        )
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await)
    }
}

/// What cart and orders need to know about a SKU.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VariantInfo {
    pub sku: String,
    pub product_id: Uuid,
    pub product_slug: String,
    pub product_title: String,
    pub title: String,
    pub price_amount: i64,
    pub currency: String,
    pub status: String,
    pub on_hand: i64,
    pub reserved: i64,
}

impl Store {
    /// The SKUs among `skus` that exist, with their product and stock.
    pub async fn variant_infos(&self, skus: &[String]) -> Result<Vec<VariantInfo>, sqlx::Error> {
        let mut found = Vec::with_capacity(skus.len());
        for chunk in skus.chunks(super::MAX_IN_LIST) {
            let rows: Vec<VariantInfo> = with_db!(&self.db, |pool| {
                let mut query = sqlx::QueryBuilder::new(
                    "SELECT v.sku, v.product_id, p.slug AS product_slug, p.title AS product_title, v.title,
                            v.price_amount, v.currency, p.status, i.on_hand, i.reserved
                     FROM variants v JOIN products p ON p.id = v.product_id JOIN inventory i ON i.sku = v.sku
                     WHERE v.sku IN (",
                );
                let mut list = query.separated(", ");
                for sku in chunk {
                    list.push_bind(sku.as_str());
                }
                query.push(")");
                query.build_query_as().fetch_all(pool).await
            })?;
            found.extend(rows);
        }
        Ok(found)
    }
}
