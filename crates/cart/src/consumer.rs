//! Dropping cached prices when the catalog says a product changed, and updating their stock
//! figures when only its stock did. Each replica
//! has its own cache, so on RabbitMQ each consumes on a queue of its own.

use std::{sync::Arc, time::Duration};

use events::{
    CloudEvent, HandlerError, Subscription,
    payloads::{InventoryChanged, ProductArchived, ProductCreated, ProductUpdated},
};

use crate::peers::Catalog;

const REPLICA_QUEUE_IDLE: Duration = Duration::from_secs(3600);

fn skus_of(event: &CloudEvent) -> Vec<String> {
    if let Some(Ok(e)) = event.payload::<ProductUpdated>() {
        return e.0.skus;
    }
    if let Some(Ok(e)) = event.payload::<ProductArchived>() {
        return e.0.skus;
    }
    if let Some(Ok(e)) = event.payload::<ProductCreated>() {
        return e.0.skus;
    }
    Vec::new()
}

pub fn subscription(replica: &str, per_replica: bool, catalog: Arc<Catalog>) -> Subscription {
    let consumer = if per_replica { format!("cart-prices.{replica}") } else { "cart-prices".to_owned() };
    let subscription =
        Subscription::batched(&consumer, &["product.*", "inventory.changed"], 256, move |events: Vec<CloudEvent>| {
            let catalog = catalog.clone();
            async move {
                for event in &events {
                    match event.payload::<InventoryChanged>() {
                        // Only the stock moved: the cached price stands, with the new figure.
                        Some(Ok(changed)) => catalog.stock_changed(&changed.sku, changed.available, changed.at),
                        _ => catalog.invalidate(&skus_of(event)),
                    }
                }
                Ok::<(), HandlerError>(())
            }
        });
    if per_replica { subscription.expiring(REPLICA_QUEUE_IDLE) } else { subscription }
}
