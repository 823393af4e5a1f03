//! One table of cases for the cart's rules, run against the rules themselves (`crate::rules`),
//! the Redis store (whose Lua scripts spell the rules out again) and the SQL store on SQLite and
//! PostgreSQL: if one implementation drifts from the others, a case here fails. The same goes for
//! the event a checkout writes and its relay.

use std::time::Duration;

use chrono::Utc;
use events::{Bus, BusConfig, CloudEvent, Relay, RelayConfig, TailFrom, payloads::CartCheckedOut};
use testkit::{Backend, TestDatabase};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{CartRef, CartStore, LineChange, LineOutcome, Merge, MergeOutcome, RedisCarts, SqlCarts};
use crate::rules::{self, Change, MAX_LINE_QUANTITY, MAX_LINES, Mode, Refusal};

const TTL: Duration = Duration::from_secs(3600);
/// Enough stock that setting up a cart never runs into it.
const PLENTY: i64 = 1_000_000;

/// A cart's lines before a case: `(sku, quantity, currency)`.
type Lines = &'static [(&'static str, i64, &'static str)];

struct LineCase {
    name: &'static str,
    before: Lines,
    /// Removed after `before` is in, leaving the cart's currency behind with no lines.
    removed: &'static [&'static str],
    sku: &'static str,
    change: Change<'static>,
    expected: Result<i64, Refusal>,
}

fn change(quantity: i64, mode: Mode, available: i64, currency: &'static str) -> Change<'static> {
    Change { quantity, mode, available, currency }
}

fn line_cases() -> Vec<LineCase> {
    use Mode::{Add, Set};
    vec![
        LineCase {
            name: "a first line",
            before: &[],
            removed: &[],
            sku: "A",
            change: change(2, Add, 5, "EUR"),
            expected: Ok(2),
        },
        LineCase {
            name: "adds accumulate",
            before: &[("A", 2, "EUR")],
            removed: &[],
            sku: "A",
            change: change(3, Add, 10, "EUR"),
            expected: Ok(5),
        },
        LineCase {
            name: "set replaces",
            before: &[("A", 5, "EUR")],
            removed: &[],
            sku: "A",
            change: change(2, Set, 10, "EUR"),
            expected: Ok(2),
        },
        LineCase {
            name: "the cap, by adding",
            before: &[("A", 98, "EUR")],
            removed: &[],
            sku: "A",
            change: change(2, Add, 500, "EUR"),
            expected: Err(Refusal::OverCap { current: 98 }),
        },
        LineCase {
            name: "the cap, by setting",
            before: &[("A", 3, "EUR")],
            removed: &[],
            sku: "A",
            change: change(MAX_LINE_QUANTITY + 1, Set, 500, "EUR"),
            expected: Err(Refusal::OverCap { current: 3 }),
        },
        LineCase {
            name: "exactly the cap",
            before: &[("A", 90, "EUR")],
            removed: &[],
            sku: "A",
            change: change(9, Add, 500, "EUR"),
            expected: Ok(MAX_LINE_QUANTITY),
        },
        LineCase {
            name: "more than the stock",
            before: &[("A", 2, "EUR")],
            removed: &[],
            sku: "A",
            change: change(4, Add, 5, "EUR"),
            expected: Err(Refusal::OverStock { current: 2 }),
        },
        LineCase {
            name: "exactly the stock",
            before: &[("A", 2, "EUR")],
            removed: &[],
            sku: "A",
            change: change(3, Add, 5, "EUR"),
            expected: Ok(5),
        },
        LineCase {
            name: "a line above the stock may shrink",
            before: &[("A", 8, "EUR")],
            removed: &[],
            sku: "A",
            change: change(6, Set, 3, "EUR"),
            expected: Ok(6),
        },
        LineCase {
            name: "but not grow",
            before: &[("A", 8, "EUR")],
            removed: &[],
            sku: "A",
            change: change(1, Add, 3, "EUR"),
            expected: Err(Refusal::OverStock { current: 8 }),
        },
        LineCase {
            name: "nothing in stock",
            before: &[],
            removed: &[],
            sku: "A",
            change: change(1, Add, 0, "EUR"),
            expected: Err(Refusal::OverStock { current: 0 }),
        },
        LineCase {
            name: "another currency",
            before: &[("A", 1, "EUR")],
            removed: &[],
            sku: "B",
            change: change(1, Add, 5, "USD"),
            expected: Err(Refusal::OtherCurrency { cart: "EUR".to_owned() }),
        },
        LineCase {
            name: "another currency once the cart is empty",
            before: &[("A", 1, "EUR")],
            removed: &["A"],
            sku: "B",
            change: change(1, Add, 5, "USD"),
            expected: Ok(1),
        },
    ]
}

struct MergeCase {
    name: &'static str,
    guest: Lines,
    user: Lines,
    available: &'static [(&'static str, i64)],
    /// The user's lines afterwards (sorted), or the currency that refused the merge.
    expected: Result<&'static [(&'static str, i64)], &'static str>,
}

