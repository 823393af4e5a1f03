//! Events between services: the CloudEvents 1.0 envelope and the typed payloads of every event
//! type; the transactional outbox and its relay; the inbox; and the bus (RabbitMQ, or the
//! embedded one) with retries, parking and a replayable log.
//!
//! A service never publishes directly: it writes the event into its own `event_outbox` table in
//! the transaction that makes the change, and a relay delivers it to the bus afterwards. That is
//! what makes "published if and only if committed" hold across crashes. Consumers apply each
//! event once by recording its id with the effect (`inbox`).
#![forbid(unsafe_code)]

pub mod bus;
mod envelope;
pub mod inbox;
mod observe;
pub mod outbox;
pub mod payloads;
pub mod relay;
pub mod revocations;

pub use bus::{Bus, BusConfig, BusError, HandlerError, Parked, Subscription, TailFrom};

/// What a service needs to take part in events: the bus, and how its outbox is relayed.
#[derive(Clone)]
pub struct Events {
    pub bus: Bus,
    pub relay: RelayConfig,
}

impl Events {
    /// The relay of `service`'s outbox in `db`.
    pub fn relay(&self, service: &'static str, db: platform::db::Db) -> Relay {
        Relay::new(service, db, self.bus.clone(), self.relay.clone())
    }

    /// Consuming `subscription` as a service's background task: until its token is cancelled.
    pub fn consumer(
        &self,
        subscription: Subscription,
    ) -> impl FnOnce(tokio_util::sync::CancellationToken) -> futures_util::future::BoxFuture<'static, ()> + Send + 'static
    {
        // Counters an alert watches start at zero: `increase()` needs a series before the first.
        for event_type in subscription.types.iter().filter(|t| !t.contains(['*', '#'])) {
            let labels = [("consumer", subscription.consumer.clone()), ("type", event_type.clone())];
            metrics::counter!("events_dead_lettered_total", &labels).absolute(0);
            metrics::counter!("events_retried_total", &labels).absolute(0);
        }
        let bus = self.bus.clone();
        move |stop| Box::pin(async move { bus.consume(subscription, stop).await })
    }
}
pub use envelope::{CloudEvent, EventPayload};
pub use outbox::{enqueue, enqueue_all, migrate, open_database};
pub use relay::{Relay, RelayConfig};
