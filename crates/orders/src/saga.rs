//! The saga steps of a checkout and of a cancellation, and how an interrupted saga is finished.
//!
//! A checkout begins at `reserving` (its key, plan and saga are recorded together) and goes
//! `reserving → charging → committing → emptying → done`, or after a decline
//! `charging → releasing → failed`; out of stock ends in `rejected`, as does an empty cart,
//! whose saga is recorded already finished. (`started` is only found in sagas recorded by
//! earlier versions, which read the cart after claiming the key.)
//! A cancellation goes `refunding → returning → done`. Each step's effect is idempotent at the
//! peer (keyed by the order id), and the move to the next step is a compare-and-set on the
//! saga's row, so a step repeated after a crash acts once and two processes never both move on.
//!
//! A saga whose lease ran out (its process died, or a dependency was down) is claimed by a
//! sweeper and driven on from its step: forward once the order exists, backward (release the
//! stock, forget the key) before that, because nobody is waiting for an order not yet placed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use events::payloads;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    checkout::Answer,
    domain::{Address, Status, Totals},
    error::{OrderError, Shortage},
    orders::{Orders, enqueue, event, money, transition, view},
    payments::{ChargeOutcome, ChargeRequest, PaymentError, RefundRequest},
    peers::{PeerError, Reserved},
    store::{Advance, LineRow, OrderRow, SagaRow},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Checkout,
    Cancel,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checkout => "checkout",
            Self::Cancel => "cancel",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Started,
    Reserving,
    Abandoning,
    Charging,
    Committing,
    Emptying,
    Releasing,
    Refunding,
    Returning,
    Done,
    Failed,
    Rejected,
    Abandoned,
}

impl Step {
    const ALL: [Step; 13] = [
        Step::Started,
        Step::Reserving,
        Step::Abandoning,
        Step::Charging,
        Step::Committing,
        Step::Emptying,
        Step::Releasing,
        Step::Refunding,
        Step::Returning,
        Step::Done,
        Step::Failed,
        Step::Rejected,
        Step::Abandoned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Reserving => "reserving",
            Self::Abandoning => "abandoning",
            Self::Charging => "charging",
            Self::Committing => "committing",
            Self::Emptying => "emptying",
            Self::Releasing => "releasing",
            Self::Refunding => "refunding",
            Self::Returning => "returning",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Abandoned => "abandoned",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Where fault injection can stop the process: right after the named step's effect, before the
/// saga records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPoint {
    Reserve,
    Create,
    Charge,
    Commit,
    Empty,
    Release,
    Refund,
}

/// What a checkout will buy, fixed before anything is reserved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub cart_id: String,
    pub currency: String,
    pub lines: Vec<LineRow>,
    pub totals: Totals,
    pub shipping_address: Address,
    pub payment_method: String,
}

/// What happened to one step.
enum Outcome {
    /// Moved on to this step.
    Next(Step),
    /// Moved on to this step, and the checkout's answer is now final.
    Answered(Step, Answer),
    /// The order was placed (the saga is now charging): the charge starts from this row.
    Placed(Box<OrderRow>),
    /// Cannot go on now (a dependency is down, or another process moved the saga): stop here.
    Stop,
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// After this many failed attempts at one step, a saga counts as stuck (`orders_sagas_stuck`,
/// and an error in the log at each further attempt).
pub const STUCK_AFTER: i32 = 5;

impl Orders {
    /// Runs a saga from its current step until it finishes or cannot go on now, and returns
    /// the checkout's answer if this run decided it. Never fails: what cannot be done now is
    /// postponed, and the sweeper tries again.
    pub(crate) async fn drive(&self, saga: SagaRow, resumed: bool) -> Option<Answer> {
        let Some(mut step) = Step::parse(&saga.step) else {
            tracing::error!(order_id = %saga.order_id, step = %saga.step, "saga in an unknown step");
            return None;
        };
        let mut answer = None;
        let mut placed = None;
        loop {
            let result = match step {
                Step::Done | Step::Failed | Step::Rejected | Step::Abandoned => return answer,
                Step::Started => self.abandon(&saga, Step::Started).await,
                Step::Reserving if resumed => self.advance(&saga, Step::Reserving, Step::Abandoning).await,
                Step::Reserving => self.reserve(&saga).await,
                Step::Abandoning => self.abandon(&saga, Step::Abandoning).await,
                Step::Charging => self.charge(&saga, placed.take()).await,
                Step::Committing => self.commit(&saga).await,
                Step::Emptying => self.empty_cart(&saga).await,
                Step::Releasing => self.release(&saga).await,
                Step::Refunding => self.refund(&saga).await,
                Step::Returning => self.return_stock(&saga).await,
            };
            match result {
                Ok(Outcome::Next(next)) => step = next,
                Ok(Outcome::Answered(next, decided)) => {
                    answer = Some(decided);
                    step = next;
                }
                Ok(Outcome::Placed(order)) => {
                    placed = Some(*order);
                    step = Step::Charging;
                }
                Ok(Outcome::Stop) => return answer,
                Err(error) => {
                    let retry_in = backoff(saga.attempts);
                    if saga.attempts >= STUCK_AFTER {
                        // Retrying stays safe (every step is idempotent) but will not fix, say,
                        // a refund the provider refuses: someone must look.
                        tracing::error!(order_id = %saga.order_id, step = step.as_str(), attempts = saga.attempts, error = %error, retry_in = ?retry_in, "saga step keeps failing");
                    } else {
                        tracing::warn!(order_id = %saga.order_id, step = step.as_str(), error = %error, retry_in = ?retry_in, "saga step postponed");
                    }
                    let retry_at = platform::time::now() + retry_in;
                    if let Err(error) =
                        self.store.postpone(saga.order_id, &saga.kind, &error.to_string(), retry_at).await
                    {
                        tracing::warn!(order_id = %saga.order_id, error = %error, "could not record a postponed saga step");
                    }
                    return answer;
                }
            }
        }
    }

