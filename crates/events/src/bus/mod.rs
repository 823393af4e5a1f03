//! The event bus: publishing with confirmation, and consuming with retries, parking and replay.
//!
//! Two implementations with one semantics, chosen by URL scheme: RabbitMQ (`amqp://…`) for the
//! distributed deployment, and an embedded bus (`memory:`) for the one-process shop, whose log
//! lives in SQLite under the data directory so that nothing accepted is lost in a crash.
//!
//! Semantics both keep:
//! - `publish` returns only once every event is durably accepted (publisher confirms).
//! - A consumer is a named subscription to event types (AMQP topic patterns: `order.*`,
//!   `#`). Deliveries are at-least-once; handlers make effects idempotent (see `inbox`).
//! - A failing event is retried after growing delays, without holding up other subjects; later
//!   events of its own subject wait behind it, so per-subject order holds. After `max_attempts`
//!   it is parked, listed by `dead_letters` and requeued by `replay_dead_letters`.
//! - Every event is kept in a replayable log (a RabbitMQ stream; the embedded log), read by `tail`.

mod embedded;
mod rabbit;

use std::{path::Path, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::CloudEvent;
pub use embedded::EmbeddedBus;
pub use rabbit::RabbitBus;

/// How to reach the bus and how consumers retry.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// `memory:` (embedded) or `amqp://user:pass@host:5672/vhost`.
    pub url: String,
    /// Prefix of every exchange, queue and stream name; lets deployments (or tests) share a broker.
    pub namespace: String,
    /// Deliveries a consumer holds unacknowledged.
    pub prefetch: u16,
    /// Events a consumer applies at once. Events of one subject always go to the same lane, in
    /// order; different subjects proceed side by side.
    pub concurrency: usize,
    /// Delay before each retry; the last one repeats.
    #[serde(deserialize_with = "durations")]
    pub retry_delays: Vec<Duration>,
    /// Attempts before an event is parked.
    pub max_attempts: u32,
    /// How long a handler may take before its attempt counts as failed.
    #[serde(with = "humantime_serde")]
    pub handler_timeout: Duration,
    /// How long the replayable log keeps events.
    #[serde(with = "humantime_serde")]
    pub log_retention: Duration,
}

/// A list of human-readable durations (`["1s", "5s", "30s"]`).
fn durations<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    struct Human(#[serde(with = "humantime_serde")] Duration);
    Ok(Vec::<Human>::deserialize(deserializer)?.into_iter().map(|Human(d)| d).collect())
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: "memory:".to_owned(),
            namespace: "emporium".to_owned(),
            prefetch: 64,
            concurrency: 8,
            retry_delays: [1, 5, 30, 120, 600].map(Duration::from_secs).to_vec(),
            max_attempts: 8,
            handler_timeout: Duration::from_secs(30),
            log_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl BusConfig {
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if !(self.url == "memory:" || self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            problems.push("events.url must be memory: or an amqp:// URL".to_owned());
        }
        if self.namespace.is_empty() || !self.namespace.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            problems.push("events.namespace must be letters, digits, '-', '_' or '.'".to_owned());
        }
        if self.retry_delays.is_empty() || self.retry_delays.iter().any(Duration::is_zero) {
            problems.push("events.retry_delays must list positive delays".to_owned());
        }
        if self.max_attempts == 0 || self.prefetch == 0 || self.concurrency == 0 {
            problems.push("events.max_attempts, events.prefetch and events.concurrency must be positive".to_owned());
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// The delay before attempt `attempt + 1`, after `attempt` failures.
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let index = (failures.saturating_sub(1) as usize).min(self.retry_delays.len().saturating_sub(1));
        self.retry_delays.get(index).copied().unwrap_or(Duration::from_secs(1))
    }
}

/// Why a handler did not apply an event. It will be retried.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    pub fn new(error: impl std::fmt::Display) -> Self {
        Self(error.to_string())
    }
}

/// Applies events, in order, all or none: a failure means none of them took effect. Called again
/// for the same events after a failure or a redelivery, so effects must be idempotent (record
/// the event ids with the effect: `inbox::begin` / `inbox::begin_batch`).
pub type Handler = Arc<dyn Fn(Vec<CloudEvent>) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// A named consumer of some event types.
#[derive(Clone)]
pub struct Subscription {
    /// Stable and unique per consuming purpose (`catalog-search`); it names the queue.
    pub consumer: String,
    /// AMQP topic patterns over event types: `order.paid`, `order.*`, `#`.
    pub types: Vec<String>,
    /// Most events handed to the handler at once. Only first deliveries of subjects with nothing
    /// waiting are batched; a batch that fails is applied again event by event, so that only
    /// the event at fault is retried.
    pub max_batch: usize,
    pub handler: Handler,
    /// For a consumer that exists per replica (a read model in each process): its queues are
    /// deleted by the broker after going unused this long, so replicas that are gone for good
    /// leave nothing behind. `None` for a service's shared, permanent consumer.
    pub expires_after: Option<Duration>,
}

