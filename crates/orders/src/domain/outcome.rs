//! What became of a checkout: the answer a client gets, and gets again when it repeats the
//! request under the same idempotency key. Kept under the key in this form; the HTTP layer alone
//! decides how each is answered.

use serde::{Deserialize, Serialize};

use super::Order;

/// Why a line could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShortageReason {
    OutOfStock,
    UnknownSku,
    NotForSale,
}

/// A line that could not be reserved at checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortage {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
    pub reason: ShortageReason,
}

/// The final outcome of a checkout. A paid or declined one carries the order as it was then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CheckoutOutcome {
    Paid {
        order: Box<Order>,
    },
    /// The order, in `payment_failed`, its stock released.
    Declined {
        order: Box<Order>,
    },
    /// Nothing was reserved; every short line is named.
    OutOfStock {
        shortages: Vec<Shortage>,
    },
    EmptyCart,
    CartNotFound,
}

impl CheckoutOutcome {
    /// A short name, for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Paid { .. } => "paid",
            Self::Declined { .. } => "declined",
            Self::OutOfStock { .. } => "out_of_stock",
            Self::EmptyCart => "empty_cart",
            Self::CartNotFound => "cart_not_found",
        }
    }
}

/// What is stored under an idempotency key once its checkout is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Outcome(CheckoutOutcome),
    /// A checkout answered by a version that kept the HTTP answer instead of the outcome: it is
    /// replayed as it was given until the key expires (24 hours after the upgrade at most).
    Given {
        status: u16,
        body: String,
    },
}
