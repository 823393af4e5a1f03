//! Every step and compensation of the checkout and cancellation sagas, with in-memory peers
//! (stock, carts, a payment provider) that can be taken down or made to refuse, and the real
//! store on both SQL backends. The end-to-end tests in `crates/emporium` run the same paths on
//! the real services.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::future::BoxFuture;
use platform::money::Currency;
use testkit::{TestDatabase, on_both_backends};
use uuid::Uuid;

use super::{Peers, STUCK_AFTER, Sagas, Settings};
use crate::{
    domain::{
        Address, CheckoutOutcome, Kind, Line, Order, PaymentStatus, Plan, Saga, Shortage, ShortageReason, Status, Step,
        Totals,
    },
    payments::{ChargeOutcome, ChargeRequest, PaymentError, Payments, RefundRequest},
    peers::{CartLine, Carts, CheckoutCart, Inventory, PeerError, Price, Reserved},
    store::{Claim, KeyState, NewKey, Store},
};

/// What the inventory knows of one order's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    Held,
    Committed,
    Released,
}

/// An order's hold, and the lines it holds.
type Holds = HashMap<Uuid, (Hold, Vec<(String, i64)>)>;

/// Stock with all-or-nothing holds per order, as the catalog keeps it.
#[derive(Default)]
struct MemoryInventory {
    available: Mutex<HashMap<String, i64>>,
    holds: Mutex<Holds>,
    down: AtomicBool,
}

impl MemoryInventory {
    fn with(stock: &[(&str, i64)]) -> Self {
        let inventory = Self::default();
        inventory.available.lock().unwrap().extend(stock.iter().map(|(sku, n)| ((*sku).to_owned(), *n)));
        inventory
    }

    fn available(&self, sku: &str) -> i64 {
        self.available.lock().unwrap()[sku]
    }

    fn hold(&self, order: Uuid) -> Option<Hold> {
        self.holds.lock().unwrap().get(&order).map(|(hold, _)| *hold)
    }

    fn check(&self) -> Result<(), PeerError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PeerError::Unavailable("catalog", "down".to_owned()));
        }
        Ok(())
    }
}

impl Inventory for MemoryInventory {
    fn reserve<'a>(
        &'a self,
        order_id: Uuid,
        lines: &'a [(String, i64)],
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<Reserved, PeerError>> {
        Box::pin(async move {
            self.check()?;
            let mut holds = self.holds.lock().unwrap();
            match holds.get(&order_id) {
                Some((Hold::Released, _)) => return Ok(Reserved::Released),
                Some(_) => return Ok(Reserved::Held),
                None => {}
            }
            let mut available = self.available.lock().unwrap();
            let shortages: Vec<Shortage> = lines
                .iter()
                .filter_map(|(sku, n)| {
                    let have = available.get(sku).copied();
                    match have {
                        None => Some(Shortage {
                            sku: sku.clone(),
                            requested: *n,
                            available: 0,
                            reason: ShortageReason::UnknownSku,
                        }),
                        Some(have) if have < *n => Some(Shortage {
                            sku: sku.clone(),
                            requested: *n,
                            available: have,
                            reason: ShortageReason::OutOfStock,
                        }),
                        Some(_) => None,
                    }
                })
                .collect();
            if !shortages.is_empty() {
                return Ok(Reserved::Short(shortages));
            }
            for (sku, n) in lines {
                *available.get_mut(sku).unwrap() -= n;
            }
            holds.insert(order_id, (Hold::Held, lines.to_vec()));
            Ok(Reserved::Held)
        })
    }

    fn commit(&self, order_id: Uuid) -> BoxFuture<'_, Result<(), PeerError>> {
        Box::pin(async move {
            self.check()?;
            let mut holds = self.holds.lock().unwrap();
            match holds.get_mut(&order_id) {
                Some((hold @ (Hold::Held | Hold::Committed), _)) => {
                    *hold = Hold::Committed;
                    Ok(())
                }
                _ => Err(PeerError::Refused("no hold for this order".to_owned())),
            }
        })
    }

    fn release(&self, order_id: Uuid) -> BoxFuture<'_, Result<(), PeerError>> {
        Box::pin(async move {
            self.check()?;
            let mut holds = self.holds.lock().unwrap();
            let entry = holds.entry(order_id).or_insert((Hold::Released, Vec::new()));
            if entry.0 != Hold::Released {
                let mut available = self.available.lock().unwrap();
                for (sku, n) in &entry.1 {
                    *available.get_mut(sku).unwrap() += n;
                }
                entry.0 = Hold::Released;
            }
            Ok(())
        })
    }
}

