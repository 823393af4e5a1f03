//! Sending: claims due deliveries, makes each message (asking identity whom to write to and,
//! for links, the link), hands it to the mailer and records the outcome. A failure that may
//! pass (the mail server or identity down, a 4xx) is retried with exponential backoff; one that
//! cannot (a 5xx refusal, a dead link, a user gone) is recorded as `failed`, visible to
//! operators, who can queue it again.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use events::payloads::OrderLine;
use lettre::message::Mailbox;
use platform::money::Money;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    config::Config,
    mailer::{self, Mailer, SendError},
    peers::{Identity, PeerError},
    store::{Delivery, Outcome, Store},
    templates::Templates,
};

/// How long a claimed message is held before another sender may take it (a crashed sender's
/// messages come back after this).
const LEASE: Duration = Duration::from_secs(120);

pub struct Sender {
    store: Store,
    identity: Identity,
    templates: Templates,
    mailer: Mailer,
    from: Mailbox,
    config: Config,
}

/// Why one message was not sent.
enum Failure {
    Retry(String),
    Permanent(String),
}

impl From<PeerError> for Failure {
    fn from(error: PeerError) -> Self {
        match error {
            PeerError::Gone(reason) => Self::Permanent(format!("cannot be made any more: {reason}")),
            PeerError::Unavailable(reason) => Self::Retry(reason),
        }
    }
}

impl Sender {
    pub fn new(store: Store, identity: Identity, templates: Templates, mailer: Mailer, config: Config) -> Self {
        let from = config.from.parse().expect("validated at start");
        Self { store, identity, templates, mailer, from, config }
    }

