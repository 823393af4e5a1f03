//! The transactional outbox: events are written in the caller's transaction, and relayed to
//! the bus after it commits (see `relay`).
//!
//! The outbox and inbox tables are this crate's, migrated with their own history table
//! (`_events_migrations`) so that every service database gets them without copying DDL.

use platform::{
    db::{ConnectError, Db, Tx, TxConn},
    with_tx,
};
use sqlx::{migrate::Migrator, types::Json};

use crate::CloudEvent;

const MIGRATIONS_TABLE: &str = "_events_migrations";

/// The commit signal ([`platform::db::Db::committed`]) of a transaction that wrote events: it
/// wakes this process's relay of that database at once. Every writer runs beside its relay, so
/// that is the relay the events are for; the relays of other replicas poll.
pub(crate) const WRITTEN: &str = "event_outbox";

/// Creates or upgrades the outbox and inbox tables in a service's database.
pub async fn migrate(db: &Db) -> Result<(), ConnectError> {
    let mut postgres: Migrator = sqlx::migrate!("./migrations/postgres");
    let mut sqlite: Migrator = sqlx::migrate!("./migrations/sqlite");
    postgres.dangerous_set_table_name(MIGRATIONS_TABLE);
    sqlite.dangerous_set_table_name(MIGRATIONS_TABLE);
    db.migrate(&postgres, &sqlite).await
}

/// Connects to a service's database and brings its schema up to date: the service's own
/// migrations, then the outbox and inbox.
pub async fn open_database(
    url: &str,
    pool: &platform::db::PoolConfig,
    postgres: &Migrator,
    sqlite: &Migrator,
) -> Result<Db, ConnectError> {
    let db = Db::open(url, pool, postgres, sqlite).await?;
    migrate(&db).await?;
    Ok(db)
}

/// Marks every event not yet sent as sent, without sending it; how many there were. Only for a
/// throw-away database whose events nobody consumes (a benchmark's seeded catalog): anywhere
/// else it loses events.
pub async fn discard_pending(db: &Db) -> Result<u64, sqlx::Error> {
    platform::with_db!(db, |pool| sqlx::query("UPDATE event_outbox SET published_at = $1 WHERE published_at IS NULL")
        .bind(platform::time::now())
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
}

/// Records `events` for publication, in order, with one statement on PostgreSQL.
pub async fn enqueue_all(tx: &mut Tx, events: &[CloudEvent]) -> Result<(), sqlx::Error> {
    match tx.conn() {
        TxConn::Postgres(pg) if events.len() > 1 => {
            let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            let subjects: Vec<Option<&str>> = events.iter().map(|e| e.subject.as_deref()).collect();
            let envelopes: Vec<Json<&CloudEvent>> = events.iter().map(Json).collect();
            let times: Vec<chrono::DateTime<chrono::Utc>> = events.iter().map(|e| e.time).collect();
            // WITH ORDINALITY keeps the rows' sequence numbers in the order given.
            sqlx::query(
                "INSERT INTO event_outbox (event_id, event_type, subject, envelope, created_at)
                 SELECT id, kind, subject, envelope, at
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[])
                      WITH ORDINALITY AS e(id, kind, subject, envelope, at, position)
                 ORDER BY position",
            )
            .bind(&ids)
            .bind(&types)
            .bind(&subjects)
            .bind(&envelopes)
            .bind(&times)
            .execute(&mut **pg)
            .await?;
            tx.signal_on_commit(WRITTEN);
            Ok(())
        }
        _ => {
            for event in events {
                enqueue(tx, event).await?;
            }
            Ok(())
        }
    }
}

/// Records `event` for publication; it is published only if `tx` commits.
pub async fn enqueue(tx: &mut Tx, event: &CloudEvent) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| sqlx::query(
        "INSERT INTO event_outbox (event_id, event_type, subject, envelope, created_at) VALUES ($1, $2, $3, $4, $5)"
    )
    .bind(event.id)
    .bind(&event.event_type)
    .bind(&event.subject)
    .bind(Json(event))
    .bind(event.time)
    .execute(conn)
    .await
    .map(|_| ()))?;
    tx.signal_on_commit(WRITTEN);
    Ok(())
}
