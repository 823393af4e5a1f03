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
    db::{Db, Tx},
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

/// Forgets events applied before `before`: no broker redelivers that late.
pub async fn prune(db: &Db, before: chrono::DateTime<chrono::Utc>) -> Result<u64, sqlx::Error> {
    with_db!(db, |pool| sqlx::query("DELETE FROM event_inbox WHERE processed_at < $1")
        .bind(before)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
}