    /// Sends until `stop`: every `send_interval`, or at once when `wake` is told of new mail.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, stop: CancellationToken) {
        tracing::info!(to = %self.mailer.describe(), "sending email");
        loop {
            let busy = match self.send_due().await {
                Ok(sent) => sent == self.config.batch_size as usize,
                Err(error) => {
                    tracing::warn!(error = %error, "could not read the messages to send");
                    false
                }
            };
            if let Ok(depth) = self.store.queued().await {
                metrics::gauge!("notifications_queue_depth").set(depth as f64);
            }
            if busy {
                // A full batch: there may be more due at once.
                if stop.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(self.config.send_interval) => {}
            }
        }
    }

    /// Sends one batch of due messages; returns how many were claimed.
    pub async fn send_due(&self) -> Result<usize, sqlx::Error> {
        let now = platform::time::now();
        let claimed = self.store.claim(now, now + LEASE, self.config.batch_size).await?;
        let count = claimed.len();
        let sends = claimed.into_iter().map(|delivery| {
            // The send continues the trace of the event that caused it: a checkout's email is
            // part of the checkout's trace.
            let (span, scope) = platform::telemetry::trace::start(delivery.traceparent.as_deref(), || {
                tracing::info_span!("send_email", otel.kind = "producer", "notifications.template" = %delivery.template)
            });
            scope.run(self.send_one(delivery).instrument(span))
        });
        for result in futures_util::future::join_all(sends).await {
            result?;
        }
        Ok(count)
    }

    async fn send_one(&self, delivery: Delivery) -> Result<(), sqlx::Error> {
        let started = std::time::Instant::now();
        let (recipient, result) = self.attempt(&delivery).await;
        let now = platform::time::now();
        let (outcome, label) = match &result {
            Ok(path) => {
                match path {
                    Some(path) => tracing::info!(template = %delivery.template, delivery_id = %delivery.id,
                        path = %path.display(), "email written to the mailbox"),
                    None => tracing::info!(template = %delivery.template, delivery_id = %delivery.id, "email sent"),
                }
                (Outcome::Sent, "sent")
            }
            Err(Failure::Retry(error)) if (delivery.attempts as u32) < self.config.max_attempts => {
                let wait = self.backoff(delivery.attempts as u32);
                tracing::warn!(template = %delivery.template, delivery_id = %delivery.id, error = %error,
                    attempt = delivery.attempts, retry_in_secs = wait.num_seconds(), "email not sent; will retry");
                (Outcome::Retry { error, next_attempt_at: now + wait }, "retried")
            }
            Err(Failure::Retry(error) | Failure::Permanent(error)) => {
                tracing::warn!(template = %delivery.template, delivery_id = %delivery.id, error = %error,
                    attempt = delivery.attempts, "email failed for good");
                (Outcome::Failed { error }, "failed")
            }
        };
        metrics::counter!("notifications_sent_total", "template" => delivery.template.clone(), "outcome" => label)
            .increment(1);
        metrics::histogram!("notifications_send_duration_seconds", "outcome" => label)
            .record(started.elapsed().as_secs_f64());
        self.store.record(delivery.id, recipient.as_deref(), &outcome, now).await
    }

    fn backoff(&self, attempts: u32) -> chrono::Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        let wait = self.config.retry_base.saturating_mul(factor).min(self.config.retry_max);
        chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1))
    }

    /// Makes and hands over one message; returns the address it was for (once known).
    async fn attempt(&self, delivery: &Delivery) -> (Option<String>, Result<Option<std::path::PathBuf>, Failure>) {
        let (contact, link) = match self.whom(delivery).await {
            Ok(found) => found,
            Err(failure) => return (None, Err(failure)),
        };
        let recipient = Some(contact.email.clone());
        let made = self.context(delivery, &contact, link.as_ref()).and_then(|context| {
            let rendered = self
                .templates
                .render(&delivery.template, &context)
                .map_err(|e| Failure::Permanent(format!("{e}: {}", platform::http::problem::error_chain(&e))))?;
            let to = mailer::mailbox(&contact.name, &contact.email).map_err(Failure::Permanent)?;
            // The delivery's id names the message, so that a message sent twice (a crash between
            // sending and recording) can be recognised as one.
            let message_id = format!("<{}@emporium>", delivery.id);
            mailer::compose(&self.from, to, rendered, message_id).map_err(Failure::Permanent)
        });
        let message = match made {
            Ok(message) => message,
            Err(failure) => return (recipient, Err(failure)),
        };
        let sent = self.mailer.send(message, self.config.smtp.timeout).await.map_err(|e| match e {
            SendError::Transient(e) => Failure::Retry(e),
            SendError::Permanent(e) => Failure::Permanent(e),
        });
        (recipient, sent)
    }

    /// The contact to write to, and the link when the message carries one.
    async fn whom(&self, delivery: &Delivery) -> Result<(crate::peers::Contact, Option<Link>), Failure> {
        match delivery.template.as_str() {
            "verify_email" | "reset_password" => {
                let request: LinkFacts = serde_json::from_value(delivery.data.0.clone())
                    .map_err(|e| Failure::Permanent(format!("the event names no request: {e}")))?;
                let link = self.identity.link(request.request_id).await?;
                let contact = link.contact.clone().ok_or_else(|| Failure::Retry("identity named no contact".into()))?;
                let expires_at = DateTime::from_timestamp(link.expires_at, 0).unwrap_or_else(platform::time::now);
                Ok((contact, Some(Link { token: link.token, expires_at })))
            }
            _ => Ok((self.identity.contact(delivery.user_id).await?, None)),
        }
    }

    fn context(
        &self,
        delivery: &Delivery,
        contact: &crate::peers::Contact,
        link: Option<&Link>,
    ) -> Result<Value, Failure> {
        let base = self.config.public_url.trim_end_matches('/');
        let data = &delivery.data.0;
        let mut context = json!({
            "shop": {"name": self.config.shop_name, "url": base},
            "user": {"name": contact.name, "email": contact.email},
        });
        let now = platform::time::now();
        match (delivery.template.as_str(), link) {
            ("verify_email", Some(link)) => {
                context["link"] = json!(format!("{base}/account/verify-email?token={}", link.token));
                context["expires_in_hours"] = json!(((link.expires_at - now).num_minutes() + 59).max(60) / 60);
            }
            ("reset_password", Some(link)) => {
                context["link"] = json!(format!("{base}/account/reset-password?token={}", link.token));
                context["expires_in_minutes"] = json!((link.expires_at - now).num_minutes().max(1));
            }
            (template, _) if template.starts_with("order_") => {
                let order: OrderFacts = serde_json::from_value(data.clone())
                    .map_err(|e| Failure::Permanent(format!("the event is not an order event: {e}")))?;
                let lines = order
                    .lines
                    .iter()
                    .map(|line| {
                        let total = line
                            .unit_price
                            .checked_mul(line.quantity)
                            .ok_or_else(|| Failure::Permanent(format!("the total of {} overflows", line.sku)))?;
                        Ok(json!({
                            "title": line.title,
                            "sku": line.sku,
                            "quantity": line.quantity,
                            "unit_price": line.unit_price.for_reading(),
                            "line_total": total.for_reading(),
                        }))
                    })
                    .collect::<Result<Vec<Value>, Failure>>()?;
                context["order"] = json!({
                    "id": order.order_id,
                    "number": order.number,
                    "url": format!("{base}/orders/{}", order.order_id),
                    "total": order.total.map(Money::for_reading),
                    "lines": lines,
                    "payment_reference": order.payment_reference,
                    "reason": order.reason,
                    "carrier": order.carrier,
                    "tracking_number": order.tracking_number,
                    "refunded": order.refunded.filter(|r| r.amount > 0).map(Money::for_reading),
                });
            }
            ("welcome", _) => {}
            (template, _) => return Err(Failure::Permanent(format!("no message is made with {template}"))),
        }
        Ok(context)
    }
}

struct Link {
    token: String,
    expires_at: DateTime<Utc>,
}

/// What a link event names (`user.email_verification_requested`, `user.password_reset_requested`).
#[derive(Deserialize)]
struct LinkFacts {
    request_id: Uuid,
}

/// What the order events carry that a message shows; each event carries some of it.
#[derive(Deserialize)]
struct OrderFacts {
    order_id: Uuid,
    #[serde(default)]
    number: String,
    #[serde(default)]
    lines: Vec<OrderLine>,
    total: Option<Money>,
    payment_reference: Option<String>,
    reason: Option<String>,
    carrier: Option<String>,
    tracking_number: Option<String>,
    refunded: Option<Money>,
}
