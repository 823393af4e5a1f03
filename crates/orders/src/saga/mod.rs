//! Running sagas: the steps of a checkout and of a cancellation (see `domain::Saga` for the
//! paths), and the recovery of those a crash or a dependency interrupted.
//!
//! Each step's effect is idempotent at the peer (keyed by the order id), and the move to the
//! next step is a compare-and-set on the saga's row, so a step repeated after a crash acts once
//! and two processes never both move on. A saga whose lease ran out (its process died, or a
//! dependency was down) is claimed by a sweeper and driven on from its step: forward once the
//! order exists, backward (release the stock, forget the key) before that, because nobody is
//! waiting for an order not yet placed.
//!
//! [`Sagas`] depends on its peers only through narrow traits ([`Inventory`], [`Carts`],
//! [`Payments`]), so every step and compensation is exercised in this crate's unit tests.

mod steps;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    config::FaultPoint,
    domain::{CheckoutOutcome, Kind, Order, OrderEvent, Saga, Step},
    payments::{PaymentError, Payments},
    peers::{Carts, Inventory, PeerError},
    store::{Advance, Store, StoreError, Unit},
};

/// After this many failed attempts at one step, a saga counts as stuck (`orders_sagas_stuck`,
/// and an error in the log at each further attempt).
pub const STUCK_AFTER: i32 = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How sagas run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Prefix of human-readable order numbers (`EM-`).
    pub number_prefix: String,
    /// How long a process may work on one step before another may take the saga over.
    pub lease: Duration,
    /// How long stock stays reserved for a checkout that has not finished.
    pub reservation_ttl: Duration,
    /// Fault injection for crash-recovery tests: exit right after this step's effect.
    pub crash_after: Option<FaultPoint>,
}

/// The peers a saga acts on.
#[derive(Clone)]
pub struct Peers {
    pub inventory: Arc<dyn Inventory>,
    pub carts: Arc<dyn Carts>,
    pub payments: Arc<dyn Payments>,
}

/// Why a step could not be taken now. Every step is retried later.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => Self::Unavailable(cause),
            StoreError::Failed(cause) => Self::Failed(cause),
        }
    }
}

impl From<PeerError> for StepError {
    fn from(error: PeerError) -> Self {
        match error {
            PeerError::Unavailable(..) => Self::Unavailable(error.to_string()),
            other => Self::Failed(other.to_string()),
        }
    }
}