/// Carts by (user, cart id), emptied once per order.
#[derive(Default)]
struct MemoryCarts {
    carts: Mutex<HashMap<(Uuid, String), Vec<CartLine>>>,
    emptied_by: Mutex<Vec<Uuid>>,
    down: AtomicBool,
}

impl MemoryCarts {
    fn put(&self, user: Uuid, lines: &[(&str, i64, i64)]) {
        let lines = lines
            .iter()
            .map(|(sku, quantity, price)| CartLine {
                sku: (*sku).to_owned(),
                product_id: format!("product-{sku}"),
                title: format!("Thing {sku}"),
                quantity: *quantity,
                unit_price: Some(Price { amount: *price, currency: "EUR".to_owned() }),
            })
            .collect();
        self.carts.lock().unwrap().insert((user, "me".to_owned()), lines);
    }

    fn lines(&self, user: Uuid) -> usize {
        self.carts.lock().unwrap().get(&(user, "me".to_owned())).map_or(0, Vec::len)
    }
}

impl Carts for MemoryCarts {
    fn cart<'a>(&'a self, user: Uuid, cart_id: &'a str) -> BoxFuture<'a, Result<CheckoutCart, PeerError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(PeerError::Unavailable("cart", "down".to_owned()));
            }
            let carts = self.carts.lock().unwrap();
            let lines = carts.get(&(user, cart_id.to_owned())).cloned().ok_or(PeerError::NotFound)?;
            Ok(CheckoutCart { currency: "EUR".to_owned(), lines })
        })
    }

    fn complete<'a>(
        &'a self,
        user: Uuid,
        cart_id: &'a str,
        order_id: Uuid,
        ordered: &'a [(String, i64)],
    ) -> BoxFuture<'a, Result<(), PeerError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(PeerError::Unavailable("cart", "down".to_owned()));
            }
            let mut emptied = self.emptied_by.lock().unwrap();
            if !emptied.contains(&order_id) {
                emptied.push(order_id);
                if let Some(lines) = self.carts.lock().unwrap().get_mut(&(user, cart_id.to_owned())) {
                    lines.retain(|l| !ordered.iter().any(|(sku, quantity)| *sku == l.sku && *quantity == l.quantity));
                }
            }
            Ok(())
        })
    }
}

/// A processor: charges and refunds kept by idempotency key, so a repeated call acts once.
#[derive(Default)]
struct MemoryPayments {
    charges: Mutex<HashMap<String, ChargeOutcome>>,
    refunds: Mutex<HashMap<String, i64>>,
    charge_calls: AtomicUsize,
    /// How long each charge takes, in ms.
    charge_delay_ms: AtomicU64,
    down: AtomicBool,
    refuse_charges: AtomicBool,
    refuse_refunds: AtomicBool,
}

impl MemoryPayments {
    fn charged(&self) -> usize {
        self.charges.lock().unwrap().values().filter(|c| matches!(c, ChargeOutcome::Succeeded { .. })).count()
    }

    fn refunded(&self) -> i64 {
        self.refunds.lock().unwrap().values().sum()
    }
}

impl Payments for MemoryPayments {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn accepts(&self, payment_method: &str) -> bool {
        payment_method.starts_with("pm_")
    }

    fn charge<'a>(&'a self, request: &'a ChargeRequest) -> BoxFuture<'a, Result<ChargeOutcome, PaymentError>> {
        Box::pin(async move {
            self.charge_calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(self.charge_delay_ms.load(Ordering::SeqCst))).await;
            if self.down.load(Ordering::SeqCst) {
                return Err(PaymentError::Unavailable("processor down".to_owned()));
            }
            if self.refuse_charges.load(Ordering::SeqCst) {
                return Err(PaymentError::Refused("no such payment method".to_owned()));
            }
            let mut charges = self.charges.lock().unwrap();
            let outcome = charges.entry(request.idempotency_key.clone()).or_insert_with(|| {
                if request.payment_method == "pm_card_chargeDeclined" {
                    ChargeOutcome::Declined {
                        reference: Some(format!("ch_{}", request.order_id)),
                        code: "card_declined".to_owned(),
                    }
                } else {
                    ChargeOutcome::Succeeded { reference: format!("ch_{}", request.order_id) }
                }
            });
            Ok(outcome.clone())
        })
    }

    fn refund<'a>(&'a self, request: &'a RefundRequest) -> BoxFuture<'a, Result<String, PaymentError>> {
        Box::pin(async move {
            if self.refuse_refunds.load(Ordering::SeqCst) {
                return Err(PaymentError::Refused("refunds are closed".to_owned()));
            }
            self.refunds.lock().unwrap().insert(request.idempotency_key.clone(), request.amount.amount);
            Ok(format!("re_{}", request.reference))
        })
    }
}

