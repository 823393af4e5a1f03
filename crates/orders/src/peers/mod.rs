//! The services a checkout talks to, behind narrow traits so that the saga can be exercised
//! without them: the catalog's stock reservations ([`Inventory`]) and the cart being bought
//! ([`Carts`]). Every call is idempotent by the order id. The gRPC clients are in `grpc`.

mod grpc;

use std::time::Duration;

use futures_util::future::BoxFuture;
use uuid::Uuid;

pub use grpc::{Cart, Catalog};

use crate::domain::Shortage;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer did not answer in time, or said it cannot now: worth a retry later.
    #[error("{0} unavailable: {1}")]
    Unavailable(&'static str, String),
    #[error("not found")]
    NotFound,
    /// The peer refused the call as it stands (a reservation that was released, say).
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0} failed: {1}")]
    Failed(&'static str, String),
}

/// A price as the cart quotes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub amount: i64,
    pub currency: String,
}

/// A line of the cart being checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartLine {
    pub sku: String,
    pub product_id: String,
    pub title: String,
    pub quantity: i64,
    /// The price now; `None` when the catalog has none for it.
    pub unit_price: Option<Price>,
}

/// The cart being checked out, priced now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutCart {
    pub currency: String,
    pub lines: Vec<CartLine>,
}

/// What became of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    Held,
    /// The order id's reservation was released before this call: nothing is held.
    Released,
    /// Nothing is held; these lines are short.
    Short(Vec<Shortage>),
}

/// Stock for an order: held all or nothing, then sold or given back.
pub trait Inventory: Send + Sync {
    fn reserve<'a>(
        &'a self,
        order_id: Uuid,
        lines: &'a [(String, i64)],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Reserved, PeerError>>;

    /// Turns the held stock into a sale; `Refused` when the hold was released or expired.
    fn commit(&self, order_id: Uuid) -> BoxFuture<'_, Result<(), PeerError>>;

    /// Gives the stock back: a held reservation is released, a committed one returned.
    fn release(&self, order_id: Uuid) -> BoxFuture<'_, Result<(), PeerError>>;
}

/// The cart a checkout buys.
pub trait Carts: Send + Sync {
    /// The user's cart (`me`) or a guest cart, priced now; `NotFound` when there is none.
    fn cart<'a>(&'a self, user: Uuid, cart_id: &'a str) -> BoxFuture<'a, Result<CheckoutCart, PeerError>>;

    /// Takes what `order_id` bought (`ordered`: SKU and quantity) out of the cart, once however
    /// often it is asked; a line the shopper set since stays. A cart that is gone has nothing
    /// to empty.
    fn complete<'a>(
        &'a self,
        user: Uuid,
        cart_id: &'a str,
        order_id: Uuid,
        ordered: &'a [(String, i64)],
    ) -> BoxFuture<'a, Result<(), PeerError>>;
}