impl From<PaymentError> for StepError {
    fn from(error: PaymentError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// The saga runner of one orders process.
pub struct Sagas {
    store: Store,
    peers: Peers,
    settings: Settings,
}

impl Sagas {
    pub fn new(store: Store, peers: Peers, settings: Settings) -> Self {
        Self { store, peers, settings }
    }

    pub fn payments(&self) -> &dyn Payments {
        self.peers.payments.as_ref()
    }

    /// A saga for a new checkout of `user` under `key`, leased to this process.
    pub fn checkout(
        &self,
        user: Uuid,
        key: &str,
        step: Step,
        plan: Option<crate::domain::Plan>,
        trace: Option<String>,
    ) -> Saga {
        Saga {
            order_id: Uuid::now_v7(),
            kind: Kind::Checkout,
            step,
            user_id: user,
            idempotency_key: Some(key.to_owned()),
            plan,
            attempts: 0,
            lease_until: self.lease_end(),
            traceparent: trace,
        }
    }

    /// Within `unit`: cancels the order (if the state machine allows it) and records the saga
    /// that refunds it and returns its stock; `None` when the order changed meanwhile.
    pub async fn start_cancel(
        &self,
        unit: &mut Unit,
        order: &mut Order,
        trace: Option<String>,
    ) -> Result<Option<Saga>, CancelError> {
        order.cancel()?;
        if !unit.update_order(order).await? {
            return Ok(None);
        }
        let saga = Saga {
            order_id: order.id,
            kind: Kind::Cancel,
            step: Step::Refunding,
            user_id: order.user_id,
            idempotency_key: None,
            plan: None,
            attempts: 0,
            lease_until: self.lease_end(),
            traceparent: trace,
        };
        unit.insert_saga(&saga).await?;
        Ok(Some(saga))
    }

    /// Runs a saga from its current step until it finishes or cannot go on now, and returns
    /// the checkout's outcome if this run decided it. Never fails: what cannot be done now is
    /// postponed, and the sweeper tries again.
    pub async fn drive(&self, saga: Saga, resumed: bool) -> Option<CheckoutOutcome> {
        let mut step = saga.step;
        let mut outcome = None;
        let mut placed = None;
        loop {
            if Step::FINAL.contains(&step) {
                return outcome;
            }
            let span = tracing::info_span!("saga_step", "saga.kind" = saga.kind.as_str(), "saga.step" = step.as_str());
            let result = self.renewing(&saga, self.step(&saga, step, resumed, &mut placed).instrument(span)).await;
            let label = match &result {
                Ok(Next::Stop) => "stopped",
                Ok(_) => "ok",
                Err(_) => "failed",
            };
            metrics::counter!("orders_saga_steps_total", "kind" => saga.kind.as_str(), "step" => step.as_str(), "outcome" => label)
                .increment(1);
            match result {
                Ok(Next::Step(next)) => step = next,
                Ok(Next::Decided(next, decided)) => {
                    outcome = Some(decided);
                    step = next;
                }
                Ok(Next::Placed(order)) => {
                    placed = Some(*order);
                    step = Step::Charging;
                }
                Ok(Next::Stop) => return outcome,
                Err(error) => {
                    self.postpone(&saga, step, &error).await;
                    return outcome;
                }
            }
        }
    }

    /// Runs one step.
    async fn step(
        &self,
        saga: &Saga,
        step: Step,
        resumed: bool,
        placed: &mut Option<Order>,
    ) -> Result<Next, StepError> {
        {
            match step {
                Step::Done | Step::Failed | Step::Rejected | Step::Abandoned => Ok(Next::Stop),
                Step::Started => self.abandon(saga, Step::Started).await,
                Step::Reserving if resumed => self.advance(saga, Step::Reserving, Step::Abandoning).await,
                Step::Reserving => self.reserve(saga).await,
                Step::Abandoning => self.abandon(saga, Step::Abandoning).await,
                Step::Charging => self.charge(saga, placed.take()).await,
                Step::Committing => self.commit(saga).await,
                Step::Emptying => self.empty_cart(saga).await,
                Step::Releasing => self.release(saga).await,
                Step::Refunding => self.refund(saga).await,
                Step::Returning => self.return_stock(saga).await,
            }
        }
    }

    /// Runs `work` while renewing the saga's lease every third of it: a slow step keeps its
    /// saga, and only a process that stopped renewing loses it.
    async fn renewing<T>(&self, saga: &Saga, work: impl Future<Output = T>) -> T {
        let renew = async {
            loop {
                tokio::time::sleep(self.settings.lease / 3).await;
                if let Err(error) = self.store.renew(saga.order_id, saga.kind, self.lease_end()).await {
                    tracing::warn!(order_id = %saga.order_id, error = %error, "could not renew a saga's lease");
                }
            }
        };
        tokio::select! {
            biased;
            done = work => done,
            () = renew => unreachable!("renewing goes on until the work is done"),
        }
    }

    async fn postpone(&self, saga: &Saga, step: Step, error: &StepError) {
        let retry_in = backoff(saga.attempts);
        if saga.attempts >= STUCK_AFTER {
            // Retrying stays safe (every step is idempotent) but will not fix, say, a refund
            // the provider refuses: someone must look.
            tracing::error!(order_id = %saga.order_id, step = step.as_str(), attempts = saga.attempts, error = %error, retry_in = ?retry_in, "saga step keeps failing");
        } else {
            tracing::warn!(order_id = %saga.order_id, step = step.as_str(), error = %error, retry_in = ?retry_in, "saga step postponed");
        }
        let retry_at = platform::time::now() + retry_in;
        if let Err(error) = self.store.postpone(saga.order_id, saga.kind, &error.to_string(), retry_at).await {
            tracing::warn!(order_id = %saga.order_id, error = %error, "could not record a postponed saga step");
        }
    }

    /// Finishes the sagas whose lease ran out: those of processes that died, and those waiting
    /// for a dependency to come back.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let now = platform::time::now();
        let due = self.store.due_sagas(now, 50).await?;
        let mut resumed = 0;
        for (order_id, kind) in due {
            let Some(saga) = self.claim(order_id, kind).await? else { continue };
            metrics::counter!("orders_saga_steps_resumed_total", "kind" => kind.as_str(), "step" => saga.step.as_str())
                .increment(1);
            tracing::info!(order_id = %order_id, kind = kind.as_str(), step = saga.step.as_str(), attempt = saga.attempts, "resuming saga");
            let (span, scope) = resumed_span(&saga);
            scope.run(self.drive(saga, true).instrument(span)).await;
            resumed += 1;
        }
        Ok(resumed)
    }

    /// Drives an order's checkout on after a provider's notification, if nobody is at it.
    pub async fn nudge(&self, order_id: Uuid) -> Result<(), StoreError> {
        if let Some(saga) = self.claim(order_id, Kind::Checkout).await? {
            let (span, scope) = resumed_span(&saga);
            scope.run(self.drive(saga, true).instrument(span)).await;
        }
        Ok(())
    }

    /// Takes over a saga whose lease ran out. One this version cannot read (a step it does not
    /// know, a plan it cannot parse) is set aside with the reason, like a failing step, rather
    /// than holding up the others.
    async fn claim(&self, order_id: Uuid, kind: Kind) -> Result<Option<Saga>, StoreError> {
        let now = platform::time::now();
        match self.store.claim(order_id, kind, now, now + self.settings.lease).await {
            Err(StoreError::Failed(cause)) => {
                tracing::error!(order_id = %order_id, kind = kind.as_str(), error = %cause, "saga cannot be read; set aside");
                self.store.postpone(order_id, kind, &cause, now + MAX_BACKOFF).await?;
                Ok(None)
            }
            claimed => claimed,
        }
    }

    /// How many unfinished sagas have failed [`STUCK_AFTER`] times in a row at their step.
    pub async fn stuck(&self) -> Result<i64, StoreError> {
        self.store.stuck_sagas(STUCK_AFTER).await
    }

    /// When a lease taken now runs out.
    pub fn lease_end(&self) -> DateTime<Utc> {
        platform::time::now() + self.settings.lease
    }

    fn advance_of(&self, saga: &Saga, from: Step, to: Step) -> Advance {
        Advance { order_id: saga.order_id, kind: saga.kind, from, to, lease_until: self.lease_end() }
    }

    /// Moves the saga on in a statement of its own.
    async fn advance(&self, saga: &Saga, from: Step, to: Step) -> Result<Next, StepError> {
        Ok(if self.store.advance(self.advance_of(saga, from, to)).await? { Next::Step(to) } else { Next::Stop })
    }

    /// Exits the process when fault injection names this point: the effect before it happened,
    /// the record of it did not.
    fn fault(&self, point: FaultPoint) {
        if self.settings.crash_after == Some(point) {
            tracing::error!(point = ?point, "fault injection: exiting the process");
            std::process::exit(86);
        }
    }
}

/// Why a cancellation could not start.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error(transparent)]
    Transition(#[from] crate::domain::TransitionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What happened to one step.
enum Next {
    /// Moved on to this step.
    Step(Step),
    /// Moved on to this step, and the checkout's outcome is now final.
    Decided(Step, CheckoutOutcome),
    /// The order was placed (the saga is now charging): the charge starts from this order.
    Placed(Box<Order>),
    /// Cannot go on now (a dependency is down, or another process moved the saga): stop here.
    Stop,
}

/// The envelopes of an order's events, in the trace of the saga's request.
fn envelopes(events: &[OrderEvent], saga: &Saga) -> Result<Vec<events::CloudEvent>, StepError> {
    events
        .iter()
        .map(|e| e.envelope(crate::SERVICE, saga.traceparent.as_deref()).map_err(|e| StepError::Failed(e.to_string())))
        .collect()
}

/// 1 s, 2 s, 4 s … up to a minute between attempts at a step that keeps failing.
/// The span of a saga driven on outside the request that began it: it joins that request's trace.
fn resumed_span(saga: &Saga) -> (tracing::Span, platform::telemetry::trace::Scope) {
    platform::telemetry::trace::start(saga.traceparent.as_deref(), || {
        tracing::info_span!(
            "saga",
            otel.name = format!("resume {}", saga.kind.as_str()),
            "saga.kind" = saga.kind.as_str(),
            "order.id" = %saga.order_id,
        )
    })
}

fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 6)).min(MAX_BACKOFF)
}
