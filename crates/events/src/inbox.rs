//! The inbox: a consumer's effect and the id of the event that caused it commit together.
//!
//! ```ignore
//! let Some(mut tx) = inbox::begin(&db, "orders", &event).await? else {
//!     return Ok(()); // applied before: acknowledge without a second effect
//! };
//! /* … the effect, in `tx` … */
//! tx.commit().await?;
//! ```

use platform::{
    db::{Db, Tx, TxConn},
    with_db, with_tx,
};

use crate::CloudEvent;

/// Starts the transaction that applies `event` for `consumer`, or `None` when it was applied
/// already. The id is recorded first, so two concurrent deliveries of one event serialise on it
/// and the second finds it taken.
pub async fn begin(db: &Db, consumer: &str, event: &CloudEvent) -> Result<Option<Tx>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let recorded = with_tx!(&mut tx, |conn| sqlx::query(
        "INSERT INTO event_inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)
         ON CONFLICT (consumer, event_id) DO NOTHING"
    )
    .bind(consumer)
    .bind(event.id)
    .bind(platform::time::now())
    .execute(conn)
    .await
    .map(|r| r.rows_affected()))?;
    if recorded == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    Ok(Some(tx))
}

/// Starts the transaction that applies `events` for `consumer`, returning it with the events not
/// applied before (in their order). One statement records every id on PostgreSQL.
pub async fn begin_batch<'e>(
    db: &Db,
    consumer: &str,
    events: &'e [CloudEvent],
) -> Result<(Tx, Vec<&'e CloudEvent>), sqlx::Error> {
    let mut tx = db.begin().await?;
    let now = platform::time::now();
    let fresh: std::collections::HashSet<uuid::Uuid> = match tx.conn() {
        TxConn::Postgres(pg) => {
            let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
            sqlx::query_scalar(
                "INSERT INTO event_inbox (consumer, event_id, processed_at)
                 SELECT $1, id, $3 FROM UNNEST($2::uuid[]) AS id
                 ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
            )
            .bind(consumer)
            .bind(&ids)
            .bind(now)
            .fetch_all(&mut **pg)
            .await?
            .into_iter()
            .collect()
        }
        TxConn::Sqlite(lite) => {
            let mut fresh = std::collections::HashSet::new();
            for event in events {
                let recorded = sqlx::query(
                    "INSERT INTO event_inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)
                     ON CONFLICT (consumer, event_id) DO NOTHING",
                )
                .bind(consumer)
                .bind(event.id)
                .bind(now)
                .execute(&mut **lite)
                .await?
                .rows_affected();
                if recorded > 0 {
                    fresh.insert(event.id);
                }
            }
            fresh
        }
    };
    Ok((tx, events.iter().filter(|e| fresh.contains(&e.id)).collect()))
}

/// Forgets events applied before `before`: no broker redelivers that late.
pub async fn prune(db: &Db, before: chrono::DateTime<chrono::Utc>) -> Result<u64, sqlx::Error> {
    with_db!(db, |pool| sqlx::query("DELETE FROM event_inbox WHERE processed_at < $1")
        .bind(before)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
}
