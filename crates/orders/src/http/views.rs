//! The order as clients see it (API.md, Orders).

use chrono::{DateTime, Utc};
use platform::money::{Currency, Money};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    domain::{Address, Status},
    store::OrderRow,
};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    /// Human-readable, for the customer and support (`EM-100001`).
    pub number: String,
    pub user_id: Uuid,
    pub status: Status,
    pub lines: Vec<LineView>,
    pub subtotal: Money,
    pub shipping: Money,
    pub tax: Money,
    /// `subtotal + shipping + tax`.
    pub total: Money,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    pub shipping_address: Address,
    pub payment: PaymentView,
    pub fulfilment: FulfilmentView,
    /// Every status the order had, oldest first.
    pub history: Vec<HistoryView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LineView {
    pub sku: String,
    pub product_id: String,
    pub title: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentView {
    /// `sandbox` or `stripe`.
    pub provider: String,
    /// `pending`, `succeeded`, `failed` or `refunded`.
    pub status: String,
    /// The provider's id of the charge, once there is one.
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FulfilmentView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipped_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryView {
    pub status: Status,
    pub at: DateTime<Utc>,
}

impl OrderView {
    pub fn from_row(row: &OrderRow) -> Result<Self, sqlx::Error> {
        let currency = Currency::parse(&row.currency)
            .map_err(|_| sqlx::Error::Decode(format!("bad currency {:?}", row.currency).into()))?;
        let money = |amount| Money::new(amount, currency);
        Ok(Self {
            id: row.id,
            number: row.number.clone(),
            user_id: row.user_id,
            status: row.status()?,
            lines: row
                .lines
                .iter()
                .map(|l| LineView {
                    sku: l.sku.clone(),
                    product_id: l.product_id.clone(),
                    title: l.title.clone(),
                    quantity: l.quantity,
                    unit_price: money(l.unit_price),
                    line_total: money(l.unit_price.saturating_mul(l.quantity)),
                })
                .collect(),
            subtotal: money(row.subtotal),
            shipping: money(row.shipping),
            tax: money(row.tax),
            total: money(row.total),
            currency,
            shipping_address: row.shipping_address.0.clone(),
            payment: PaymentView {
                provider: row.payment_provider.clone(),
                status: row.payment_status.clone(),
                reference: row.payment_reference.clone(),
            },
            fulfilment: FulfilmentView {
                carrier: row.carrier.clone(),
                tracking_number: row.tracking_number.clone(),
                shipped_at: row.shipped_at,
                delivered_at: row.delivered_at,
            },
            history: row.history.iter().map(|h| HistoryView { status: h.status, at: h.at }).collect(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}
