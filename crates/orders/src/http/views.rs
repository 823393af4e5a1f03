//! The order as clients see it (API.md, Orders).

use chrono::{DateTime, Utc};
use platform::money::{Currency, Money};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Address, Order, PaymentStatus, Status};

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
    pub status: PaymentStatus,
    /// The provider's id of the charge, once there is one.
    pub reference: Option<String>,
    /// Why a failed payment was declined, in the card processors' words: `card_declined`,
    /// `insufficient_funds`, … (Stripe's decline codes).
    pub decline_code: Option<String>,
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

impl From<&Order> for OrderView {
    fn from(order: &Order) -> Self {
        let money = |amount| order.money(amount);
        Self {
            id: order.id,
            number: order.number.clone(),
            user_id: order.user_id,
            status: order.status,
            lines: order
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
            subtotal: money(order.totals.subtotal),
            shipping: money(order.totals.shipping),
            tax: money(order.totals.tax),
            total: money(order.totals.total),
            currency: order.currency,
            shipping_address: order.shipping_address.clone(),
            payment: PaymentView {
                provider: order.payment.provider.clone(),
                status: order.payment.status,
                reference: order.payment.reference.clone(),
                decline_code: order.payment.decline_code.clone(),
            },
            fulfilment: FulfilmentView {
                carrier: order.fulfilment.carrier.clone(),
                tracking_number: order.fulfilment.tracking_number.clone(),
                shipped_at: order.fulfilment.shipped_at,
                delivered_at: order.fulfilment.delivered_at,
            },
            history: order.history.iter().map(|h| HistoryView { status: h.status, at: h.at }).collect(),
            created_at: order.created_at,
            updated_at: order.updated_at,
        }
    }
}
