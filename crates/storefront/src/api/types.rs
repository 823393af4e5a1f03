//! The public API's answers, as much of them as the pages show (API.md). Unknown members are
//! ignored: the API may grow without breaking the shop.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use platform::money::Money;
use serde::Deserialize;
use uuid::Uuid;

#[derive(Debug, Clone, Deserialize)]
pub struct Product {
    pub slug: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub brand: Option<String>,
    pub category: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default)]
    pub variants: Vec<Variant>,
}

impl Product {
    /// The lowest variant price: the product's price in listings (API.md).
    pub fn price(&self) -> Option<Money> {
        self.variants.iter().map(|v| v.price).min_by_key(|p| p.amount)
    }

    pub fn in_stock(&self) -> bool {
        self.variants.iter().any(|v| v.stock_available > 0)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Variant {
    pub sku: String,
    pub title: String,
    pub price: Money,
    pub stock_available: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SearchPage {
    pub items: Vec<Product>,
    pub total: u64,
    #[serde(default)]
    pub facets: BTreeMap<String, Facet>,
}

/// A facet's counts: by value (category, brand, `attr.NAME`), or by price bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Facet {
    Values(Vec<FacetValue>),
    Buckets(Vec<PriceBucket>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct FacetValue {
    pub value: String,
    pub count: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PriceBucket {
    pub min: i64,
    pub max: Option<i64>,
    pub count: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Suggestion {
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Category {
    pub slug: String,
    pub name: String,
    pub parent: Option<String>,
    pub product_count: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Cart {
    pub id: Uuid,
    #[serde(default)]
    pub items: Vec<CartItem>,
    pub item_count: i64,
    pub subtotal: Money,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CartItem {
    pub sku: String,
    pub product_id: Option<String>,
    pub title: String,
    pub quantity: i64,
    pub unit_price: Option<Money>,
    pub line_total: Option<Money>,
    pub available: i64,
    #[serde(default)]
    pub stale: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    pub id: Uuid,
    pub number: String,
    pub status: String,
    pub lines: Vec<OrderLine>,
    pub subtotal: Money,
    pub shipping: Money,
    pub tax: Money,
    pub total: Money,
    pub shipping_address: Address,
    pub payment: Payment,
    #[serde(default)]
    pub fulfilment: Fulfilment,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    #[serde(default)]
    pub product_id: Option<String>,
    pub title: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
}

#[derive(Debug, Clone, Default, serde::Serialize, Deserialize)]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Payment {
    pub status: String,
    pub reference: Option<String>,
    /// Why the card processor declined the payment (`card_declined`, `insufficient_funds`, …).
    #[serde(default)]
    pub decline_code: Option<String>,
}

impl Payment {
    /// Why the payment failed, as a shopper can act on it.
    pub fn decline_reason(&self) -> String {
        match self.decline_code.as_deref() {
            Some("insufficient_funds") => "the card has insufficient funds".to_owned(),
            Some("expired_card") => "the card has expired".to_owned(),
            Some("incorrect_cvc") => "the card's security code is wrong".to_owned(),
            Some("processing_error") => "the card could not be processed".to_owned(),
            Some("card_declined") | None => "the card was declined by its bank".to_owned(),
            Some(other) => format!("the card was declined ({})", other.replace('_', " ")),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Fulfilment {
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HistoryEntry {
    pub status: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrdersPage {
    pub items: Vec<Order>,
    pub next_cursor: Option<String>,
}

#[derive(Clone, Deserialize)]
pub struct Tokens {
    pub user: User,
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

/// The tokens are never printed.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Provider {
    pub id: String,
    pub name: String,
}

/// An RFC 9457 problem, as the API answers every error.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub errors: Vec<FieldError>,
    /// A cart's refusal to add more than there is: how many there are.
    #[serde(default)]
    pub available: Option<i64>,
    /// A checkout's out-of-stock refusal: each short SKU.
    #[serde(default)]
    pub shortages: Vec<Shortage>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Shortage {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}
