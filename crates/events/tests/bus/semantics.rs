//! What both buses guarantee: at-least-once delivery applied exactly once, retries, parking and
//! replay, per-subject order, crash safety of the outbox, and the replayable log.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use events::{CloudEvent, HandlerError, Subscription, TailFrom};
use tokio_util::sync::CancellationToken;

use crate::{
    common::{BusKind, Harness, Tick, ticks},
    on_both_buses,
};

on_both_buses!(
    a_committed_event_is_applied_once,
    a_handler_that_fails_three_times_applies_once_after_retries,
    a_handler_that_always_fails_is_parked_and_can_be_replayed,
    rolled_back_transactions_publish_nothing,
    events_written_while_the_relay_was_down_are_published_on_restart,
    per_subject_order_holds_through_retries_of_other_subjects,
    the_log_replays_from_the_start_and_filters_types,
    a_batch_with_one_bad_event_applies_the_rest_and_parks_only_it,
);

fn applying(db: platform::db::Db, consumer: String) -> Subscription {
    let name = consumer.clone();
    Subscription::new(&name, &["test.*"], move |event: CloudEvent| {
        let (db, consumer) = (db.clone(), consumer.clone());
        async move { Harness::apply(&db, &consumer, &event).await.map(|_| ()).map_err(HandlerError::new) }
    })
}

async fn a_committed_event_is_applied_once(kind: BusKind) {
    let Some(mut h) = Harness::start(kind, "once", None).await else { return };
    let consumer = h.consumer("once");
    let subscription = applying(h.db.clone(), consumer.clone());
    let consuming = h.run(subscription).await;
    let stop = CancellationToken::new();
    let relay = h.spawn_relay(&stop);
    h.emit(&ticks("a", 1..=5)).await;
    assert!(
        testkit::eventually(Duration::from_secs(15), || async { h.count("SELECT COUNT(*) FROM effects").await == 5 })
            .await
    );

    // The same event delivered again (a broker redelivery) changes nothing.
    let tick = Tick { subject: "a".into(), n: 99 };
    let event = CloudEvent::new("test", &tick, None).unwrap();
    assert!(Harness::apply(&h.db, &consumer, &event).await.unwrap());
    assert!(!Harness::apply(&h.db, &consumer, &event).await.unwrap());
    h.bus.publish(std::slice::from_ref(&event)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.count("SELECT COUNT(*) FROM effects").await, 6);
    assert_eq!(h.count("SELECT COUNT(*) FROM event_outbox WHERE published_at IS NULL").await, 0);
    stop.cancel();
    relay.await.unwrap();
    consuming.stop().await;
    h.finish().await;
}

async fn a_handler_that_fails_three_times_applies_once_after_retries(kind: BusKind) {
    let Some(mut h) = Harness::start(kind, "flaky", None).await else { return };
    let consumer = h.consumer("flaky");
    let calls = Arc::new(AtomicU32::new(0));
    let subscription = {
        let (db, consumer, calls) = (h.db.clone(), consumer.clone(), calls.clone());
        Subscription::new(&consumer.clone(), &["test.tick"], move |event: CloudEvent| {
            let (db, consumer, calls) = (db.clone(), consumer.clone(), calls.clone());
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    return Err(HandlerError::new("the warehouse system is down"));
                }
                Harness::apply(&db, &consumer, &event).await.map(|_| ()).map_err(HandlerError::new)
            }
        })
    };
    let consuming = h.run(subscription).await;
    h.emit(&ticks("flaky", 1..=1)).await;
    h.relay().relay_once().await.unwrap();
    assert!(
        testkit::eventually(Duration::from_secs(15), || async { h.count("SELECT COUNT(*) FROM effects").await == 1 })
            .await
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4, "three failures, then one success");
    assert_eq!(h.count("SELECT COUNT(*) FROM effects").await, 1);
    assert!(h.bus.dead_letters(&consumer).await.unwrap().is_empty());
    consuming.stop().await;
    h.finish().await;
}

