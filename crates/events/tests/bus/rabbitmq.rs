//! RabbitMQ under failure: the broker stopped and started mid-stream, and two relays on one
//! outbox.

use std::{collections::HashMap, process::Command, time::Duration};

use events::{CloudEvent, HandlerError, Subscription};
use futures_util::StreamExt;
use lapin::{
    Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use tokio_util::sync::CancellationToken;

use crate::common::{BusKind, Harness, Tick};

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl").args(args).status().expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

/// Starts the broker again however the test ends: a failed assertion must not leave it down for
/// every test after it.
struct BrokerRestarted;

impl Drop for BrokerRestarted {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").status();
        let _ = Command::new("rabbitmqctl").arg("await_startup").status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_survive_a_broker_restart() {
    // Nobody else may use the broker while it is down.
    let Some(broker) = testkit::broker::TestBroker::exclusive("restart").await else { return };
    let Some(mut h) = Harness::start(BusKind::Rabbit, "restart", Some(broker)).await else { return };
    let consumer = h.consumer("restart");
    let stop = CancellationToken::new();
    let subscription = {
        let (db, consumer) = (h.db.clone(), consumer.clone());
        Subscription::new(&consumer.clone(), &["test.tick"], move |event: CloudEvent| {
            let (db, consumer) = (db.clone(), consumer.clone());
            async move { Harness::apply(&db, &consumer, &event).await.map(|_| ()).map_err(HandlerError::new) }
        })
    };
    let consuming = h.run(subscription).await;
    let relay = h.spawn_relay(&stop);

    // 10,000 events in 100 transactions across 50 subjects; the broker goes away half way.
    let mut restarted = None;
    for batch in 0..100u32 {
        let ticks: Vec<Tick> = (0..100).map(|i| Tick { subject: format!("s{}", i % 50), n: batch * 100 + i }).collect();
        h.emit(&ticks).await;
        if batch == 50 {
            tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"])).await.unwrap();
            restarted = Some(BrokerRestarted);
        }
        if batch == 70 {
            tokio::task::spawn_blocking(|| rabbitmqctl(&["start_app"])).await.unwrap();
            tokio::task::spawn_blocking(|| rabbitmqctl(&["await_startup"])).await.unwrap();
            restarted = None;
        }
    }
    drop(restarted);
    let all = testkit::eventually(Duration::from_secs(180), || async {
        h.count("SELECT COUNT(*) FROM effects").await == 10_000
    })
    .await;
    assert!(all, "only {} of 10000 applied", h.count("SELECT COUNT(*) FROM effects").await);
    assert_eq!(h.count("SELECT COUNT(DISTINCT event_id) FROM effects").await, 10_000, "each effect exactly once");
    assert_eq!(h.count("SELECT COUNT(*) FROM event_outbox WHERE published_at IS NULL").await, 0);
    // Per subject, the effects were applied in the order the events were written.
    let rows: Vec<(String, i64)> =
        platform::with_db!(&h.db, |pool| sqlx::query_as("SELECT subject, n FROM effects ORDER BY seq")
            .fetch_all(pool)
            .await)
        .unwrap();
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut inversions = 0;
    for (subject, n) in rows {
        if last.get(&subject).is_some_and(|&prev| prev > n) {
            inversions += 1;
        }
        last.insert(subject, n);
    }
    assert_eq!(inversions, 0, "per-subject order broke {inversions} times");
    stop.cancel();
    relay.await.unwrap();
    consuming.stop().await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_outbox_publish_each_event_once_in_subject_order() {
    let Some(h) = Harness::start(BusKind::Rabbit, "relays", None).await else { return };
    // A plain queue bound to everything sees every publish, duplicates included.
    let connection = Connection::connect(h.amqp_url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let witness = format!("{}.witness", h.namespace);
    let exchange = format!("{}.events", h.namespace);
    h.bus.publish(&[]).await.unwrap();
    h.bus.ping().await.unwrap();
    // The exchange exists once something published or consumed; publish one marker to make sure.
    let marker = CloudEvent::new("test", &Tick { subject: "marker".into(), n: 0 }, None).unwrap();
    h.bus.publish(std::slice::from_ref(&marker)).await.unwrap();
    channel
        .queue_declare(
            witness.as_str().into(),
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            witness.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut deliveries = channel
        .basic_consume(witness.as_str().into(), "witness".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();

    let stop = CancellationToken::new();
    let (first, second) = (h.spawn_relay(&stop), h.spawn_relay(&stop));
    for batch in 0..30u32 {
        let ticks: Vec<Tick> = (0..100).map(|i| Tick { subject: format!("s{}", i % 40), n: batch * 100 + i }).collect();
        h.emit(&ticks).await;
    }

    let mut seen: HashMap<uuid::Uuid, u32> = HashMap::new();
    let mut order: HashMap<String, Vec<u32>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 3000 && tokio::time::Instant::now() < deadline {
        let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(5), deliveries.next()).await else {
            continue;
        };
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        let event: CloudEvent = serde_json::from_slice(&delivery.data).unwrap();
        let tick: Tick = serde_json::from_value(event.data.clone()).unwrap();
        if tick.subject == "marker" {
            continue;
        }
        *seen.entry(event.id).or_default() += 1;
        order.entry(tick.subject).or_default().push(tick.n);
    }
    // Anything published twice would arrive shortly after; give it the chance.
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_millis(500), deliveries.next()).await {
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        let event: CloudEvent = serde_json::from_slice(&delivery.data).unwrap();
        *seen.entry(event.id).or_default() += 1;
    }
    assert_eq!(seen.len(), 3000, "every event published");
    assert!(seen.values().all(|&n| n == 1), "no event published twice");
    for (subject, ns) in &order {
        let mut sorted = ns.clone();
        sorted.sort();
        assert_eq!(ns, &sorted, "subject {subject} out of order");
    }
    assert_eq!(h.count("SELECT COUNT(*) FROM event_outbox WHERE published_at IS NULL").await, 0);
    stop.cancel();
    let _ = tokio::join!(first, second);
    let _ = connection.close(200, "done".into()).await;
    h.finish().await;
}
