//! Checkout, as the client sees it: one `POST /orders` under an idempotency key.
//!
//! The key is claimed together with the saga's first row, in one transaction, so a key never
//! exists without the saga that will answer it. The request's hash is kept with the key: the
//! same key with another request is refused, the same request replays the stored answer, and a
//! duplicate that arrives while the first is still running waits for that answer.

use std::time::{Duration, Instant};

use platform::Problem;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use uuid::Uuid;

use crate::{
    domain::Address,
    error::{OrderError, internal},
    orders::Orders,
    peers::PeerError,
    saga::{Kind, Plan, Step},
    store::{KeyRow, LineRow, NewKey, SagaRow},
};

/// A validated checkout request.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutRequest {
    /// `me` or a guest cart's id.
    pub cart_id: String,
    pub shipping_address: Address,
    pub payment_method: String,
}

/// The final answer to a checkout, as stored under its key and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// JSON: the order, or a problem document.
    pub body: String,
    /// Whether this is a replay of an earlier request's answer.
    pub replayed: bool,
}

impl Answer {
    pub fn problem(error: OrderError) -> Self {
        let problem = Problem::from(error);
        Self { status: problem.status, body: serde_json::to_string(&problem).unwrap_or_default(), replayed: false }
    }
}

/// How a checkout begins, decided from the cart before the key is claimed.
enum Start {
    /// Reserve, then place and charge, this plan (a serialised [`crate::saga::Plan`]).
    Reserve(serde_json::Value),
    /// Nothing to do: the checkout's answer is this problem.
    Reject(Answer),
}

enum Claim {
    /// This request owns the key; its checkout will be this order.
    Mine(Box<SagaRow>),
    Answered(Answer),
    /// The first request under this key is still running.
    Busy,
    Mismatch,
    /// The key was forgotten between the insert and the read (an abandoned checkout): try again.
    Gone,
}

const POLL: Duration = Duration::from_millis(25);

