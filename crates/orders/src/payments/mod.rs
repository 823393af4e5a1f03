//! Payment providers behind one interface: the built-in `sandbox` (the default) and `stripe`.
//!
//! Every call carries an idempotency key derived from the order, so a call repeated after a
//! crash or a timeout charges or refunds once. Webhooks are verified (HMAC-SHA256 over
//! `timestamp.body`, the scheme Stripe uses, with a 5-minute replay window) and are treated only
//! as a hint: the saga asks the provider again before it acts on one.

mod sandbox;
mod signature;
mod stripe;

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use platform::{db::Db, money::Money, service::StartError};
use tracing::Instrument;
use uuid::Uuid;

pub use sandbox::Sandbox;
pub use signature::{SignatureError, sign, verify};
pub use stripe::Stripe;

use crate::config::PaymentsConfig;

/// A charge of an order's total with a payment method.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    pub order_id: Uuid,
    pub order_number: String,
    pub amount: Money,
    pub payment_method: String,
    /// The same for every attempt at this order's charge.
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Succeeded { reference: String },
    Declined { reference: Option<String>, code: String },
}

#[derive(Debug, Clone)]
pub struct RefundRequest {
    /// The charge's reference.
    pub reference: String,
    pub amount: Money,
    pub idempotency_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The provider did not answer (or answered 5xx): the outcome is unknown, and the same call
    /// with the same key is safe to repeat.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request itself; repeating it will not help.
    #[error("payment provider refused the request: {0}")]
    Refused(String),
}

/// A verified notification from a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    pub id: String,
    /// The order a payment event is about, when it names one.
    pub order_id: Option<Uuid>,
    pub kind: String,
}

/// What checkout needs of a payment provider: the saga charges and refunds through this, so
/// that its steps can be exercised with a provider that is not there.
pub trait Payments: Send + Sync {
    /// `sandbox`, `stripe`: recorded with each order.
    fn name(&self) -> &'static str;

    /// Whether the provider can charge this payment method at all (checked before anything is
    /// reserved).
    fn accepts(&self, payment_method: &str) -> bool;

    fn charge<'a>(&'a self, request: &'a ChargeRequest) -> BoxFuture<'a, Result<ChargeOutcome, PaymentError>>;

    /// Refunds (part of) a charge; the refund's reference.
    fn refund<'a>(&'a self, request: &'a RefundRequest) -> BoxFuture<'a, Result<String, PaymentError>>;
}

/// The payment methods a provider takes, as the API document states them: exactly what
/// [`Payments::accepts`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    /// These and no others.
    Listed(&'static [&'static str]),
    /// Those that match this pattern (ECMA-262 and Python's `re` read it alike).
    Matching(&'static str),
}

/// The configured provider.
#[derive(Clone)]
pub enum Provider {
    Sandbox(Sandbox),
    Stripe(Stripe),
}

impl Payments for Provider {
    fn name(&self) -> &'static str {
        match self {
            Self::Sandbox(_) => "sandbox",
            Self::Stripe(_) => "stripe",
        }
    }

    /// The sandbox knows exactly the documented test methods; a real provider decides itself,
    /// past the shape of its ids. [`Provider::methods`] says the same to the API document.
    fn accepts(&self, payment_method: &str) -> bool {
        match self {
            Self::Sandbox(_) => sandbox::KNOWN_METHODS.contains(&payment_method),
            Self::Stripe(_) => stripe::is_method(payment_method),
        }
    }

    fn charge<'a>(&'a self, request: &'a ChargeRequest) -> BoxFuture<'a, Result<ChargeOutcome, PaymentError>> {
        Box::pin(async move {
            let started = Instant::now();
            let span = self.span("charge");
            let result = match self {
                Self::Sandbox(sandbox) => sandbox.charge(request).instrument(span.clone()).await,
                Self::Stripe(stripe) => stripe.charge(request).instrument(span.clone()).await,
            };
            self.observe("charge", started, &span, result.as_ref().err());
            result
        })
    }

    fn refund<'a>(&'a self, request: &'a RefundRequest) -> BoxFuture<'a, Result<String, PaymentError>> {
        Box::pin(async move {
            let started = Instant::now();
            let span = self.span("refund");
            let result = match self {
                Self::Sandbox(sandbox) => sandbox.refund(request).instrument(span.clone()).await,
                Self::Stripe(stripe) => stripe.refund(request).instrument(span.clone()).await,
            };
            self.observe("refund", started, &span, result.as_ref().err());
            result
        })
    }
}

