//! The `Order` aggregate: what was bought, for how much, where it goes, how it was paid and
//! shipped, and the state machine of API.md as methods. Each transition checks that the state
//! machine allows it, stamps the history and returns the events it causes; committing the
//! change together with those events is the caller's (one transaction, via the store).

use chrono::{DateTime, Utc};
use events::{CloudEvent, payloads};
use platform::money::{Currency, Money};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Address, Plan, Totals};

/// An order's status. The transitions in [`Status::can_become`] are the whole state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
// Named for the merged document, where other services have statuses of their own.
#[schema(as = OrderStatus)]
pub enum Status {
    PendingPayment,
    Paid,
    PaymentFailed,
    Shipped,
    Delivered,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::PendingPayment,
        Status::Paid,
        Status::PaymentFailed,
        Status::Shipped,
        Status::Delivered,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::PaymentFailed => "payment_failed",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// `pending_payment → paid → shipped → delivered`, `pending_payment → payment_failed`,
    /// `paid → cancelled`; nothing else.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (PendingPayment, Paid)
                | (PendingPayment, PaymentFailed)
                | (Paid, Shipped)
                | (Shipped, Delivered)
                | (Paid, Cancelled)
        )
    }
}

/// Where the order's money stands with the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
    Refunded,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 4] =
        [PaymentStatus::Pending, PaymentStatus::Succeeded, PaymentStatus::Failed, PaymentStatus::Refunded];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A move the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {} cannot become {}", from.as_str(), to.as_str())]
pub struct TransitionError {
    pub from: Status,
    pub to: Status,
}

/// A line as the order keeps it: what was bought, at the price of the moment (minor units of
/// the order's currency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub product_id: String,
    pub title: String,
    pub quantity: i64,
    pub unit_price: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub status: Status,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The provider that charges it (`sandbox`, `stripe`).
    pub provider: String,
    pub method: String,
    pub status: PaymentStatus,
    /// The provider's id of the charge, once there is one.
    pub reference: Option<String>,
    /// Why the provider declined the charge, in its words (`card_declined`, `insufficient_funds`).
    pub decline_code: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfilment {
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Serialised only as the snapshot a checkout's answer keeps (`CheckoutOutcome`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: Uuid,
    /// Human-readable, for the customer and support (`EM-100001`).
    pub number: String,
    pub user_id: Uuid,
    pub status: Status,
    pub currency: Currency,
    pub lines: Vec<Line>,
    /// `total = subtotal + shipping + tax`.
    pub totals: Totals,
    pub shipping_address: Address,
    pub payment: Payment,
    pub fulfilment: Fulfilment,
    /// Every status the order had, oldest first.
    pub history: Vec<HistoryEntry>,
    /// As read from the store: a change is saved only if nobody saved another meanwhile.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An event an order's transition causes.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderEvent {
    Placed(payloads::OrderPlaced),
    Paid(payloads::OrderPaid),
    FulfilmentRequested(payloads::FulfilmentRequested),
    PaymentFailed(payloads::OrderPaymentFailed),
    Shipped(payloads::OrderShipped),
    Delivered(payloads::OrderDelivered),
    Cancelled(payloads::OrderCancelled),
}

impl OrderEvent {
    /// The envelope `service` publishes it in, in the trace of the request behind it.
    pub fn envelope(&self, service: &str, trace: Option<&str>) -> Result<CloudEvent, serde_json::Error> {
        let trace = trace.map(str::to_owned);
        match self {
            Self::Placed(p) => CloudEvent::new(service, p, trace),
            Self::Paid(p) => CloudEvent::new(service, p, trace),
            Self::FulfilmentRequested(p) => CloudEvent::new(service, p, trace),
            Self::PaymentFailed(p) => CloudEvent::new(service, p, trace),
            Self::Shipped(p) => CloudEvent::new(service, p, trace),
            Self::Delivered(p) => CloudEvent::new(service, p, trace),
            Self::Cancelled(p) => CloudEvent::new(service, p, trace),
        }
    }
}

