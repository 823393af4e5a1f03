//! The orders use cases: checkout (`checkout`), reading and listing orders, and the actions on
//! them (cancel, ship, deliver), each a transition of the `Order` aggregate committed with its
//! events; payment notifications; and the upkeep the service does in the background.

mod checkout;

pub(crate) use checkout::REFUSALS;

use std::{sync::Arc, time::Duration};

use platform::{
    auth::Caller,
    pagination::{Page, PageRequest},
};
use uuid::Uuid;

pub use checkout::{CheckoutRequest, Reply};

use crate::{
    SERVICE,
    domain::{Order, OrderEvent, Pricing, Status},
    error::{OrderError, internal},
    payments::{Methods, Payments, Provider, SignatureError},
    peers::Carts,
    saga::{CancelError, Sagas},
    store::Store,
};

/// Everything the orders use cases need.
pub struct Orders {
    store: Store,
    sagas: Sagas,
    /// The provider as a whole (its webhooks); the saga charges through the same one.
    provider: Provider,
    carts: Arc<dyn Carts>,
    pricing: Pricing,
    /// How long a request that repeats a key still in progress waits for its answer.
    idempotency_wait: Duration,
}

/// A shipment being recorded.
pub struct Shipment {
    pub carrier: String,
    pub tracking_number: String,
}

/// Why a provider's notification was not taken.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no such payment provider")]
    UnknownProvider,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Order(#[from] OrderError),
}

impl From<CancelError> for OrderError {
    fn from(error: CancelError) -> Self {
        match error {
            CancelError::Transition(error) => error.into(),
            CancelError::Store(error) => error.into(),
        }
    }
}

impl Orders {
    pub fn new(
        store: Store,
        sagas: Sagas,
        provider: Provider,
        carts: Arc<dyn Carts>,
        pricing: Pricing,
        idempotency_wait: Duration,
    ) -> Self {
        Self { store, sagas, provider, carts, pricing, idempotency_wait }
    }

    /// The payment methods checkout takes: the configured provider's.
    pub fn payment_methods(&self) -> Methods {
        self.provider.methods()
    }

    /// The order, if the caller may see it: its owner or an admin. Anyone else gets the same
    /// 404 as for an order that does not exist.
    async fn visible(&self, caller: &Caller, id: Uuid) -> Result<Order, OrderError> {
        match self.store.order(id).await? {
            Some(order) if order.user_id == caller.user_id || caller.is_admin() => Ok(order),
            _ => Err(OrderError::NotFound),
        }
    }

    pub async fn get(&self, caller: &Caller, id: Uuid) -> Result<Order, OrderError> {
        self.visible(caller, id).await
    }

    /// Orders newest first: the caller's own (`user`), or all of them for an admin listing.
    pub async fn list(
        &self,
        user: Option<Uuid>,
        status: Option<Status>,
        page: &PageRequest<Uuid>,
    ) -> Result<Page<Order>, OrderError> {
        let orders = self.store.list(user, status, page.after, page.limit + 1).await?;
        Ok(Page::from_rows(orders, page.limit, |order| order.id))
    }

    /// Cancels a paid order: the status changes now, and the refund and the return of the stock
    /// follow as a saga of their own (finished before this returns unless a dependency is down;
    /// then the sweeper finishes it).
    pub async fn cancel(&self, caller: &Caller, id: Uuid, trace: Option<String>) -> Result<Order, OrderError> {
        let mut order = self.visible(caller, id).await?;
        let mut unit = self.store.unit().await?;
        let saga = self.sagas.start_cancel(&mut unit, &mut order, trace).await?.ok_or(OrderError::Concurrent)?;
        unit.commit().await?;
        metrics::counter!("orders_transitions_total", "to" => Status::Cancelled.as_str()).increment(1);
        self.sagas.drive(saga, false).await;
        self.get(caller, id).await
    }

    pub async fn ship(&self, id: Uuid, shipment: Shipment, trace: Option<String>) -> Result<Order, OrderError> {
        let mut order = self.store.order(id).await?.ok_or(OrderError::NotFound)?;
        let event = order.ship(shipment.carrier, shipment.tracking_number)?;
        self.save(order, event, trace).await
    }

    pub async fn deliver(&self, id: Uuid, trace: Option<String>) -> Result<Order, OrderError> {
        let mut order = self.store.order(id).await?.ok_or(OrderError::NotFound)?;
        let event = order.deliver()?;
        self.save(order, event, trace).await
    }

    /// Commits a changed order with its event, unless it changed meanwhile.
    async fn save(&self, mut order: Order, event: OrderEvent, trace: Option<String>) -> Result<Order, OrderError> {
        let envelope = event.envelope(SERVICE, trace.as_deref()).map_err(internal)?;
        let mut unit = self.store.unit().await?;
        if !unit.update_order(&order).await? {
            return Err(OrderError::Concurrent);
        }
        unit.publish(&[envelope]).await?;
        unit.commit().await?;
        metrics::counter!("orders_transitions_total", "to" => order.status.as_str()).increment(1);
        order.version += 1;
        Ok(order)
    }

    /// Handles a provider's notification: verified, recorded once by its id, and taken as a
    /// reason to drive the order's checkout on (which asks the provider itself). `false` for a
    /// notification handled before.
    pub async fn webhook(&self, provider: &str, headers: &http::HeaderMap, body: &[u8]) -> Result<bool, WebhookError> {
        let name = self.provider.name();
        if provider != name {
            return Err(WebhookError::UnknownProvider);
        }
        let event = match self.provider.verify_webhook(headers, body) {
            Ok(event) => event,
            Err(error) => {
                metrics::counter!("orders_webhooks_total", "provider" => name, "outcome" => "rejected").increment(1);
                tracing::warn!(provider, error = %error, "webhook refused");
                return Err(error.into());
            }
        };
        let fresh = self.store.record_webhook(provider, &event.id).await.map_err(OrderError::from)?;
        let outcome = if fresh { "accepted" } else { "duplicate" };
        metrics::counter!("orders_webhooks_total", "provider" => name, "outcome" => outcome).increment(1);
        if let (true, Some(order_id)) = (fresh, event.order_id) {
            tracing::debug!(provider, kind = %event.kind, order_id = %order_id, "payment notification");
            self.sagas.nudge(order_id).await.map_err(OrderError::from)?;
        }
        Ok(fresh)
    }

    /// Finishes interrupted sagas and publishes how many are stuck. Cheap (only unfinished
    /// sagas are looked at), so it runs with every sweep.
    pub async fn sweep(&self) {
        if let Err(error) = self.sagas.recover().await {
            tracing::warn!(error = %error, "could not look for interrupted sagas");
        }
        match self.sagas.stuck().await {
            Ok(stuck) => metrics::gauge!("orders_sagas_stuck").set(stuck as f64),
            Err(error) => tracing::warn!(error = %error, "could not count stuck sagas"),
        }
    }

    /// Publishes the number of orders in each status as gauges.
    pub async fn update_gauges(&self) {
        match self.store.count_by_status().await {
            Ok(counts) => {
                for status in Status::ALL {
                    let n = counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
                    metrics::gauge!("orders_by_status", "status" => status.as_str()).set(n as f64);
                }
            }
            Err(error) => tracing::warn!(error = %error, "could not count orders by status"),
        }
    }

    /// Drops idempotency keys answered longer than `ttl` ago.
    pub async fn prune(&self, ttl: Duration) {
        if let Err(error) = self.store.prune(platform::time::now() - ttl).await {
            tracing::warn!(error = %error, "could not prune idempotency keys");
        }
    }
}