impl Subscription {
    /// A consumer that applies one event at a time.
    pub fn new<F, Fut>(consumer: &str, types: &[&str], handler: F) -> Self
    where
        F: Fn(CloudEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        Self::batched(consumer, types, 1, move |events: Vec<CloudEvent>| {
            let handler = handler.clone();
            async move {
                for event in events {
                    handler(event).await?;
                }
                Ok(())
            }
        })
    }

    /// A consumer that applies up to `max_batch` events at once (typically in one transaction).
    pub fn batched<F, Fut>(consumer: &str, types: &[&str], max_batch: usize, handler: F) -> Self
    where
        F: Fn(Vec<CloudEvent>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let name: Arc<str> = Arc::from(consumer);
        Self {
            consumer: consumer.to_owned(),
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            max_batch: max_batch.max(1),
            handler: Arc::new(move |events: Vec<CloudEvent>| {
                let observed = crate::observe::Handling::start(&name, &events);
                let applying = handler(events);
                Box::pin(observed.finish(applying))
            }),
            expires_after: None,
        }
    }

    /// Makes this a per-replica consumer whose queues expire after `idle` without a consumer.
    pub fn expiring(mut self, idle: Duration) -> Self {
        self.expires_after = Some(idle);
        self
    }

    pub fn wants(&self, event_type: &str) -> bool {
        self.types.iter().any(|pattern| topic_matches(pattern, event_type))
    }
}

/// Where in the log a tail starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailFrom {
    /// The oldest event kept.
    Start,
    /// Events from now on.
    Now,
    /// A position in the log (the stream offset on RabbitMQ, the log sequence number embedded).
    Offset(u64),
    /// Events appended at or after this time.
    Since(chrono::DateTime<chrono::Utc>),
}

/// An event parked after its last failed attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Parked {
    pub event: CloudEvent,
    pub attempts: u32,
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the event broker is unavailable: {0}")]
    Unavailable(String),
    #[error("the broker refused an event")]
    Nacked,
    #[error("event bus storage failed")]
    Storage(#[from] sqlx::Error),
    #[error("{0}")]
    Invalid(String),
}

/// An event ready to publish: its envelope already serialised (as the outbox stores it).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: uuid::Uuid,
    pub event_type: String,
    pub subject: Option<String>,
    pub time: chrono::DateTime<chrono::Utc>,
    /// The CloudEvents JSON envelope.
    pub envelope: String,
}

impl Outgoing {
    pub fn encode(event: &CloudEvent) -> Result<Self, BusError> {
        Ok(Self {
            id: event.id,
            event_type: event.event_type.clone(),
            subject: event.subject.clone(),
            time: event.time,
            envelope: serde_json::to_string(event).map_err(|e| BusError::Invalid(e.to_string()))?,
        })
    }
}

/// The bus a process publishes to and consumes from.
#[derive(Clone)]
pub enum Bus {
    Rabbit(Arc<RabbitBus>),
    Embedded(Arc<EmbeddedBus>),
}

impl Bus {
    /// Connects to the bus `config.url` names. The embedded bus keeps its log in `data_dir`.
    pub async fn connect(config: &BusConfig, data_dir: &Path) -> Result<Self, BusError> {
        config.validate().map_err(BusError::Invalid)?;
        if config.url == "memory:" {
            Ok(Self::Embedded(Arc::new(EmbeddedBus::open(config.clone(), data_dir).await?)))
        } else {
            Ok(Self::Rabbit(Arc::new(RabbitBus::new(config.clone()))))
        }
    }

    /// Publishes `events` in order; returns once every one is durably accepted.
    pub async fn publish(&self, events: &[CloudEvent]) -> Result<(), BusError> {
        let encoded = events.iter().map(Outgoing::encode).collect::<Result<Vec<_>, _>>()?;
        self.publish_encoded(&encoded).await
    }

    /// [`Bus::publish`] for envelopes already serialised: the relay sends what the outbox holds.
    pub async fn publish_encoded(&self, events: &[Outgoing]) -> Result<(), BusError> {
        match self {
            Self::Rabbit(bus) => bus.publish(events).await,
            Self::Embedded(bus) => bus.publish(events).await,
        }
    }