async fn a_handler_that_always_fails_is_parked_and_can_be_replayed(kind: BusKind) {
    let Some(mut h) = Harness::start(kind, "parked", None).await else { return };
    let consumer = h.consumer("parked");
    let broken = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU32::new(0));
    let subscription = {
        let (db, consumer, broken, calls) = (h.db.clone(), consumer.clone(), broken.clone(), calls.clone());
        Subscription::new(&consumer.clone(), &["test.tick"], move |event: CloudEvent| {
            let (db, consumer, broken, calls) = (db.clone(), consumer.clone(), broken.clone(), calls.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                if broken.load(Ordering::SeqCst) {
                    return Err(HandlerError::new("no such product"));
                }
                Harness::apply(&db, &consumer, &event).await.map(|_| ()).map_err(HandlerError::new)
            }
        })
    };
    let consuming = h.run(subscription).await;
    h.emit(&ticks("poison", 1..=1)).await;
    h.relay().relay_once().await.unwrap();
    let parked = testkit::eventually(Duration::from_secs(15), || async {
        h.bus.dead_letters(&consumer).await.map(|p| p.len() == 1).unwrap_or(false)
    })
    .await;
    assert!(parked, "parked after the last attempt");
    let letters = h.bus.dead_letters(&consumer).await.unwrap();
    assert_eq!(letters.len(), 1, "listing does not consume");
    assert_eq!(letters[0].attempts, 4);
    assert_eq!(letters[0].error, "no such product");
    assert_eq!(letters[0].event.event_type, "test.tick");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(h.count("SELECT COUNT(*) FROM effects").await, 0);

    // Fixed: replaying gives it a fresh set of attempts.
    broken.store(false, Ordering::SeqCst);
    assert_eq!(h.bus.replay_dead_letters(&consumer).await.unwrap(), 1);
    assert!(
        testkit::eventually(Duration::from_secs(15), || async { h.count("SELECT COUNT(*) FROM effects").await == 1 })
            .await
    );
    assert!(h.bus.dead_letters(&consumer).await.unwrap().is_empty());
    consuming.stop().await;
    h.finish().await;
}

async fn rolled_back_transactions_publish_nothing(kind: BusKind) {
    let Some(h) = Harness::start(kind, "rollback", None).await else { return };
    let mut tx = h.db.begin().await.unwrap();
    let event = CloudEvent::new("test", &Tick { subject: "x".into(), n: 1 }, None).unwrap();
    events::enqueue(&mut tx, &event).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(h.relay().relay_once().await.unwrap(), 0);
    assert_eq!(h.count("SELECT COUNT(*) FROM event_outbox").await, 0);
    let mut seen = Vec::new();
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        stopper.cancel();
    });
    h.bus
        .tail(TailFrom::Start, "#", stop, |e| {
            seen.push(e.id);
            true
        })
        .await
        .unwrap();
    assert!(seen.is_empty(), "nothing reached the log");
    h.finish().await;
}

async fn events_written_while_the_relay_was_down_are_published_on_restart(kind: BusKind) {
    let Some(mut h) = Harness::start(kind, "crash", None).await else { return };
    let consumer = h.consumer("crash");
    let stop = CancellationToken::new();
    // A relay that dies (its task is killed) while events keep being committed.
    let doomed = h.spawn_relay(&CancellationToken::new());
    h.emit(&ticks("before", 1..=3)).await;
    doomed.abort();
    let _ = doomed.await;
    h.emit(&ticks("during", 1..=5)).await;
    // The service restarts: a new relay and the consumer.
    let consuming = h.run(applying(h.db.clone(), consumer.clone())).await;
    let relay = h.spawn_relay(&stop);
    assert!(
        testkit::eventually(Duration::from_secs(15), || async { h.count("SELECT COUNT(*) FROM effects").await == 8 })
            .await
    );
    assert_eq!(h.count("SELECT COUNT(DISTINCT event_id) FROM effects").await, 8);
    stop.cancel();
    relay.await.unwrap();
    consuming.stop().await;
    h.finish().await;
}