impl Order {
    /// A new order for a checkout's plan, awaiting payment, and its `order.placed`.
    pub fn place(
        id: Uuid,
        number: String,
        user_id: Uuid,
        plan: &Plan,
        provider: &str,
        now: DateTime<Utc>,
    ) -> (Self, OrderEvent) {
        let order = Self {
            id,
            number,
            user_id,
            status: Status::PendingPayment,
            currency: plan.currency,
            lines: plan.lines.clone(),
            totals: plan.totals,
            shipping_address: plan.shipping_address.clone(),
            payment: Payment {
                provider: provider.to_owned(),
                method: plan.payment_method.clone(),
                status: PaymentStatus::Pending,
                reference: None,
                decline_code: None,
            },
            fulfilment: Fulfilment::default(),
            history: vec![HistoryEntry { status: Status::PendingPayment, at: now }],
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let placed = payloads::OrderPlaced {
            order_id: order.id,
            number: order.number.clone(),
            user_id: order.user_id,
            lines: order
                .lines
                .iter()
                .map(|l| payloads::OrderLine {
                    sku: l.sku.clone(),
                    title: l.title.clone(),
                    quantity: l.quantity,
                    unit_price: order.money(l.unit_price),
                })
                .collect(),
            total: order.money(order.totals.total),
            at: now,
        };
        (order, OrderEvent::Placed(placed))
    }

    pub fn money(&self, amount: i64) -> Money {
        Money::new(amount, self.currency)
    }

    /// The charge succeeded: `paid`, announced with `order.paid` and `fulfilment.requested`.
    pub fn pay(&mut self, reference: String) -> Result<[OrderEvent; 2], TransitionError> {
        let at = self.become_(Status::Paid)?;
        self.payment.status = PaymentStatus::Succeeded;
        self.payment.reference = Some(reference.clone());
        let paid = payloads::OrderPaid {
            order_id: self.id,
            number: self.number.clone(),
            user_id: self.user_id,
            total: self.money(self.totals.total),
            payment_reference: reference,
            at,
        };
        let fulfilment = payloads::FulfilmentRequested {
            order_id: self.id,
            number: self.number.clone(),
            lines: self
                .lines
                .iter()
                .map(|l| payloads::FulfilmentLine { sku: l.sku.clone(), quantity: l.quantity })
                .collect(),
            shipping_address: self.shipping_address.to_json(),
            at,
        };
        Ok([OrderEvent::Paid(paid), OrderEvent::FulfilmentRequested(fulfilment)])
    }

    /// The charge was declined (`code` says why): `payment_failed`, with `order.payment_failed`.
    pub fn decline(&mut self, reference: Option<String>, code: String) -> Result<OrderEvent, TransitionError> {
        let at = self.become_(Status::PaymentFailed)?;
        self.payment.status = PaymentStatus::Failed;
        self.payment.reference = reference;
        self.payment.decline_code = Some(code.clone());
        Ok(OrderEvent::PaymentFailed(payloads::OrderPaymentFailed {
            order_id: self.id,
            number: self.number.clone(),
            user_id: self.user_id,
            reason: code,
            at,
        }))
    }

    /// `cancelled` at once; the refund and the return of the stock follow, and only when they
    /// are done is the cancellation announced ([`Order::cancellation_finished`]).
    pub fn cancel(&mut self) -> Result<(), TransitionError> {
        self.become_(Status::Cancelled).map(drop)
    }

    /// The provider refunded the charge.
    pub fn refunded(&mut self) {
        self.payment.status = PaymentStatus::Refunded;
        self.updated_at = platform::time::now().max(self.updated_at);
    }

    /// A cancelled order's money and stock are back: `order.cancelled`.
    pub fn cancellation_finished(&self) -> OrderEvent {
        OrderEvent::Cancelled(payloads::OrderCancelled {
            order_id: self.id,
            number: self.number.clone(),
            user_id: self.user_id,
            refunded: self.money(self.totals.total),
            at: self.updated_at,
        })
    }

    pub fn ship(&mut self, carrier: String, tracking_number: String) -> Result<OrderEvent, TransitionError> {
        let at = self.become_(Status::Shipped)?;
        self.fulfilment.carrier = Some(carrier.clone());
        self.fulfilment.tracking_number = Some(tracking_number.clone());
        self.fulfilment.shipped_at = Some(at);
        Ok(OrderEvent::Shipped(payloads::OrderShipped {
            order_id: self.id,
            number: self.number.clone(),
            user_id: self.user_id,
            carrier,
            tracking_number,
            at,
        }))
    }

    pub fn deliver(&mut self) -> Result<OrderEvent, TransitionError> {
        let at = self.become_(Status::Delivered)?;
        self.fulfilment.delivered_at = Some(at);
        Ok(OrderEvent::Delivered(payloads::OrderDelivered {
            order_id: self.id,
            number: self.number.clone(),
            user_id: self.user_id,
            at,
        }))
    }

    /// Moves to `to` if the state machine allows it, stamping the history; the time of the move.
    fn become_(&mut self, to: Status) -> Result<DateTime<Utc>, TransitionError> {
        if !self.status.can_become(to) {
            return Err(TransitionError { from: self.status, to });
        }
        let now = platform::time::now().max(self.updated_at);
        self.status = to;
        self.history.push(HistoryEntry { status: to, at: now });
        self.updated_at = now;
        Ok(now)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::Totals;

    #[test]
    fn exactly_the_documented_transitions_exist() {
        use Status::*;
        let allowed: Vec<(Status, Status)> = Status::ALL
            .into_iter()
            .flat_map(|from| Status::ALL.into_iter().map(move |to| (from, to)))
            .filter(|(from, to)| from.can_become(*to))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (PendingPayment, Paid),
                (PendingPayment, PaymentFailed),
                (Paid, Shipped),
                (Paid, Cancelled),
                (Shipped, Delivered)
            ]
        );
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
    }

