//! The progress of a saga, as recorded: which kind, at which step, what it will buy, and who
//! holds it. The steps themselves are run by `crate::saga`.
//!
//! A checkout begins at `reserving` (its key, plan and saga are recorded together) and goes
//! `reserving → charging → committing → emptying → done`, or after a decline
//! `charging → releasing → failed`; out of stock ends in `rejected`, as does an empty cart,
//! whose saga is recorded already finished. Before the order exists an interrupted checkout is
//! undone: `abandoning → abandoned`. (`started` is only found in sagas recorded by earlier
//! versions, which read the cart after claiming the key.) A cancellation goes
//! `refunding → returning → done`.

use chrono::{DateTime, Utc};
use platform::money::Currency;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Address, Line, Totals};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Checkout,
    Cancel,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checkout => "checkout",
            Self::Cancel => "cancel",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Checkout, Self::Cancel].into_iter().find(|k| k.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Started,
    Reserving,
    Abandoning,
    Charging,
    Committing,
    Emptying,
    Releasing,
    Refunding,
    Returning,
    Done,
    Failed,
    Rejected,
    Abandoned,
}

impl Step {
    const ALL: [Step; 13] = [
        Step::Started,
        Step::Reserving,
        Step::Abandoning,
        Step::Charging,
        Step::Committing,
        Step::Emptying,
        Step::Releasing,
        Step::Refunding,
        Step::Returning,
        Step::Done,
        Step::Failed,
        Step::Rejected,
        Step::Abandoned,
    ];

    /// Steps a saga can be resumed at: all but the final ones.
    pub fn resumable() -> impl Iterator<Item = Step> {
        Self::ALL.into_iter().filter(|step| !Self::FINAL.contains(step))
    }

    /// Steps after which a saga has nothing left to do.
    pub const FINAL: [Step; 4] = [Step::Done, Step::Failed, Step::Rejected, Step::Abandoned];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Reserving => "reserving",
            Self::Abandoning => "abandoning",
            Self::Charging => "charging",
            Self::Committing => "committing",
            Self::Emptying => "emptying",
            Self::Releasing => "releasing",
            Self::Refunding => "refunding",
            Self::Returning => "returning",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Abandoned => "abandoned",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// What a checkout will buy, fixed from the cart before anything is reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub cart_id: String,
    pub currency: Currency,
    pub lines: Vec<Line>,
    pub totals: Totals,
    pub shipping_address: Address,
    pub payment_method: String,
}

/// One saga of an order (at most one of each kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saga {
    pub order_id: Uuid,
    pub kind: Kind,
    pub step: Step,
    pub user_id: Uuid,
    /// The checkout's idempotency key, whose answer the saga records once it is known.
    pub idempotency_key: Option<String>,
    /// A checkout's plan; a cancellation has none.
    pub plan: Option<Plan>,
    /// Failed attempts at the current step, in a row.
    pub attempts: i32,
    /// Until then, the process that holds it is at work on it; afterwards any may take it over.
    pub lease_until: DateTime<Utc>,
    /// The trace context of the request that started it, for the events of its steps.
    pub traceparent: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_kinds_read_back_as_written() {
        for step in Step::ALL {
            assert_eq!(Step::parse(step.as_str()), Some(step));
        }
        for kind in [Kind::Checkout, Kind::Cancel] {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
    }
}