impl Orders {
    /// `trace`: the request's trace context, which the checkout's events carry.
    pub async fn checkout(
        &self,
        user: Uuid,
        key: &str,
        request: CheckoutRequest,
        trace: Option<String>,
    ) -> Result<Answer, OrderError> {
        let started = Instant::now();
        let result = self.checkout_once(user, key, request, trace).await;
        let outcome = match &result {
            Ok(answer) if answer.replayed => "replayed",
            Ok(answer) => match answer.status {
                201 => "paid",
                402 => "declined",
                409 => "out_of_stock",
                422 => "empty_cart",
                _ => "rejected",
            },
            Err(OrderError::Unavailable(_)) => "unavailable",
            Err(_) => "error",
        };
        metrics::histogram!("orders_checkout_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn checkout_once(
        &self,
        user: Uuid,
        key: &str,
        request: CheckoutRequest,
        trace: Option<String>,
    ) -> Result<Answer, OrderError> {
        if !self.provider.accepts(&request.payment_method) {
            return Err(OrderError::Validation(vec![platform::FieldError::new(
                "payment_method",
                format!("is not a payment method the {} provider accepts", self.provider.name()),
            )]));
        }
        let hash = Sha256::digest(serde_json::to_vec(&request).map_err(internal)?).to_vec();
        // The cart is read before the key is claimed, so that the claim records the whole plan
        // at once. A replay reads it too, needlessly but harmlessly: the stored answer wins.
        let start = match self.start(user, &request).await {
            Ok(start) => start,
            Err(error) => return self.replay_or(user, key, &hash, error).await,
        };
        let deadline = Instant::now() + self.idempotency_wait;
        loop {
            match self.claim_key(user, key, &hash, &start, &trace).await? {
                Claim::Mine(saga) => {
                    return match start {
                        Start::Reserve(_) => self.run(user, key, *saga).await,
                        Start::Reject(answer) => Ok(answer),
                    };
                }
                Claim::Answered(answer) => {
                    metrics::counter!("orders_idempotent_replays_total", "outcome" => "replayed").increment(1);
                    return Ok(answer);
                }
                Claim::Mismatch => {
                    metrics::counter!("orders_idempotent_replays_total", "outcome" => "mismatch").increment(1);
                    return Err(OrderError::KeyReused);
                }
                Claim::Gone => continue,
                Claim::Busy if Instant::now() >= deadline => {
                    metrics::counter!("orders_idempotent_replays_total", "outcome" => "busy").increment(1);
                    return Err(OrderError::KeyInProgress);
                }
                Claim::Busy => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Reads and prices the cart: what the saga will do, or the answer that ends the checkout
    /// before anything happens. An error means the cart could not be read (nothing happened).
    async fn start(&self, user: Uuid, request: &CheckoutRequest) -> Result<Start, OrderError> {
        let rejected = |error| Ok(Start::Reject(Answer::problem(error)));
        match self.peers.cart(user, &request.cart_id).await {
            Ok(cart) if cart.lines.is_empty() => rejected(OrderError::EmptyCart),
            Ok(cart) => match self.price(request, cart) {
                Ok(plan) => Ok(Start::Reserve(serde_json::to_value(&plan).map_err(internal)?)),
                Err(error) => rejected(error),
            },
            Err(PeerError::NotFound) => rejected(OrderError::CartNotFound),
            Err(error @ PeerError::Unavailable(..)) => Err(OrderError::Unavailable(error.to_string())),
            Err(error) => Err(OrderError::Internal(error.to_string())),
        }
    }

    /// When the cart cannot be read: the stored answer if this is a replay, else `error`.
    async fn replay_or(&self, user: Uuid, key: &str, hash: &[u8], error: OrderError) -> Result<Answer, OrderError> {
        match self.store.key(user, key).await? {
            Some(row) if row.request_hash != hash => Err(OrderError::KeyReused),
            Some(row) => match stored(row, true)? {
                Some(answer) => {
                    metrics::counter!("orders_idempotent_replays_total", "outcome" => "replayed").increment(1);
                    Ok(answer)
                }
                None => Err(error),
            },
            None => Err(error),
        }
    }

    /// Claims the key for a new checkout, recording its saga (and, for a checkout rejected
    /// before it began, its answer) in the same transaction.
    async fn claim_key(
        &self,
        user: Uuid,
        key: &str,
        hash: &[u8],
        start: &Start,
        trace: &Option<String>,
    ) -> Result<Claim, OrderError> {
        let order_id = Uuid::now_v7();
        let now = platform::time::now();
        let (step, plan, answer) = match start {
            Start::Reserve(plan) => (Step::Reserving, Some(Json(plan.clone())), None),
            Start::Reject(answer) => (Step::Rejected, None, Some((answer.status, answer.body.as_str()))),
        };
        let saga = SagaRow {
            order_id,
            kind: Kind::Checkout.as_str().to_owned(),
            step: step.as_str().to_owned(),
            user_id: user,
            idempotency_key: Some(key.to_owned()),
            plan,
            attempts: 0,
            lease_until: now + self.lease,
            traceparent: trace.clone(),
        };
        if self.store.claim_key(&NewKey { user, key, hash, answer }, &saga, now).await? {
            return Ok(Claim::Mine(Box::new(saga)));
        }
        Ok(match self.store.key(user, key).await? {
            None => Claim::Gone,
            Some(row) if row.request_hash != hash => Claim::Mismatch,
            Some(row) => stored(row, true)?.map_or(Claim::Busy, Claim::Answered),
        })
    }

    /// The checkout this request owns (its saga as claimed), from the reservation on.
    async fn run(&self, user: Uuid, key: &str, saga: SagaRow) -> Result<Answer, OrderError> {
        if let Some(answer) = self.drive(saga, false).await {
            return Ok(answer);
        }
        // Stopped before an answer: another process took the saga over, or a dependency is down.
        match self.store.key(user, key).await? {
            // Waiting on a dependency: the sweeper finishes it, and a retry under the same key
            // gets the answer.
            Some(row) => {
                stored(row, false)?.ok_or_else(|| OrderError::Unavailable("checkout not finished yet".to_owned()))
            }
            None => Err(OrderError::Unavailable("checkout interrupted; nothing was charged".to_owned())),
        }
    }

    /// Prices the cart into lines and totals.
    fn price(&self, request: &CheckoutRequest, cart: crate::peers::CheckoutCart) -> Result<Plan, OrderError> {
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
            lines.push(LineRow {
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
            currency: cart.currency,
            lines,
            totals,
            shipping_address: request.shipping_address.clone(),
            payment_method: request.payment_method.clone(),
        })
    }
}

/// The answer stored under a key, once its checkout has one.
fn stored(row: KeyRow, replayed: bool) -> Result<Option<Answer>, OrderError> {
    match (row.response_status, row.response_body) {
        (Some(status), Some(body)) => {
            Ok(Some(Answer { status: u16::try_from(status).map_err(internal)?, body, replayed }))
        }
        _ => Ok(None),
    }
}