struct Fixture {
    store: Store,
    sagas: Sagas,
    inventory: Arc<MemoryInventory>,
    carts: Arc<MemoryCarts>,
    payments: Arc<MemoryPayments>,
    user: Uuid,
    _db: TestDatabase,
}

impl Fixture {
    async fn new(db: TestDatabase) -> Self {
        Self::with_lease(db, Duration::from_secs(30)).await
    }

    async fn with_lease(db: TestDatabase, lease: Duration) -> Self {
        let store = Store::open(&db.url, &Default::default()).await.expect("the store opens");
        let inventory = Arc::new(MemoryInventory::with(&[("A", 5), ("B", 5)]));
        let carts = Arc::new(MemoryCarts::default());
        let payments = Arc::new(MemoryPayments::default());
        let peers = Peers { inventory: inventory.clone(), carts: carts.clone(), payments: payments.clone() };
        let settings = Settings {
            number_prefix: "T-".to_owned(),
            lease,
            reservation_ttl: Duration::from_secs(60),
            crash_after: None,
        };
        let user = Uuid::now_v7();
        carts.put(user, &[("A", 2, 1_000), ("B", 1, 500)]);
        Self { sagas: Sagas::new(store.clone(), peers, settings), store, inventory, carts, payments, user, _db: db }
    }

    fn plan(&self, lines: &[(&str, i64)], payment_method: &str) -> Plan {
        let lines: Vec<Line> = lines
            .iter()
            .map(|(sku, quantity)| Line {
                sku: (*sku).to_owned(),
                product_id: format!("product-{sku}"),
                title: format!("Thing {sku}"),
                quantity: *quantity,
                unit_price: 1_000,
            })
            .collect();
        let subtotal = lines.iter().map(|l| l.unit_price * l.quantity).sum();
        Plan {
            cart_id: "me".to_owned(),
            currency: Currency::parse("EUR").unwrap(),
            lines,
            totals: Totals { subtotal, shipping: 0, tax: 0, total: subtotal },
            shipping_address: Address {
                name: "Ada Lovelace".to_owned(),
                line1: "1 Main St".to_owned(),
                line2: None,
                city: "Berlin".to_owned(),
                postal_code: "10115".to_owned(),
                country: "DE".to_owned(),
            },
            payment_method: payment_method.to_owned(),
        }
    }

    /// A checkout claimed under a fresh key, as `POST /orders` records it.
    async fn claimed(&self, plan: Plan) -> (Saga, String) {
        let key = Uuid::new_v4().to_string();
        let saga = self.sagas.checkout(self.user, &key, Step::Reserving, Some(plan), None);
        let claim = NewKey { user: self.user, key: &key, hash: b"hash", outcome: None };
        assert_eq!(self.store.claim_key(&claim, &saga).await.unwrap(), Claim::Claimed);
        (saga, key)
    }

    async fn saga(&self, order_id: Uuid, kind: Kind) -> Saga {
        self.store.saga(order_id, kind).await.unwrap().expect("the saga is recorded")
    }

    async fn order(&self, order_id: Uuid) -> Order {
        self.store.order(order_id).await.unwrap().expect("the order exists")
    }

    async fn key(&self, key: &str) -> KeyState {
        self.store.key(self.user, key, b"hash").await.unwrap()
    }

    /// Resumes a saga as the sweeper does once its lease ran out, with the attempt counted.
    async fn resume(&self, order_id: Uuid, kind: Kind) -> Option<CheckoutOutcome> {
        let later = platform::time::now() + chrono::Duration::hours(1);
        let saga = self.store.claim(order_id, kind, later, later + chrono::Duration::minutes(1)).await.unwrap();
        self.sagas.drive(saga.expect("the saga is due"), true).await
    }

