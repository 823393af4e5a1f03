//! Keeping this replica's read models fresh from the catalog's own events: the search index
//! and the product cache. Every replica consumes on a queue of its own, because each has its
//! own index.

use std::{collections::BTreeSet, time::Duration};

use events::{
    CloudEvent, HandlerError, Subscription,
    payloads::{InventoryChanged, ProductArchived, ProductCreated, ProductUpdated},
};
use uuid::Uuid;

use crate::{cache::ProductCache, search::IndexerHandle};

/// A replica's queue outlives a restart by this long, so a quick restart misses nothing.
const REPLICA_QUEUE_IDLE: Duration = Duration::from_secs(3600);
const MAX_BATCH: usize = 256;

/// The product an event is about, and whether only its stock changed.
fn product_of(event: &CloudEvent) -> Result<Option<(Uuid, bool)>, serde_json::Error> {
    if let Some(created) = event.payload::<ProductCreated>() {
        return Ok(Some((created?.0.product_id, false)));
    }
    if let Some(updated) = event.payload::<ProductUpdated>() {
        return Ok(Some((updated?.0.product_id, false)));
    }
    if let Some(archived) = event.payload::<ProductArchived>() {
        return Ok(Some((archived?.0.product_id, false)));
    }
    if let Some(changed) = event.payload::<InventoryChanged>() {
        return Ok(Some((changed?.product_id, true)));
    }
    Ok(None)
}

/// The subscription of replica `replica`: invalidates cached products and refreshes their
/// search documents, acknowledging an edit only once the index shows it. A stock change is
/// acknowledged once the indexer has noted it (it shows within `STOCK_DELAY`).
pub fn subscription(replica: &str, per_replica: bool, indexer: IndexerHandle, cache: ProductCache) -> Subscription {
    let consumer = if per_replica { format!("catalog-search.{replica}") } else { "catalog-search".to_owned() };
    let subscription = Subscription::batched(
        &consumer,
        &["product.*", "inventory.changed"],
        MAX_BATCH,
        move |events: Vec<CloudEvent>| {
            let (indexer, cache) = (indexer.clone(), cache.clone());
            async move {
                let (mut edited, mut stocked) = (BTreeSet::new(), BTreeSet::new());
                for event in &events {
                    match product_of(event) {
                        Ok(Some((id, false))) => {
                            edited.insert(id);
                        }
                        Ok(Some((id, true))) => {
                            stocked.insert(id);
                        }
                        Ok(None) => {}
                        // A payload this version cannot read: skipping it loses nothing the
                        // start-up reconciliation would not catch.
                        Err(error) => tracing::warn!(event_id = %event.id, error = %error, "unreadable catalog event"),
                    }
                }
                let all: Vec<Uuid> = edited.union(&stocked).copied().collect();
                cache.invalidate(&all).await;
                let stocked: Vec<Uuid> = stocked.difference(&edited).copied().collect();
                indexer.stock_changed(stocked).await.map_err(HandlerError::new)?;
                indexer.refresh(edited.into_iter().collect()).await.map_err(HandlerError::new)
            }
        },
    );
    if per_replica { subscription.expiring(REPLICA_QUEUE_IDLE) } else { subscription }
}
