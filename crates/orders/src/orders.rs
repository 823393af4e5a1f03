//! The orders use cases: reading and listing orders, and the actions on them (cancel, ship,
//! deliver), each a transition of the state machine committed with its event. Checkout is in
//! `checkout`, the saga steps in `saga`.

use std::time::Duration;

use events::{CloudEvent, EventPayload, payloads};
use platform::{
    ErrorCode, Problem,
    auth::Caller,
    db::Tx,
    money::{Currency, Money},
    pagination::{Page, PageRequest},
};
use uuid::Uuid;

use crate::{
    SERVICE,
    domain::{Pricing, Status},
    error::{OrderError, internal},
    payments::Provider,
    peers::Peers,
    saga::{FaultPoint, Kind, Step},
    store::{HistoryEntry, OrderRow, SagaRow, Store},
    views::OrderView,
};

/// Everything the orders use cases need.
pub struct Orders {
    pub(crate) store: Store,
    pub(crate) peers: Peers,
    pub(crate) provider: Provider,
    pub(crate) pricing: Pricing,
    pub(crate) number_prefix: String,
    pub(crate) lease: Duration,
    pub(crate) reservation_ttl: Duration,
    pub(crate) idempotency_wait: Duration,
    pub(crate) crash_after: Option<FaultPoint>,
}

/// A shipment being recorded.
pub struct Shipment {
    pub carrier: String,
    pub tracking_number: String,
}

impl Orders {
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// The order, if the caller may see it: its owner or an admin. Anyone else gets the same
    /// 404 as for an order that does not exist.
    pub(crate) async fn visible(&self, caller: &Caller, id: Uuid) -> Result<OrderRow, OrderError> {
        match self.store.order(id).await? {
            Some(row) if row.user_id == caller.user_id || caller.is_admin() => Ok(row),
            _ => Err(OrderError::NotFound),
        }
    }

    pub async fn get(&self, caller: &Caller, id: Uuid) -> Result<OrderView, OrderError> {
        view(&self.visible(caller, id).await?)
    }