    async fn events(&self, order_id: Uuid) -> Vec<String> {
        self.store.outbox_types(&order_id.to_string()).await.unwrap()
    }
}

on_both_backends!(
    a_paid_checkout_holds_charges_sells_and_empties,
    a_decline_releases_the_stock_and_keeps_the_cart,
    out_of_stock_holds_nothing_and_names_the_short_lines,
    a_reservation_interrupted_before_the_order_is_undone,
    a_checkout_recorded_before_its_cart_was_read_is_undone,
    a_charge_the_provider_refuses_is_a_decline,
    a_catalog_down_at_reservation_abandons_once_it_is_back,
    a_provider_down_at_charge_is_resumed_and_charges_once,
    a_hold_lost_after_payment_cancels_and_refunds,
    a_cart_down_at_emptying_is_emptied_later,
    a_release_after_a_decline_waits_for_the_catalog,
    a_cancellation_refunds_returns_stock_and_announces,
    a_refund_the_provider_refuses_counts_as_stuck,
    two_processes_driving_one_saga_move_it_once,
    a_saga_this_version_cannot_read_is_set_aside,
    a_step_that_outlasts_the_lease_keeps_its_saga,
    one_checkout_of_a_cart_runs_at_a_time,
);

async fn a_paid_checkout_holds_charges_sells_and_empties(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let (saga, key) = f.claimed(f.plan(&[("A", 2), ("B", 1)], "pm_card_visa")).await;
    let outcome = f.sagas.drive(saga.clone(), false).await;
    let Some(CheckoutOutcome::Paid { order }) = outcome else { panic!("paid, got {outcome:?}") };
    assert_eq!((order.status, order.payment.status), (Status::Paid, PaymentStatus::Succeeded));
    assert_eq!(order.number, "T-100001");
    assert_eq!(order.totals.total, 3_000);
    assert_eq!((f.inventory.available("A"), f.inventory.available("B")), (3, 4));
    assert_eq!(f.inventory.hold(saga.order_id), Some(Hold::Committed));
    assert_eq!(f.payments.charged(), 1);
    assert_eq!(f.carts.lines(f.user), 0, "the cart is emptied");
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Done);
    assert_eq!(
        f.key(&key).await,
        KeyState::Answered(crate::domain::Answer::Outcome(CheckoutOutcome::Paid { order: order.clone() }))
    );
    let stored = f.order(saga.order_id).await;
    assert_eq!((stored.status, stored.version), (Status::Paid, order.version));
    assert_eq!(f.events(saga.order_id).await, ["order.placed", "order.paid", "fulfilment.requested"]);
}

async fn a_decline_releases_the_stock_and_keeps_the_cart(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let (saga, _) = f.claimed(f.plan(&[("A", 2)], "pm_card_chargeDeclined")).await;
    let outcome = f.sagas.drive(saga.clone(), false).await;
    let Some(CheckoutOutcome::Declined { order }) = outcome else { panic!("declined, got {outcome:?}") };
    assert_eq!((order.status, order.payment.status), (Status::PaymentFailed, PaymentStatus::Failed));
    assert_eq!(f.inventory.available("A"), 5, "the held stock went back");
    assert_eq!(f.inventory.hold(saga.order_id), Some(Hold::Released));
    assert_eq!(f.carts.lines(f.user), 2, "a declined checkout keeps the cart");
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Failed);
    assert_eq!(f.events(saga.order_id).await, ["order.placed", "order.payment_failed"]);
}

async fn out_of_stock_holds_nothing_and_names_the_short_lines(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let (saga, key) = f.claimed(f.plan(&[("A", 2), ("B", 6), ("NOPE", 1)], "pm_card_visa")).await;
    let outcome = f.sagas.drive(saga.clone(), false).await;
    let Some(CheckoutOutcome::OutOfStock { shortages }) = outcome.clone() else { panic!("short, got {outcome:?}") };
    let short: Vec<(&str, ShortageReason)> = shortages.iter().map(|s| (s.sku.as_str(), s.reason)).collect();
    assert_eq!(short, [("B", ShortageReason::OutOfStock), ("NOPE", ShortageReason::UnknownSku)]);
    assert_eq!((f.inventory.available("A"), f.inventory.available("B")), (5, 5), "nothing is held");
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Rejected);
    assert_eq!(f.key(&key).await, KeyState::Answered(crate::domain::Answer::Outcome(outcome.unwrap())));
    assert!(f.store.order(saga.order_id).await.unwrap().is_none(), "no order is placed");
    assert_eq!(f.payments.charge_calls.load(Ordering::SeqCst), 0);
}

