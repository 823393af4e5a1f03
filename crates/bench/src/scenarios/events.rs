//! `emporium bench events`: the event backbone on RabbitMQ and PostgreSQL.
//!
//! Three phases in one run:
//! 1. raw: lapin publishing with confirms (in batches of the relay's size) into a persisted quorum
//!    queue that a plain consumer drains: what the client library and broker can do;
//! 2. end to end at saturation: writers commit events to an outbox, the relay publishes them, a
//!    consumer applies each in a PostgreSQL transaction with its inbox record;
//! 3. latency at a fixed rate: from each event's commit to its handler.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use events::{Bus, BusConfig, CloudEvent, EventPayload, HandlerError, Relay, RelayConfig, Subscription};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use platform::{
    db::{Db, TxConn},
    with_db,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Report;
use crate::load::Measurement;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    subject: String,
    n: u64,
}

impl EventPayload for Order {
    const TYPE: &'static str = "bench.order";
    fn subject(&self) -> String {
        self.subject.clone()
    }
}

/// Events written but not yet applied, beyond which writers wait.
const MAX_IN_FLIGHT: u64 = 4_000;

pub struct EventsBench {
    pub amqp_url: String,
    pub postgres_url: String,
    pub duration: Duration,
    pub rate: u32,
    /// The consumer's prefetch: with batching, how many events it can have in hand.
    pub prefetch: u16,
    /// The consumer's lanes (events applied side by side, by subject).
    pub lanes: usize,
    pub relay: RelayConfig,
}

pub async fn events(bench: EventsBench) -> anyhow::Result<Report> {
    let namespace = format!("bench-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let database = format!("emporium_bench_{}", Uuid::new_v4().simple());
    let db_url = match bench.postgres_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{database}"),
        None => anyhow::bail!("--postgres must name a database"),
    };
    let db = Db::connect(&db_url, &Default::default()).await.context("connecting to PostgreSQL")?;
    events::migrate(&db).await?;
    with_db!(&db, |pool| sqlx::query("CREATE TABLE effects (event_id UUID PRIMARY KEY, n BIGINT NOT NULL)")
        .execute(pool)
        .await
        .map(|_| ()))?;
    let config = BusConfig {
        url: bench.amqp_url.clone(),
        namespace: namespace.clone(),
        prefetch: bench.prefetch,
        concurrency: bench.lanes,
        ..BusConfig::default()
    };
    let bus = Bus::connect(&config, std::path::Path::new(".")).await?;

    let outcome = run(&bench, &db, &bus, &namespace).await;

    if let Bus::Rabbit(rabbit) = &bus {
        let _ = rabbit.delete_topology(&["bench"]).await;
    }
    db.close().await;
    if let Ok(Db::Postgres(pool)) = Db::connect(&bench.postgres_url, &Default::default()).await {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", platform::db::quote_ident(&database));
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&pool).await;
    }
    outcome
}

