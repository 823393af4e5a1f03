//! A service database with the outbox and a test consumer's effect table, and a bus of either kind.

use std::{path::PathBuf, time::Duration};

use events::{Bus, BusConfig, CloudEvent, EventPayload, Relay, RelayConfig, Subscription, bus::RabbitBus};
use platform::{db::Db, with_db, with_tx};
use serde::{Deserialize, Serialize};
use testkit::{Backend, TestDatabase, broker::TestBroker};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    Embedded,
    Rabbit,
}

/// A test payload: `n` numbers events within a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    pub subject: String,
    pub n: u32,
}

impl EventPayload for Tick {
    const TYPE: &'static str = "test.tick";
    fn subject(&self) -> String {
        self.subject.clone()
    }
}

pub struct Harness {
    pub db: Db,
    pub bus: Bus,
    pub namespace: String,
    consumers: Vec<String>,
    data_dir: PathBuf,
    broker: Option<TestBroker>,
    _database: TestDatabase,
}

/// The bus settings of a test: short retries; `broker` is the test's virtual host on RabbitMQ.
pub fn quick_config(broker: Option<&TestBroker>, namespace: &str) -> BusConfig {
    BusConfig {
        url: broker.map_or_else(|| "memory:".to_owned(), |broker| broker.url.clone()),
        namespace: namespace.to_owned(),
        retry_delays: vec![Duration::from_millis(50), Duration::from_millis(100)],
        max_attempts: 4,
        handler_timeout: Duration::from_secs(10),
        ..BusConfig::default()
    }
}

impl Harness {
    /// A service database (SQLite for the embedded bus, PostgreSQL for RabbitMQ) and the bus.
    /// `broker` is given by a test that needs the broker to itself; others share it.
    pub async fn start(kind: BusKind, test: &str, broker: Option<TestBroker>) -> Option<Self> {
        // Warnings (reconnects, retries) show in a failing test's output.
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn,events=info").try_init();
        let broker = match (kind, broker) {
            (BusKind::Rabbit, None) => Some(TestBroker::shared(test).await?),
            (_, broker) => broker,
        };
        let backend = if kind == BusKind::Embedded { Backend::Sqlite } else { Backend::Postgres };
        let database = TestDatabase::create(backend).await?;
        let db = Db::connect(&database.url, &Default::default()).await.unwrap();
        events::migrate(&db).await.unwrap();
        // `seq` records the order effects were applied in.
        let ddl = match backend {
            Backend::Postgres => {
                "CREATE TABLE effects (seq BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL, subject TEXT NOT NULL, n BIGINT NOT NULL)"
            }
            Backend::Sqlite => {
                "CREATE TABLE effects (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, subject TEXT NOT NULL, n BIGINT NOT NULL)"
            }
        };
        with_db!(&db, |pool| sqlx::query(ddl).execute(pool).await.map(|_| ())).unwrap();
        let namespace = broker.as_ref().map_or_else(|| format!("test-{test}"), |broker| broker.namespace.clone());
        let data_dir = testkit::temp_dir("bus");
        let bus = Bus::connect(&quick_config(broker.as_ref(), &namespace), &data_dir).await.unwrap();
        Some(Self { db, bus, namespace, consumers: Vec::new(), data_dir, broker, _database: database })
    }

    /// The test's virtual host on RabbitMQ.
    pub fn amqp_url(&self) -> &str {
        self.broker.as_ref().map_or("memory:", |broker| broker.url.as_str())
    }

    /// Remembers a consumer whose queues the harness deletes at the end.
    pub fn consumer(&mut self, name: &str) -> String {
        self.consumers.push(name.to_owned());
        name.to_owned()
    }

    /// Writes ticks through the outbox in one committed transaction.
    pub async fn emit(&self, ticks: &[Tick]) {
        let mut tx = self.db.begin().await.unwrap();
        for tick in ticks {
            events::enqueue(&mut tx, &CloudEvent::new("test", tick, None).unwrap()).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    pub fn relay(&self) -> Relay {
        let config = RelayConfig { poll_interval: Duration::from_millis(200), ..RelayConfig::default() };
        Relay::new("test", self.db.clone(), self.bus.clone(), config)
    }

    pub fn spawn_relay(&self, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.relay().run_until_stopped(stop.clone()))
    }

    /// Applies a tick once: the effect row and the inbox record commit together.
    pub async fn apply(db: &Db, consumer: &str, event: &CloudEvent) -> Result<bool, sqlx::Error> {
        let Some(mut tx) = events::inbox::begin(db, consumer, event).await? else { return Ok(false) };
        let tick: Tick = serde_json::from_value(event.data.clone()).expect("a tick");
        with_tx!(&mut tx, |conn| sqlx::query("INSERT INTO effects (event_id, subject, n) VALUES ($1, $2, $3)")
            .bind(event.id.to_string())
            .bind(&tick.subject)
            .bind(tick.n as i64)
            .execute(conn)
            .await
            .map(|_| ()))?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        with_db!(&self.db, |pool| sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await).unwrap()
    }

    /// Prepares `subscription` and consumes it in the background until the returned handle stops.
    pub async fn run(&self, subscription: Subscription) -> Consuming {
        self.bus.prepare(&subscription).await.unwrap();
        let stop = CancellationToken::new();
        let (bus, token) = (self.bus.clone(), stop.clone());
        let task = tokio::spawn(async move { bus.consume(subscription, token).await });
        Consuming { stop, task }
    }

    pub async fn finish(self) {
        if let Bus::Rabbit(bus) = &self.bus {
            let consumers: Vec<&str> = self.consumers.iter().map(String::as_str).collect();
            delete_topology(bus, &consumers).await;
        }
        self.db.close().await;
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A consumer running in the background.
pub struct Consuming {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Consuming {
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

pub async fn delete_topology(bus: &RabbitBus, consumers: &[&str]) {
    if let Err(error) = bus.delete_topology(consumers).await {
        eprintln!("could not delete the test topology: {error}");
    }
}

pub fn ticks(subject: &str, range: std::ops::RangeInclusive<u32>) -> Vec<Tick> {
    range.map(|n| Tick { subject: subject.to_owned(), n }).collect()
}

/// Defines `embedded` and `rabbitmq` variants of a test taking a [`BusKind`].
#[macro_export]
macro_rules! on_both_buses {
    ($($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() {
                    super::$test($crate::common::BusKind::Embedded).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn rabbitmq() {
                    super::$test($crate::common::BusKind::Rabbit).await;
                }
            }
        )+
    };
}