async fn a_reservation_interrupted_before_the_order_is_undone(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let (saga, key) = f.claimed(f.plan(&[("A", 2)], "pm_card_visa")).await;
    // The process held the stock, then died before recording the order.
    let lines = [("A".to_owned(), 2)];
    assert_eq!(f.inventory.reserve(saga.order_id, &lines, Duration::from_secs(60)).await.unwrap(), Reserved::Held);
    assert_eq!(f.inventory.available("A"), 3);
    assert_eq!(f.resume(saga.order_id, Kind::Checkout).await, None, "nobody waits for an answer");
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Abandoned);
    assert_eq!(f.inventory.available("A"), 5, "the hold went back");
    assert_eq!(f.key(&key).await, KeyState::Missing, "the key is forgotten, so a retry starts afresh");
    // A reservation that arrives late for the abandoned order is refused.
    assert_eq!(f.inventory.reserve(saga.order_id, &lines, Duration::from_secs(60)).await.unwrap(), Reserved::Released);
    assert_eq!(f.payments.charge_calls.load(Ordering::SeqCst), 0);
}

async fn a_checkout_recorded_before_its_cart_was_read_is_undone(db: TestDatabase) {
    let f = Fixture::new(db).await;
    // Earlier versions claimed the key before reading the cart: such a saga is `started`,
    // holds nothing and has no plan.
    let key = Uuid::new_v4().to_string();
    let saga = f.sagas.checkout(f.user, &key, Step::Started, None, None);
    let claim = NewKey { user: f.user, key: &key, hash: b"hash", outcome: None };
    assert_eq!(f.store.claim_key(&claim, &saga).await.unwrap(), Claim::Claimed);
    f.inventory.down.store(true, Ordering::SeqCst);
    assert_eq!(f.resume(saga.order_id, Kind::Checkout).await, None);
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Abandoned, "nothing to release");
    assert_eq!(f.key(&key).await, KeyState::Missing);
}

async fn a_charge_the_provider_refuses_is_a_decline(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let (saga, _) = f.claimed(f.plan(&[("A", 1)], "pm_card_visa")).await;
    f.payments.refuse_charges.store(true, Ordering::SeqCst);
    let outcome = f.sagas.drive(saga.clone(), false).await;
    let Some(CheckoutOutcome::Declined { order }) = outcome else { panic!("declined, got {outcome:?}") };
    assert_eq!((order.payment.status, order.payment.reference.as_deref()), (PaymentStatus::Failed, None));
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Failed);
    assert_eq!(f.inventory.available("A"), 5);
    assert_eq!(f.payments.charged(), 0);
}

async fn a_catalog_down_at_reservation_abandons_once_it_is_back(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let (saga, key) = f.claimed(f.plan(&[("A", 1)], "pm_card_visa")).await;
    f.inventory.down.store(true, Ordering::SeqCst);
    assert_eq!(f.sagas.drive(saga.clone(), false).await, None);
    // Unknown whether the stock is held: the checkout is being undone, and the release waits.
    let stalled = f.saga(saga.order_id, Kind::Checkout).await;
    assert_eq!(stalled.step, Step::Abandoning);
    assert_eq!(f.key(&key).await, KeyState::Pending);
    f.inventory.down.store(false, Ordering::SeqCst);
    f.resume(saga.order_id, Kind::Checkout).await;
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Abandoned);
    assert_eq!(f.key(&key).await, KeyState::Missing);
    assert_eq!(f.inventory.available("A"), 5);
}

async fn a_provider_down_at_charge_is_resumed_and_charges_once(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let (saga, key) = f.claimed(f.plan(&[("A", 1)], "pm_card_visa")).await;
    f.payments.down.store(true, Ordering::SeqCst);
    assert_eq!(f.sagas.drive(saga.clone(), false).await, None);
    let stalled = f.saga(saga.order_id, Kind::Checkout).await;
    assert_eq!(stalled.step, Step::Charging);
    assert_eq!(f.order(saga.order_id).await.status, Status::PendingPayment);
    assert_eq!(f.key(&key).await, KeyState::Pending);
    f.payments.down.store(false, Ordering::SeqCst);
    // Resumed twice (a webhook's nudge and the sweeper, say): one charge, one answer.
    let resumed = f.resume(saga.order_id, Kind::Checkout).await;
    assert!(matches!(resumed, Some(CheckoutOutcome::Paid { .. })), "{resumed:?}");
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Done);
    assert!(
        f.store
            .claim(
                saga.order_id,
                Kind::Checkout,
                platform::time::now() + chrono::Duration::hours(2),
                platform::time::now()
            )
            .await
            .unwrap()
            .is_none(),
        "a finished saga is not claimed"
    );
    assert_eq!(f.payments.charged(), 1);
    assert!(matches!(f.key(&key).await, KeyState::Answered(_)));
    assert_eq!(f.inventory.hold(saga.order_id), Some(Hold::Committed));
}