async fn per_subject_order_holds_through_retries_of_other_subjects(kind: BusKind) {
    let Some(mut h) = Harness::start(kind, "order", None).await else { return };
    let consumer = h.consumer("order");
    let applied: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let a1_failures = Arc::new(AtomicU32::new(0));
    let subscription = {
        let (applied, a1_failures) = (applied.clone(), a1_failures.clone());
        Subscription::new(&consumer, &["test.tick"], move |event: CloudEvent| {
            let (applied, a1_failures) = (applied.clone(), a1_failures.clone());
            async move {
                let tick: Tick = serde_json::from_value(event.data).unwrap();
                if tick.subject == "a" && tick.n == 1 && a1_failures.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(HandlerError::new("not yet"));
                }
                applied.lock().unwrap().push((tick.subject, tick.n));
                Ok(())
            }
        })
    };
    h.bus.prepare(&subscription).await.unwrap();
    // a1 b1 b2 a2 b3 a3 b4 a4, in one outbox, in that order.
    let order = [("a", 1), ("b", 1), ("b", 2), ("a", 2), ("b", 3), ("a", 3), ("b", 4), ("a", 4)];
    h.emit(&order.map(|(s, n)| Tick { subject: s.into(), n })).await;
    h.relay().relay_once().await.unwrap();
    let consuming = h.run(subscription).await;
    let done = testkit::eventually(Duration::from_secs(20), || async { applied.lock().unwrap().len() == 8 }).await;
    let applied = applied.lock().unwrap().clone();
    assert!(done, "{applied:?}");
    let of = |subject: &str| applied.iter().filter(|(s, _)| s == subject).map(|(_, n)| *n).collect::<Vec<_>>();
    assert_eq!(of("b"), vec![1, 2, 3, 4]);
    assert_eq!(of("a"), vec![1, 2, 3, 4], "a2..a4 waited for a1's retries");
    let first_a = applied.iter().position(|(s, _)| s == "a").unwrap();
    assert!(applied[..first_a].iter().any(|(s, _)| s == "b"), "b did not wait for a's retries: {applied:?}");
    consuming.stop().await;
    h.finish().await;
}

async fn the_log_replays_from_the_start_and_filters_types(kind: BusKind) {
    let Some(h) = Harness::start(kind, "tail", None).await else { return };
    h.emit(&ticks("t", 1..=3)).await;
    h.relay().relay_once().await.unwrap();
    let mut other = CloudEvent::new("test", &Tick { subject: "o".into(), n: 1 }, None).unwrap();
    other.event_type = "other.thing".into();
    h.bus.publish(std::slice::from_ref(&other)).await.unwrap();

    // Reads until `expect` events arrived, then a little longer to catch any extra.
    let tail = |pattern: &'static str, from: TailFrom, expect: usize| {
        let bus = h.bus.clone();
        async move {
            let mut seen = Vec::new();
            let stop = CancellationToken::new();
            let stopper = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                stopper.cancel();
            });
            let soon = stop.clone();
            bus.tail(from, pattern, stop, |event| {
                seen.push(event);
                if seen.len() == expect {
                    let soon = soon.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        soon.cancel();
                    });
                }
                seen.len() < 8
            })
            .await
            .unwrap();
            seen
        }
    };
    let types = |events: Vec<CloudEvent>| events.into_iter().map(|e| e.event_type).collect::<Vec<_>>();
    assert_eq!(types(tail("test.*", TailFrom::Start, 3).await), vec!["test.tick"; 3]);
    assert_eq!(tail("#", TailFrom::Start, 4).await.len(), 4);
    // Offsets count from 0: offset 2 is the third event.
    let from_third = tail("#", TailFrom::Offset(2), 2).await;
    let n = |e: &CloudEvent| serde_json::from_value::<Tick>(e.data.clone()).unwrap().n;
    assert_eq!(from_third.len(), 2);
    assert_eq!(n(&from_third[0]), 3);

    // A point in time: everything appended since then (a stream may start at the chunk before).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let since = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.emit(&ticks("later", 7..=8)).await;
    h.relay().relay_once().await.unwrap();
    let later: Vec<u32> = tail("test.*", TailFrom::Since(since), 2).await.iter().map(n).collect();
    assert!(later.ends_with(&[7, 8]), "{later:?}");
    if kind == BusKind::Embedded {
        assert_eq!(later, vec![7, 8]);
    }
    h.finish().await;
}

