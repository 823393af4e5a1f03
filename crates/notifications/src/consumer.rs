//! Which events make which emails. Each event is recorded in the inbox with the deliveries it
//! makes, in one transaction: an event delivered twice makes its emails once, and an event
//! whose handling fails makes none until it is applied again.

use std::sync::Arc;

use events::{CloudEvent, HandlerError, Subscription};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::{NewDelivery, Store};

/// The consumer's name: its queue, and its rows in the inbox.
pub const CONSUMER: &str = "notifications";

/// The event types this service reacts to.
pub const TYPES: [&str; 9] = [
    "user.registered",
    "user.email_verification_requested",
    "user.password_reset_requested",
    "order.placed",
    "order.paid",
    "order.payment_failed",
    "order.shipped",
    "order.delivered",
    "order.cancelled",
];

/// The template an event is written with, if any, and the user it is written to.
pub fn template_for(event: &CloudEvent) -> Option<(&'static str, Uuid)> {
    let user_id = event.data.get("user_id").and_then(|v| v.as_str()).and_then(|v| Uuid::try_parse(v).ok())?;
    let template = match event.event_type.as_str() {
        // An account whose email a sign-in provider vouched for is welcomed at once; the others
        // get the verification email (its own event), which welcomes them too.
        "user.registered" if event.data["email_verified"] == true => "welcome",
        "user.email_verification_requested" => "verify_email",
        "user.password_reset_requested" => "reset_password",
        "order.placed" => "order_placed",
        "order.paid" => "order_paid",
        "order.payment_failed" => "order_payment_failed",
        "order.shipped" => "order_shipped",
        "order.delivered" => "order_delivered",
        "order.cancelled" => "order_cancelled",
        _ => return None,
    };
    Some((template, user_id))
}

/// The subscription of this service's queue; `wake` is told when new mail is queued.
pub fn subscription(store: Store, wake: Arc<Notify>) -> Subscription {
    Subscription::new(CONSUMER, &TYPES, move |event| {
        let (store, wake) = (store.clone(), wake.clone());
        async move {
            let queued = apply(&store, &event).await.map_err(HandlerError::new)?;
            if queued {
                wake.notify_one();
            }
            Ok(())
        }
    })
}

/// Records `event` and the email it makes; returns whether one was queued.
pub async fn apply(store: &Store, event: &CloudEvent) -> Result<bool, sqlx::Error> {
    let Some(mut tx) = events::inbox::begin(store.db(), CONSUMER, event).await? else {
        return Ok(false);
    };
    let queued = match template_for(event) {
        Some((template, user_id)) => {
            let delivery = NewDelivery {
                event_id: event.id,
                event_type: &event.event_type,
                template,
                user_id,
                data: &event.data,
                traceparent: event.traceparent.as_deref(),
                now: platform::time::now(),
            };
            store.insert(&mut tx, &delivery).await?
        }
        None => false,
    };
    tx.commit().await?;
    Ok(queued)
}