    /// Makes sure `subscription`'s queue exists, so that events published from now on wait for
    /// it. A service prepares its subscriptions while it starts, before any relay publishes:
    /// RabbitMQ routes an event only to the queues that exist when it is published.
    pub async fn prepare(&self, subscription: &Subscription) -> Result<(), BusError> {
        match self {
            Self::Rabbit(bus) => bus.prepare(subscription).await,
            Self::Embedded(bus) => bus.register(&subscription.consumer).await,
        }
    }

    /// Consumes for `subscription` until `shutdown`, reconnecting when the broker goes away.
    pub async fn consume(&self, subscription: Subscription, shutdown: CancellationToken) {
        match self {
            Self::Rabbit(bus) => bus.consume(subscription, shutdown).await,
            Self::Embedded(bus) => bus.consume(subscription, shutdown).await,
        }
    }

    /// Events parked for `consumer`.
    pub async fn dead_letters(&self, consumer: &str) -> Result<Vec<Parked>, BusError> {
        match self {
            Self::Rabbit(bus) => bus.dead_letters(consumer).await,
            Self::Embedded(bus) => bus.dead_letters(consumer).await,
        }
    }

    /// Gives every parked event of `consumer` a fresh set of attempts; returns how many.
    pub async fn replay_dead_letters(&self, consumer: &str) -> Result<usize, BusError> {
        match self {
            Self::Rabbit(bus) => bus.replay_dead_letters(consumer).await,
            Self::Embedded(bus) => bus.replay_dead_letters(consumer).await,
        }
    }

    /// Calls `each` for events of the log matching `pattern`, from `from`, until `shutdown` (or
    /// until `each` returns `false`).
    pub async fn tail(
        &self,
        from: TailFrom,
        pattern: &str,
        shutdown: CancellationToken,
        each: impl FnMut(CloudEvent) -> bool + Send,
    ) -> Result<(), BusError> {
        match self {
            Self::Rabbit(bus) => bus.tail(from, pattern, shutdown, each).await,
            Self::Embedded(bus) => bus.tail(from, pattern, shutdown, each).await,
        }
    }

    /// A round trip to the broker, for readiness checks.
    pub async fn ping(&self) -> Result<(), BusError> {
        match self {
            Self::Rabbit(bus) => bus.ping().await,
            Self::Embedded(bus) => bus.ping().await,
        }
    }

    /// The `broker` readiness check of a service that publishes or consumes.
    pub fn readiness(&self) -> impl Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static {
        let bus = self.clone();
        move || {
            let bus = bus.clone();
            Box::pin(async move { bus.ping().await.map_err(|_| "unreachable".to_owned()) })
        }
    }

    pub fn config(&self) -> &BusConfig {
        match self {
            Self::Rabbit(bus) => bus.config(),
            Self::Embedded(bus) => bus.config(),
        }
    }
}

/// AMQP topic matching: words separated by `.`, `*` matches one word, `#` zero or more.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    fn matches(pattern: &[&str], topic: &[&str]) -> bool {
        match (pattern.first(), topic.first()) {
            (None, None) => true,
            (Some(&"#"), _) => matches(&pattern[1..], topic) || (!topic.is_empty() && matches(pattern, &topic[1..])),
            (Some(&"*"), Some(_)) => matches(&pattern[1..], &topic[1..]),
            (Some(p), Some(t)) if p == t => matches(&pattern[1..], &topic[1..]),
            _ => false,
        }
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let topic: Vec<&str> = topic.split('.').collect();
    matches(&pattern, &topic)
}

/// Metrics every consumer records.
pub(crate) fn record_consumed(consumer: &str, event_type: &str, outcome: &'static str) {
    metrics::counter!(
        "events_consumed_total",
        "consumer" => consumer.to_owned(),
        "type" => event_type.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("order.paid", "order.paid"));
        assert!(topic_matches("order.*", "order.paid"));
        assert!(!topic_matches("order.*", "order.paid.late"));
        assert!(topic_matches("order.#", "order.paid.late"));
        assert!(topic_matches("order.#", "order"));
        assert!(topic_matches("#", "user.registered"));
        assert!(!topic_matches("order.*", "product.updated"));
        assert!(topic_matches("*.updated", "product.updated"));
    }

    #[test]
    fn retry_delays_grow_then_repeat() {
        let config =
            BusConfig { retry_delays: vec![Duration::from_secs(1), Duration::from_secs(5)], ..Default::default() };
        assert_eq!(config.retry_delay(1), Duration::from_secs(1));
        assert_eq!(config.retry_delay(2), Duration::from_secs(5));
        assert_eq!(config.retry_delay(9), Duration::from_secs(5));
    }
}
