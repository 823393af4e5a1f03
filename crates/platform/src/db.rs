//! Database pools for both SQL backends, chosen by URL scheme (`sqlite:` or `postgres:`).
//!
//! A service's store is written once: its methods use [`with_db!`] / [`with_tx!`], whose body
//! is compiled once per backend with the concrete pool or connection type. The SQL is shared
//! wherever the dialects agree (`$N` placeholders, `RETURNING`, `ON CONFLICT` work on both);
//! where they do not, the store branches locally. Migrations live per backend.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    str::FromStr,
    sync::{
        Arc, LazyLock, Mutex, RwLock,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Deserialize;
use sqlx::{
    Connection, PgPool, SqlitePool,
    migrate::{MigrateError, Migrator},
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::watch;

/// Pool settings shared by both backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Connections in the pool. Unset: 16 on PostgreSQL; on SQLite twice the cores, because
    /// each SQLite connection is a thread of its own and more of them than cores only contend.
    pub max_connections: Option<u32>,
    /// How long a request waits for a connection before the service answers 503.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self { max_connections: None, acquire_timeout: Duration::from_secs(3) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A connection pool on one of the two SQL backends.
#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// A write transaction on one of the two SQL backends, with the signals to raise once it
/// has committed.
#[derive(Debug)]
pub struct Tx {
    conn: TxConn,
    database: DatabaseId,
    signals: Vec<&'static str>,
    observed: Option<Observed>,
    /// On SQLite, this writer's turn ([`sqlite_writers`]), given up after the transaction ends.
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// A transaction of a service's database, measured: its span, and when it began.
#[derive(Debug)]
struct Observed {
    service: &'static str,
    span: tracing::Span,
    began: Instant,
}

/// What is known of a database a service named as its own ([`Db::observe_as`]).
#[derive(Debug)]
struct Owner {
    service: &'static str,
    /// Transactions waiting for a connection.
    waiting: Arc<AtomicI64>,
}

static OWNERS: LazyLock<RwLock<HashMap<DatabaseId, Owner>>> = LazyLock::new(|| RwLock::new(HashMap::new()));
/// The pool each service measures: the latest it named (tests start many shops in one process).
static POOLS: LazyLock<Mutex<HashMap<&'static str, Sampled>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// A service's pool, and how many of its transactions wait for a connection.
type Sampled = (Db, Arc<AtomicI64>);

/// The connection of a [`Tx`], per backend.
#[derive(Debug)]
pub enum TxConn {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

/// Which database a pool or transaction is on: the same for every pool of this process that
/// connects to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DatabaseId(u64);

/// Signals raised after commits, by database and topic (see [`Tx::signal_on_commit`]).
type Signals = HashMap<(DatabaseId, &'static str), watch::Sender<u64>>;
static SIGNALS: LazyLock<Mutex<Signals>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// How long a SQLite writer waits for its turn, as SQLite's own busy timeout.
const SQLITE_BUSY: Duration = Duration::from_secs(10);

/// The writers' queue of each SQLite database of this process. SQLite admits one writer at a
/// time, and one that finds the lock taken sleeps in its busy handler for 1 to 100 ms before
/// trying again: under a burst of writes (adds to carts) most of a writer's time went to those
/// sleeps, not to writing. Writers wait their turn here instead, first come first served, and
/// the lock is always free when `BEGIN IMMEDIATE` asks for it.
fn sqlite_writers(database: DatabaseId) -> Arc<tokio::sync::Mutex<()>> {
    static WRITERS: LazyLock<Mutex<HashMap<DatabaseId, Arc<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut writers = WRITERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    writers.entry(database).or_default().clone()
}

fn signal(database: DatabaseId, topic: &'static str) -> watch::Sender<u64> {
    let mut signals = SIGNALS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    signals.entry((database, topic)).or_insert_with(|| watch::channel(0).0).clone()
}

/// Runs `$body` with `$pool` bound to the concrete pool (`&PgPool` or `&SqlitePool`).
#[macro_export]
macro_rules! with_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Postgres($pool) => $body,
            $crate::db::Db::Sqlite($pool) => $body,
        }
    };
}

/// Runs `$body` with `$conn` bound to the transaction's connection
/// (`&mut PgConnection` or `&mut SqliteConnection`).
#[macro_export]
macro_rules! with_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $crate::db::Tx::conn($tx) {
            $crate::db::TxConn::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::db::TxConn::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unsupported database url scheme in {0:?}: expected sqlite: or postgres:")]
    UnsupportedScheme(String),
    #[error("invalid database url")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("could not create directory {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("could not migrate the database")]
    Migrate(#[source] MigrateError),
}

impl Db {
    /// Connects to `url`, creating the SQLite file or the PostgreSQL database when it does not
    /// exist yet, so that a fresh deployment needs no manual step.
    pub async fn connect(url: &str, pool: &PoolConfig) -> Result<Self, ConnectError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(ConnectError::InvalidUrl)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY)
                .foreign_keys(true);
            if let Some(parent) = options.get_filename().parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|source| ConnectError::CreateDir { path: parent.display().to_string(), source })?;
            }
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
            let pool = SqlitePoolOptions::new()
                .max_connections(pool.max_connections.unwrap_or(cores * 2).max(1))
                .acquire_timeout(pool.acquire_timeout)
                .connect_with(options)
                .await
                .map_err(ConnectError::Connect)?;
            Ok(Self::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url).map_err(ConnectError::InvalidUrl)?;
            ensure_pg_database(&options).await?;
            let pool = PgPoolOptions::new()
                .max_connections(pool.max_connections.unwrap_or(16).max(1))
                .acquire_timeout(pool.acquire_timeout)
                .connect_with(options)
                .await
                .map_err(ConnectError::Connect)?;
            Ok(Self::Postgres(pool))
        } else {
            Err(ConnectError::UnsupportedScheme(redact_url(url)))
        }
    }

    /// Connects (as [`Db::connect`]) and applies this backend's migrations: how every service
    /// opens its database.
    pub async fn open(
        url: &str,
        pool: &PoolConfig,
        postgres: &Migrator,
        sqlite: &Migrator,
    ) -> Result<Self, ConnectError> {
        let db = Self::connect(url, pool).await?;
        db.migrate(postgres, sqlite).await?;
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Begins a write transaction. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes can fail with
    /// "database is locked" under concurrency instead of waiting its turn.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let database = self.id();
        let owner = OWNERS
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&database)
            .map(|owner| (owner.service, owner.waiting.clone()));
        let observed = owner.as_ref().map(|(service, _)| Observed {
            service,
            span: self.transaction_span(service),
            began: Instant::now(),
        });
        let waiting = owner.map(|(_, waiting)| Waiting::new(waiting));
        let (conn, turn) = match self {
            Self::Postgres(pool) => (pool.begin().await.map(TxConn::Postgres), None),
            Self::Sqlite(pool) => {
                match tokio::time::timeout(SQLITE_BUSY, sqlite_writers(database).lock_owned()).await {
                    Ok(turn) => (pool.begin_with("BEGIN IMMEDIATE").await.map(TxConn::Sqlite), Some(turn)),
                    Err(_) => (Err(sqlx::Error::PoolTimedOut), None),
                }
            }
        };
        drop(waiting);
        let conn = match conn {
            Ok(conn) => conn,
            Err(error) => {
                if let Some(observed) = observed {
                    observed.finish("error");
                }
                return Err(error);
            }
        };
        Ok(Tx { conn, database, signals: Vec::new(), observed, _turn: turn })
    }

    /// A client span for a transaction, when spans are exported: a child of the current span.
    fn transaction_span(&self, service: &'static str) -> tracing::Span {
        if !crate::telemetry::trace::recording() {
            return tracing::Span::none();
        }
        let (system, namespace) = match self {
            Self::Postgres(pool) => {
                ("postgresql", pool.connect_options().get_database().unwrap_or_default().to_owned())
            }
            Self::Sqlite(pool) => ("sqlite", pool.connect_options().get_filename().display().to_string()),
        };
        tracing::info_span!(
            target: crate::telemetry::trace::TRACE_ONLY,
            "db.transaction",
            otel.name = format!("transaction {service}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            "db.system.name" = system,
            "db.namespace" = namespace,
            "db.operation.name" = "transaction",
        )
    }

    /// Names this database as `service`'s own: its pool is sampled into `db_pool_*` and its
    /// transactions measured (`db_transaction_duration_seconds`, and a span each when spans are
    /// exported).
    pub fn observe_as(&self, service: &'static str) {
        let waiting = Arc::new(AtomicI64::new(0));
        OWNERS
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(self.id(), Owner { service, waiting: waiting.clone() });
        POOLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(service, (self.clone(), waiting));
    }

    /// Raised after each commit of a transaction on this database that asked for `topic`
    /// ([`Tx::signal_on_commit`]) in this process. Unlike a `NOTIFY` inside the transaction,
    /// which PostgreSQL serialises with every other notifying commit, it costs the commit
    /// nothing; it reaches only this process.
    pub fn committed(&self, topic: &'static str) -> watch::Receiver<u64> {
        signal(self.id(), topic).subscribe()
    }

    fn id(&self) -> DatabaseId {
        let mut hasher = std::hash::DefaultHasher::new();
        match self {
            Self::Postgres(pool) => {
                let options = pool.connect_options();
                ("postgres", options.get_host(), options.get_port(), options.get_database()).hash(&mut hasher);
            }
            Self::Sqlite(pool) => ("sqlite", pool.connect_options().get_filename()).hash(&mut hasher),
        }
        DatabaseId(hasher.finish())
    }

    /// A round trip to the server, for readiness checks.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        with_db!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// Applies the migrations for this backend. Concurrent replicas serialise on the
    /// migrator's lock.
    pub async fn migrate(&self, postgres: &Migrator, sqlite: &Migrator) -> Result<(), ConnectError> {
        match self {
            Self::Postgres(pool) => postgres.run(pool).await,
            Self::Sqlite(pool) => sqlite.run(pool).await,
        }
        .map_err(ConnectError::Migrate)
    }

    pub async fn close(&self) {
        with_db!(self, |pool| pool.close().await)
    }
}