async fn a_hold_lost_after_payment_cancels_and_refunds(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let (saga, _) = f.claimed(f.plan(&[("A", 2)], "pm_card_visa")).await;
    // The checkout stalls at the charge, holding its stock.
    f.payments.down.store(true, Ordering::SeqCst);
    f.sagas.drive(saga.clone(), false).await;
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Charging);
    // The hold expires meanwhile (the catalog's sweeper released it).
    f.inventory.release(saga.order_id).await.unwrap();
    f.payments.down.store(false, Ordering::SeqCst);
    let outcome = f.resume(saga.order_id, Kind::Checkout).await;
    assert!(matches!(outcome, Some(CheckoutOutcome::Paid { .. })), "the charge succeeded: {outcome:?}");
    let order = f.order(saga.order_id).await;
    assert_eq!((order.status, order.payment.status), (Status::Cancelled, PaymentStatus::Refunded));
    assert_eq!(f.payments.refunded(), 2_000);
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Done);
    assert_eq!(f.saga(saga.order_id, Kind::Cancel).await.step, Step::Done);
    assert_eq!(f.inventory.available("A"), 5);
    assert_eq!(f.carts.lines(f.user), 2, "an order that could not be fulfilled leaves the cart");
    assert_eq!(
        f.events(saga.order_id).await,
        ["order.placed", "order.paid", "fulfilment.requested", "order.cancelled"]
    );
}

async fn a_cart_down_at_emptying_is_emptied_later(db: TestDatabase) {
    let f = Fixture::new(db).await;
    // What the cart holds: emptying takes out exactly what was ordered.
    let (saga, _) = f.claimed(f.plan(&[("A", 2), ("B", 1)], "pm_card_visa")).await;
    f.carts.down.store(true, Ordering::SeqCst);
    let outcome = f.sagas.drive(saga.clone(), false).await;
    assert!(matches!(outcome, Some(CheckoutOutcome::Paid { .. })), "the answer does not wait for the cart");
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Emptying);
    assert_eq!(f.carts.lines(f.user), 2);
    f.carts.down.store(false, Ordering::SeqCst);
    assert_eq!(f.resume(saga.order_id, Kind::Checkout).await, None, "the outcome was given before");
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Done);
    assert_eq!(f.carts.lines(f.user), 0);
}

async fn a_release_after_a_decline_waits_for_the_catalog(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let (saga, _) = f.claimed(f.plan(&[("A", 3)], "pm_card_chargeDeclined")).await;
    // The catalog goes away between the hold and the release.
    let lines = [("A".to_owned(), 3)];
    f.inventory.reserve(saga.order_id, &lines, Duration::from_secs(60)).await.unwrap();
    f.inventory.down.store(true, Ordering::SeqCst);
    let mut unit = f.store.unit().await.unwrap();
    let advance = f.sagas.advance_of(&saga, Step::Reserving, Step::Charging);
    assert!(unit.advance(advance).await.unwrap());
    let (order, _) = Order::place(
        saga.order_id,
        "T-9".to_owned(),
        f.user,
        saga.plan.as_ref().unwrap(),
        "memory",
        platform::time::now(),
    );
    unit.insert_order(&order).await.unwrap();
    unit.commit().await.unwrap();
    let outcome = f.resume(saga.order_id, Kind::Checkout).await;
    assert!(matches!(outcome, Some(CheckoutOutcome::Declined { .. })), "{outcome:?}");
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Releasing);
    assert_eq!(f.inventory.available("A"), 2, "still held");
    f.inventory.down.store(false, Ordering::SeqCst);
    f.resume(saga.order_id, Kind::Checkout).await;
    assert_eq!(f.saga(saga.order_id, Kind::Checkout).await.step, Step::Failed);
    assert_eq!(f.inventory.available("A"), 5);
}

