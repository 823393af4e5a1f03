//! The cart's peer: prices, titles and stock from the catalog over gRPC: one batched call per request, with a
//! deadline, behind a short-lived local cache that the catalog's events invalidate. Requests
//! that miss the cache for a SKU already being fetched wait for that fetch instead of starting
//! their own, so a burst of adds of a new SKU costs the catalog one call, not one per add. The last
//! answer for each SKU is also kept without expiry, so that reads can still show a cart (marked
//! stale) while the catalog is unreachable.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures_util::future::{BoxFuture, FutureExt, Shared};
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
    /// Shared with the fetches under way, which fill it once for all who wait for them.
    cache: Arc<Cached>,
    /// Fetches under way, by each SKU they ask for.
    in_flight: Mutex<HashMap<String, Fetch>>,
}

struct Cached {
    /// The answer, when it was fetched, and the wall-clock time its fetch began.
    fresh: quick_cache::sync::Cache<String, (VariantPrice, Instant, DateTime<Utc>)>,
    last_known: quick_cache::sync::Cache<String, VariantPrice>,
}

/// One call to the catalog that several requests may await: what it found.
type Fetch = Shared<BoxFuture<'static, Result<Arc<Vec<VariantPrice>>, String>>>;

const CACHED_SKUS: usize = 100_000;

