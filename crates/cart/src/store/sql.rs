//! Carts in SQL (SQLite for the embedded shop; PostgreSQL works too). Each change is one
//! transaction that first locks the cart's row (a no-op `UPDATE`: a row lock on PostgreSQL,
//! while SQLite's `BEGIN IMMEDIATE` already serialises writers), so concurrent changes to a cart
//! apply one after the other and none is lost. Expired carts count as missing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use events::CloudEvent;
use platform::{
    db::{ConnectError, Db, PoolConfig, Tx, TxConn},
    with_db, with_tx,
};
use sqlx::migrate::Migrator;
use uuid::Uuid;

use super::{CartRef, LineChange, LineOutcome, Merge, MergeOutcome, StoreError, StoredCart};
use crate::rules;

static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// A read renews a cart's expiry only when it has run down by this much, so reads rarely write.
const RENEW_SLACK: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct SqlCarts {
    db: Db,
}

#[derive(Debug, sqlx::FromRow)]
struct CartRow {
    id: Uuid,
    owner: String,
    currency: Option<String>,
    retired: bool,
    updated_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(90))
}

impl SqlCarts {
    /// Connects and migrates the carts and the outbox.
    pub async fn open(url: &str, pool: &PoolConfig) -> Result<Self, ConnectError> {
        let db = events::open_database(url, pool, &POSTGRES, &SQLITE).await?;
        db.observe_as(crate::SERVICE);
        Ok(Self { db })
    }

    /// Locks and reads a live cart; an expired one is deleted and reads as missing.
    async fn lock(&self, tx: &mut Tx, key: &str, now: DateTime<Utc>) -> Result<Option<CartRow>, StoreError> {
        // A SQLite transaction holds the database's write lock from its start (`BEGIN
        // IMMEDIATE`); each statement saved is a round trip made while holding it.
        if let TxConn::Postgres(conn) = tx.conn() {
            sqlx::query("UPDATE carts SET updated_at = updated_at WHERE key = $1")
                .bind(key)
                .execute(&mut **conn)
                .await?;
        }
        let row: Option<CartRow> = with_tx!(tx, |conn| sqlx::query_as(
            "SELECT id, owner, currency, retired, updated_at, expires_at FROM carts WHERE key = $1"
        )
        .bind(key)
        .fetch_optional(conn)
        .await)?;
        match row {
            Some(row) if row.expires_at <= now => {
                with_tx!(tx, |conn| sqlx::query("DELETE FROM carts WHERE key = $1")
                    .bind(key)
                    .execute(conn)
                    .await
                    .map(|_| ()))?;
                Ok(None)
            }
            row => Ok(row),
        }
    }

