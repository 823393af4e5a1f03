//! The outbox relay: moves committed events from a service's `event_outbox` to the bus.
//!
//! Each round claims a batch of pending rows in order, publishes them with confirms, and marks
//! them sent in the same transaction; a failure anywhere rolls back and the rows stay pending
//! (a publish that succeeded before the failure is repeated: consumers deduplicate by id).
//!
//! Several replicas may relay one PostgreSQL outbox: `FOR UPDATE SKIP LOCKED` gives them disjoint
//! batches, and a relay publishes a subject's rows only when no earlier pending row of that subject
//! sits in another relay's batch, so per-subject order holds. SQLite has one writer (one process),
//! so one relay.
//!
//! It wakes at once when a transaction of this process that wrote events commits (a signal
//! raised after the commit, not a `NOTIFY`: PostgreSQL serialises the commits of notifying
//! transactions across the whole server), polls for the rows of writers elsewhere, and prunes
//! sent rows after the retention.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use platform::{
    db::{Db, Tx, TxConn},
    with_db,
};
use serde::Deserialize;
use sqlx::types::Json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Bus, BusError, bus::Outgoing, outbox};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Events claimed and published per round.
    pub batch_size: u32,
    /// How often to look for events when nothing woke the relay.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long sent events (and inbox records) are kept.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self { batch_size: 256, poll_interval: Duration::from_secs(1), retention: Duration::from_secs(7 * 24 * 3600) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox storage")]
    Storage(#[from] sqlx::Error),
    #[error("bus")]
    Bus(#[from] BusError),
}

const PRUNE_EVERY: Duration = Duration::from_secs(600);
const GAUGES_EVERY: Duration = Duration::from_secs(1);

pub struct Relay {
    db: Db,
    bus: Bus,
    config: RelayConfig,
    service: &'static str,
}

struct Claimed {
    seq: i64,
    subject: Option<String>,
    event: Outgoing,
}

impl Relay {
    pub fn new(service: &'static str, db: Db, bus: Bus, config: RelayConfig) -> Self {
        Self { db, bus, config, service }
    }

    /// Relays until `shutdown`; the round in progress finishes first.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let mut written = self.db.committed(outbox::WRITTEN);
        let mut backoff = Duration::from_millis(100);
        let mut last_prune = Instant::now() - PRUNE_EVERY;
        let mut last_gauges = Instant::now() - GAUGES_EVERY;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let (wait, failed) = match self.relay_once().await {
                Ok(claimed) if claimed >= self.config.batch_size as usize => (Duration::ZERO, false),
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    (self.config.poll_interval, false)
                }
                Err(error) => {
                    tracing::warn!(service = self.service, error = %platform::http::problem::error_chain(&error), retry_in = ?backoff, "outbox relay round failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    (wait, true)
                }
            };
            if last_gauges.elapsed() >= GAUGES_EVERY {
                last_gauges = Instant::now();
                self.update_gauges().await;
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = Instant::now();
                self.prune().await;
            }
            if wait.is_zero() {
                continue;
            }
            if failed {
                // New events must not cut a backoff short: the broker is what we wait for.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = written.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round: claim, publish, mark sent. Returns how many rows were claimed.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let mut tx = self.db.begin().await?;
        let claimed = claim(&mut tx, self.config.batch_size).await?;
        if claimed.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let count = claimed.len();
        let publishable = in_subject_order(&mut tx, claimed).await?;
        let seqs: Vec<i64> = publishable.iter().map(|c| c.seq).collect();
        if publishable.is_empty() {
            tx.rollback().await?;
            return Ok(count);
        }
        let events: Vec<Outgoing> = publishable.into_iter().map(|c| c.event).collect();
        publish_observed(&self.bus, self.service, &events).await?;
        mark_sent(&mut tx, &seqs, platform::time::now()).await?;
        tx.commit().await?;
        Ok(count)
    }

    async fn update_gauges(&self) {
        let pending: Result<(i64, Option<DateTime<Utc>>), sqlx::Error> = with_db!(&self.db, |pool| sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at) FROM event_outbox WHERE published_at IS NULL"
        )
        .fetch_one(pool)
        .await);
        if let Ok((count, oldest)) = pending {
            metrics::gauge!("outbox_pending", "service" => self.service).set(count as f64);
            let age = oldest.map_or(0.0, |at| (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0);
            metrics::gauge!("outbox_oldest_pending_age_seconds", "service" => self.service).set(age);
        }
    }

    async fn prune(&self) {
        let Ok(retention) = chrono::Duration::from_std(self.config.retention) else { return };
        let before = platform::time::now() - retention;
        let sent = with_db!(&self.db, |pool| sqlx::query(
            "DELETE FROM event_outbox WHERE published_at IS NOT NULL AND published_at < $1"
        )
        .bind(before)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()));
        let applied = crate::inbox::prune(&self.db, before).await;
        if let (Err(error), _) | (_, Err(error)) = (&sent, &applied) {
            tracing::warn!(service = self.service, error = %error, "could not prune the outbox or inbox");
        }
    }
}

