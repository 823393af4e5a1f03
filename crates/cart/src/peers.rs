//! The cart's peer: prices, titles and stock from the catalog over gRPC: one batched call per request, with a
//! deadline, behind a short-lived local cache that the catalog's events invalidate. The last
//! answer for each SKU is also kept without expiry, so that reads can still show a cart (marked
//! stale) while the catalog is unreachable.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use platform::grpc::Replicas;
use platform::service::StartError;
use rpc::catalog::v1::{GetVariantsRequest, ProductStatus, inventory_client::InventoryClient};

use crate::error::CartError;

/// What the cart needs to know of a SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantPrice {
    pub sku: String,
    pub product_id: String,
    pub title: String,
    pub amount: i64,
    pub currency: String,
    pub available: i64,
    /// Whether the product is on sale (active).
    pub for_sale: bool,
}

/// The answer for a set of SKUs.
#[derive(Debug, Default)]
pub struct Prices {
    pub variants: HashMap<String, VariantPrice>,
    /// Whether some came from the last known answers because the catalog did not answer.
    pub stale: bool,
}

pub struct Catalog {
    catalog: Replicas,
    ttl: Duration,
    /// The answer, when it was fetched, and the wall-clock time its fetch began.
    fresh: quick_cache::sync::Cache<String, (VariantPrice, Instant, DateTime<Utc>)>,
    last_known: quick_cache::sync::Cache<String, VariantPrice>,
}

const CACHED_SKUS: usize = 100_000;

impl Catalog {
    pub fn new(url: &str, timeout: Duration, ttl: Duration) -> Result<Self, StartError> {
        Ok(Self {
            catalog: Replicas::new(crate::SERVICE, url, timeout)?,
            ttl,
            fresh: quick_cache::sync::Cache::new(CACHED_SKUS),
            last_known: quick_cache::sync::Cache::new(CACHED_SKUS),
        })
    }

    /// Forgets what is cached for these SKUs (their product or stock changed).
    pub fn invalidate(&self, skus: &[String]) {
        for sku in skus {
            self.fresh.remove(sku);
        }
    }

    /// A SKU's stock changed at `at` (the catalog's event): a cached answer fetched before
    /// then takes the new figure, since the price did not change; one whose fetch began after
    /// may or may not have seen the change, so it is dropped.
    pub fn stock_changed(&self, sku: &str, available: i64, at: DateTime<Utc>) {
        let Some((mut variant, fetched, began)) = self.fresh.get(sku) else { return };
        if at > began {
            variant.available = available;
            self.fresh.insert(sku.to_owned(), (variant, fetched, began));
        } else {
            self.fresh.remove(sku);
        }
    }

    /// Current prices: from the cache when fresh, else in one call to the catalog. When the
    /// catalog does not answer, `stale_ok` decides between the last known answers and a 503.
    pub async fn prices(&self, skus: &[String], stale_ok: bool) -> Result<Prices, CartError> {
        let mut prices = Prices::default();
        let mut missing = Vec::new();
        for sku in skus {
            match self.fresh.get(sku) {
                Some((variant, at, _)) if at.elapsed() < self.ttl => {
                    prices.variants.insert(sku.clone(), variant);
                }
                _ => missing.push(sku.clone()),
            }
        }
        let hits = (skus.len() - missing.len()) as u64;
        metrics::counter!("cart_price_cache_total", "outcome" => "hit").increment(hits);
        metrics::counter!("cart_price_cache_total", "outcome" => "miss").increment(missing.len() as u64);
        if missing.is_empty() {
            return Ok(prices);
        }
        // The catalog stamps its stock events with the same clock.
        let began = platform::time::now();
        match self.fetch(&missing).await {
            Ok(found) => {
                let now = Instant::now();
                for variant in found {
                    self.fresh.insert(variant.sku.clone(), (variant.clone(), now, began));
                    self.last_known.insert(variant.sku.clone(), variant.clone());
                    prices.variants.insert(variant.sku.clone(), variant);
                }
                Ok(prices)
            }
            Err(error) if stale_ok => {
                tracing::warn!(error = %error, "catalog unavailable; answering with last known prices");
                for sku in &missing {
                    if let Some(variant) = self.last_known.get(sku) {
                        prices.variants.insert(sku.clone(), variant);
                    }
                }
                prices.stale = true;
                Ok(prices)
            }
            Err(error) => Err(CartError::CatalogUnavailable(error)),
        }
    }

    async fn fetch(&self, skus: &[String]) -> Result<Vec<VariantPrice>, String> {
        let started = Instant::now();
        let message = GetVariantsRequest { skus: skus.to_vec() };
        let result = self
            .catalog
            .call(|channel, left| {
                let request = platform::grpc::request(message.clone(), left);
                async move { InventoryClient::new(channel).get_variants(request).await }
            })
            .await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!("cart_catalog_request_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        let response = result.map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        Ok(response
            .variants
            .into_iter()
            .map(|v| {
                let price = v.price.unwrap_or_default();
                VariantPrice {
                    for_sale: v.status == ProductStatus::Active as i32,
                    title: v.title,
                    product_id: v.product_id,
                    amount: price.amount,
                    currency: price.currency,
                    available: v.available,
                    sku: v.sku,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(available: i64) -> VariantPrice {
        VariantPrice {
            sku: "S-1".to_owned(),
            product_id: "p".to_owned(),
            title: "Shoe".to_owned(),
            amount: 1_000,
            currency: "EUR".to_owned(),
            available,
            for_sale: true,
        }
    }

    #[tokio::test]
    async fn stock_events_update_older_answers_and_drop_newer_ones() {
        let catalog = Catalog::new("http://127.0.0.1:1", Duration::from_secs(1), Duration::from_secs(60)).unwrap();
        let fetched = platform::time::now();
        catalog.fresh.insert("S-1".to_owned(), (variant(5), Instant::now(), fetched));
        // A change made after the fetch began: the cached price stands, with the new figure.
        catalog.stock_changed("S-1", 2, fetched + chrono::Duration::milliseconds(5));
        let prices = catalog.prices(&["S-1".to_owned()], false).await.unwrap();
        assert_eq!(prices.variants["S-1"].available, 2);
        assert_eq!(prices.variants["S-1"].amount, 1_000);
        // One made before: the fetch may have missed it, so the answer is dropped.
        catalog.stock_changed("S-1", 1, fetched - chrono::Duration::milliseconds(5));
        assert!(catalog.fresh.get("S-1").is_none());
        // A SKU not cached stays not cached.
        catalog.stock_changed("S-2", 1, fetched);
        assert!(catalog.fresh.get("S-2").is_none());
    }
}
