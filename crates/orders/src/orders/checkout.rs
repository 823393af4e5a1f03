//! Checkout, as the client sees it: one `POST /orders` under an idempotency key.
//!
//! The cart is read and priced first; then the key is claimed together with the saga's first
//! row (and its plan), in one transaction, so a key never exists without the saga that will
//! answer it. The request's hash is kept with the key: the same key with another request is
//! refused, the same request replays the stored answer, and a duplicate that arrives while the
//! first is still running waits for that answer. One checkout of a cart runs at a time: another
//! under a different key, while the first has not finished, is refused (409), so no two orders
//! are charged for one cart's contents.

use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Orders;
use crate::{
    domain::{Address, Answer, CheckoutOutcome, Line, Plan, Saga, Step},
    error::{OrderError, internal},
    peers::{CheckoutCart, PeerError},
    store::{Claim, KeyState, NewKey},
};

/// A validated checkout request.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutRequest {
    /// `me` or a guest cart's id.
    pub cart_id: String,
    pub shipping_address: Address,
    pub payment_method: String,
}

/// A checkout's answer, and whether it repeats an earlier request's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub answer: Answer,
    pub replayed: bool,
}

impl Reply {
    fn new(outcome: CheckoutOutcome) -> Self {
        Self { answer: Answer::Outcome(outcome), replayed: false }
    }

    fn replay(answer: Answer) -> Self {
        metrics::counter!("orders_idempotent_replays_total", "outcome" => "replayed").increment(1);
        Self { answer, replayed: true }
    }

    fn label(&self) -> &'static str {
        match &self.answer {
            _ if self.replayed => "replayed",
            Answer::Outcome(outcome) => outcome.label(),
            Answer::Given { .. } => "replayed",
        }
    }
}

/// How a checkout begins, decided from the cart before the key is claimed.
enum Start {
    /// Reserve, then place and charge, this plan.
    Reserve(Box<Plan>),
    /// Nothing to do: this is the checkout's outcome.
    Decided(CheckoutOutcome),
}

const POLL: Duration = Duration::from_millis(25);

/// The outcomes of a checkout that refuse the buyer (`orders_checkouts_refused_total{reason}`).
pub(crate) const REFUSALS: [&str; 4] = ["declined", "out_of_stock", "empty_cart", "cart_not_found"];

impl Orders {
    /// `trace`: the request's trace context, which the checkout's events carry.
    pub async fn checkout(
        &self,
        user: Uuid,
        key: &str,
        request: CheckoutRequest,
        trace: Option<String>,
    ) -> Result<Reply, OrderError> {
        let started = Instant::now();
        let result = self.checkout_once(user, key, request, trace).await;
        let outcome = match &result {
            Ok(reply) => reply.label(),
            Err(OrderError::Unavailable(_)) => "unavailable",
            Err(_) => "error",
        };
        metrics::histogram!("orders_checkout_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        if REFUSALS.contains(&outcome) {
            metrics::counter!("orders_checkouts_refused_total", "reason" => outcome).increment(1);
        }
        result
    }

    async fn checkout_once(
        &self,
        user: Uuid,
        key: &str,
        request: CheckoutRequest,
        trace: Option<String>,
    ) -> Result<Reply, OrderError> {
        let payments = self.sagas.payments();
        if !payments.accepts(&request.payment_method) {
            return Err(OrderError::Validation(vec![platform::FieldError::new(
                "payment_method",
                format!("is not a payment method the {} provider accepts", payments.name()),
            )]));
        }
        let hash = Sha256::digest(serde_json::to_vec(&request).map_err(internal)?).to_vec();
        for _ in 0..3 {
            if let Some(reply) = self.claim_and_run(user, key, &hash, &request, trace.clone()).await? {
                return Ok(reply);
            }
        }
        // The cart kept changing under the claims: another checkout of it keeps finishing.
        Err(OrderError::CartBusy)
    }

