//! Where carts live: Redis (distributed: one hash of lines and one of metadata per cart, every
//! change one Lua script) or SQL (embedded SQLite: every change one transaction). Both keep the
//! same rules in the same atomic step: the per-line cap, the stock check, one currency per cart,
//! and TTLs that activity renews. A checkout's `cart.checked_out` event is written in the step
//! that empties the cart: to the outbox table in SQL, to an outbox stream in Redis.

mod redis;
mod sql;
#[cfg(test)]
mod tests;

use std::time::Duration;

use chrono::{DateTime, Utc};
use events::CloudEvent;
use uuid::Uuid;

use crate::rules;

pub use self::{
    redis::{CHANGE_LINE_LUA, RedisCarts, RedisOutbox},
    sql::SqlCarts,
};

/// Which cart: a guest cart by its secret id, or a user's own cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CartRef {
    Guest(Uuid),
    User(Uuid),
}

impl CartRef {
    /// The store key: `g-{id}` or `u-{user id}`.
    pub fn key(&self) -> String {
        match self {
            Self::Guest(id) => format!("g-{id}"),
            Self::User(user) => format!("u-{user}"),
        }
    }

    pub fn owner(&self) -> &'static str {
        match self {
            Self::Guest(_) => "guest",
            Self::User(_) => "user",
        }
    }

    /// Which of the Redis store's [`redis::SHARDS`] the cart belongs to: its keys share a Redis
    /// Cluster slot with that shard's outbox stream. Ids are random in their low bits (v4 and v7
    /// UUIDs alike), so carts spread evenly.
    pub fn shard(&self) -> u32 {
        let (Self::Guest(id) | Self::User(id)) = self;
        (id.as_u128() % u128::from(redis::SHARDS)) as u32
    }
}

/// A cart as stored: lines by SKU, without prices (those are the catalog's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCart {
    pub id: Uuid,
    pub owner: String,
    pub currency: Option<String>,
    /// `(sku, quantity)`, sorted by SKU.
    pub lines: Vec<(String, i64)>,
    pub updated_at: DateTime<Utc>,
}

/// A change to one line, under the rules of [`crate::rules`].
#[derive(Debug, Clone)]
pub struct LineChange<'a> {
    pub sku: &'a str,
    pub change: rules::Change<'a>,
    pub ttl: Duration,
    /// Whether a missing cart is created (a user's own cart is, on first use).
    pub create: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome {
    Changed { quantity: i64 },
    Missing,
    Refused(rules::Refusal),
}

/// A guest cart merged into a user's: the guest's lines are added to the user's under the rules
/// of [`crate::rules`], and the guest cart is retired.
#[derive(Debug, Clone)]
pub struct Merge<'a> {
    pub guest: Uuid,
    pub user: Uuid,
    /// Units available now of each of the guest's SKUs.
    pub available: &'a [(String, i64)],
    pub user_ttl: Duration,
    pub guest_ttl: Duration,
    /// The user cart's id, should it have to be created.
    pub new_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    Merged,
    GuestMissing,
    OtherCurrency { cart: String },
}

/// The store a cart service uses.
#[derive(Clone)]
pub enum CartStore {
    Redis(RedisCarts),
    Sql(SqlCarts),
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            CartStore::Redis($store) => $call,
            CartStore::Sql($store) => $call,
        }
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the cart store is unavailable: {0}")]
    Unavailable(String),
    #[error("cart store: {0}")]
    Broken(String),
}

impl From<::redis::RedisError> for StoreError {
    fn from(error: ::redis::RedisError) -> Self {
        if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() || error.is_connection_refusal() {
            Self::Unavailable(error.to_string())
        } else {
            Self::Broken(error.to_string())
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if platform::db::is_unavailable(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::Broken(error.to_string())
        }
    }
}

impl CartStore {
    /// Creates the cart unless it exists (a user's cart keeps its id).
    pub async fn create(&self, cart: CartRef, id: Uuid, ttl: Duration) -> Result<(), StoreError> {
        dispatch!(self, s => s.create(cart, id, ttl).await)
    }

    /// The cart, renewing its TTL; `None` when it does not exist (or was merged away).
    pub async fn get(&self, cart: CartRef, ttl: Duration) -> Result<Option<StoredCart>, StoreError> {
        dispatch!(self, s => s.get(cart, ttl).await)
    }

    pub async fn change_line(
        &self,
        cart: CartRef,
        change: &LineChange<'_>,
        new_id: Uuid,
    ) -> Result<LineOutcome, StoreError> {
        dispatch!(self, s => s.change_line(cart, change, new_id).await)
    }

    /// Removes a line; `false` when the cart does not exist.
    pub async fn remove_line(&self, cart: CartRef, sku: &str, ttl: Duration) -> Result<bool, StoreError> {
        dispatch!(self, s => s.remove_line(cart, sku, ttl).await)
    }

    /// Empties the cart; `false` when it does not exist.
    pub async fn clear(&self, cart: CartRef, ttl: Duration) -> Result<bool, StoreError> {
        dispatch!(self, s => s.clear(cart, ttl).await)
    }

    /// Adds a guest cart's lines to a user's cart and retires the guest cart.
    pub async fn merge(&self, merge: &Merge<'_>) -> Result<MergeOutcome, StoreError> {
        dispatch!(self, s => s.merge(merge).await)
    }

    /// Takes what `order_id` bought out of the cart — each of `ordered`'s lines that the cart
    /// still holds at that quantity; every line when `ordered` is empty — and records `event` for
    /// publication, in one atomic step; `Some(false)` (and no event) when that order did so before,
    /// `None` when the cart does not exist.
    pub async fn complete_checkout(
        &self,
        cart: CartRef,
        order_id: Uuid,
        ordered: &[(String, i64)],
        event: &CloudEvent,
        ttl: Duration,
    ) -> Result<Option<bool>, StoreError> {
        dispatch!(self, s => s.complete_checkout(cart, order_id, ordered, event, ttl).await)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }
}