/// Publishes events of `service` that an outbox holds, with the spans and metrics of every relay:
/// this one, and the cart's over its Redis streams.
pub async fn publish_observed(bus: &Bus, service: &'static str, events: &[Outgoing]) -> Result<(), BusError> {
    let spans = crate::observe::publishing(service, events);
    let started = Instant::now();
    let publishing = bus.publish_encoded(events);
    let published = match spans.first() {
        Some(span) => publishing.instrument(span.clone()).await,
        None => publishing.await,
    };
    crate::observe::published(service, events, &spans, started, published.is_ok());
    drop(spans);
    published?;
    for event in events {
        metrics::counter!("events_published_total", "service" => service, "type" => event.event_type.clone())
            .increment(1);
    }
    Ok(())
}

async fn claim(tx: &mut Tx, limit: u32) -> Result<Vec<Claimed>, sqlx::Error> {
    // SKIP LOCKED is PostgreSQL's; SQLite's single writer already excludes other relays.
    let rows: Vec<ClaimedRow> = match tx.conn() {
        TxConn::Postgres(tx) => {
            sqlx::query_as(
                "SELECT seq, event_id, event_type, subject, created_at, envelope::text FROM event_outbox
                 WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
            )
            .bind(i64::from(limit))
            .fetch_all(&mut **tx)
            .await?
        }
        TxConn::Sqlite(tx) => {
            sqlx::query_as(
                "SELECT seq, event_id, event_type, subject, created_at, envelope FROM event_outbox
                 WHERE published_at IS NULL ORDER BY seq LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(&mut **tx)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(seq, id, event_type, subject, time, envelope)| Claimed {
            seq,
            subject: subject.clone(),
            event: Outgoing { id, event_type, subject, time, envelope },
        })
        .collect())
}

/// seq, event id, type, subject, time, envelope.
type ClaimedRow = (i64, uuid::Uuid, String, Option<String>, DateTime<Utc>, String);

/// Keeps only rows that no earlier pending row of their subject waits in front of (in another
/// relay's batch). PostgreSQL only: SQLite has a single relay.
async fn in_subject_order(tx: &mut Tx, claimed: Vec<Claimed>) -> Result<Vec<Claimed>, sqlx::Error> {
    let TxConn::Postgres(tx) = tx.conn() else { return Ok(claimed) };
    let mut subjects: Vec<String> = claimed.iter().filter_map(|c| c.subject.clone()).collect();
    subjects.sort();
    subjects.dedup();
    if subjects.is_empty() {
        return Ok(claimed);
    }
    let ours: Vec<i64> = claimed.iter().map(|c| c.seq).collect();
    let earliest_elsewhere: Vec<(String, i64)> = sqlx::query_as(
        "SELECT subject, MIN(seq) FROM event_outbox
         WHERE published_at IS NULL AND subject = ANY($1) AND NOT (seq = ANY($2))
         GROUP BY subject",
    )
    .bind(&subjects)
    .bind(&ours)
    .fetch_all(&mut **tx)
    .await?;
    let barrier: HashMap<String, i64> = earliest_elsewhere.into_iter().collect();
    Ok(claimed
        .into_iter()
        .filter(|c| match c.subject.as_ref().and_then(|s| barrier.get(s)) {
            Some(&elsewhere) => c.seq < elsewhere,
            None => true,
        })
        .collect())
}

async fn mark_sent(tx: &mut Tx, seqs: &[i64], at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    match tx.conn() {
        TxConn::Postgres(tx) => {
            sqlx::query("UPDATE event_outbox SET published_at = $1 WHERE seq = ANY($2)")
                .bind(at)
                .bind(seqs)
                .execute(&mut **tx)
                .await?;
        }
        TxConn::Sqlite(tx) => {
            sqlx::query("UPDATE event_outbox SET published_at = $1 WHERE seq IN (SELECT value FROM json_each($2))")
                .bind(at)
                .bind(Json(seqs))
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}
