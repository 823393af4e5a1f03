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
pub mod outbox;
pub mod payloads;
pub mod relay;

pub use bus::{Bus, BusConfig, BusError, HandlerError, Parked, Subscription, TailFrom};

/// What a service needs to take part in events: the bus, and how its outbox is relayed.
#[derive(Clone)]
pub struct Events {
    pub bus: Bus,
    pub relay: RelayConfig,
}
pub use envelope::{CloudEvent, EventPayload};
pub use outbox::{enqueue, enqueue_all, migrate};
pub use relay::{Relay, RelayConfig};