/// Brings the provider's tables up to date: the sandbox's ledger where the sandbox is the
/// provider. With another provider, an empty ledger that orders' first migration made is
/// dropped, so that a production database holds no sandbox tables.
pub async fn migrate(config: &PaymentsConfig, db: &Db) -> Result<(), StartError> {
    match config.provider.as_str() {
        "sandbox" => sandbox::migrate(db).await.map_err(StartError::dependency("sandbox ledger")),
        _ => {
            // Housekeeping only: a replica starting beside another may find them gone already.
            if let Err(error) = sandbox::retire_empty_ledger(db).await {
                tracing::warn!(error = %error, "could not drop the unused sandbox ledger");
            }
            Ok(())
        }
    }
}

impl Provider {
    /// What [`Payments::accepts`] takes, for the API document.
    pub fn methods(&self) -> Methods {
        match self {
            Self::Sandbox(_) => Methods::Listed(&sandbox::KNOWN_METHODS),
            Self::Stripe(_) => Methods::Matching(stripe::METHOD_PATTERN),
        }
    }

    /// The configured provider (its tables brought up to date by [`migrate`]).
    pub fn open(config: &PaymentsConfig, db: &Db) -> Result<Self, StartError> {
        match config.provider.as_str() {
            "stripe" => Ok(Self::Stripe(Stripe::new(&config.stripe, config.timeout).map_err(StartError::Config)?)),
            _ => Ok(Self::Sandbox(Sandbox::new(db.clone(), &config.sandbox))),
        }
    }

    /// Checks a webhook's signature and reads it.
    pub fn verify_webhook(&self, headers: &http::HeaderMap, body: &[u8]) -> Result<WebhookEvent, SignatureError> {
        let (header, secret) = match self {
            Self::Sandbox(sandbox) => (sandbox::SIGNATURE_HEADER, sandbox.webhook_secret()),
            Self::Stripe(stripe) => {
                (stripe::SIGNATURE_HEADER, stripe.webhook_secret().ok_or(SignatureError::NotConfigured)?)
            }
        };
        let value = headers.get(header).and_then(|v| v.to_str().ok()).ok_or(SignatureError::Missing)?;
        verify(value, body, secret.as_bytes(), platform::time::now().timestamp(), REPLAY_WINDOW)?;
        parse_event(body).ok_or(SignatureError::Malformed)
    }

    /// Lets the sandbox deliver its webhooks to this service when no URL is configured.
    pub fn set_own_webhook_url(&self, url: String) {
        if let Self::Sandbox(sandbox) = self {
            sandbox.set_default_webhook_url(url);
        }
    }

    /// The provider call's client span, when spans are exported.
    fn span(&self, operation: &'static str) -> tracing::Span {
        if !platform::telemetry::trace::recording() {
            return tracing::Span::none();
        }
        tracing::info_span!(
            target: platform::telemetry::trace::TRACE_ONLY,
            "payment",
            otel.name = format!("{} {operation}", self.name()),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            "peer.service" = self.name(),
            "payment.operation" = operation,
        )
    }

    fn observe(&self, operation: &'static str, started: Instant, span: &tracing::Span, error: Option<&PaymentError>) {
        let outcome = match error {
            None => "ok",
            Some(PaymentError::Unavailable(_)) => "unavailable",
            Some(PaymentError::Refused(_)) => "refused",
        };
        if error.is_some() {
            platform::telemetry::trace::fail(span, outcome);
        }
        metrics::histogram!("orders_payment_provider_duration_seconds", "provider" => self.name(), "operation" => operation, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        if error.is_some() {
            metrics::counter!("orders_payment_provider_errors_total", "provider" => self.name(), "operation" => operation, "outcome" => outcome)
                .increment(1);
        }
    }
}

/// How old a signed webhook may be: older ones are replays.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(300);

/// Reads a Stripe-shaped event: `{id, type, data: {object: {metadata: {order_id}}}}`.
fn parse_event(body: &[u8]) -> Option<WebhookEvent> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = value.get("id")?.as_str()?.to_owned();
    let kind = value.get("type")?.as_str()?.to_owned();
    let order_id =
        value.pointer("/data/object/metadata/order_id").and_then(|v| v.as_str()).and_then(|s| Uuid::try_parse(s).ok());
    Some(WebhookEvent { id, order_id, kind })
}