impl Tx {
    /// The backend connection, for statements that differ between the backends.
    pub fn conn(&mut self) -> &mut TxConn {
        &mut self.conn
    }

    /// Raises `topic`'s signal for this database ([`Db::committed`]) once this transaction
    /// has committed; nothing if it rolls back.
    pub fn signal_on_commit(&mut self, topic: &'static str) {
        if !self.signals.contains(&topic) {
            self.signals.push(topic);
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let committed = match self.conn {
            TxConn::Postgres(tx) => tx.commit().await,
            TxConn::Sqlite(tx) => tx.commit().await,
        };
        if let Some(observed) = self.observed {
            observed.finish(if committed.is_ok() { "commit" } else { "error" });
        }
        committed?;
        for topic in self.signals {
            signal(self.database, topic).send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        let rolled_back = match self.conn {
            TxConn::Postgres(tx) => tx.rollback().await,
            TxConn::Sqlite(tx) => tx.rollback().await,
        };
        if let Some(observed) = self.observed {
            observed.finish(if rolled_back.is_ok() { "rollback" } else { "error" });
        }
        rolled_back
    }

    pub fn backend(&self) -> Backend {
        match self.conn {
            TxConn::Postgres(_) => Backend::Postgres,
            TxConn::Sqlite(_) => Backend::Sqlite,
        }
    }
}

impl Observed {
    fn finish(self, outcome: &'static str) {
        metrics::histogram!("db_transaction_duration_seconds", "service" => self.service, "outcome" => outcome)
            .record(self.began.elapsed().as_secs_f64());
        if outcome == "error" {
            crate::telemetry::trace::fail(&self.span, "the transaction failed");
        }
    }
}

/// Counts a transaction waiting for a connection while it lives.
struct Waiting(Arc<AtomicI64>);

impl Waiting {
    fn new(count: Arc<AtomicI64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sets the `db_pool_*` gauges of every service's pool ([`Db::observe_as`]); called when
/// metrics are rendered.
pub fn sample_pools() {
    let pools = POOLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for (service, (db, waiting)) in pools.iter() {
        let (size, idle, max) =
            with_db!(db, |pool| (pool.size(), pool.num_idle(), pool.options().get_max_connections()));
        let idle = idle.min(size as usize) as f64;
        metrics::gauge!("db_pool_connections", "service" => *service, "state" => "in_use").set(f64::from(size) - idle);
        metrics::gauge!("db_pool_connections", "service" => *service, "state" => "idle").set(idle);
        metrics::gauge!("db_pool_connections_max", "service" => *service).set(f64::from(max));
        metrics::gauge!("db_pool_waiting", "service" => *service).set(waiting.load(Ordering::Relaxed).max(0) as f64);
    }
}

/// Creates the named PostgreSQL database when it does not exist.
async fn ensure_pg_database(options: &PgConnectOptions) -> Result<(), ConnectError> {
    let probe = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(options)).await;
    let Ok(probe) = probe else {
        // Unreachable: the pool reports it with its own context.
        return Ok(());
    };
    match probe {
        Ok(conn) => {
            let _ = conn.close().await;
            Ok(())
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            let Some(name) = options.get_database().map(str::to_owned) else {
                return Ok(());
            };
            let mut admin = PgConnection::connect_with(&options.clone().database("postgres"))
                .await
                .map_err(ConnectError::Connect)?;
            let statement = format!("CREATE DATABASE {}", quote_ident(&name));
            match sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut admin).await {
                Ok(_) => {}
                // Another replica created it first.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
                Err(e) => return Err(ConnectError::Connect(e)),
            }
            let _ = admin.close().await;
            Ok(())
        }
        // Other failures surface from the pool with their own context.
        Err(_) => Ok(()),
    }
}

/// Quotes an SQL identifier: the name comes from configuration, never from a request.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A database URL with its password removed, fit for a log line or an error message.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The problem with `service`'s configured `database_url`, if it names neither backend.
pub fn check_database_url(service: &str, url: Option<&str>) -> Option<String> {
    url.filter(|url| !["sqlite:", "postgres:", "postgresql:"].iter().any(|scheme| url.starts_with(scheme)))
        .map(|_| format!("{service}.database_url must start with sqlite: or postgres:"))
}

/// Whether the error means the database could not be reached (a 503), rather than a fault in
/// what was asked of it. PostgreSQL going down ends each session with an error of its own
/// (SQLSTATE class 57, operator intervention: `57P01` on a fast shutdown) or of class 08
/// (connection exception), before the connection is gone.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_))
        || error
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code.starts_with("57P") || code.starts_with("08"))
}

pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/identity"), "postgres://app:***@db:5432/identity");
        assert_eq!(redact_url("sqlite://data/identity.db"), "sqlite://data/identity.db");
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[tokio::test]
    async fn rejects_unknown_schemes() {
        let error = Db::connect("mysql://localhost/x", &PoolConfig::default()).await.unwrap_err();
        assert!(matches!(error, ConnectError::UnsupportedScheme(_)));
    }

    #[tokio::test]
    async fn sqlite_round_trip_with_shared_sql() {
        let dir = std::env::temp_dir().join(format!("emporium-db-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/nested/test.db", dir.display());
        let db = Db::connect(&url, &PoolConfig::default()).await.unwrap();
        db.ping().await.unwrap();
        with_db!(&db, |pool| sqlx::query("CREATE TABLE t (id BLOB PRIMARY KEY, n BIGINT NOT NULL)")
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .unwrap();
        let id = uuid::Uuid::now_v7();
        let mut tx = db.begin().await.unwrap();
        with_tx!(&mut tx, |conn| sqlx::query("INSERT INTO t (id, n) VALUES ($1, $2)")
            .bind(id)
            .bind(7_i64)
            .execute(conn)
            .await
            .map(|r| r.rows_affected()))
        .unwrap();
        tx.commit().await.unwrap();
        let n: i64 =
            with_db!(&db, |pool| sqlx::query_scalar("SELECT n FROM t WHERE id = $1").bind(id).fetch_one(pool).await)
                .unwrap();
        assert_eq!(n, 7);
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn commit_signals_reach_the_same_database_only_after_commit() {
        let dir = std::env::temp_dir().join(format!("emporium-db-{}", uuid::Uuid::new_v4()));
        let url = |name: &str| format!("sqlite://{}/{name}.db", dir.display());
        let config = PoolConfig::default();
        let one = Db::connect(&url("one"), &config).await.unwrap();
        let same = Db::connect(&url("one"), &config).await.unwrap();
        let other = Db::connect(&url("two"), &config).await.unwrap();
        let (mut on_same, on_other) = (same.committed("test"), other.committed("test"));

        let mut tx = one.begin().await.unwrap();
        tx.signal_on_commit("test");
        tx.rollback().await.unwrap();
        assert!(!on_same.has_changed().unwrap(), "a rolled back transaction raises nothing");

        let mut tx = one.begin().await.unwrap();
        tx.signal_on_commit("test");
        tx.signal_on_commit("test");
        assert!(!on_same.has_changed().unwrap(), "nothing is raised before the commit");
        tx.commit().await.unwrap();
        assert!(on_same.has_changed().unwrap(), "another pool on the same database hears the commit");
        assert_eq!(*on_same.borrow_and_update(), 1, "raised once per commit");
        assert!(!on_other.has_changed().unwrap(), "another database hears nothing");
        assert!(!one.committed("another topic").has_changed().unwrap());
        for db in [one, same, other] {
            db.close().await;
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
