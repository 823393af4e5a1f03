//! The transactional outbox: events are written in the caller's transaction.
//!
//! The outbox tables are this crate's, migrated with their own history table
//! (`_events_migrations`) so that every service database gets them without copying DDL.

use platform::{
    db::{ConnectError, Db, Tx},
    with_tx,
};
use sqlx::{migrate::Migrator, types::Json};

use crate::CloudEvent;

const MIGRATIONS_TABLE: &str = "_events_migrations";

/// Creates or upgrades the outbox tables in a service's database.
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
    .map(|_| ()))
}
