//! Cart use cases: the rules of API.md's Cart section on top of the store and the catalog.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use events::{CloudEvent, payloads::CartCheckedOut};
use platform::money::{Currency, Money};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

pub use crate::rules::{MAX_LINE_QUANTITY, MAX_LINES, Mode};
use crate::{
    error::{CartError, internal},
    peers::{Catalog, Prices},
    rules::{Change, Refusal},
    store::{CartRef, CartStore, LineChange, LineOutcome, Merge, MergeOutcome, StoredCart},
};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CartItem {
    pub sku: String,
    pub product_id: Option<String>,
    pub title: String,
    pub quantity: i64,
    pub unit_price: Option<Money>,
    pub line_total: Option<Money>,
    /// Units the catalog has available now.
    pub available: i64,
    /// The price is the last one known: the catalog did not answer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CartView {
    pub id: Uuid,
    /// `guest` or `user`.
    pub owner: String,
    pub items: Vec<CartItem>,
    /// Units over all lines.
    pub item_count: i64,
    /// The priced lines' sum: zero in the shop's currency for an empty cart.
    pub subtotal: Money,
    pub currency: String,
    pub updated_at: DateTime<Utc>,
    /// Some prices are the last known ones: the catalog did not answer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub prices_stale: bool,
}

pub struct Carts {
    store: CartStore,
    catalog: Arc<Catalog>,
    guest_ttl: Duration,
    user_ttl: Duration,
    /// The shop's currency, which every price is in: what an empty cart is counted in.
    currency: Currency,
}

fn record(kind: &'static str, outcome: &'static str) {
    metrics::counter!("cart_operations_total", "kind" => kind, "outcome" => outcome).increment(1);
}

fn observe<T>(kind: &'static str, result: Result<T, CartError>) -> Result<T, CartError> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(CartError::CatalogUnavailable(_) | CartError::StoreUnavailable(_)) => "unavailable",
        Err(CartError::Internal(_)) => "error",
        Err(_) => "refused",
    };
    record(kind, outcome);
    result
}

impl Carts {
    pub fn new(
        store: CartStore,
        catalog: Arc<Catalog>,
        guest_ttl: Duration,
        user_ttl: Duration,
        currency: Currency,
    ) -> Self {
        Self { store, catalog, guest_ttl, user_ttl, currency }
    }

    fn ttl(&self, cart: CartRef) -> Duration {
        match cart {
            CartRef::Guest(_) => self.guest_ttl,
            CartRef::User(_) => self.user_ttl,
        }
    }

    pub async fn create_guest(&self) -> Result<CartView, CartError> {
        observe(
            "create",
            async {
                // A v4 UUID: 122 random bits. Holding the id is what grants access to the cart.
                let id = Uuid::new_v4();
                let cart = CartRef::Guest(id);
                self.store.create(cart, id, self.guest_ttl).await?;
                metrics::counter!("cart_carts_created_total").increment(1);
                self.get(cart).await
            }
            .await,
        )
    }

    /// The cart; a user's own cart is created on first use.
    pub async fn get(&self, cart: CartRef) -> Result<CartView, CartError> {
        let stored = match self.store.get(cart, self.ttl(cart)).await? {
            Some(stored) => stored,
            None if matches!(cart, CartRef::User(_)) => {
                self.store.create(cart, Uuid::new_v4(), self.user_ttl).await?;
                metrics::counter!("cart_carts_created_total").increment(1);
                self.store.get(cart, self.user_ttl).await?.ok_or(CartError::CartNotFound)?
            }
            None => return Err(CartError::CartNotFound),
        };
        self.view(stored).await
    }

    pub async fn read(&self, cart: CartRef) -> Result<CartView, CartError> {
        observe("read", self.get(cart).await)
    }

    /// Adds units to a line (`Mode::Add`) or sets it (`Mode::Set`; 0 removes it).
    pub async fn change(&self, cart: CartRef, sku: &str, quantity: i64, mode: Mode) -> Result<CartView, CartError> {
        let kind = if mode == Mode::Add { "add" } else { "set" };
        observe(kind, self.change_now(cart, sku, quantity, mode).await)
    }

