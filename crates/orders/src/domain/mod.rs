//! What orders are, independent of HTTP and SQL: the `Order` aggregate and its state machine,
//! addresses, their text and pricing, the progress of a saga, and what became of a checkout.

mod address;
mod order;
mod outcome;
mod pricing;
mod saga;
pub mod text;

pub use address::Address;
pub use order::{Fulfilment, HistoryEntry, Line, Order, OrderEvent, Payment, PaymentStatus, Status, TransitionError};
pub use outcome::{Answer, CheckoutOutcome, Shortage, ShortageReason};
pub use pricing::{Pricing, Totals};
pub use saga::{Kind, Plan, Saga, Step};