async fn a_batch_with_one_bad_event_applies_the_rest_and_parks_only_it(kind: BusKind) {
    let Some(mut h) = Harness::start(kind, "batch", None).await else { return };
    let consumer = h.consumer("batch");
    let largest = Arc::new(AtomicU32::new(0));
    let subscription = {
        let (db, consumer, largest) = (h.db.clone(), consumer.clone(), largest.clone());
        Subscription::batched(&consumer.clone(), &["test.tick"], 16, move |events: Vec<CloudEvent>| {
            let (db, consumer, largest) = (db.clone(), consumer.clone(), largest.clone());
            async move {
                largest.fetch_max(events.len() as u32, Ordering::SeqCst);
                let (mut tx, fresh) =
                    events::inbox::begin_batch(&db, &consumer, &events).await.map_err(HandlerError::new)?;
                for event in fresh {
                    let tick: Tick = serde_json::from_value(event.data.clone()).unwrap();
                    if tick.n == 13 {
                        // Dropping the transaction rolls back the whole batch.
                        return Err(HandlerError::new("thirteen is unlucky"));
                    }
                    platform::with_tx!(&mut tx, |conn| sqlx::query(
                        "INSERT INTO effects (event_id, subject, n) VALUES ($1, $2, $3)"
                    )
                    .bind(event.id.to_string())
                    .bind(&tick.subject)
                    .bind(tick.n as i64)
                    .execute(conn)
                    .await
                    .map(|_| ()))
                    .map_err(HandlerError::new)?;
                }
                tx.commit().await.map_err(HandlerError::new)
            }
        })
    };
    h.bus.prepare(&subscription).await.unwrap();
    let all: Vec<Tick> = (0..30).map(|n| Tick { subject: format!("s{}", n % 5), n }).collect();
    h.emit(&all).await;
    h.relay().relay_once().await.unwrap();
    let consuming = h.run(subscription).await;
    let settled = testkit::eventually(Duration::from_secs(20), || async {
        h.count("SELECT COUNT(*) FROM effects").await == 29
            && h.bus.dead_letters(&consumer).await.map(|p| p.len() == 1).unwrap_or(false)
    })
    .await;
    assert!(settled, "{} effects", h.count("SELECT COUNT(*) FROM effects").await);
    assert_eq!(h.count("SELECT COUNT(DISTINCT event_id) FROM effects").await, 29, "each applied once");
    let parked = h.bus.dead_letters(&consumer).await.unwrap();
    assert_eq!(serde_json::from_value::<Tick>(parked[0].event.data.clone()).unwrap().n, 13);
    assert!(largest.load(Ordering::SeqCst) > 1, "events were applied in batches");
    let rows: Vec<(String, i64)> =
        platform::with_db!(&h.db, |pool| sqlx::query_as("SELECT subject, n FROM effects ORDER BY seq")
            .fetch_all(pool)
            .await)
        .unwrap();
    let s3: Vec<i64> = rows.iter().filter(|(s, _)| s == "s3").map(|(_, n)| *n).collect();
    assert_eq!(s3, vec![3, 8, 18, 23, 28], "s3 waited for 13 to be parked, in order");
    consuming.stop().await;
    h.finish().await;
}