    proptest! {
        /// Whatever sequence of moves is tried, only documented transitions are taken, and
        /// final statuses stay final.
        #[test]
        fn random_sequences_never_leave_the_state_machine(moves in proptest::collection::vec(0usize..6, 0..40)) {
            let mut status = Status::PendingPayment;
            for m in moves {
                let to = Status::ALL[m];
                if status.can_become(to) {
                    prop_assert!(!matches!(status, Status::Delivered | Status::Cancelled | Status::PaymentFailed));
                    status = to;
                }
            }
        }
    }

    fn order() -> Order {
        let plan = Plan {
            cart_id: "me".to_owned(),
            currency: Currency::parse("EUR").unwrap(),
            lines: vec![Line {
                sku: "S-1".to_owned(),
                product_id: "p-1".to_owned(),
                title: "Shoe".to_owned(),
                quantity: 2,
                unit_price: 1_000,
            }],
            totals: Totals { subtotal: 2_000, shipping: 0, tax: 0, total: 2_000 },
            shipping_address: Address {
                name: "Ada".to_owned(),
                line1: "1 Main St".to_owned(),
                line2: None,
                city: "Berlin".to_owned(),
                postal_code: "10115".to_owned(),
                country: "DE".to_owned(),
            },
            payment_method: "pm_card_visa".to_owned(),
        };
        let (order, placed) =
            Order::place(Uuid::now_v7(), "EM-1".to_owned(), Uuid::now_v7(), &plan, "sandbox", platform::time::now());
        let OrderEvent::Placed(placed) = placed else { panic!("placing announces order.placed") };
        assert_eq!((placed.total.amount, placed.lines.len()), (2_000, 1));
        order
    }

    #[test]
    fn each_transition_changes_the_order_and_names_its_events() {
        let mut order = order();
        let [paid, fulfilment] = order.pay("ch_1".to_owned()).unwrap();
        assert!(matches!(paid, OrderEvent::Paid(ref e) if e.payment_reference == "ch_1" && e.total.amount == 2_000));
        assert!(matches!(fulfilment, OrderEvent::FulfilmentRequested(ref e) if e.lines[0].quantity == 2));
        assert_eq!((order.status, order.payment.status), (Status::Paid, PaymentStatus::Succeeded));
        let shipped = order.ship("DHL".to_owned(), "JD1".to_owned()).unwrap();
        assert!(matches!(shipped, OrderEvent::Shipped(ref e) if e.tracking_number == "JD1"));
        assert_eq!(order.fulfilment.shipped_at, Some(order.updated_at));
        assert!(matches!(order.deliver().unwrap(), OrderEvent::Delivered(_)));
        let statuses: Vec<Status> = order.history.iter().map(|h| h.status).collect();
        assert_eq!(statuses, [Status::PendingPayment, Status::Paid, Status::Shipped, Status::Delivered]);
        assert_eq!(order.cancel(), Err(TransitionError { from: Status::Delivered, to: Status::Cancelled }));

        let mut declined = self::order();
        let failed = declined.decline(None, "card_declined".to_owned()).unwrap();
        assert!(matches!(failed, OrderEvent::PaymentFailed(ref e) if e.reason == "card_declined"));
        assert_eq!(declined.payment.status, PaymentStatus::Failed);
        assert!(declined.pay("late".to_owned()).is_err(), "a declined order stays declined");

        let mut cancelled = self::order();
        cancelled.pay("ch_2".to_owned()).unwrap();
        cancelled.cancel().unwrap();
        cancelled.refunded();
        assert_eq!((cancelled.status, cancelled.payment.status), (Status::Cancelled, PaymentStatus::Refunded));
        assert!(
            matches!(cancelled.cancellation_finished(), OrderEvent::Cancelled(ref e) if e.refunded.amount == 2_000)
        );
    }
}
