//! The transactional outbox: events are written in the caller's transaction, and relayed to
//! the bus after it commits (see `relay`).
//!
//! The outbox and inbox tables are this crate's, migrated with their own history table
//! (`_events_migrations`) so that every service database gets them without copying DDL.

use std::sync::LazyLock;

use platform::{
    db::{ConnectError, Db, Tx},
    with_tx,
};
use sqlx::{migrate::Migrator, types::Json};
use tokio::sync::watch;

use crate::CloudEvent;

const MIGRATIONS_TABLE: &str = "_events_migrations";

/// Wakes this process's relays when an event is written. On SQLite the relay's write
/// transaction waits for the writer's commit, so waking before the commit loses nothing; on
/// PostgreSQL a trigger's NOTIFY (delivered at commit) wakes the relays of every replica.
static WRITTEN: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

pub(crate) fn written() -> watch::Receiver<u64> {
    WRITTEN.subscribe()
}

/// Creates or upgrades the outbox and inbox tables in a service's database.
pub async fn migrate(db: &Db) -> Result<(), ConnectError> {
    let mut postgres: Migrator = sqlx::migrate!("./migrations/postgres");
    let mut sqlite: Migrator = sqlx::migrate!("./migrations/sqlite");
    postgres.dangerous_set_table_name(MIGRATIONS_TABLE);
    sqlite.dangerous_set_table_name(MIGRATIONS_TABLE);
    db.migrate(&postgres, &sqlite).await
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
    WRITTEN.send_modify(|n| *n = n.wrapping_add(1));
    Ok(())
}