async fn a_cancellation_refunds_returns_stock_and_announces(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let (saga, _) = f.claimed(f.plan(&[("B", 2)], "pm_card_visa")).await;
    f.sagas.drive(saga.clone(), false).await;
    assert_eq!(f.inventory.available("B"), 3);
    let mut order = f.order(saga.order_id).await;
    let mut unit = f.store.unit().await.unwrap();
    let cancel = f.sagas.start_cancel(&mut unit, &mut order, None).await.unwrap().expect("the order was unchanged");
    unit.commit().await.unwrap();
    // The provider is down for the refund: the order is cancelled now, its money follows.
    f.payments.refuse_refunds.store(true, Ordering::SeqCst);
    f.sagas.drive(cancel.clone(), false).await;
    assert_eq!(f.order(saga.order_id).await.status, Status::Cancelled);
    assert_eq!(f.saga(saga.order_id, Kind::Cancel).await.step, Step::Refunding);
    f.payments.refuse_refunds.store(false, Ordering::SeqCst);
    f.resume(saga.order_id, Kind::Cancel).await;
    let order = f.order(saga.order_id).await;
    assert_eq!((order.status, order.payment.status), (Status::Cancelled, PaymentStatus::Refunded));
    assert_eq!(f.payments.refunded(), 2_000);
    assert_eq!(f.inventory.available("B"), 5, "the sold stock is back on hand");
    assert_eq!(f.saga(saga.order_id, Kind::Cancel).await.step, Step::Done);
    assert_eq!(f.events(saga.order_id).await.last().map(String::as_str), Some("order.cancelled"));
    // Cancelling again is refused by the state machine.
    let mut again = f.order(saga.order_id).await;
    let mut unit = f.store.unit().await.unwrap();
    assert!(f.sagas.start_cancel(&mut unit, &mut again, None).await.is_err());
}

async fn a_refund_the_provider_refuses_counts_as_stuck(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let (saga, _) = f.claimed(f.plan(&[("A", 1)], "pm_card_visa")).await;
    f.sagas.drive(saga.clone(), false).await;
    let mut order = f.order(saga.order_id).await;
    let mut unit = f.store.unit().await.unwrap();
    let cancel = f.sagas.start_cancel(&mut unit, &mut order, None).await.unwrap().unwrap();
    unit.commit().await.unwrap();
    f.payments.refuse_refunds.store(true, Ordering::SeqCst);
    f.sagas.drive(cancel, false).await;
    for _ in 0..STUCK_AFTER - 1 {
        f.resume(saga.order_id, Kind::Cancel).await;
        assert_eq!(f.sagas.stuck().await.unwrap(), 0);
    }
    f.resume(saga.order_id, Kind::Cancel).await;
    assert_eq!(f.saga(saga.order_id, Kind::Cancel).await.attempts, STUCK_AFTER);
    assert_eq!(f.sagas.stuck().await.unwrap(), 1);
    // Once the provider takes it, the saga moves on and is stuck no more.
    f.payments.refuse_refunds.store(false, Ordering::SeqCst);
    f.resume(saga.order_id, Kind::Cancel).await;
    assert_eq!(f.saga(saga.order_id, Kind::Cancel).await.step, Step::Done);
    assert_eq!(f.sagas.stuck().await.unwrap(), 0);
}

async fn two_processes_driving_one_saga_move_it_once(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let (saga, _) = f.claimed(f.plan(&[("A", 1), ("B", 1)], "pm_card_visa")).await;
    f.payments.down.store(true, Ordering::SeqCst);
    f.sagas.drive(saga.clone(), false).await;
    f.payments.down.store(false, Ordering::SeqCst);
    let stalled = f.saga(saga.order_id, Kind::Checkout).await;
    let (one, two) = tokio::join!(f.sagas.drive(stalled.clone(), true), f.sagas.drive(stalled, true));
    let answered = [&one, &two].iter().filter(|o| o.is_some()).count();
    assert_eq!(answered, 1, "one of them decides: {one:?} {two:?}");
    assert_eq!(f.payments.charged(), 1);
    let paid = f.events(saga.order_id).await.iter().filter(|t| *t == "order.paid").count();
    assert_eq!(paid, 1, "announced once");
    assert_eq!(f.order(saga.order_id).await.history.len(), 2);
    assert_eq!((f.inventory.available("A"), f.inventory.available("B")), (4, 4));
}