    /// Finishes the sagas whose lease ran out: those of processes that died, and those waiting
    /// for a dependency to come back.
    pub async fn recover(&self) -> Result<usize, OrderError> {
        let now = platform::time::now();
        let due = self.store.due_sagas(now, 50).await?;
        let mut resumed = 0;
        for (order_id, kind) in due {
            let Some(saga) = self.store.claim(order_id, &kind, now, now + self.lease).await? else { continue };
            metrics::counter!("orders_saga_steps_resumed_total", "kind" => kind.clone(), "step" => saga.step.clone())
                .increment(1);
            tracing::info!(order_id = %order_id, kind = %kind, step = %saga.step, attempt = saga.attempts, "resuming saga");
            self.drive(saga, true).await;
            resumed += 1;
        }
        Ok(resumed)
    }

    /// Drives an order's checkout on after a provider's notification, if nobody is at it.
    pub async fn nudge(&self, order_id: Uuid) -> Result<(), OrderError> {
        let now = platform::time::now();
        if let Some(saga) = self.store.claim(order_id, Kind::Checkout.as_str(), now, now + self.lease).await? {
            self.drive(saga, true).await;
        }
        Ok(())
    }

    async fn advance(&self, saga: &SagaRow, from: Step, to: Step) -> Result<Outcome, OrderError> {
        let change = Advance {
            order_id: saga.order_id,
            kind: &saga.kind,
            from: from.as_str(),
            to: to.as_str(),
            plan: None,
            lease_until: self.lease_end(),
        };
        Ok(if self.store.advance_now(change).await? { Outcome::Next(to) } else { Outcome::Stop })
    }

    /// Moves a saga on within `tx`, renewing the lease; `false` when it was not at `from`.
    pub(crate) async fn moved(
        &self,
        tx: &mut platform::db::Tx,
        order_id: Uuid,
        kind: &str,
        from: &str,
        to: &str,
    ) -> Result<bool, sqlx::Error> {
        let lease_until = self.lease_end();
        self.store.advance(tx, Advance { order_id, kind, from, to, plan: None, lease_until }).await
    }

    pub(crate) fn lease_end(&self) -> DateTime<Utc> {
        platform::time::now() + self.lease
    }

    fn plan(saga: &SagaRow) -> Result<Plan, OrderError> {
        let value = saga.plan.as_ref().ok_or_else(|| OrderError::Internal("saga without a plan".to_owned()))?;
        serde_json::from_value(value.0.clone()).map_err(|e| OrderError::Internal(format!("saga plan: {e}")))
    }

    async fn order(&self, saga: &SagaRow) -> Result<OrderRow, OrderError> {
        self.store
            .order(saga.order_id)
            .await?
            .ok_or_else(|| OrderError::Internal(format!("saga of a missing order {}", saga.order_id)))
    }

