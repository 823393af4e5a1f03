//! Stock and reservations: setting stock on hand, and holding, committing and releasing stock
//! for orders. Every change is committed with its `inventory.changed` events.
//!
//! A reservation moves `held → committed → returned` or `held → released`; the order id keys
//! it, so a retried call finds the state the first call left and does nothing twice.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use events::{CloudEvent, payloads::InventoryChanged};
use platform::db::Tx;
use uuid::Uuid;

use crate::{
    SERVICE,
    domain::{Sku, Stock},
    error::CatalogError,
    store::{ReservationState, StockChange, Store, VariantInfo},
};

pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortageReason {
    OutOfStock,
    UnknownSku,
    NotForSale,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
    pub reason: ShortageReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Stock is held (now, or by an earlier call with the same order id and lines).
    Reserved { state: ReservationState, expires_at: DateTime<Utc> },
    /// The order id's reservation was released before this call: nothing is held.
    Released { state: ReservationState },
    /// Nothing was reserved: these lines could not be.
    Short(Vec<Shortage>),
}

pub struct Inventory {
    store: Store,
    default_ttl: Duration,
}

impl Inventory {
    pub fn new(store: Store, default_ttl: Duration) -> Self {
        Self { store, default_ttl }
    }

    pub async fn stock(&self, sku: &Sku) -> Result<StockChange, CatalogError> {
        self.store.stock(sku.as_str()).await?.ok_or(CatalogError::SkuNotFound)
    }

    pub async fn set_on_hand(
        &self,
        sku: &Sku,
        on_hand: i64,
        traceparent: Option<String>,
    ) -> Result<StockChange, CatalogError> {
        let mut tx = self.store.db().begin().await?;
        let change = match self.store.set_on_hand(&mut tx, sku.as_str(), on_hand, platform::time::now()).await? {
            Ok(Some(change)) => change,
            Ok(None) => return Err(CatalogError::SkuNotFound),
            Err(Stock { reserved, .. }) => return Err(CatalogError::BelowReserved { reserved }),
        };
        publish(&mut tx, std::slice::from_ref(&change), traceparent).await?;
        tx.commit().await?;
        metrics::counter!("catalog_stock_changes_total", "kind" => "set").increment(1);
        Ok(change)
    }

    pub async fn variants(&self, skus: &[String]) -> Result<Vec<VariantInfo>, CatalogError> {
        Ok(self.store.variant_infos(skus).await?)
    }

    /// Holds stock for every line or for none. `lines` must name each SKU once.
    pub async fn reserve(
        &self,
        order_id: Uuid,
        lines: &[(Sku, i64)],
        ttl: Option<Duration>,
    ) -> Result<ReserveOutcome, CatalogError> {
        // Sorted by SKU: concurrent reservations lock rows in one order and cannot deadlock.
        let lines: BTreeMap<&str, i64> = lines.iter().map(|(sku, quantity)| (sku.as_str(), *quantity)).collect();
        let wanted: Vec<(String, i64)> = lines.iter().map(|(sku, q)| ((*sku).to_owned(), *q)).collect();
        let now = platform::time::now();
        let ttl = ttl.unwrap_or(self.default_ttl);
        let expires_at = now + chrono::Duration::from_std(ttl).map_err(CatalogError::internal)?;
        let mut tx = self.store.db().begin().await?;
        let fresh =
            self.store.insert_reservation(&mut tx, order_id, ReservationState::Held, expires_at, &wanted, now).await?;
        if !fresh {
            let existing = self.store.reservation(&mut tx, order_id).await?.ok_or(CatalogError::ReservationNotFound)?;
            tx.rollback().await?;
            return match existing.state {
                ReservationState::Released | ReservationState::Returned => {
                    Ok(ReserveOutcome::Released { state: existing.state })
                }
                state if existing.lines == wanted => {
                    Ok(ReserveOutcome::Reserved { state, expires_at: existing.expires_at })
                }
                _ => Err(CatalogError::ReservationMismatch),
            };
        }
        // Refused before any row is locked when the stock is plainly not there (a sold-out
        // flash sale refuses thousands of buyers without queueing them behind the lock of
        // the one row every sale updates); what looks available is then held under the lock.
        let mut shortages = self.shortages(&mut tx, wanted.iter(), false).await?;
        if shortages.is_empty() {
            let changes = self.store.try_reserve_all(&mut tx, &wanted, now).await?;
            let missed = wanted.iter().filter(|(sku, _)| !changes.iter().any(|c| &c.sku == sku));
            shortages = self.shortages(&mut tx, missed, true).await?;
            if shortages.is_empty() {
                publish(&mut tx, &changes, platform::telemetry::trace::current_traceparent()).await?;
                tx.commit().await?;
                metrics::counter!("catalog_reservations_total", "outcome" => "reserved").increment(1);
                return Ok(ReserveOutcome::Reserved { state: ReservationState::Held, expires_at });
            }
        }
        tx.rollback().await?;
        metrics::counter!("catalog_reservations_total", "outcome" => "short").increment(1);
        Ok(ReserveOutcome::Short(shortages))
    }