    async fn change_now(&self, cart: CartRef, sku: &str, quantity: i64, mode: Mode) -> Result<CartView, CartError> {
        match mode {
            Mode::Add if quantity < 1 => return Err(CartError::field("quantity", "must be at least 1")),
            Mode::Set if quantity < 0 => return Err(CartError::field("quantity", "must not be negative")),
            _ if quantity > MAX_LINE_QUANTITY => {
                return Err(CartError::field("quantity", format!("a line holds at most {MAX_LINE_QUANTITY} units")));
            }
            _ => {}
        }
        if mode == Mode::Set && quantity == 0 {
            return self.remove_now(cart, sku).await;
        }
        let prices = self.catalog.prices(&[sku.to_owned()], false).await?;
        match self.change_with(cart, sku, quantity, mode, &prices).await {
            // The cached stock figure lags the catalog's events by a moment: a refusal is
            // confirmed with the catalog's own figure (a declined checkout may have just given
            // the stock back) before the shopper is told.
            Err(CartError::OutOfStock { .. }) => {
                let confirmed = self.catalog.confirmed(&[sku.to_owned()]).await?;
                self.change_with(cart, sku, quantity, mode, &confirmed).await
            }
            other => other,
        }
    }

    async fn change_with(
        &self,
        cart: CartRef,
        sku: &str,
        quantity: i64,
        mode: Mode,
        prices: &Prices,
    ) -> Result<CartView, CartError> {
        let variant =
            prices.variants.get(sku).filter(|v| v.for_sale).ok_or_else(|| CartError::SkuNotFound(sku.to_owned()))?;
        let change = LineChange {
            sku,
            change: Change { quantity, mode, available: variant.available, currency: &variant.currency },
            ttl: self.ttl(cart),
            create: matches!(cart, CartRef::User(_)),
        };
        match self.store.change_line(cart, &change, Uuid::new_v4()).await? {
            LineOutcome::Changed { .. } => self.get(cart).await,
            LineOutcome::Missing => Err(CartError::CartNotFound),
            LineOutcome::Refused(Refusal::OverCap { current }) => Err(CartError::field(
                "quantity",
                format!("a line holds at most {MAX_LINE_QUANTITY} units; this one holds {current}"),
            )),
            LineOutcome::Refused(Refusal::OverStock { current }) => {
                Err(CartError::OutOfStock { sku: sku.to_owned(), available: variant.available, in_cart: current })
            }
            LineOutcome::Refused(Refusal::OtherCurrency { cart }) => Err(CartError::OtherCurrency(cart)),
            LineOutcome::Refused(Refusal::TooManyLines) => Err(CartError::CartFull(MAX_LINES)),
        }
    }

    pub async fn remove(&self, cart: CartRef, sku: &str) -> Result<CartView, CartError> {
        observe("remove", self.remove_now(cart, sku).await)
    }

    async fn remove_now(&self, cart: CartRef, sku: &str) -> Result<CartView, CartError> {
        if !self.store.remove_line(cart, sku, self.ttl(cart)).await? && matches!(cart, CartRef::Guest(_)) {
            return Err(CartError::CartNotFound);
        }
        self.get(cart).await
    }

    pub async fn clear(&self, cart: CartRef) -> Result<(), CartError> {
        observe(
            "clear",
            async {
                if self.store.clear(cart, self.ttl(cart)).await? || matches!(cart, CartRef::User(_)) {
                    Ok(())
                } else {
                    Err(CartError::CartNotFound)
                }
            }
            .await,
        )
    }

