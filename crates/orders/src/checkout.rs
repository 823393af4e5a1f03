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
    store::{Advance, LineRow, SagaRow},
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

enum Claim {
    /// This request owns the key; its checkout will be this order.
    Mine(Uuid),
    Answered(Answer),
    /// The first request under this key is still running.
    Busy,
    Mismatch,
    /// The key was forgotten between the insert and the read (an abandoned checkout): try again.
    Gone,
}

const POLL: Duration = Duration::from_millis(25);

impl Orders {
    pub async fn checkout(&self, user: Uuid, key: &str, request: CheckoutRequest) -> Result<Answer, OrderError> {
        let started = Instant::now();
        let result = self.checkout_once(user, key, request).await;
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

    async fn checkout_once(&self, user: Uuid, key: &str, request: CheckoutRequest) -> Result<Answer, OrderError> {
        if !self.provider.accepts(&request.payment_method) {
            return Err(OrderError::Validation(vec![platform::FieldError::new(
                "payment_method",
                format!("is not a payment method the {} provider accepts", self.provider.name()),
            )]));
        }
        let hash = Sha256::digest(serde_json::to_vec(&request).map_err(internal)?).to_vec();
        let deadline = Instant::now() + self.idempotency_wait;
        loop {
            match self.claim_key(user, key, &hash).await? {
                Claim::Mine(order_id) => return self.run(user, key, order_id, &request).await,
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

    async fn claim_key(&self, user: Uuid, key: &str, hash: &[u8]) -> Result<Claim, OrderError> {
        let order_id = Uuid::now_v7();
        let now = platform::time::now();
        let mut tx = self.store.db().begin().await?;
        if self.store.insert_key(&mut tx, user, key, hash, order_id, now).await? {
            let saga = SagaRow {
                order_id,
                kind: Kind::Checkout.as_str().to_owned(),
                step: Step::Started.as_str().to_owned(),
                user_id: user,
                idempotency_key: Some(key.to_owned()),
                plan: None,
                attempts: 0,
                lease_until: now + self.lease,
            };
            self.store.insert_saga(&mut tx, &saga, now).await?;
            tx.commit().await?;
            return Ok(Claim::Mine(order_id));
        }
        tx.rollback().await?;
        Ok(match self.store.key(user, key).await? {
            None => Claim::Gone,
            Some(row) if row.request_hash != hash => Claim::Mismatch,
            Some(row) => match (row.response_status, row.response_body) {
                (Some(status), Some(body)) => {
                    Claim::Answered(Answer { status: u16::try_from(status).map_err(internal)?, body, replayed: true })
                }
                _ => Claim::Busy,
            },
        })
    }

    /// The checkout this request owns: read the cart, fix the plan, then run the saga.
    async fn run(
        &self,
        user: Uuid,
        key: &str,
        order_id: Uuid,
        request: &CheckoutRequest,
    ) -> Result<Answer, OrderError> {
        let plan = match self.peers.cart(user, &request.cart_id).await {
            Ok(cart) if cart.lines.is_empty() => {
                return self.finish_early(user, key, order_id, OrderError::EmptyCart).await;
            }
            Ok(cart) => match self.price(request, cart) {
                Ok(plan) => plan,
                Err(error) => return self.finish_early(user, key, order_id, error).await,
            },
            Err(PeerError::NotFound) => return self.finish_early(user, key, order_id, OrderError::CartNotFound).await,
            Err(error) => {
                self.forget(user, key, order_id).await?;
                return Err(match error {
                    PeerError::Unavailable(..) => OrderError::Unavailable(error.to_string()),
                    other => OrderError::Internal(other.to_string()),
                });
            }
        };
        let plan = serde_json::to_value(&plan).map_err(internal)?;
        let mut tx = self.store.db().begin().await?;
        let kind = Kind::Checkout.as_str();
        if !self
            .store
            .advance(
                &mut tx,
                Advance {
                    order_id,
                    kind,
                    from: "started",
                    to: "reserving",
                    plan: Some(&plan),
                    lease_until: self.lease_end(),
                },
            )
            .await?
        {
            return Err(OrderError::KeyInProgress);
        }
        tx.commit().await?;
        let saga = SagaRow {
            order_id,
            kind: kind.to_owned(),
            step: Step::Reserving.as_str().to_owned(),
            user_id: user,
            idempotency_key: Some(key.to_owned()),
            plan: Some(Json(plan)),
            attempts: 0,
            lease_until: self.lease_end(),
        };
        self.drive(saga, false).await;
        match self.store.key(user, key).await? {
            Some(row) => match (row.response_status, row.response_body) {
                (Some(status), Some(body)) => {
                    Ok(Answer { status: u16::try_from(status).map_err(internal)?, body, replayed: false })
                }
                // Waiting on a dependency: the sweeper finishes it, and a retry under the same
                // key gets the answer.
                _ => Err(OrderError::Unavailable("checkout not finished yet".to_owned())),
            },
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

    /// A checkout that ended before anything was reserved: its answer is final and stored.
    async fn finish_early(
        &self,
        user: Uuid,
        key: &str,
        order_id: Uuid,
        error: OrderError,
    ) -> Result<Answer, OrderError> {
        let answer = Answer::problem(error);
        let mut tx = self.store.db().begin().await?;
        if self.moved(&mut tx, order_id, Kind::Checkout.as_str(), "started", "rejected").await? {
            self.store.answer_key(&mut tx, user, key, answer.status, &answer.body).await?;
        }
        tx.commit().await?;
        Ok(answer)
    }

    /// A checkout that could not start (a dependency is down): nothing happened, so the key is
    /// forgotten and a retry under it starts afresh.
    async fn forget(&self, user: Uuid, key: &str, order_id: Uuid) -> Result<(), OrderError> {
        let mut tx = self.store.db().begin().await?;
        if self.moved(&mut tx, order_id, Kind::Checkout.as_str(), "started", "abandoned").await? {
            self.store.delete_key(&mut tx, user, key).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