    /// Which of `lines` cannot be had now, and why. `missed`: the lines are known to be short
    /// (a reservation just failed for them), whatever their stock looks like a moment later.
    async fn shortages<'a>(
        &self,
        tx: &mut Tx,
        lines: impl Iterator<Item = &'a (String, i64)>,
        missed: bool,
    ) -> Result<Vec<Shortage>, CatalogError> {
        let mut shortages = Vec::new();
        for (sku, quantity) in lines {
            let shortage =
                |available: i64, reason| Shortage { sku: sku.clone(), requested: *quantity, available, reason };
            match self.store.sellable(tx, sku).await? {
                None => shortages.push(shortage(0, ShortageReason::UnknownSku)),
                Some((status, available)) if status != "active" => {
                    shortages.push(shortage(available, ShortageReason::NotForSale));
                }
                Some((_, available)) if missed || available < *quantity => {
                    shortages.push(shortage(available, ShortageReason::OutOfStock));
                }
                Some(_) => {}
            }
        }
        Ok(shortages)
    }

    /// Turns held stock into a sale. Idempotent; refused once the hold was released or expired.
    pub async fn commit(&self, order_id: Uuid) -> Result<ReservationState, CatalogError> {
        let now = platform::time::now();
        let mut tx = self.store.db().begin().await?;
        if self
            .store
            .move_reservation(&mut tx, order_id, ReservationState::Held, ReservationState::Committed, Some(now), now)
            .await?
        {
            self.settle(tx, order_id, -1, -1, now).await?;
            metrics::counter!("catalog_reservations_total", "outcome" => "committed").increment(1);
            return Ok(ReservationState::Committed);
        }
        let reservation = self.store.reservation(&mut tx, order_id).await?.ok_or(CatalogError::ReservationNotFound)?;
        match reservation.state {
            ReservationState::Committed => Ok(ReservationState::Committed),
            ReservationState::Held => {
                // Expired, and the sweeper has not come by yet: release it now.
                self.store
                    .move_reservation(&mut tx, order_id, ReservationState::Held, ReservationState::Released, None, now)
                    .await?;
                self.settle(tx, order_id, 0, -1, now).await?;
                Err(CatalogError::ReservationClosed("expired"))
            }
            ReservationState::Released | ReservationState::Returned => Err(CatalogError::ReservationClosed("released")),
        }
    }

    /// Gives stock back: releases a hold, or returns a committed sale to stock on hand.
    /// Idempotent. An unknown order id is recorded as released, so that a late Reserve for it
    /// holds nothing.
    pub async fn release(&self, order_id: Uuid) -> Result<ReservationState, CatalogError> {
        let now = platform::time::now();
        let mut tx = self.store.db().begin().await?;
        let store = &self.store;
        if store
            .move_reservation(&mut tx, order_id, ReservationState::Held, ReservationState::Released, None, now)
            .await?
        {
            self.settle(tx, order_id, 0, -1, now).await?;
            metrics::counter!("catalog_reservations_total", "outcome" => "released").increment(1);
            return Ok(ReservationState::Released);
        }
        if store
            .move_reservation(&mut tx, order_id, ReservationState::Committed, ReservationState::Returned, None, now)
            .await?
        {
            self.settle(tx, order_id, 1, 0, now).await?;
            metrics::counter!("catalog_reservations_total", "outcome" => "returned").increment(1);
            return Ok(ReservationState::Returned);
        }
        match store.reservation(&mut tx, order_id).await? {
            Some(reservation) => Ok(reservation.state),
            None => {
                store.insert_reservation(&mut tx, order_id, ReservationState::Released, now, &[], now).await?;
                tx.commit().await?;
                Ok(ReservationState::Released)
            }
        }
    }

    /// Moves stock for every line of a reservation whose state just changed, then commits:
    /// `on_hand += sign × quantity`, `reserved += sign × quantity`.
    async fn settle(
        &self,
        mut tx: Tx,
        order_id: Uuid,
        on_hand_sign: i64,
        reserved_sign: i64,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let lines = self.store.reservation_lines(&mut tx, order_id).await?;
        let changes = self.store.adjust_all(&mut tx, &lines, on_hand_sign, reserved_sign, now).await?;
        if changes.len() != lines.len() {
            return Err(CatalogError::SkuNotFound);
        }
        publish(&mut tx, &changes, platform::telemetry::trace::current_traceparent()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Releases held reservations that expired; returns how many.
    pub async fn sweep(&self) -> Result<usize, CatalogError> {
        let mut released = 0;
        loop {
            let expired = self.store.expired_reservations(platform::time::now(), 100).await?;
            let batch = expired.len();
            for order_id in expired {
                let now = platform::time::now();
                let mut tx = self.store.db().begin().await?;
                // A commit that got in first wins: the move finds the reservation no longer held.
                if self
                    .store
                    .move_reservation(&mut tx, order_id, ReservationState::Held, ReservationState::Released, None, now)
                    .await?
                {
                    self.settle(tx, order_id, 0, -1, now).await?;
                    released += 1;
                }
            }
            if batch < 100 {
                break;
            }
        }
        if released > 0 {
            metrics::counter!("catalog_reservations_total", "outcome" => "expired").increment(released as u64);
            tracing::info!(released, "released expired reservations");
        }
        Ok(released)
    }
}

async fn publish(tx: &mut Tx, changes: &[StockChange], traceparent: Option<String>) -> Result<(), CatalogError> {
    let at = platform::time::now();
    let events = changes
        .iter()
        .map(|change| {
            let event = InventoryChanged {
                sku: change.sku.clone(),
                product_id: change.product_id,
                on_hand: change.on_hand,
                reserved: change.reserved,
                available: change.on_hand - change.reserved,
                at,
            };
            CloudEvent::new(SERVICE, &event, traceparent.clone()).map_err(CatalogError::internal)
        })
        .collect::<Result<Vec<_>, _>>()?;
    events::enqueue_all(tx, &events).await?;
    Ok(())
}