async fn run(bench: &EventsBench, db: &Db, bus: &Bus, namespace: &str) -> anyhow::Result<Report> {
    // The consumer: one PostgreSQL transaction per event, with its inbox record.
    let applied = Arc::new(AtomicU64::new(0));
    let committed: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let latency = Arc::new(Mutex::new(histogram()));
    let measuring = Arc::new(AtomicBool::new(false));
    let subscription = {
        let (db, applied, committed, latency, measuring) =
            (db.clone(), applied.clone(), committed.clone(), latency.clone(), measuring.clone());
        Subscription::batched("bench", &[Order::TYPE], 64, move |events: Vec<CloudEvent>| {
            let (db, applied, committed, latency, measuring) =
                (db.clone(), applied.clone(), committed.clone(), latency.clone(), measuring.clone());
            async move {
                let (mut tx, fresh) =
                    events::inbox::begin_batch(&db, "bench", &events).await.map_err(HandlerError::new)?;
                let ids: Vec<Uuid> = fresh.iter().map(|e| e.id).collect();
                let numbers = fresh
                    .iter()
                    .map(|e| serde_json::from_value::<Order>(e.data.clone()).map(|o| o.n as i64))
                    .collect::<Result<Vec<i64>, _>>()
                    .map_err(HandlerError::new)?;
                let TxConn::Postgres(pg) = tx.conn() else {
                    return Err(HandlerError::new("the bench runs on PostgreSQL"));
                };
                sqlx::query("INSERT INTO effects (event_id, n) SELECT * FROM UNNEST($1::uuid[], $2::bigint[])")
                    .bind(&ids)
                    .bind(&numbers)
                    .execute(&mut **pg)
                    .await
                    .map_err(HandlerError::new)?;
                tx.commit().await.map_err(HandlerError::new)?;
                applied.fetch_add(ids.len() as u64, Ordering::Relaxed);
                if measuring.load(Ordering::Relaxed) {
                    let mut committed = committed.lock().unwrap_or_else(|e| e.into_inner());
                    let mut latency = latency.lock().unwrap_or_else(|e| e.into_inner());
                    for id in &ids {
                        if let Some(started) = committed.remove(id) {
                            latency.saturating_record(started.elapsed().as_micros().max(1) as u64);
                        }
                    }
                }
                Ok(())
            }
        })
    };
    bus.prepare(&subscription).await?;
    let exchange = format!("{namespace}.events");
    let batch = bench.relay.batch_size as usize;
    let raw_before = raw_publish(&bench.amqp_url, namespace, &exchange, batch, bench.duration).await?;
    let stop = CancellationToken::new();
    let consuming = tokio::spawn({
        let (bus, stop) = (bus.clone(), stop.clone());
        async move { bus.consume(subscription, stop).await }
    });
    let relaying =
        tokio::spawn(Relay::new("bench", db.clone(), bus.clone(), bench.relay.clone()).run_until_stopped(stop.clone()));

    // Phase 2: writers flat out; throughput is what gets applied during the window.
    let writing = CancellationToken::new();
    let counter = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (db, writing, counter, applied) = (db.clone(), writing.clone(), counter.clone(), applied.clone());
        writers.spawn(async move {
            while !writing.is_cancelled() {
                // Offer what the pipeline can take: a flood would only measure the writers.
                if counter.load(Ordering::Relaxed).saturating_sub(applied.load(Ordering::Relaxed)) > MAX_IN_FLIGHT {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let _ = write(&db, &counter, 50, None).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // warm up
    let before = applied.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(bench.duration).await;
    let during = applied.load(Ordering::Relaxed) - before;
    let window = started.elapsed().as_secs_f64();
    writing.cancel();
    while writers.join_next().await.is_some() {}
    let written = counter.load(Ordering::Relaxed);
    let drained = wait_until(Duration::from_secs(120), || applied.load(Ordering::Relaxed) >= written).await;
    anyhow::ensure!(drained, "only {} of {written} events were applied", applied.load(Ordering::Relaxed));
    let end_to_end = during as f64 / window;
    // The baseline again: the machine drifts, and the mean of both sides is the fair yardstick.
    let raw_after = raw_publish(&bench.amqp_url, namespace, &exchange, batch, bench.duration).await?;
    let raw_rate = (raw_before.0 + raw_after.0) / 2.0;

    // Phase 3: a steady rate; latency from commit to handler.
    measuring.store(true, Ordering::Relaxed);
    let per_tick = 5u64;
    let ticks_per_sec = (bench.rate as u64 / per_tick).max(1);
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / ticks_per_sec));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let steady_started = Instant::now();
    let before = counter.load(Ordering::Relaxed);
    while steady_started.elapsed() < bench.duration {
        ticker.tick().await;
        write(db, &counter, per_tick as usize, Some(&committed)).await?;
    }
    let steady_written = counter.load(Ordering::Relaxed) - before;
    let steady_rate = steady_written as f64 / steady_started.elapsed().as_secs_f64();
    let total = counter.load(Ordering::Relaxed);
    let drained = wait_until(Duration::from_secs(60), || applied.load(Ordering::Relaxed) >= total).await;
    anyhow::ensure!(drained, "the steady phase did not drain");
    stop.cancel();
    let _ = tokio::join!(consuming, relaying);

    let duplicates: i64 =
        with_db!(db, |pool| sqlx::query_scalar("SELECT COUNT(*) - COUNT(DISTINCT event_id) FROM effects")
            .fetch_one(pool)
            .await)?;
    anyhow::ensure!(duplicates == 0, "{duplicates} effects were applied twice");

    let latency = latency.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let measurement = |kind: &str, rate: f64, requests: u64, seconds: f64, h: Option<&Histogram<u64>>| Measurement {
        kind: kind.to_owned(),
        concurrency: 1,
        duration_secs: seconds,
        requests,
        errors: 0,
        requests_per_sec: rate,
        p50_us: h.map_or(0, |h| h.value_at_quantile(0.5)),
        p90_us: h.map_or(0, |h| h.value_at_quantile(0.9)),
        p99_us: h.map_or(0, |h| h.value_at_quantile(0.99)),
        max_us: h.map_or(0, Histogram::max),
    };
    let measurements = vec![
        measurement("raw publish+confirm, before", raw_before.0, raw_before.1, raw_before.2, None),
        measurement("raw publish+confirm, after", raw_after.0, raw_after.1, raw_after.2, None),
        measurement("outbox→RabbitMQ→consumer", end_to_end, during, window, None),
        measurement(
            &format!("commit→handler at {:.0}/s", steady_rate),
            steady_rate,
            steady_written,
            bench.duration.as_secs_f64(),
            Some(&latency),
        ),
    ];
    println!("{:<34} {:>12} {:>10} {:>10} {:>10} {:>10}", "path", "events/s", "p50", "p90", "p99", "max");
    for m in &measurements {
        let show = |us: u64| if m.p50_us == 0 { "-".to_owned() } else { format!("{:.1} ms", us as f64 / 1000.0) };
        println!(
            "{:<34} {:>12.0} {:>10} {:>10} {:>10} {:>10}",
            m.kind,
            m.requests_per_sec,
            show(m.p50_us),
            show(m.p90_us),
            show(m.p99_us),
            show(m.max_us)
        );
    }
    let notes = vec![
        format!(
            "end to end reaches {:.1}% of raw publish-with-confirms throughput ({raw_rate:.0}/s, the mean of before and after; target >= 50%)",
            100.0 * end_to_end / raw_rate
        ),
        format!(
            "relay batches of {batch}; consumer: {} lane(s), prefetch {}, batches of up to 64 applied in one PostgreSQL transaction",
            bench.lanes, bench.prefetch
        ),
        format!(
            "at {:.0} events/s, commit to handler: p50 {:.1} ms, p99 {:.1} ms (target p99 < 50 ms)",
            steady_rate,
            latency.value_at_quantile(0.5) as f64 / 1000.0,
            latency.value_at_quantile(0.99) as f64 / 1000.0
        ),
        format!("{} events applied, none twice", total),
    ];
    for note in &notes {
        println!("{note}");
    }
    Ok(Report { scenario: "events".to_owned(), measurements, notes })
}

/// Commits `count` events in one transaction; with `committed`, notes when each was committed.
async fn write(
    db: &Db,
    counter: &AtomicU64,
    count: usize,
    committed: Option<&Mutex<HashMap<Uuid, Instant>>>,
) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    let batch = (0..count)
        .map(|_| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            CloudEvent::new("bench", &Order { subject: format!("order-{}", n % 1000), n }, None)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<Uuid> = batch.iter().map(|e| e.id).collect();
    events::enqueue_all(&mut tx, &batch).await?;
    if let Some(committed) = committed {
        let now = Instant::now();
        committed.lock().unwrap_or_else(|e| e.into_inner()).extend(ids.into_iter().map(|id| (id, now)));
    }
    tx.commit().await?;
    Ok(())
}

async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

/// Publishes with confirms, `batch` at a time, through the bus's exchange (so each message is
/// also appended to the log stream, as real events are) into a quorum queue a plain consumer
/// drains. Returns (events/s, events, seconds).
async fn raw_publish(
    url: &str,
    namespace: &str,
    exchange: &str,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<(f64, u64, f64)> {
    let connection =
        Connection::connect(url, ConnectionProperties::default()).await.context("connecting to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let queue = format!("{namespace}.raw");
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    channel
        .queue_declare(queue.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, arguments)
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            "bench.raw".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let drain = connection.create_channel().await?;
    drain.basic_qos(256, BasicQosOptions::default()).await?;
    let mut deliveries = drain
        .basic_consume(queue.as_str().into(), "drain".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let draining = tokio::spawn(async move {
        while let Some(Ok(delivery)) = deliveries.next().await {
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    });
    let body = serde_json::to_vec(&CloudEvent::new("bench", &Order { subject: "order-1".into(), n: 1 }, None)?)?;
    let properties =
        BasicProperties::default().with_content_type("application/cloudevents+json".into()).with_delivery_mode(2);
    let started = Instant::now();
    let mut published = 0u64;
    while started.elapsed() < duration {
        let mut confirms = Vec::with_capacity(batch);
        for _ in 0..batch {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    "bench.raw".into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties.clone(),
                )
                .await?;
            confirms.push(confirm);
        }
        for confirm in futures_util::future::join_all(confirms).await {
            anyhow::ensure!(confirm?.is_ack(), "the broker refused a message");
        }
        published += batch as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    channel.queue_delete(queue.as_str().into(), Default::default()).await?;
    draining.abort();
    let _ = connection.close(200, "done".into()).await;
    Ok((published as f64 / seconds, published, seconds))
}