    /// Holds the stock, then places the order; out of stock ends the checkout here.
    async fn reserve(&self, saga: &SagaRow) -> Result<Outcome, OrderError> {
        let plan = Self::plan(saga)?;
        let lines: Vec<(String, i64)> = plan.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
        match self.peers.reserve(saga.order_id, &lines, self.reservation_ttl).await {
            Ok(Reserved::Held) => {
                self.fault(FaultPoint::Reserve);
                self.place(saga, &plan).await
            }
            Ok(Reserved::Released) => self.abandon(saga, Step::Reserving).await,
            Ok(Reserved::Short(shortages)) => self.reject_short(saga, shortages).await,
            Err(PeerError::Unavailable(..)) => {
                // Unknown whether stock is held: give it back (a late hold is refused too).
                self.advance(saga, Step::Reserving, Step::Abandoning).await
            }
            Err(error) => Err(OrderError::Internal(error.to_string())),
        }
    }

    async fn reject_short(&self, saga: &SagaRow, shortages: Vec<Shortage>) -> Result<Outcome, OrderError> {
        let answer = Answer::problem(OrderError::OutOfStock(shortages));
        let mut tx = self.store.db().begin().await?;
        if !self.moved(&mut tx, saga.order_id, &saga.kind, "reserving", "rejected").await? {
            return Ok(Outcome::Stop);
        }
        if let Some(key) = &saga.idempotency_key {
            self.store.answer_key(&mut tx, saga.user_id, key, answer.status, &answer.body).await?;
        }
        tx.commit().await?;
        Ok(Outcome::Answered(Step::Rejected, answer))
    }