async fn a_saga_this_version_cannot_read_is_set_aside(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let (unreadable, _) = f.claimed(f.plan(&[("A", 1)], "pm_card_visa")).await;
    // Another cart: one checkout of a cart runs at a time.
    let other_cart = Plan { cart_id: Uuid::new_v4().to_string(), ..f.plan(&[("B", 1)], "pm_card_visa") };
    let (interrupted, _) = f.claimed(other_cart).await;
    let past = platform::time::now() - chrono::Duration::minutes(1);
    f.store.set_raw(unreadable.order_id, "teleporting", past).await.unwrap();
    f.store.set_raw(interrupted.order_id, Step::Reserving.as_str(), past).await.unwrap();
    assert_eq!(f.sagas.recover().await.unwrap(), 1, "the readable one is resumed all the same");
    assert_eq!(f.saga(interrupted.order_id, Kind::Checkout).await.step, Step::Abandoned);
    let reason = f.store.last_error(unreadable.order_id).await.unwrap().unwrap_or_default();
    assert!(reason.contains("teleporting"), "{reason}");
    assert_eq!(f.sagas.recover().await.unwrap(), 0, "set aside, not retried at once");
}

/// A charge that takes three leases does not lose its saga: the lease is renewed while it runs,
/// so no other process takes the saga over and charges again. Once the process stops renewing,
/// the saga is due within a lease.
async fn a_step_that_outlasts_the_lease_keeps_its_saga(db: TestDatabase) {
    let lease = Duration::from_millis(300);
    let f = Fixture::with_lease(db, lease).await;
    let (saga, _) = f.claimed(f.plan(&[("A", 1)], "pm_card_visa")).await;
    f.payments.charge_delay_ms.store(900, Ordering::SeqCst);
    let driving = f.sagas.drive(saga.clone(), false);
    let sweeping = async {
        let mut taken_over = 0;
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            taken_over += f.sagas.recover().await.unwrap();
        }
        taken_over
    };
    let (outcome, taken_over) = tokio::join!(driving, sweeping);
    assert!(matches!(outcome, Some(CheckoutOutcome::Paid { .. })), "{outcome:?}");
    assert_eq!(taken_over, 0, "the sweeper found nothing due while the charge ran");
    assert_eq!(f.payments.charge_calls.load(Ordering::SeqCst), 1);

    // A process that stops (here: a saga left mid-way with a fresh lease) is taken over after one.
    let (stopped, _) = f.claimed(f.plan(&[("B", 1)], "pm_card_visa")).await;
    f.store.set_raw(stopped.order_id, Step::Reserving.as_str(), f.sagas.lease_end()).await.unwrap();
    assert_eq!(f.sagas.recover().await.unwrap(), 0, "its lease still runs");
    tokio::time::sleep(lease + Duration::from_millis(50)).await;
    assert_eq!(f.sagas.recover().await.unwrap(), 1);
}

/// A second checkout of a cart under another key is refused while the first runs, with nothing
/// recorded; another cart is not held; once the first ends, the cart can be checked out again.
async fn one_checkout_of_a_cart_runs_at_a_time(db: TestDatabase) {
    let f = Fixture::new(db).await;
    let plan = f.plan(&[("A", 1)], "pm_card_visa");
    let (first, _) = f.claimed(plan.clone()).await;
    let f = &f;
    let claim = |key: &'static str, plan: Plan| {
        let saga = f.sagas.checkout(f.user, key, Step::Reserving, Some(plan), None);
        async move { f.store.claim_key(&NewKey { user: f.user, key, hash: b"hash", outcome: None }, &saga).await.unwrap() }
    };
    assert_eq!(claim("second", plan.clone()).await, Claim::CartBusy);
    assert_eq!(f.key("second").await, KeyState::Missing, "the refused key was not kept");
    let guest = Plan { cart_id: Uuid::new_v4().to_string(), ..plan.clone() };
    assert_eq!(claim("guest", guest.clone()).await, Claim::Claimed, "another cart is free");
    assert_eq!(claim("guest-again", guest).await, Claim::CartBusy, "guest carts are held too");

    assert!(matches!(f.sagas.drive(first, false).await, Some(CheckoutOutcome::Paid { .. })));
    assert_eq!(claim("second", plan).await, Claim::Claimed, "free once the first checkout ended");
}