    /// Orders newest first: the caller's own (`user`), or all of them for an admin listing.
    pub async fn list(
        &self,
        user: Option<Uuid>,
        status: Option<Status>,
        page: &PageRequest<Uuid>,
    ) -> Result<Page<OrderView>, OrderError> {
        let rows = self.store.list(user, status, page.after, page.limit + 1).await?;
        let page = Page::from_rows(rows, page.limit, |row| row.id);
        let items = page.items.iter().map(view).collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, next_cursor: page.next_cursor })
    }

    /// Cancels a paid order: the status changes now, and the refund and the return of the stock
    /// follow as a saga of their own (finished before this returns unless a dependency is down;
    /// then the sweeper finishes it).
    pub async fn cancel(&self, caller: &Caller, id: Uuid, trace: Option<String>) -> Result<OrderView, OrderError> {
        let mut order = self.visible(caller, id).await?;
        let mut tx = self.store.db().begin().await?;
        let saga = self.start_cancel(&mut tx, &mut order, trace).await?.ok_or(OrderError::Concurrent)?;
        tx.commit().await?;
        metrics::counter!("orders_transitions_total", "to" => Status::Cancelled.as_str()).increment(1);
        self.drive(saga, false).await;
        self.get(caller, id).await
    }

    /// Within `tx`: cancels the order (if the state machine allows it) and records the saga that
    /// refunds it and returns its stock; `None` when the order changed meanwhile.
    pub(crate) async fn start_cancel(
        &self,
        tx: &mut Tx,
        order: &mut OrderRow,
        trace: Option<String>,
    ) -> Result<Option<SagaRow>, OrderError> {
        transition(order, Status::Cancelled)?;
        if !self.store.update_order(tx, order).await? {
            return Ok(None);
        }
        let now = platform::time::now();
        let saga = SagaRow {
            order_id: order.id,
            kind: Kind::Cancel.as_str().to_owned(),
            step: Step::Refunding.as_str().to_owned(),
            user_id: order.user_id,
            idempotency_key: None,
            plan: None,
            attempts: 0,
            lease_until: now + self.lease,
            traceparent: trace,
        };
        self.store.insert_saga(tx, &saga, now).await?;
        Ok(Some(saga))
    }

    pub async fn ship(&self, id: Uuid, shipment: Shipment, trace: Option<String>) -> Result<OrderView, OrderError> {
        let mut order = self.store.order(id).await?.ok_or(OrderError::NotFound)?;
        transition(&mut order, Status::Shipped)?;
        order.carrier = Some(shipment.carrier.clone());
        order.tracking_number = Some(shipment.tracking_number.clone());
        order.shipped_at = Some(order.updated_at);
        let event = payloads::OrderShipped {
            order_id: id,
            number: order.number.clone(),
            user_id: order.user_id,
            carrier: shipment.carrier,
            tracking_number: shipment.tracking_number,
            at: order.updated_at,
        };
        self.save(&order, &event, trace).await
    }

    pub async fn deliver(&self, id: Uuid, trace: Option<String>) -> Result<OrderView, OrderError> {
        let mut order = self.store.order(id).await?.ok_or(OrderError::NotFound)?;
        transition(&mut order, Status::Delivered)?;
        order.delivered_at = Some(order.updated_at);
        let event = payloads::OrderDelivered {
            order_id: id,
            number: order.number.clone(),
            user_id: order.user_id,
            at: order.updated_at,
        };
        self.save(&order, &event, trace).await
    }

    /// Commits a changed order with its event, unless it changed meanwhile.
    async fn save<P: EventPayload>(
        &self,
        order: &OrderRow,
        event: &P,
        trace: Option<String>,
    ) -> Result<OrderView, OrderError> {
        let mut tx = self.store.db().begin().await?;
        if !self.store.update_order(&mut tx, order).await? {
            return Err(OrderError::Concurrent);
        }
        enqueue(&mut tx, event, trace.as_deref()).await?;
        tx.commit().await?;
        metrics::counter!("orders_transitions_total", "to" => order.status.clone()).increment(1);
        let mut saved = order.clone();
        saved.version += 1;
        view(&saved)
    }

    /// Handles a provider's notification: verified, recorded once by its id, and taken as a
    /// reason to drive the order's checkout on (which asks the provider itself). `false` for a
    /// notification handled before.
    pub async fn webhook(&self, provider: &str, headers: &http::HeaderMap, body: &[u8]) -> Result<bool, Problem> {
        if provider != self.provider.name() {
            return Err(Problem::with_detail(ErrorCode::NotFound, "no such payment provider"));
        }
        let event = match self.provider.verify_webhook(headers, body) {
            Ok(event) => event,
            Err(error) => {
                metrics::counter!("orders_webhooks_total", "provider" => self.provider.name(), "outcome" => "rejected")
                    .increment(1);
                tracing::warn!(provider, error = %error, "webhook refused");
                return Err(Problem::with_detail(ErrorCode::BadRequest, error.to_string()));
            }
        };
        let fresh = self.store.record_webhook(provider, &event.id).await.map_err(OrderError::from)?;
        let outcome = if fresh { "accepted" } else { "duplicate" };
        metrics::counter!("orders_webhooks_total", "provider" => self.provider.name(), "outcome" => outcome)
            .increment(1);
        if let (true, Some(order_id)) = (fresh, event.order_id) {
            tracing::debug!(provider, kind = %event.kind, order_id = %order_id, "payment notification");
            self.nudge(order_id).await?;
        }
        Ok(fresh)
    }

    /// Publishes the number of orders in each status as gauges.
    pub async fn update_gauges(&self) {
        match self.store.count_by_status().await {
            Ok(counts) => {
                for status in Status::ALL {
                    let n = counts.iter().find(|(s, _)| s == status.as_str()).map_or(0, |(_, n)| *n);
                    metrics::gauge!("orders_by_status", "status" => status.as_str()).set(n as f64);
                }
            }
            Err(error) => tracing::warn!(error = %error, "could not count orders by status"),
        }
    }

    /// Publishes how many sagas are stuck. Cheap (only unfinished sagas are looked at), so it
    /// runs with every sweep.
    pub async fn update_stuck_gauge(&self) {
        match self.store.stuck_sagas(crate::saga::STUCK_AFTER).await {
            Ok(stuck) => metrics::gauge!("orders_sagas_stuck").set(stuck as f64),
            Err(error) => tracing::warn!(error = %error, "could not count stuck sagas"),
        }
    }

    /// Exits the process when fault injection names this point: the effect before it happened,
    /// the record of it did not.
    pub(crate) fn fault(&self, point: FaultPoint) {
        if self.crash_after == Some(point) {
            tracing::error!(point = ?point, "fault injection: exiting the process");
            std::process::exit(86);
        }
    }
}

/// Moves the order to `to` if the state machine allows it, stamping the history.
pub(crate) fn transition(order: &mut OrderRow, to: Status) -> Result<(), OrderError> {
    let from = order.status()?;
    if !from.can_become(to) {
        return Err(OrderError::Transition { from, to });
    }
    let now = platform::time::now().max(order.updated_at);
    order.status = to.as_str().to_owned();
    order.history.0.push(HistoryEntry { status: to, at: now });
    order.updated_at = now;
    Ok(())
}

pub(crate) fn view(row: &OrderRow) -> Result<OrderView, OrderError> {
    OrderView::from_row(row).map_err(internal)
}

pub(crate) fn money(order: &OrderRow, amount: i64) -> Result<Money, OrderError> {
    Ok(Money::new(amount, Currency::parse(&order.currency).map_err(internal)?))
}

pub(crate) async fn enqueue<P: EventPayload>(tx: &mut Tx, payload: &P, trace: Option<&str>) -> Result<(), OrderError> {
    events::enqueue(tx, &event(payload, trace)?).await?;
    Ok(())
}

/// The envelope of one of this service's events, in the trace of the request behind it.
pub(crate) fn event<P: EventPayload>(payload: &P, trace: Option<&str>) -> Result<CloudEvent, OrderError> {
    CloudEvent::new(SERVICE, payload, trace.map(str::to_owned)).map_err(internal)
}