    /// The order exists from here on: `pending_payment`, with its number and `order.placed`.
    async fn place(&self, saga: &SagaRow, plan: &Plan) -> Result<Outcome, OrderError> {
        let now = platform::time::now();
        let mut tx = self.store.db().begin().await?;
        if !self.moved(&mut tx, saga.order_id, &saga.kind, "reserving", "charging").await? {
            return Ok(Outcome::Stop);
        }
        let number = format!("{}{}", self.number_prefix, self.store.next_number(&mut tx).await?);
        let order = OrderRow {
            id: saga.order_id,
            number,
            user_id: saga.user_id,
            status: Status::PendingPayment.as_str().to_owned(),
            currency: plan.currency.clone(),
            subtotal: plan.totals.subtotal,
            shipping: plan.totals.shipping,
            tax: plan.totals.tax,
            total: plan.totals.total,
            lines: sqlx::types::Json(plan.lines.clone()),
            shipping_address: sqlx::types::Json(plan.shipping_address.clone()),
            payment_provider: self.provider.name().to_owned(),
            payment_method: plan.payment_method.clone(),
            payment_status: "pending".to_owned(),
            payment_reference: None,
            carrier: None,
            tracking_number: None,
            shipped_at: None,
            delivered_at: None,
            history: sqlx::types::Json(vec![crate::store::HistoryEntry { status: Status::PendingPayment, at: now }]),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_order(&mut tx, &order).await?;
        let event = payloads::OrderPlaced {
            order_id: order.id,
            number: order.number.clone(),
            user_id: order.user_id,
            lines: plan
                .lines
                .iter()
                .map(|l| {
                    Ok(payloads::OrderLine {
                        sku: l.sku.clone(),
                        quantity: l.quantity,
                        unit_price: money(&order, l.unit_price)?,
                    })
                })
                .collect::<Result<_, OrderError>>()?,
            total: money(&order, order.total)?,
            at: now,
        };
        enqueue(&mut tx, &event, saga.traceparent.as_deref()).await?;
        tx.commit().await?;
        metrics::counter!("orders_transitions_total", "to" => Status::PendingPayment.as_str()).increment(1);
        self.fault(FaultPoint::Create);
        Ok(Outcome::Placed(Box::new(order)))
    }

    /// Charges the order's total; the answer to the checkout is known from here. `placed` is
    /// the order as this process just wrote it, which spares reading it back.
    async fn charge(&self, saga: &SagaRow, placed: Option<OrderRow>) -> Result<Outcome, OrderError> {
        let mut order = match placed {
            Some(order) => order,
            None => self.order(saga).await?,
        };
        if order.status()? != Status::PendingPayment {
            return Err(OrderError::Internal(format!("charging an order that is {}", order.status)));
        }
        let request = ChargeRequest {
            order_id: order.id,
            order_number: order.number.clone(),
            amount: money(&order, order.total)?,
            payment_method: order.payment_method.clone(),
            idempotency_key: format!("order-{}-charge", order.id),
        };
        let outcome = match self.provider.charge(&request).await {
            Ok(outcome) => outcome,
            Err(PaymentError::Unavailable(cause)) => return Err(OrderError::Unavailable(cause)),
            // The provider would not even try: nothing was charged.
            Err(PaymentError::Refused(cause)) => {
                tracing::warn!(order_id = %order.id, error = %cause, "payment provider refused the charge");
                ChargeOutcome::Declined { reference: None, code: "processing_error".to_owned() }
            }
        };
        self.fault(FaultPoint::Charge);
        let mut tx = self.store.db().begin().await?;
        let (next, status) = match outcome {
            ChargeOutcome::Succeeded { reference } => {
                transition(&mut order, Status::Paid)?;
                order.payment_status = "succeeded".to_owned();
                order.payment_reference = Some(reference.clone());
                let total = money(&order, order.total)?;
                let at = order.updated_at;
                let (order_id, number, user_id) = (order.id, order.number.clone(), order.user_id);
                let paid = payloads::OrderPaid {
                    order_id,
                    number: number.clone(),
                    user_id,
                    total,
                    payment_reference: reference,
                    at,
                };
                let fulfilment = payloads::FulfilmentRequested {
                    order_id,
                    number,
                    lines: order
                        .lines
                        .iter()
                        .map(|l| payloads::FulfilmentLine { sku: l.sku.clone(), quantity: l.quantity })
                        .collect(),
                    shipping_address: serde_json::to_value(&order.shipping_address.0)
                        .map_err(crate::error::internal)?,
                    at,
                };
                let trace = saga.traceparent.as_deref();
                let events = [event(&paid, trace)?, event(&fulfilment, trace)?];
                events::enqueue_all(&mut tx, &events).await?;
                (Step::Committing, 201)
            }
            ChargeOutcome::Declined { reference, code } => {
                transition(&mut order, Status::PaymentFailed)?;
                order.payment_status = "failed".to_owned();
                order.payment_reference = reference;
                let event = payloads::OrderPaymentFailed {
                    order_id: order.id,
                    number: order.number.clone(),
                    user_id: order.user_id,
                    reason: code,
                    at: order.updated_at,
                };
                enqueue(&mut tx, &event, saga.traceparent.as_deref()).await?;
                (Step::Releasing, 402)
            }
        };
        if !self.moved(&mut tx, saga.order_id, &saga.kind, "charging", next.as_str()).await?
            || !self.store.update_order(&mut tx, &order).await?
        {
            return Ok(Outcome::Stop);
        }
        order.version += 1;
        let body = serde_json::to_string(&view(&order)?).map_err(crate::error::internal)?;
        if let Some(key) = &saga.idempotency_key {
            self.store.answer_key(&mut tx, saga.user_id, key, status, &body).await?;
        }
        tx.commit().await?;
        metrics::counter!("orders_transitions_total", "to" => order.status.clone()).increment(1);
        Ok(Outcome::Answered(next, Answer { status, body, replayed: false }))
    }

    /// Turns the held stock into a sale. If the hold is gone (expired, or the order was
    /// cancelled meanwhile), a paid order cannot be fulfilled: it is cancelled and refunded.
    async fn commit(&self, saga: &SagaRow) -> Result<Outcome, OrderError> {
        match self.peers.commit(saga.order_id).await {
            Ok(()) => {
                self.fault(FaultPoint::Commit);
                self.advance(saga, Step::Committing, Step::Emptying).await
            }
            Err(PeerError::Refused(cause)) => {
                let mut order = self.order(saga).await?;
                let mut tx = self.store.db().begin().await?;
                if !self.moved(&mut tx, saga.order_id, &saga.kind, "committing", "done").await? {
                    return Ok(Outcome::Stop);
                }
                let mut cancel = None;
                if order.status()? == Status::Paid {
                    tracing::error!(order_id = %order.id, cause = %cause, "stock hold lost after payment; cancelling and refunding");
                    cancel = self.start_cancel(&mut tx, &mut order, saga.traceparent.clone()).await?;
                    if cancel.is_none() {
                        return Ok(Outcome::Stop);
                    }
                }
                tx.commit().await?;
                if let Some(cancel) = cancel {
                    let _ = Box::pin(self.drive(cancel, false)).await;
                }
                Ok(Outcome::Next(Step::Done))
            }
            Err(error) => Err(peer(error)),
        }
    }

    async fn empty_cart(&self, saga: &SagaRow) -> Result<Outcome, OrderError> {
        let plan = Self::plan(saga)?;
        match self.peers.complete_cart(saga.user_id, &plan.cart_id, saga.order_id).await {
            Ok(()) => {}
            Err(error @ PeerError::Unavailable(..)) => return Err(peer(error)),
            // The order stands either way; a cart that cannot be emptied is not worth a retry loop.
            Err(error) => tracing::warn!(order_id = %saga.order_id, error = %error, "cart not emptied after checkout"),
        }
        self.fault(FaultPoint::Empty);
        self.advance(saga, Step::Emptying, Step::Done).await
    }

    /// After a decline: the held stock goes back.
    async fn release(&self, saga: &SagaRow) -> Result<Outcome, OrderError> {
        self.peers.release(saga.order_id).await.map_err(peer)?;
        self.fault(FaultPoint::Release);
        self.advance(saga, Step::Releasing, Step::Failed).await
    }

    /// Before the order existed: give back whatever may be held and forget the key, so that
    /// the client's retry starts afresh.
    async fn abandon(&self, saga: &SagaRow, from: Step) -> Result<Outcome, OrderError> {
        if from != Step::Started {
            self.peers.release(saga.order_id).await.map_err(peer)?;
        }
        let mut tx = self.store.db().begin().await?;
        if !self.moved(&mut tx, saga.order_id, &saga.kind, from.as_str(), "abandoned").await? {
            return Ok(Outcome::Stop);
        }
        if let Some(key) = &saga.idempotency_key {
            self.store.delete_key(&mut tx, saga.user_id, key).await?;
        }
        tx.commit().await?;
        Ok(Outcome::Next(Step::Abandoned))
    }

    async fn refund(&self, saga: &SagaRow) -> Result<Outcome, OrderError> {
        let mut order = self.order(saga).await?;
        let reference = order
            .payment_reference
            .clone()
            .ok_or_else(|| OrderError::Internal("refunding an order without a charge".to_owned()))?;
        let request = RefundRequest {
            reference,
            amount: money(&order, order.total)?,
            idempotency_key: format!("order-{}-refund", order.id),
        };
        self.provider.refund(&request).await.map_err(|e| OrderError::Unavailable(e.to_string()))?;
        self.fault(FaultPoint::Refund);
        loop {
            let mut tx = self.store.db().begin().await?;
            order.payment_status = "refunded".to_owned();
            order.updated_at = platform::time::now().max(order.updated_at);
            if self.store.update_order(&mut tx, &order).await? {
                if !self.moved(&mut tx, saga.order_id, &saga.kind, "refunding", "returning").await? {
                    return Ok(Outcome::Stop);
                }
                tx.commit().await?;
                return Ok(Outcome::Next(Step::Returning));
            }
            // Changed meanwhile (only its payment fields can be, by a concurrent retry): reread.
            tx.rollback().await?;
            order = self.order(saga).await?;
        }
    }

    /// After the refund: the sold stock goes back on hand, and the cancellation is announced.
    async fn return_stock(&self, saga: &SagaRow) -> Result<Outcome, OrderError> {
        self.peers.release(saga.order_id).await.map_err(peer)?;
        let order = self.order(saga).await?;
        let mut tx = self.store.db().begin().await?;
        if !self.moved(&mut tx, saga.order_id, &saga.kind, "returning", "done").await? {
            return Ok(Outcome::Stop);
        }
        let event = payloads::OrderCancelled {
            order_id: order.id,
            number: order.number.clone(),
            user_id: order.user_id,
            refunded: money(&order, order.total)?,
            at: order.updated_at,
        };
        enqueue(&mut tx, &event, saga.traceparent.as_deref()).await?;
        tx.commit().await?;
        Ok(Outcome::Next(Step::Done))
    }
}

fn peer(error: PeerError) -> OrderError {
    match error {
        PeerError::Unavailable(..) => OrderError::Unavailable(error.to_string()),
        other => OrderError::Internal(other.to_string()),
    }
}

/// 1 s, 2 s, 4 s … up to a minute between attempts at a step that keeps failing.
fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 6)).min(MAX_BACKOFF)
}
