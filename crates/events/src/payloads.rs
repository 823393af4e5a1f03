//! Typed payloads of the events services publish (API.md, Events). The payload is the contract
//! between a producer and its consumers: add fields, never repurpose one. Each names the entity
//! it is about as its CloudEvents `subject`; consumers keep order per subject.

use chrono::{DateTime, Utc};
use platform::money::Money;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::EventPayload;

macro_rules! event {
    ($payload:ty, $type:literal, |$this:ident| $subject:expr) => {
        impl EventPayload for $payload {
            const TYPE: &'static str = $type;
            fn subject(&self) -> String {
                let $this = self;
                $subject
            }
        }
    };
}

/// A user account was created (by registration, the bootstrap admin, or an operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub registered_at: DateTime<Utc>,
    /// How the account was made: `password`, or the id of the sign-in provider (`google`, …).
    /// Events from before this field say nothing, which means `password`.
    #[serde(default = "password")]
    pub signed_up_with: String,
    /// Whether the email is proven to be the user's (a provider asserted it verified).
    #[serde(default)]
    pub email_verified: bool,
}
event!(UserRegistered, "user.registered", |e| e.user_id.to_string());

fn password() -> String {
    "password".to_owned()
}

/// An external sign-in identity (a provider's account) was linked to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdentityLinked {
    pub user_id: Uuid,
    /// The provider's id in this shop's configuration (`google`, `github`, …).
    pub provider: String,
    pub at: DateTime<Utc>,
}
event!(UserIdentityLinked, "user.identity_linked", |e| e.user_id.to_string());

/// A user asked (or registration asked on their behalf) for a link proving their email. The
/// event names the request; the link's secret token is never in it: the mailer asks identity
/// for the link when it sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEmailVerificationRequested {
    pub request_id: Uuid,
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}
event!(UserEmailVerificationRequested, "user.email_verification_requested", |e| e.user_id.to_string());

/// A password reset was asked for an existing account (requests for unknown addresses publish
/// nothing). Like the verification request, it names the request and carries no token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPasswordResetRequested {
    pub request_id: Uuid,
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}
event!(UserPasswordResetRequested, "user.password_reset_requested", |e| e.user_id.to_string());

/// Every session of a user but `kept_session_id` was revoked (`password_reset`,
/// `password_changed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSessionsRevoked {
    pub user_id: Uuid,
    pub reason: String,
    /// The session that made the change, when it stays signed in.
    #[serde(default)]
    pub kept_session_id: Option<Uuid>,
    /// The sessions that ended, whose access tokens every verifier must now refuse.
    #[serde(default)]
    pub session_ids: Vec<Uuid>,
    pub at: DateTime<Utc>,
}
event!(UserSessionsRevoked, "user.sessions_revoked", |e| e.user_id.to_string());

/// One session of a user ended (`logout`, `refresh_token_reused`): its access tokens must be
/// refused from now on, not at their expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSessionRevoked {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub reason: String,
    pub at: DateTime<Utc>,
}
event!(UserSessionRevoked, "user.session_revoked", |e| e.user_id.to_string());

/// What product events carry about the product: enough for a read model to know what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductSnapshot {
    pub product_id: Uuid,
    pub slug: String,
    pub status: String,
    pub skus: Vec<String>,
    /// Increases with every change of the product; a read model ignores older versions.
    pub version: i64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCreated(pub ProductSnapshot);
event!(ProductCreated, "product.created", |e| e.0.product_id.to_string());

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductUpdated(pub ProductSnapshot);
event!(ProductUpdated, "product.updated", |e| e.0.product_id.to_string());

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductArchived(pub ProductSnapshot);
event!(ProductArchived, "product.archived", |e| e.0.product_id.to_string());

/// Stock of a SKU changed (set by an admin, reserved, committed or released).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryChanged {
    pub sku: String,
    pub product_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub at: DateTime<Utc>,
}
event!(InventoryChanged, "inventory.changed", |e| e.sku.clone());

/// A checkout emptied a cart into an order. A guest cart's id is the secret that opens it, so the
/// event never names it: `cart` says whose cart it was, and `user_id` who checked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartCheckedOut {
    pub order_id: Uuid,
    pub user_id: Uuid,
    /// `user` for the user's own cart, `guest` for a guest cart the user checked out.
    pub cart: String,
    pub at: DateTime<Utc>,
}
event!(CartCheckedOut, "cart.checked_out", |e| e.user_id.to_string());

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    /// The product's title when the order was placed (events of before say nothing).
    #[serde(default)]
    pub title: String,
    pub quantity: i64,
    pub unit_price: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub number: String,
    pub user_id: Uuid,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    pub at: DateTime<Utc>,
}
event!(OrderPlaced, "order.placed", |e| e.order_id.to_string());

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaid {
    pub order_id: Uuid,
    pub number: String,
    pub user_id: Uuid,
    pub total: Money,
    pub payment_reference: String,
    pub at: DateTime<Utc>,
}
event!(OrderPaid, "order.paid", |e| e.order_id.to_string());

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaymentFailed {
    pub order_id: Uuid,
    pub number: String,
    pub user_id: Uuid,
    pub reason: String,
    pub at: DateTime<Utc>,
}
event!(OrderPaymentFailed, "order.payment_failed", |e| e.order_id.to_string());

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub number: String,
    pub user_id: Uuid,
    pub refunded: Money,
    pub at: DateTime<Utc>,
}
event!(OrderCancelled, "order.cancelled", |e| e.order_id.to_string());

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub order_id: Uuid,
    pub number: String,
    pub user_id: Uuid,
    pub carrier: String,
    pub tracking_number: String,
    pub at: DateTime<Utc>,
}
event!(OrderShipped, "order.shipped", |e| e.order_id.to_string());

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDelivered {
    pub order_id: Uuid,
    pub number: String,
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}
event!(OrderDelivered, "order.delivered", |e| e.order_id.to_string());

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FulfilmentLine {
    pub sku: String,
    pub quantity: i64,
}

/// A paid order is ready to be picked, packed and shipped: what a warehouse or a fulfilment
/// partner consumes. Published with `order.paid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FulfilmentRequested {
    pub order_id: Uuid,
    pub number: String,
    pub lines: Vec<FulfilmentLine>,
    /// `{name, line1, line2?, city, postal_code, country}`.
    pub shipping_address: serde_json::Value,
    pub at: DateTime<Utc>,
}
event!(FulfilmentRequested, "fulfilment.requested", |e| e.order_id.to_string());