    /// Reads the cart, claims the key with the checkout's plan, and runs it; `None` when the cart
    /// turned out to have changed between the read and the claim, and nothing was done.
    async fn claim_and_run(
        &self,
        user: Uuid,
        key: &str,
        hash: &[u8],
        request: &CheckoutRequest,
        trace: Option<String>,
    ) -> Result<Option<Reply>, OrderError> {
        let hash = hash.to_vec();
        // The cart is read before the key is claimed, so that the claim records the whole plan
        // at once. A replay reads it too, needlessly but harmlessly: the stored answer wins.
        let start = match self.start(user, request).await {
            Ok(start) => start,
            Err(error) => return self.replay_or(user, key, &hash, error).await.map(Some),
        };
        let (step, plan, outcome) = match start {
            Start::Reserve(plan) => (Step::Reserving, Some(*plan), None),
            Start::Decided(outcome) => (Step::Rejected, None, Some(outcome)),
        };
        let mut saga = self.sagas.checkout(user, key, step, plan, trace);
        let claim = NewKey { user, key, hash: &hash, outcome: outcome.as_ref() };
        let deadline = Instant::now() + self.idempotency_wait;
        loop {
            // A lease as long as for any saga, however long this request waited for the key.
            saga.lease_until = self.sagas.lease_end();
            match self.store.claim_key(&claim, &saga).await? {
                Claim::Claimed => {
                    let Some(plan) = &saga.plan else {
                        return Ok(outcome.map(Reply::new));
                    };
                    // No other checkout of the cart can run now, but one may have finished
                    // between the read and the claim, emptying the cart this plan was read from:
                    // read it again, and start over (as if never claimed) if it changed.
                    if !self.still_planned(user, request, plan).await {
                        self.store.unclaim(user, key, saga.order_id).await?;
                        return Ok(None);
                    }
                    return self.run(user, key, &hash, saga).await.map(Some);
                }
                Claim::CartBusy => {
                    metrics::counter!("orders_idempotent_replays_total", "outcome" => "cart_busy").increment(1);
                    return Err(OrderError::CartBusy);
                }
                Claim::KeyTaken => {}
            }
            match self.store.key(user, key, &hash).await? {
                KeyState::Answered(answer) => return Ok(Some(Reply::replay(answer))),
                KeyState::Mismatch => {
                    metrics::counter!("orders_idempotent_replays_total", "outcome" => "mismatch").increment(1);
                    return Err(OrderError::KeyReused);
                }
                // Forgotten between the insert and the read (an abandoned checkout): try again.
                KeyState::Missing => continue,
                // Running, or decided with steps left (the cart not emptied yet): wait for the end,
                // so that the shopper does not carry on with a cart the checkout still holds.
                KeyState::Pending | KeyState::Finishing(_) if Instant::now() >= deadline => {
                    metrics::counter!("orders_idempotent_replays_total", "outcome" => "busy").increment(1);
                    return Err(OrderError::KeyInProgress);
                }
                KeyState::Pending | KeyState::Finishing(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Whether the cart still holds what `plan` was made from (same lines, quantities and prices).
    /// A cart that cannot be read now counts as unchanged: the saga's own steps meet that.
    async fn still_planned(&self, user: Uuid, request: &CheckoutRequest, plan: &Plan) -> bool {
        match self.start(user, request).await {
            Ok(Start::Reserve(fresh)) => fresh.lines == plan.lines,
            Ok(Start::Decided(_)) => false,
            Err(_) => true,
        }
    }

    /// Reads and prices the cart: what the saga will do, or the outcome that ends the checkout
    /// before anything happens. An error means the cart could not be read (nothing happened).
    async fn start(&self, user: Uuid, request: &CheckoutRequest) -> Result<Start, OrderError> {
        match self.carts.cart(user, &request.cart_id).await {
            Ok(cart) if cart.lines.is_empty() => Ok(Start::Decided(CheckoutOutcome::EmptyCart)),
            Ok(cart) => self.price(request, cart).map(|plan| Start::Reserve(Box::new(plan))),
            Err(PeerError::NotFound) => Ok(Start::Decided(CheckoutOutcome::CartNotFound)),
            Err(error @ PeerError::Unavailable(..)) => Err(OrderError::Unavailable(error.to_string())),
            Err(error) => Err(OrderError::Internal(error.to_string())),
        }
    }

    /// When the cart cannot be read: the stored answer if this is a replay, else `error`.
    async fn replay_or(&self, user: Uuid, key: &str, hash: &[u8], error: OrderError) -> Result<Reply, OrderError> {
        match self.store.key(user, key, hash).await? {
            KeyState::Mismatch => Err(OrderError::KeyReused),
            KeyState::Answered(answer) | KeyState::Finishing(answer) => Ok(Reply::replay(answer)),
            KeyState::Missing | KeyState::Pending => Err(error),
        }
    }

    /// The checkout this request owns (its saga as claimed), from the reservation on.
    async fn run(&self, user: Uuid, key: &str, hash: &[u8], saga: Saga) -> Result<Reply, OrderError> {
        if let Some(outcome) = self.sagas.drive(saga, false).await {
            return Ok(Reply::new(outcome));
        }
        // Stopped before an outcome: another process took the saga over, or a dependency is down.
        match self.store.key(user, key, hash).await? {
            KeyState::Answered(answer) | KeyState::Finishing(answer) => Ok(Reply { answer, replayed: false }),
            // Waiting on a dependency: the sweeper finishes it, and a retry under the same key
            // gets the answer.
            KeyState::Pending | KeyState::Mismatch => {
                Err(OrderError::Unavailable("checkout not finished yet".to_owned()))
            }
            KeyState::Missing => Err(OrderError::Unavailable("checkout interrupted; nothing was charged".to_owned())),
        }
    }

    /// Prices the cart into lines and totals.
    fn price(&self, request: &CheckoutRequest, cart: CheckoutCart) -> Result<Plan, OrderError> {
        let currency = platform::money::Currency::parse(&cart.currency).map_err(internal)?;
        let mut lines = Vec::with_capacity(cart.lines.len());
        let mut subtotal: i64 = 0;
        for line in cart.lines {
            let price = line.unit_price.ok_or_else(|| OrderError::Internal(format!("no price for {}", line.sku)))?;
            if price.currency != cart.currency {
                return Err(OrderError::Internal(format!("{} is priced in {}", line.sku, price.currency)));
            }
            subtotal = price
                .amount
                .checked_mul(line.quantity)
                .and_then(|n| n.checked_add(subtotal))
                .ok_or_else(|| OrderError::Internal("order total overflows".to_owned()))?;
            lines.push(Line {
                sku: line.sku,
                product_id: line.product_id,
                title: line.title,
                quantity: line.quantity,
                unit_price: price.amount,
            });
        }
        let totals = self
            .pricing
            .totals(subtotal, &request.shipping_address.country)
            .ok_or_else(|| OrderError::Internal("order total overflows".to_owned()))?;
        Ok(Plan {
            cart_id: request.cart_id.clone(),
            currency,
            lines,
            totals,
            shipping_address: request.shipping_address.clone(),
            payment_method: request.payment_method.clone(),
        })
    }
}
