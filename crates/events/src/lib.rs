//! Events between services: the CloudEvents 1.0 envelope, the typed payloads of every event
//! type, and the transactional outbox through which services publish them.
//!
//! A service never publishes directly: it writes the event into its own `event_outbox` table in
//! the transaction that makes the change, and a relay delivers it to the bus afterwards. That is
//! what makes "published if and only if committed" hold across crashes.
#![forbid(unsafe_code)]

mod envelope;
pub mod outbox;
pub mod payloads;

pub use envelope::{CloudEvent, EventPayload};
pub use outbox::{enqueue, migrate};