impl Catalog {
    pub fn new(url: &str, timeout: Duration, ttl: Duration) -> Result<Self, StartError> {
        Ok(Self {
            catalog: Replicas::new(crate::SERVICE, url, timeout)?,
            ttl,
            cache: Arc::new(Cached {
                fresh: quick_cache::sync::Cache::new(CACHED_SKUS),
                last_known: quick_cache::sync::Cache::new(CACHED_SKUS),
            }),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// Forgets what is cached for these SKUs (their product or stock changed).
    pub fn invalidate(&self, skus: &[String]) {
        for sku in skus {
            self.cache.fresh.remove(sku);
        }
    }

    /// A SKU's stock changed at `at` (the catalog's event): a cached answer fetched before
    /// then takes the new figure, since the price did not change; one whose fetch began after
    /// may or may not have seen the change, so it is dropped.
    pub fn stock_changed(&self, sku: &str, available: i64, at: DateTime<Utc>) {
        let Some((mut variant, fetched, began)) = self.cache.fresh.get(sku) else { return };
        if at > began {
            variant.available = available;
            self.cache.fresh.insert(sku.to_owned(), (variant, fetched, began));
        } else {
            self.cache.fresh.remove(sku);
        }
    }

    /// Current prices: from the cache when fresh, else in one call to the catalog. When the
    /// catalog does not answer, `stale_ok` decides between the last known answers and a 503.
    pub async fn prices(&self, skus: &[String], stale_ok: bool) -> Result<Prices, CartError> {
        let mut prices = Prices::default();
        let mut missing = Vec::new();
        for sku in skus {
            match self.cache.fresh.get(sku) {
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
        match self.fetch_coalesced(&missing).await {
            Ok(fetched) => {
                for variant in fetched.iter().flat_map(|found| found.iter()) {
                    if missing.contains(&variant.sku) {
                        prices.variants.insert(variant.sku.clone(), variant.clone());
                    }
                }
                Ok(prices)
            }
            Err(error) if stale_ok => {
                tracing::warn!(error = %error, "catalog unavailable; answering with last known prices");
                for sku in &missing {
                    if let Some(variant) = self.cache.last_known.get(sku) {
                        prices.variants.insert(sku.clone(), variant);
                    }
                }
                prices.stale = true;
                Ok(prices)
            }
            Err(error) => Err(CartError::CatalogUnavailable(error)),
        }
    }

    /// Prices asked of the catalog now, whatever is cached (and cached in turn): to confirm an
    /// answer the cache gave before acting on it. A new call, not one already under way, which
    /// may have begun before the change that is to be confirmed.
    pub async fn confirmed(&self, skus: &[String]) -> Result<Prices, CartError> {
        let fetched = Self::fetch(self.catalog.clone(), skus.to_vec(), self.cache.clone())
            .await
            .map_err(CartError::CatalogUnavailable)?;
        let mut prices = Prices::default();
        for variant in fetched.iter() {
            if skus.contains(&variant.sku) {
                prices.variants.insert(variant.sku.clone(), variant.clone());
            }
        }
        Ok(prices)
    }

    /// The answers for `skus`: joins the fetches already under way for some of them and starts
    /// one call for the rest.
    async fn fetch_coalesced(&self, skus: &[String]) -> Result<Vec<Arc<Vec<VariantPrice>>>, String> {
        let fetches = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut fetches: Vec<Fetch> = Vec::new();
            let mut own = Vec::new();
            for sku in skus {
                match in_flight.get(sku) {
                    Some(fetch) => {
                        if !fetches.iter().any(|known| Shared::ptr_eq(known, fetch)) {
                            fetches.push(fetch.clone());
                        }
                    }
                    None => own.push(sku.clone()),
                }
            }
            if !own.is_empty() {
                let fetch = Self::fetch(self.catalog.clone(), own.clone(), self.cache.clone()).boxed().shared();
                for sku in own {
                    in_flight.insert(sku, fetch.clone());
                }
                fetches.push(fetch);
            }
            fetches
        };
        let results = futures_util::future::join_all(fetches.iter().cloned()).await;
        {
            // Whoever sees a fetch end takes it out, so the next miss asks the catalog again.
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            in_flight.retain(|_, fetch| !fetches.iter().any(|done| Shared::ptr_eq(done, fetch)));
        }
        results.into_iter().collect()
    }

    /// Asks the catalog for `skus` and caches the answers.
    async fn fetch(catalog: Replicas, skus: Vec<String>, cache: Arc<Cached>) -> Result<Arc<Vec<VariantPrice>>, String> {
        // The catalog stamps its stock events with the same clock.
        let began = platform::time::now();
        let started = Instant::now();
        let message = GetVariantsRequest { skus };
        let result = catalog
            .call(|channel, left| {
                let request = platform::grpc::request(message.clone(), left);
                async move { InventoryClient::new(channel).get_variants(request).await }
            })
            .await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!("cart_catalog_request_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        let response = result.map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        let found = response
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
            .collect::<Vec<_>>();
        let now = Instant::now();
        for variant in &found {
            cache.fresh.insert(variant.sku.clone(), (variant.clone(), now, began));
            cache.last_known.insert(variant.sku.clone(), variant.clone());
        }
        Ok(Arc::new(found))
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
        catalog.cache.fresh.insert("S-1".to_owned(), (variant(5), Instant::now(), fetched));
        // A change made after the fetch began: the cached price stands, with the new figure.
        catalog.stock_changed("S-1", 2, fetched + chrono::Duration::milliseconds(5));
        let prices = catalog.prices(&["S-1".to_owned()], false).await.unwrap();
        assert_eq!(prices.variants["S-1"].available, 2);
        assert_eq!(prices.variants["S-1"].amount, 1_000);
        // One made before: the fetch may have missed it, so the answer is dropped.
        catalog.stock_changed("S-1", 1, fetched - chrono::Duration::milliseconds(5));
        assert!(catalog.cache.fresh.get("S-1").is_none());
        // A SKU not cached stays not cached.
        catalog.stock_changed("S-2", 1, fetched);
        assert!(catalog.cache.fresh.get("S-2").is_none());
    }

    /// A catalog that answers `GetVariants` slowly, counting the calls, and fails them once
    /// `failing` is set.
    #[derive(Default, Clone)]
    struct SlowCatalog {
        calls: Arc<std::sync::atomic::AtomicUsize>,
        failing: Arc<std::sync::atomic::AtomicBool>,
    }

    #[tonic::async_trait]
    impl rpc::catalog::v1::inventory_server::Inventory for SlowCatalog {
        async fn get_variants(
            &self,
            request: tonic::Request<GetVariantsRequest>,
        ) -> Result<tonic::Response<rpc::catalog::v1::GetVariantsResponse>, tonic::Status> {
            use std::sync::atomic::Ordering;
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            if self.failing.load(Ordering::SeqCst) {
                return Err(tonic::Status::unavailable("down"));
            }
            let variants = request
                .into_inner()
                .skus
                .into_iter()
                .map(|sku| rpc::catalog::v1::Variant {
                    price: Some(rpc::catalog::v1::Money { amount: 1_000, currency: "EUR".to_owned() }),
                    status: ProductStatus::Active as i32,
                    available: 7,
                    sku,
                    ..Default::default()
                })
                .collect();
            Ok(tonic::Response::new(rpc::catalog::v1::GetVariantsResponse { variants, missing: vec![] }))
        }

        async fn reserve(
            &self,
            _: tonic::Request<rpc::catalog::v1::ReserveRequest>,
        ) -> Result<tonic::Response<rpc::catalog::v1::ReserveResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn commit(
            &self,
            _: tonic::Request<rpc::catalog::v1::CommitRequest>,
        ) -> Result<tonic::Response<rpc::catalog::v1::CommitResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn release(
            &self,
            _: tonic::Request<rpc::catalog::v1::ReleaseRequest>,
        ) -> Result<tonic::Response<rpc::catalog::v1::ReleaseResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }
    }

    async fn slow_catalog() -> (Arc<Catalog>, SlowCatalog) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = SlowCatalog::default();
        let router = platform::grpc::server("catalog")
            .add_service(rpc::catalog::v1::inventory_server::InventoryServer::new(server.clone()));
        tokio::spawn(platform::grpc::serve(listener, router, tokio_util::sync::CancellationToken::new()));
        (Arc::new(Catalog::new(&url, Duration::from_secs(5), Duration::from_secs(60)).unwrap()), server)
    }

    #[tokio::test]
    async fn concurrent_misses_for_a_sku_make_one_call() {
        use std::sync::atomic::Ordering;
        let (catalog, server) = slow_catalog().await;
        let skus = |list: &[&str]| list.iter().map(|sku| sku.to_string()).collect::<Vec<_>>();
        // 100 requests for A at once, and 20 for A and B: A is asked for once, B once more.
        let mut asks: Vec<_> = (0..100)
            .map(|_| {
                let (catalog, skus) = (catalog.clone(), skus(&["A"]));
                tokio::spawn(async move { catalog.prices(&skus, false).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        asks.extend((0..20).map(|_| {
            let (catalog, skus) = (catalog.clone(), skus(&["A", "B"]));
            tokio::spawn(async move { catalog.prices(&skus, false).await })
        }));
        for (i, ask) in asks.into_iter().enumerate() {
            let prices = ask.await.unwrap().unwrap();
            assert_eq!(prices.variants["A"].amount, 1_000);
            assert_eq!(prices.variants.len(), if i < 100 { 1 } else { 2 }, "only what was asked for");
        }
        assert_eq!(server.calls.load(Ordering::SeqCst), 2);
        // Once answered, nothing is in flight and the cache answers.
        assert!(catalog.in_flight.lock().unwrap().is_empty());
        catalog.prices(&skus(&["A", "B"]), false).await.unwrap();
        assert_eq!(server.calls.load(Ordering::SeqCst), 2);

        // A failed call fails everyone who waited for it, and the next miss asks again.
        server.failing.store(true, Ordering::SeqCst);
        catalog.invalidate(&skus(&["A"]));
        let failed: Vec<_> = (0..10)
            .map(|_| {
                let (catalog, skus) = (catalog.clone(), skus(&["A"]));
                tokio::spawn(async move { catalog.prices(&skus, false).await })
            })
            .collect();
        for ask in failed {
            assert!(matches!(ask.await.unwrap(), Err(CartError::CatalogUnavailable(_))));
        }
        assert_eq!(server.calls.load(Ordering::SeqCst), 3);
        server.failing.store(false, Ordering::SeqCst);
        assert_eq!(catalog.prices(&skus(&["A"]), false).await.unwrap().variants["A"].available, 7);
        assert_eq!(server.calls.load(Ordering::SeqCst), 4);
    }
}
