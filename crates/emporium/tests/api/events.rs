//! Identity's `user.registered` flows end to end: outbox → relay → bus → the replayable log, as
//! `emporium events tail` shows it.

use std::time::Duration;

use serde_json::Value;
use testkit::{Backend, TestDatabase};
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// Reads `user.registered` events from the log until one names `email` (or time runs out).
async fn find_registration(bus: &events::Bus, email: &str) -> Option<events::CloudEvent> {
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        stopper.cancel();
    });
    let mut found = None;
    bus.tail(events::TailFrom::Start, "user.registered", stop, |event| {
        if event.data["email"] == email {
            found = Some(event);
            return false;
        }
        true
    })
    .await
    .unwrap();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_registered_reaches_the_embedded_log_and_the_cli_shows_it() {
    let db = TestDatabase::sqlite();
    let shop = TestShop::start(db).await;
    let email = unique_email("flow");
    let user = shop.register(&email).await;
    let user_id = user["user"]["id"].as_str().unwrap().to_owned();

    let bus = shop.settings.events().await.unwrap().bus;
    let event = find_registration(&bus, &email).await.expect("the event reached the log");
    assert_eq!(event.subject.as_deref(), Some(user_id.as_str()));
    assert_eq!(event.source, "/emporium/identity");
    // The relay marks events sent once the bus has taken them: a moment after they are in the log.
    let sent = testkit::eventually(Duration::from_secs(5), || async {
        shop.count("SELECT COUNT(*) FROM event_outbox WHERE published_at IS NULL").await == 0
    })
    .await;
    assert!(sent, "the outbox is empty once its events are published");
    let metrics = String::from_utf8(shop.identity.get("/metrics").send().await.body.to_vec()).unwrap();
    assert!(metrics.contains(r#"events_published_total{service="identity",type="user.registered"}"#), "{metrics}");
    // The gauges are refreshed about once a second.
    let gauges = testkit::eventually(Duration::from_secs(5), || async {
        let metrics = String::from_utf8(shop.identity.get("/metrics").send().await.body.to_vec()).unwrap();
        metrics.contains(r#"outbox_pending{service="identity"} 0"#)
            && metrics.contains(r#"outbox_oldest_pending_age_seconds{service="identity"} 0"#)
    })
    .await;
    assert!(gauges, "the outbox gauges show an empty outbox");

    // The operator's view: `emporium events tail`, from another process.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_emporium"))
        .args(["events", "tail", "--from-start", "--type", "user.*", "--limit", "2"])
        .env("EMPORIUM_DATA_DIR", &shop.settings.data_dir)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output).await.unwrap().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "the bootstrap admin and the new user");
    assert!(lines.iter().all(|e| e["type"] == "user.registered" && e["specversion"] == "1.0"));
    assert!(lines.iter().any(|e| e["subject"] == user_id.as_str()));
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_registered_reaches_the_rabbitmq_stream() {
    let Some(broker) = testkit::broker::TestBroker::shared("identity-flow").await else { return };
    let Some(db) = TestDatabase::create(Backend::Postgres).await else { return };
    let shop = TestShop::start_with(db, |s| {
        s.events.url = broker.url.clone();
        s.events.namespace = broker.namespace.clone();
        s.catalog.replica_id = Some("replica-1".to_owned());
        s.cart.replica_id = Some("replica-1".to_owned());
    })
    .await;
    let email = unique_email("stream");
    shop.register(&email).await;
    let ready = shop.identity.get("/health/ready").send().await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["checks"]["broker"], "ok");

    let events = shop.settings.events().await.unwrap();
    let event = find_registration(&events.bus, &email).await.expect("the event reached the stream");
    assert_eq!(event.event_type, "user.registered");
    shop.stop().await;
}

/// The operator's repair tools, as commands: list parked events, then requeue them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_replays_dead_letters() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let data_dir = testkit::temp_dir("dead-letters");
    let config = events::BusConfig {
        retry_delays: vec![Duration::from_millis(20)],
        max_attempts: 2,
        ..events::BusConfig::default()
    };
    let bus = events::Bus::connect(&config, &data_dir).await.unwrap();
    let broken = Arc::new(AtomicBool::new(true));
    let applied = Arc::new(AtomicBool::new(false));
    let subscription = {
        let (broken, applied) = (broken.clone(), applied.clone());
        events::Subscription::new("mailer", &["user.registered"], move |_event| {
            let (broken, applied) = (broken.clone(), applied.clone());
            async move {
                if broken.load(Ordering::SeqCst) {
                    return Err(events::HandlerError::new("smtp refused"));
                }
                applied.store(true, Ordering::SeqCst);
                Ok(())
            }
        })
    };
    bus.prepare(&subscription).await.unwrap();
    let payload = events::payloads::UserRegistered {
        user_id: uuid::Uuid::now_v7(),
        email: "parked@example.com".into(),
        name: "Parked".into(),
        registered_at: chrono::Utc::now(),
        signed_up_with: "password".into(),
        email_verified: false,
    };
    bus.publish(&[events::CloudEvent::new("identity", &payload, None).unwrap()]).await.unwrap();
    let stop = CancellationToken::new();
    let consuming = tokio::spawn({
        let (bus, stop) = (bus.clone(), stop.clone());
        async move { bus.consume(subscription, stop).await }
    });
    let parked = testkit::eventually(Duration::from_secs(10), || async {
        bus.dead_letters("mailer").await.map(|p| p.len() == 1).unwrap_or(false)
    })
    .await;
    assert!(parked);

    let cli = |args: &'static [&'static str]| {
        let data_dir = data_dir.clone();
        async move {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_emporium"))
                .args(args)
                .env("EMPORIUM_DATA_DIR", &data_dir)
                .output()
                .await
                .unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            (String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
        }
    };
    let (listed, summary) = cli(&["events", "dead-letters", "--consumer", "mailer"]).await;
    let letter: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(letter["event"]["data"]["email"], "parked@example.com");
    assert_eq!(letter["attempts"], 2);
    assert_eq!(letter["error"], "smtp refused");
    assert!(summary.contains("1 parked event(s) for mailer"), "{summary}");

    broken.store(false, Ordering::SeqCst);
    let (_, replayed) = cli(&["events", "replay-dead-letters", "--consumer", "mailer"]).await;
    assert!(replayed.contains("requeued 1"), "{replayed}");
    assert!(testkit::eventually(Duration::from_secs(10), || async { applied.load(Ordering::SeqCst) }).await);
    assert!(bus.dead_letters("mailer").await.unwrap().is_empty());
    stop.cancel();
    consuming.await.unwrap();
    let _ = std::fs::remove_dir_all(data_dir);
}