    async fn insert(
        &self,
        tx: &mut Tx,
        cart: CartRef,
        id: Uuid,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        with_tx!(tx, |conn| sqlx::query(
            "INSERT INTO carts (key, id, owner, currency, retired, created_at, updated_at, expires_at)
             VALUES ($1, $2, $3, NULL, FALSE, $4, $4, $5)"
        )
        .bind(cart.key())
        .bind(id)
        .bind(cart.owner())
        .bind(now)
        .bind(expiry(now, ttl))
        .execute(conn)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    async fn quantity(&self, tx: &mut Tx, key: &str, sku: &str) -> Result<i64, StoreError> {
        let found: Option<i64> = with_tx!(tx, |conn| sqlx::query_scalar(
            "SELECT quantity FROM cart_lines WHERE cart_key = $1 AND sku = $2"
        )
        .bind(key)
        .bind(sku)
        .fetch_optional(conn)
        .await)?;
        Ok(found.unwrap_or(0))
    }

    async fn line_count(&self, tx: &mut Tx, key: &str) -> Result<i64, StoreError> {
        Ok(with_tx!(tx, |conn| sqlx::query_scalar("SELECT COUNT(*) FROM cart_lines WHERE cart_key = $1")
            .bind(key)
            .fetch_one(conn)
            .await)?)
    }

    async fn put_line(&self, tx: &mut Tx, key: &str, sku: &str, quantity: i64) -> Result<(), StoreError> {
        if quantity <= 0 {
            with_tx!(tx, |conn| sqlx::query("DELETE FROM cart_lines WHERE cart_key = $1 AND sku = $2")
                .bind(key)
                .bind(sku)
                .execute(conn)
                .await
                .map(|_| ()))?;
        } else {
            with_tx!(tx, |conn| sqlx::query(
                "INSERT INTO cart_lines (cart_key, sku, quantity) VALUES ($1, $2, $3)
                 ON CONFLICT (cart_key, sku) DO UPDATE SET quantity = excluded.quantity"
            )
            .bind(key)
            .bind(sku)
            .bind(quantity)
            .execute(conn)
            .await
            .map(|_| ()))?;
        }
        Ok(())
    }

    async fn touch(
        &self,
        tx: &mut Tx,
        key: &str,
        currency: Option<&str>,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        with_tx!(tx, |conn| sqlx::query(
            "UPDATE carts SET currency = COALESCE($2, currency), updated_at = $3, expires_at = $4 WHERE key = $1"
        )
        .bind(key)
        .bind(currency)
        .bind(now)
        .bind(expiry(now, ttl))
        .execute(conn)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn create(&self, cart: CartRef, id: Uuid, ttl: Duration) -> Result<(), StoreError> {
        let now = platform::time::now();
        let mut tx = self.db.begin().await?;
        if self.lock(&mut tx, &cart.key(), now).await?.is_none() {
            self.insert(&mut tx, cart, id, now, ttl).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get(&self, cart: CartRef, ttl: Duration) -> Result<Option<StoredCart>, StoreError> {
        let key = cart.key();
        let now = platform::time::now();
        let row: Option<CartRow> = with_db!(&self.db, |pool| sqlx::query_as(
            "SELECT id, owner, currency, retired, updated_at, expires_at FROM carts WHERE key = $1"
        )
        .bind(&key)
        .fetch_optional(pool)
        .await)?;
        let Some(row) = row.filter(|r| !r.retired && r.expires_at > now) else { return Ok(None) };
        let lines: Vec<(String, i64)> = with_db!(&self.db, |pool| sqlx::query_as(
            "SELECT sku, quantity FROM cart_lines WHERE cart_key = $1 ORDER BY sku"
        )
        .bind(&key)
        .fetch_all(pool)
        .await)?;
        let renewed = expiry(now, ttl);
        let slack = RENEW_SLACK.min(ttl / 2);
        if row.expires_at < renewed - chrono::Duration::from_std(slack).unwrap_or_default() {
            with_db!(&self.db, |pool| sqlx::query("UPDATE carts SET expires_at = $2 WHERE key = $1")
                .bind(&key)
                .bind(renewed)
                .execute(pool)
                .await
                .map(|_| ()))?;
        }
        Ok(Some(StoredCart {
            id: row.id,
            owner: row.owner,
            currency: row.currency.filter(|_| !lines.is_empty()),
            lines,
            updated_at: row.updated_at,
        }))
    }

    pub async fn change_line(
        &self,
        cart: CartRef,
        change: &LineChange<'_>,
        new_id: Uuid,
    ) -> Result<LineOutcome, StoreError> {
        let key = cart.key();
        let now = platform::time::now();
        let mut tx = self.db.begin().await?;
        let row = match self.lock(&mut tx, &key, now).await? {
            Some(row) if row.retired => return Ok(LineOutcome::Missing),
            Some(row) => row,
            None if change.create => {
                self.insert(&mut tx, cart, new_id, now, change.ttl).await?;
                CartRow {
                    id: new_id,
                    owner: cart.owner().to_owned(),
                    currency: None,
                    retired: false,
                    updated_at: now,
                    expires_at: now,
                }
            }
            None => return Ok(LineOutcome::Missing),
        };
        let (lines, current): (i64, i64) = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
            "SELECT COUNT(*), COALESCE(MAX(CASE WHEN sku = $2 THEN quantity END), 0) FROM cart_lines WHERE cart_key = $1"
        )
        .bind(&key)
        .bind(change.sku)
        .fetch_one(conn)
        .await
        })?;
        let cart = rules::Cart {
            currency: row.currency.as_deref(),
            lines: usize::try_from(lines).unwrap_or(usize::MAX),
            current,
        };
        let wanted = match rules::change_line(cart, change.change) {
            Ok(wanted) => wanted,
            Err(refusal) => return Ok(LineOutcome::Refused(refusal)),
        };
        self.put_line(&mut tx, &key, change.sku, wanted).await?;
        self.touch(&mut tx, &key, (wanted > 0).then_some(change.change.currency), now, change.ttl).await?;
        tx.commit().await?;
        Ok(LineOutcome::Changed { quantity: wanted })
    }

    async fn remove(&self, cart: CartRef, sku: Option<&str>, ttl: Duration) -> Result<bool, StoreError> {
        let key = cart.key();
        let now = platform::time::now();
        let mut tx = self.db.begin().await?;
        if self.lock(&mut tx, &key, now).await?.is_none_or(|row| row.retired) {
            return Ok(false);
        }
        match sku {
            Some(sku) => self.put_line(&mut tx, &key, sku, 0).await?,
            None => with_tx!(&mut tx, |conn| sqlx::query("DELETE FROM cart_lines WHERE cart_key = $1")
                .bind(&key)
                .execute(conn)
                .await
                .map(|_| ()))?,
        }
        self.touch(&mut tx, &key, None, now, ttl).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn remove_line(&self, cart: CartRef, sku: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.remove(cart, Some(sku), ttl).await
    }

    pub async fn clear(&self, cart: CartRef, ttl: Duration) -> Result<bool, StoreError> {
        self.remove(cart, None, ttl).await
    }

    pub async fn merge(&self, merge: &Merge<'_>) -> Result<MergeOutcome, StoreError> {
        let (guest_ref, user_ref) = (CartRef::Guest(merge.guest), CartRef::User(merge.user));
        let (guest_key, user_key) = (guest_ref.key(), user_ref.key());
        let now = platform::time::now();
        let mut tx = self.db.begin().await?;
        // Both carts are locked in key order ("g-…" before "u-…"), so merges cannot deadlock.
        let Some(guest_row) = self.lock(&mut tx, &guest_key, now).await?.filter(|row| !row.retired) else {
            return Ok(MergeOutcome::GuestMissing);
        };
        let user_row = match self.lock(&mut tx, &user_key, now).await? {
            Some(row) => row,
            None => {
                self.insert(&mut tx, user_ref, merge.new_id, now, merge.user_ttl).await?;
                CartRow {
                    id: merge.new_id,
                    owner: "user".into(),
                    currency: None,
                    retired: false,
                    updated_at: now,
                    expires_at: now,
                }
            }
        };
        let guest_lines: Vec<(String, i64)> =
            with_tx!(&mut tx, |conn| sqlx::query_as("SELECT sku, quantity FROM cart_lines WHERE cart_key = $1")
                .bind(&guest_key)
                .fetch_all(conn)
                .await)?;
        let user_has = self.line_count(&mut tx, &user_key).await? > 0;
        let guest_side = (guest_row.currency.as_deref(), !guest_lines.is_empty());
        if let Some(cart) = rules::merge_conflict(guest_side, (user_row.currency.as_deref(), user_has)) {
            return Ok(MergeOutcome::OtherCurrency { cart });
        }
        for (sku, quantity) in &guest_lines {
            let mine = self.quantity(&mut tx, &user_key, sku).await?;
            let stock = merge.available.iter().find(|(s, _)| s == sku).map_or(0, |(_, n)| *n);
            let merged = rules::merged_quantity(mine, *quantity, stock);
            if merged > 0 {
                self.put_line(&mut tx, &user_key, sku, merged).await?;
            }
        }
        let currency = if user_has { None } else { guest_row.currency.as_deref() };
        self.touch(&mut tx, &user_key, currency, now, merge.user_ttl).await?;
        with_tx!(&mut tx, |conn| sqlx::query("DELETE FROM cart_lines WHERE cart_key = $1")
            .bind(&guest_key)
            .execute(conn)
            .await
            .map(|_| ()))?;
        with_tx!(&mut tx, |conn| sqlx::query(
            "UPDATE carts SET retired = TRUE, updated_at = $2, expires_at = $3 WHERE key = $1"
        )
        .bind(&guest_key)
        .bind(now)
        .bind(expiry(now, merge.guest_ttl))
        .execute(conn)
        .await
        .map(|_| ()))?;
        tx.commit().await?;
        Ok(MergeOutcome::Merged)
    }

    /// The database, whose outbox the relay publishes.
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn complete_checkout(
        &self,
        cart: CartRef,
        order_id: Uuid,
        ordered: &[(String, i64)],
        event: &CloudEvent,
        ttl: Duration,
    ) -> Result<Option<bool>, StoreError> {
        let key = cart.key();
        let now = platform::time::now();
        let mut tx = self.db.begin().await?;
        if self.lock(&mut tx, &key, now).await?.is_none() {
            return Ok(None);
        }
        let inserted = with_tx!(&mut tx, |conn| sqlx::query(
            "INSERT INTO cart_checkouts (cart_key, order_id, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        )
        .bind(&key)
        .bind(order_id)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
        if inserted == 0 {
            return Ok(Some(false));
        }
        if ordered.is_empty() {
            with_tx!(&mut tx, |conn| sqlx::query("DELETE FROM cart_lines WHERE cart_key = $1")
                .bind(&key)
                .execute(conn)
                .await
                .map(|_| ()))?;
        }
        for (sku, quantity) in ordered {
            with_tx!(&mut tx, |conn| sqlx::query(
                "DELETE FROM cart_lines WHERE cart_key = $1 AND sku = $2 AND quantity = $3"
            )
            .bind(&key)
            .bind(sku)
            .bind(quantity)
            .execute(conn)
            .await
            .map(|_| ()))?;
        }
        self.touch(&mut tx, &key, None, now, ttl).await?;
        events::enqueue(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Some(true))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }
}