fn merge_cases() -> Vec<MergeCase> {
    vec![
        MergeCase {
            name: "lines add up",
            guest: &[("A", 2, "EUR"), ("B", 1, "EUR")],
            user: &[("A", 1, "EUR")],
            available: &[("A", 10), ("B", 10)],
            expected: Ok(&[("A", 3), ("B", 1)]),
        },
        MergeCase {
            name: "at most the cap",
            guest: &[("A", 60, "EUR")],
            user: &[("A", 60, "EUR")],
            available: &[("A", 500)],
            expected: Ok(&[("A", MAX_LINE_QUANTITY)]),
        },
        MergeCase {
            name: "at most the stock",
            guest: &[("A", 5, "EUR")],
            user: &[("A", 1, "EUR")],
            available: &[("A", 3)],
            expected: Ok(&[("A", 3)]),
        },
        MergeCase {
            name: "never below what the user had",
            guest: &[("A", 1, "EUR")],
            user: &[("A", 5, "EUR")],
            available: &[("A", 2)],
            expected: Ok(&[("A", 5)]),
        },
        MergeCase {
            name: "a sold-out line is dropped",
            guest: &[("A", 2, "EUR"), ("B", 1, "EUR")],
            user: &[],
            available: &[("A", 0), ("B", 4)],
            expected: Ok(&[("B", 1)]),
        },
        MergeCase {
            name: "into an empty cart",
            guest: &[("A", 2, "USD")],
            user: &[],
            available: &[("A", 9)],
            expected: Ok(&[("A", 2)]),
        },
        MergeCase {
            name: "two currencies",
            guest: &[("A", 1, "EUR")],
            user: &[("B", 1, "USD")],
            available: &[("A", 9)],
            expected: Err("USD"),
        },
    ]
}

/// The stores the cases run against: Redis, SQLite and PostgreSQL.
async fn stores() -> Vec<(&'static str, CartStore, Option<TestDatabase>)> {
    let mut stores = Vec::new();
    if testkit::redis_available().await {
        let prefix = format!("test-rules-{}", Uuid::new_v4().simple());
        stores.push(("redis", CartStore::Redis(RedisCarts::open(&testkit::redis_url(), &prefix).unwrap()), None));
    }
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if let Some(db) = TestDatabase::create(backend).await {
            let store = CartStore::Sql(SqlCarts::open(&db.url, &Default::default()).await.unwrap());
            stores.push((if backend == Backend::Sqlite { "sqlite" } else { "postgres" }, store, Some(db)));
        }
    }
    stores
}

/// Fills a new cart through the store itself.
async fn fill(store: &CartStore, cart: CartRef, lines: Lines) {
    store.create(cart, Uuid::new_v4(), TTL).await.unwrap();
    for (sku, quantity, currency) in lines {
        let set = LineChange { sku, change: change(*quantity, Mode::Set, PLENTY, currency), ttl: TTL, create: false };
        let outcome = store.change_line(cart, &set, Uuid::new_v4()).await.unwrap();
        assert_eq!(outcome, LineOutcome::Changed { quantity: *quantity });
    }
}