    /// Merges a guest cart into the user's: quantities add, capped at 99 and at stock; the
    /// guest cart is retired (404 from then on).
    pub async fn merge(&self, user: Uuid, guest: Uuid) -> Result<CartView, CartError> {
        observe(
            "merge",
            async {
                let guest_cart =
                    self.store.get(CartRef::Guest(guest), self.guest_ttl).await?.ok_or(CartError::CartNotFound)?;
                let skus: Vec<String> = guest_cart.lines.iter().map(|(sku, _)| sku.clone()).collect();
                let prices = self.catalog.prices(&skus, false).await?;
                let available: Vec<(String, i64)> = skus
                    .iter()
                    .map(|sku| {
                        (sku.clone(), prices.variants.get(sku).filter(|v| v.for_sale).map_or(0, |v| v.available))
                    })
                    .collect();
                let merge = Merge {
                    guest,
                    user,
                    available: &available,
                    user_ttl: self.user_ttl,
                    guest_ttl: self.guest_ttl,
                    new_id: Uuid::new_v4(),
                };
                let outcome = self.store.merge(&merge).await?;
                match outcome {
                    MergeOutcome::Merged => self.get(CartRef::User(user)).await,
                    MergeOutcome::GuestMissing => Err(CartError::CartNotFound),
                    MergeOutcome::OtherCurrency { cart } => Err(CartError::OtherCurrency(cart)),
                }
            }
            .await,
        )
    }

    /// Empties the cart once for `order_id`, which `user` placed, and publishes
    /// `cart.checked_out`; `false` (and no event) when that order emptied it before.
    pub async fn complete_checkout(
        &self,
        cart: CartRef,
        user: Uuid,
        order_id: Uuid,
        ordered: &[(String, i64)],
    ) -> Result<bool, CartError> {
        observe(
            "checkout",
            async {
                let payload = CartCheckedOut {
                    order_id,
                    user_id: user,
                    cart: cart.owner().to_owned(),
                    at: platform::time::now(),
                };
                let event =
                    CloudEvent::new(crate::SERVICE, &payload, platform::telemetry::trace::current_traceparent())
                        .map_err(|e| CartError::Internal(e.to_string()))?;
                self.store
                    .complete_checkout(cart, order_id, ordered, &event, self.ttl(cart))
                    .await?
                    .ok_or(CartError::CartNotFound)
            }
            .await,
        )
    }

    /// Prices a stored cart. Reads never fail because the catalog is down: lines then carry
    /// their last known prices, flagged stale.
    async fn view(&self, stored: StoredCart) -> Result<CartView, CartError> {
        let skus: Vec<String> = stored.lines.iter().map(|(sku, _)| sku.clone()).collect();
        let prices = if skus.is_empty() { Prices::default() } else { self.catalog.prices(&skus, true).await? };
        let mut items = Vec::with_capacity(stored.lines.len());
        let mut subtotal: Option<Money> = None;
        let mut currency = stored.currency.clone();
        for (sku, quantity) in stored.lines {
            let variant = prices.variants.get(&sku);
            let unit_price = match variant {
                Some(v) => Some(Money::new(v.amount, Currency::parse(&v.currency).map_err(internal)?)),
                None => None,
            };
            let line_total = unit_price.and_then(|p| p.checked_mul(quantity));
            if let Some(total) = line_total {
                currency.get_or_insert_with(|| total.currency.to_string());
                subtotal = Some(match subtotal {
                    None => total,
                    Some(sum) => {
                        sum.checked_add(total).ok_or_else(|| internal("cart total overflow or mixed currencies"))?
                    }
                });
            }
            items.push(CartItem {
                product_id: variant.map(|v| v.product_id.clone()),
                title: variant.map_or_else(|| sku.clone(), |v| v.title.clone()),
                available: variant.filter(|v| v.for_sale).map_or(0, |v| v.available.max(0)),
                stale: prices.stale && variant.is_some(),
                sku,
                quantity,
                unit_price,
                line_total,
            });
        }
        let item_count = items.iter().map(|i| i.quantity).sum();
        let currency = currency.unwrap_or_else(|| self.currency.to_string());
        let subtotal = match subtotal {
            Some(subtotal) => subtotal,
            None => Money::new(0, Currency::parse(&currency).map_err(internal)?),
        };
        Ok(CartView {
            id: stored.id,
            owner: stored.owner,
            items,
            item_count,
            subtotal,
            currency,
            updated_at: stored.updated_at,
            prices_stale: prices.stale,
        })
    }
}
