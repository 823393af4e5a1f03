//! The steps, each an effect at a peer followed by the move to the next step (with what it
//! changes and announces, in one unit), and the compensations that undo them.

use crate::{
    config::FaultPoint,
    domain::{CheckoutOutcome, Order, Plan, Saga, Shortage, Status, Step},
    payments::{ChargeOutcome, ChargeRequest, PaymentError, RefundRequest},
    peers::{PeerError, Reserved},
};

use super::{Next, Sagas, StepError, envelopes};

impl Sagas {
    fn plan<'a>(&self, saga: &'a Saga) -> Result<&'a Plan, StepError> {
        saga.plan.as_ref().ok_or_else(|| StepError::Failed("checkout saga without a plan".to_owned()))
    }

    async fn order(&self, saga: &Saga) -> Result<Order, StepError> {
        self.store
            .order(saga.order_id)
            .await?
            .ok_or_else(|| StepError::Failed(format!("saga of a missing order {}", saga.order_id)))
    }

    /// Holds the stock, then places the order; out of stock ends the checkout here.
    pub(super) async fn reserve(&self, saga: &Saga) -> Result<Next, StepError> {
        let plan = self.plan(saga)?;
        let lines: Vec<(String, i64)> = plan.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
        match self.peers.inventory.reserve(saga.order_id, &lines, self.settings.reservation_ttl).await {
            Ok(Reserved::Held) => {
                self.fault(FaultPoint::Reserve);
                self.place(saga, plan).await
            }
            Ok(Reserved::Released) => self.abandon(saga, Step::Reserving).await,
            Ok(Reserved::Short(shortages)) => self.reject_short(saga, shortages).await,
            // Unknown whether stock is held: give it back (a late hold is refused too).
            Err(PeerError::Unavailable(..)) => self.advance(saga, Step::Reserving, Step::Abandoning).await,
            Err(error) => Err(StepError::Failed(error.to_string())),
        }
    }

    async fn reject_short(&self, saga: &Saga, shortages: Vec<Shortage>) -> Result<Next, StepError> {
        let outcome = CheckoutOutcome::OutOfStock { shortages };
        let mut unit = self.store.unit().await?;
        if !unit.advance(self.advance_of(saga, Step::Reserving, Step::Rejected)).await? {
            return Ok(Next::Stop);
        }
        if let Some(key) = &saga.idempotency_key {
            unit.answer(saga.user_id, key, &outcome).await?;
        }
        unit.commit().await?;
        Ok(Next::Decided(Step::Rejected, outcome))
    }

    /// The order exists from here on: `pending_payment`, with its number and `order.placed`.
    async fn place(&self, saga: &Saga, plan: &Plan) -> Result<Next, StepError> {
        let mut unit = self.store.unit().await?;
        if !unit.advance(self.advance_of(saga, Step::Reserving, Step::Charging)).await? {
            return Ok(Next::Stop);
        }
        let number = format!("{}{}", self.settings.number_prefix, unit.next_number().await?);
        let (order, placed) =
            Order::place(saga.order_id, number, saga.user_id, plan, self.peers.payments.name(), platform::time::now());
        unit.insert_order(&order).await?;
        unit.publish(&envelopes(&[placed], saga)?).await?;
        unit.commit().await?;
        metrics::counter!("orders_transitions_total", "to" => Status::PendingPayment.as_str()).increment(1);
        metrics::counter!("orders_placed_total", "currency" => order.currency.as_str().to_owned()).increment(1);
        self.fault(FaultPoint::Create);
        Ok(Next::Placed(Box::new(order)))
    }

    /// Charges the order's total; the checkout's outcome is known from here. `placed` is the
    /// order as this process just wrote it, which spares reading it back.
    pub(super) async fn charge(&self, saga: &Saga, placed: Option<Order>) -> Result<Next, StepError> {
        let mut order = match placed {
            Some(order) => order,
            None => self.order(saga).await?,
        };
        if order.status != Status::PendingPayment {
            return Err(StepError::Failed(format!("charging an order that is {}", order.status.as_str())));
        }
        let request = ChargeRequest {
            order_id: order.id,
            order_number: order.number.clone(),
            amount: order.money(order.totals.total),
            payment_method: order.payment.method.clone(),
            idempotency_key: format!("order-{}-charge", order.id),
        };
        let charged = match self.peers.payments.charge(&request).await {
            Ok(charged) => charged,
            Err(PaymentError::Unavailable(cause)) => return Err(StepError::Unavailable(cause)),
            // The provider would not even try: nothing was charged.
            Err(PaymentError::Refused(cause)) => {
                tracing::warn!(order_id = %order.id, error = %cause, "payment provider refused the charge");
                ChargeOutcome::Declined { reference: None, code: "processing_error".to_owned() }
            }
        };
        self.fault(FaultPoint::Charge);
        let transition = |error| StepError::Failed(format!("{error}"));
        let (next, events) = match charged {
            ChargeOutcome::Succeeded { reference } => {
                (Step::Committing, order.pay(reference).map_err(transition)?.to_vec())
            }
            ChargeOutcome::Declined { reference, code } => {
                (Step::Releasing, vec![order.decline(reference, code).map_err(transition)?])
            }
        };
        let mut unit = self.store.unit().await?;
        unit.publish(&envelopes(&events, saga)?).await?;
        if !unit.advance(self.advance_of(saga, Step::Charging, next)).await? || !unit.update_order(&order).await? {
            return Ok(Next::Stop);
        }
        order.version += 1;
        let status = order.status;
        let (currency, total) = (order.currency.as_str().to_owned(), order.totals.total);
        let outcome = if status == Status::Paid {
            CheckoutOutcome::Paid { order: Box::new(order) }
        } else {
            CheckoutOutcome::Declined { order: Box::new(order) }
        };
        if let Some(key) = &saga.idempotency_key {
            unit.answer(saga.user_id, key, &outcome).await?;
        }
        unit.commit().await?;
        metrics::counter!("orders_transitions_total", "to" => status.as_str()).increment(1);
        if status == Status::Paid {
            metrics::counter!("orders_paid_total", "currency" => currency.clone()).increment(1);
            metrics::counter!("orders_revenue_minor_units_total", "currency" => currency)
                .increment(u64::try_from(total).unwrap_or(0));
        }
        Ok(Next::Decided(next, outcome))
    }

    /// Turns the held stock into a sale. If the hold is gone (expired, or the order was
    /// cancelled meanwhile), a paid order cannot be fulfilled: it is cancelled and refunded.
    pub(super) async fn commit(&self, saga: &Saga) -> Result<Next, StepError> {
        match self.peers.inventory.commit(saga.order_id).await {
            Ok(()) => {
                self.fault(FaultPoint::Commit);
                self.advance(saga, Step::Committing, Step::Emptying).await
            }
            Err(PeerError::Refused(cause)) => {
                let mut order = self.order(saga).await?;
                let mut unit = self.store.unit().await?;
                if !unit.advance(self.advance_of(saga, Step::Committing, Step::Done)).await? {
                    return Ok(Next::Stop);
                }
                let mut cancel = None;
                if order.status == Status::Paid {
                    tracing::error!(order_id = %order.id, cause = %cause, "stock hold lost after payment; cancelling and refunding");
                    cancel = self
                        .start_cancel(&mut unit, &mut order, saga.traceparent.clone())
                        .await
                        .map_err(|e| StepError::Failed(e.to_string()))?;
                    if cancel.is_none() {
                        return Ok(Next::Stop);
                    }
                }
                unit.commit().await?;
                if let Some(cancel) = cancel {
                    metrics::counter!("orders_transitions_total", "to" => Status::Cancelled.as_str()).increment(1);
                    let _ = Box::pin(self.drive(cancel, false)).await;
                }
                Ok(Next::Step(Step::Done))
            }
            Err(error) => Err(error.into()),
        }
    }

    pub(super) async fn empty_cart(&self, saga: &Saga) -> Result<Next, StepError> {
        let plan = self.plan(saga)?;
        let ordered: Vec<(String, i64)> = plan.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
        match self.peers.carts.complete(saga.user_id, &plan.cart_id, saga.order_id, &ordered).await {
            Ok(()) => {}
            Err(error @ PeerError::Unavailable(..)) => return Err(error.into()),
            // The order stands either way; a cart that cannot be emptied is not worth a retry loop.
            Err(error) => tracing::warn!(order_id = %saga.order_id, error = %error, "cart not emptied after checkout"),
        }
        self.fault(FaultPoint::Empty);
        self.advance(saga, Step::Emptying, Step::Done).await
    }

    /// After a decline: the held stock goes back.
    pub(super) async fn release(&self, saga: &Saga) -> Result<Next, StepError> {
        self.peers.inventory.release(saga.order_id).await?;
        self.fault(FaultPoint::Release);
        self.advance(saga, Step::Releasing, Step::Failed).await
    }

    /// Before the order existed: give back whatever may be held and forget the key, so that
    /// the client's retry starts afresh.
    pub(super) async fn abandon(&self, saga: &Saga, from: Step) -> Result<Next, StepError> {
        if from != Step::Started {
            self.peers.inventory.release(saga.order_id).await?;
        }
        let mut unit = self.store.unit().await?;
        if !unit.advance(self.advance_of(saga, from, Step::Abandoned)).await? {
            return Ok(Next::Stop);
        }
        if let Some(key) = &saga.idempotency_key {
            unit.forget(saga.user_id, key).await?;
        }
        unit.commit().await?;
        Ok(Next::Step(Step::Abandoned))
    }

    pub(super) async fn refund(&self, saga: &Saga) -> Result<Next, StepError> {
        let mut order = self.order(saga).await?;
        let reference = order
            .payment
            .reference
            .clone()
            .ok_or_else(|| StepError::Failed("refunding an order without a charge".to_owned()))?;
        let request = RefundRequest {
            reference,
            amount: order.money(order.totals.total),
            idempotency_key: format!("order-{}-refund", order.id),
        };
        self.peers.payments.refund(&request).await?;
        self.fault(FaultPoint::Refund);
        loop {
            order.refunded();
            let mut unit = self.store.unit().await?;
            if unit.update_order(&order).await? {
                if !unit.advance(self.advance_of(saga, Step::Refunding, Step::Returning)).await? {
                    return Ok(Next::Stop);
                }
                unit.commit().await?;
                return Ok(Next::Step(Step::Returning));
            }
            // Changed meanwhile (only its payment fields can be, by a concurrent retry): reread.
            unit.rollback().await?;
            order = self.order(saga).await?;
        }
    }

    /// After the refund: the sold stock goes back on hand, and the cancellation is announced.
    pub(super) async fn return_stock(&self, saga: &Saga) -> Result<Next, StepError> {
        self.peers.inventory.release(saga.order_id).await?;
        let order = self.order(saga).await?;
        let mut unit = self.store.unit().await?;
        if !unit.advance(self.advance_of(saga, Step::Returning, Step::Done)).await? {
            return Ok(Next::Stop);
        }
        unit.publish(&envelopes(&[order.cancellation_finished()], saga)?).await?;
        unit.commit().await?;
        Ok(Next::Step(Step::Done))
    }
}