fn quantity(lines: &[(String, i64)], sku: &str) -> i64 {
    lines.iter().find(|(s, _)| s == sku).map_or(0, |(_, n)| *n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_changes_follow_the_same_rules_everywhere() {
    let stores = stores().await;
    for case in line_cases() {
        let current = case.before.iter().find(|(s, ..)| *s == case.sku).map_or(0, |(_, n, _)| *n);
        let lines = case.before.len() - case.removed.len();
        let facts = rules::Cart { currency: case.before.first().map(|(_, _, c)| *c), lines, current };
        assert_eq!(rules::change_line(facts, case.change), case.expected, "rules: {}", case.name);
        for (name, store, _) in &stores {
            let cart = CartRef::Guest(Uuid::new_v4());
            fill(store, cart, case.before).await;
            for sku in case.removed {
                assert!(store.remove_line(cart, sku, TTL).await.unwrap());
            }
            let applied = LineChange { sku: case.sku, change: case.change, ttl: TTL, create: false };
            let outcome = store.change_line(cart, &applied, Uuid::new_v4()).await.unwrap();
            let expected = match &case.expected {
                Ok(quantity) => LineOutcome::Changed { quantity: *quantity },
                Err(refusal) => LineOutcome::Refused(refusal.clone()),
            };
            assert_eq!(outcome, expected, "{name}: {}", case.name);
            let after = store.get(cart, TTL).await.unwrap().expect("the cart is there");
            let held = case.expected.clone().unwrap_or(current);
            assert_eq!(quantity(&after.lines, case.sku), held, "{name}: {} (the line afterwards)", case.name);
        }
    }
    cleanup(stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_limit_holds_everywhere() {
    let stores = stores().await;
    let full: Vec<(String, i64)> = (0..MAX_LINES).map(|i| (format!("SKU-{i:03}"), 1)).collect();
    let facts = rules::Cart { currency: Some("EUR"), lines: MAX_LINES, current: 0 };
    assert_eq!(rules::change_line(facts, change(1, Mode::Add, 5, "EUR")), Err(Refusal::TooManyLines));
    for (name, store, _) in &stores {
        let cart = CartRef::Guest(Uuid::new_v4());
        store.create(cart, Uuid::new_v4(), TTL).await.unwrap();
        for (sku, quantity) in &full {
            let set = LineChange { sku, change: change(*quantity, Mode::Add, PLENTY, "EUR"), ttl: TTL, create: false };
            store.change_line(cart, &set, Uuid::new_v4()).await.unwrap();
        }
        let new = LineChange { sku: "ONE-TOO-MANY", change: change(1, Mode::Add, 5, "EUR"), ttl: TTL, create: false };
        assert_eq!(
            store.change_line(cart, &new, Uuid::new_v4()).await.unwrap(),
            LineOutcome::Refused(Refusal::TooManyLines),
            "{name}"
        );
        let existing = LineChange { sku: "SKU-000", change: change(1, Mode::Add, 5, "EUR"), ttl: TTL, create: false };
        assert_eq!(
            store.change_line(cart, &existing, Uuid::new_v4()).await.unwrap(),
            LineOutcome::Changed { quantity: 2 },
            "{name}: a line already in the cart still grows"
        );
    }
    cleanup(stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_follow_the_same_rules_everywhere() {
    let stores = stores().await;
    for case in merge_cases() {
        let side = |lines: Lines| (lines.first().map(|(_, _, c)| *c), !lines.is_empty());
        let conflict = rules::merge_conflict(side(case.guest), side(case.user));
        let mut expected_by_rules: Vec<(&str, i64)> = Vec::new();
        for (sku, quantity, _) in case.guest {
            let mine = case.user.iter().find(|(s, ..)| s == sku).map_or(0, |(_, n, _)| *n);
            let stock = case.available.iter().find(|(s, _)| s == sku).map_or(0, |(_, n)| *n);
            let merged = rules::merged_quantity(mine, *quantity, stock);
            if merged > 0 {
                expected_by_rules.push((sku, merged));
            }
        }
        for (sku, quantity, _) in case.user {
            if !expected_by_rules.iter().any(|(s, _)| s == sku) {
                expected_by_rules.push((sku, *quantity));
            }
        }
        expected_by_rules.sort();
        match case.expected {
            Ok(lines) => {
                assert_eq!(conflict, None, "rules: {}", case.name);
                assert_eq!(expected_by_rules, lines, "rules: {}", case.name);
            }
            Err(currency) => assert_eq!(conflict.as_deref(), Some(currency), "rules: {}", case.name),
        }
        for (name, store, _) in &stores {
            let (guest, user) = (Uuid::new_v4(), Uuid::new_v4());
            fill(store, CartRef::Guest(guest), case.guest).await;
            fill(store, CartRef::User(user), case.user).await;
            let available: Vec<(String, i64)> = case.available.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect();
            let merge =
                Merge { guest, user, available: &available, user_ttl: TTL, guest_ttl: TTL, new_id: Uuid::new_v4() };
            let outcome = store.merge(&merge).await.unwrap();
            let after = store.get(CartRef::User(user), TTL).await.unwrap().expect("the user's cart is there");
            let lines: Vec<(&str, i64)> = after.lines.iter().map(|(s, n)| (s.as_str(), *n)).collect();
            match case.expected {
                Ok(expected) => {
                    assert_eq!(outcome, MergeOutcome::Merged, "{name}: {}", case.name);
                    assert_eq!(lines, expected, "{name}: {}", case.name);
                    assert!(
                        store.get(CartRef::Guest(guest), TTL).await.unwrap().is_none(),
                        "{name}: the guest cart is retired"
                    );
                }
                Err(currency) => {
                    assert_eq!(
                        outcome,
                        MergeOutcome::OtherCurrency { cart: currency.to_owned() },
                        "{name}: {}",
                        case.name
                    );
                    let before: Vec<(&str, i64)> = case.user.iter().map(|(s, n, _)| (*s, *n)).collect();
                    assert_eq!(lines, before, "{name}: a refused merge changes nothing");
                }
            }
        }
    }
    cleanup(stores).await;
}

fn checked_out(user: Uuid, order: Uuid, cart: CartRef) -> CloudEvent {
    let payload = CartCheckedOut { order_id: order, user_id: user, cart: cart.owner().to_owned(), at: Utc::now() };
    CloudEvent::new(crate::SERVICE, &payload, None).unwrap()
}

/// Relays what the store's outbox holds to `bus`, as the service does.
async fn relay(store: &CartStore, bus: &Bus) {
    match store {
        CartStore::Redis(redis) => {
            redis.outbox().relay_once(bus, 100).await.unwrap();
        }
        CartStore::Sql(sql) => {
            Relay::new(crate::SERVICE, sql.db().clone(), bus.clone(), RelayConfig::default())
                .relay_once()
                .await
                .unwrap();
        }
    }
}

/// Every `cart.checked_out` event the bus's log holds.
async fn published(bus: &Bus) -> Vec<CloudEvent> {
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stopper.cancel();
    });
    let mut seen = Vec::new();
    bus.tail(TailFrom::Start, "cart.checked_out", stop, |event| {
        seen.push(event);
        true
    })
    .await
    .unwrap();
    seen
}

/// A checkout empties the cart and writes its event in the same step, once per order, and the
/// relay publishes it once; a retry of the checkout, or a cart that is not there, writes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_publishes_its_event_once_everywhere() {
    let stores = stores().await;
    for (name, store, _) in &stores {
        let data_dir = testkit::temp_dir("cart-outbox");
        let config = BusConfig { url: "memory:".to_owned(), ..BusConfig::default() };
        let bus = Bus::connect(&config, &data_dir).await.unwrap();
        let (user, guest) = (Uuid::new_v4(), Uuid::new_v4());
        let (mine, theirs) = (CartRef::User(user), CartRef::Guest(guest));
        fill(store, mine, &[("A", 2, "EUR")]).await;
        fill(store, theirs, &[("B", 1, "EUR")]).await;
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let event = checked_out(user, first, mine);
        let ordered = [("A".to_owned(), 2)];
        assert_eq!(store.complete_checkout(mine, first, &ordered, &event, TTL).await.unwrap(), Some(true), "{name}");
        assert!(store.get(mine, TTL).await.unwrap().unwrap().lines.is_empty(), "{name}: emptied");
        let retried = checked_out(user, first, mine);
        assert_eq!(store.complete_checkout(mine, first, &ordered, &retried, TTL).await.unwrap(), Some(false), "{name}");
        let nowhere = CartRef::Guest(Uuid::new_v4());
        let lost = checked_out(user, second, nowhere);
        assert_eq!(store.complete_checkout(nowhere, second, &[], &lost, TTL).await.unwrap(), None, "{name}");
        let guest_event = checked_out(user, second, theirs);
        assert_eq!(
            store.complete_checkout(theirs, second, &[], &guest_event, TTL).await.unwrap(),
            Some(true),
            "{name}"
        );

        // Only what was ordered leaves: a line set since (another quantity, another SKU) stays.
        let (later, third) = (CartRef::User(Uuid::new_v4()), Uuid::new_v4());
        fill(store, later, &[("A", 2, "EUR"), ("C", 1, "EUR"), ("D", 4, "EUR")]).await;
        let bought = [("A".to_owned(), 2), ("C".to_owned(), 3)];
        let partial = checked_out(user, third, later);
        assert_eq!(store.complete_checkout(later, third, &bought, &partial, TTL).await.unwrap(), Some(true), "{name}");
        let left = store.get(later, TTL).await.unwrap().unwrap().lines;
        assert_eq!(left, [("C".to_owned(), 1), ("D".to_owned(), 4)], "{name}: only the ordered line left");

        relay(store, &bus).await;
        // Published events leave the outbox: a second round publishes nothing again.
        relay(store, &bus).await;
        let ids: Vec<Uuid> = published(&bus).await.iter().map(|e| e.id).collect();
        assert_eq!(ids, [event.id, guest_event.id, partial.id], "{name}: each checkout's event once, in order");
        let _ = std::fs::remove_dir_all(data_dir);
    }
    cleanup(stores).await;
}

async fn cleanup(stores: Vec<(&'static str, CartStore, Option<TestDatabase>)>) {
    for (_, store, _) in stores {
        if let CartStore::Redis(redis) = store {
            testkit::redis_delete_prefix(redis.prefix()).await;
        }
    }
}
