//! The embedded bus (`memory:`): the one-process shop's broker.
//!
//! Publishing appends to a log in SQLite (`events.db` in the data directory) and returns once the
//! append has committed, just as a broker's confirm means the message is on disk. Each consumer
//! reads the log from its own position; failures and the events deferred behind them wait in
//! `bus_retries`, so unlike the RabbitMQ bus, the per-subject ordering survives a restart too.
//! `tail` reads the same log, from another process if need be (SQLite's WAL lets it).

use std::{
    collections::HashSet,
    path::Path,
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use platform::db::{Db, PoolConfig};
use sqlx::SqlitePool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{BusConfig, BusError, Outgoing, Parked, Subscription, TailFrom, record_consumed, topic_matches};
use crate::CloudEvent;

const BATCH: i64 = 256;
/// How long a consumer woken by an append waits for more before reading.
const LINGER: Duration = Duration::from_millis(5);

/// A log entry not yet read by a consumer: seq, type, subject, envelope.
type Fresh = (i64, String, String, String);
const PRUNE_EVERY_MS: i64 = 10 * 60 * 1000;

pub struct EmbeddedBus {
    pool: SqlitePool,
    config: BusConfig,
    /// Bumped on every append or replay, so consumers in this process wake at once.
    appended: watch::Sender<u64>,
    last_prune_ms: AtomicI64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl EmbeddedBus {
    pub async fn open(config: BusConfig, data_dir: &Path) -> Result<Self, BusError> {
        let url = format!("sqlite://{}/events.db", data_dir.display());
        let db = Db::connect(&url, &PoolConfig::default())
            .await
            .map_err(|e| BusError::Unavailable(platform::http::problem::error_chain(&e)))?;
        let Db::Sqlite(pool) = db else {
            return Err(BusError::Invalid("the embedded bus lives in SQLite".to_owned()));
        };
        sqlx::migrate!("./migrations/embedded-bus")
            .run(&pool)
            .await
            .map_err(|e| BusError::Unavailable(format!("migrating the embedded bus: {e}")))?;
        let (appended, _) = watch::channel(0);
        Ok(Self { pool, config, appended, last_prune_ms: AtomicI64::new(0) })
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    pub async fn publish(&self, events: &[Outgoing]) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let appended_at = platform::time::now();
        // One statement per chunk (SQLite allows 32,766 parameters; five per event).
        for chunk in events.chunks(1000) {
            // Appending is idempotent by event id, as a relay may publish an event twice.
            let mut insert =
                sqlx::QueryBuilder::new("INSERT INTO bus_log (event_id, event_type, subject, envelope, appended_at) ");
            insert.push_values(chunk, |mut row, event| {
                row.push_bind(event.id)
                    .push_bind(&event.event_type)
                    .push_bind(event.subject.as_deref().unwrap_or(""))
                    .push_bind(&event.envelope)
                    .push_bind(appended_at);
            });
            insert.push(" ON CONFLICT (event_id) DO NOTHING");
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    pub async fn consume(&self, subscription: Subscription, shutdown: CancellationToken) {
        let mut woken = self.appended.subscribe();
        if let Err(error) = self.register(&subscription.consumer).await {
            tracing::error!(consumer = %subscription.consumer, error = %error, "could not register consumer");
        }
        tracing::info!(consumer = %subscription.consumer, "consuming");
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            self.prune_now_and_then().await;
            let wait = match self.step(&subscription).await {
                Ok(true) => continue,
                Ok(false) => self.until_next_retry(&subscription.consumer).await,
                Err(error) => {
                    tracing::warn!(consumer = %subscription.consumer, error = %error, "consumer step failed");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = woken.changed() => {
                    // Appends come in bursts (a relay round each): a moment's wait lets one
                    // step take several.
                    tokio::time::sleep(LINGER).await;
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// A new consumer reads the whole retained log: nothing published before its first start
    /// is missed.
    pub async fn register(&self, consumer: &str) -> Result<(), BusError> {
        sqlx::query("INSERT INTO bus_consumers (consumer, position) VALUES ($1, 0) ON CONFLICT (consumer) DO NOTHING")
            .bind(consumer)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn until_next_retry(&self, consumer: &str) -> Duration {
        let next: Option<i64> = sqlx::query_scalar("SELECT MIN(due_at) FROM bus_retries WHERE consumer = $1")
            .bind(consumer)
            .fetch_one(&self.pool)
            .await
            .unwrap_or(None);
        let millis = next.map_or(1000, |due| (due - now_ms()).clamp(5, 1000));
        Duration::from_millis(millis as u64)
    }

    /// Handles what is due: first retries (only the earliest of each subject), then new events.
    /// Returns whether more may be due at once (a full batch was read); an append meanwhile
    /// wakes the consumer anyway.
    async fn step(&self, subscription: &Subscription) -> Result<bool, BusError> {
        let consumer = subscription.consumer.as_str();

        let due: Vec<(i64, String, i64, String)> = sqlx::query_as(
            "SELECT r.seq, r.subject, r.attempts, l.envelope FROM bus_retries r JOIN bus_log l ON l.seq = r.seq
             WHERE r.consumer = $1 AND r.due_at <= $2
               AND NOT EXISTS (SELECT 1 FROM bus_retries e
                               WHERE e.consumer = r.consumer AND e.subject = r.subject AND r.subject <> '' AND e.seq < r.seq)
             ORDER BY r.seq LIMIT $3",
        )
        .bind(consumer)
        .bind(now_ms())
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await?;
        let mut more = due.len() as i64 == BATCH;
        for (seq, subject, attempts, envelope) in due {
            match self.apply(subscription, std::slice::from_ref(&envelope)).await {
                Ok(()) => {
                    sqlx::query("DELETE FROM bus_retries WHERE consumer = $1 AND seq = $2")
                        .bind(consumer)
                        .bind(seq)
                        .execute(&self.pool)
                        .await?;
                }
                Err((event_type, error)) => {
                    self.failed(consumer, seq, &subject, &event_type, attempts as u32 + 1, &error).await?
                }
            }
        }

        let position: i64 = sqlx::query_scalar("SELECT position FROM bus_consumers WHERE consumer = $1")
            .bind(consumer)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0);
        let fresh: Vec<Fresh> = sqlx::query_as(
            "SELECT seq, event_type, subject, envelope FROM bus_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(position)
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await?;
        let Some(last) = fresh.last().map(|f| f.0) else { return Ok(more) };
        more |= fresh.len() as i64 == BATCH;
        // Runs of events whose subject has nothing waiting go to the handler together. What
        // waits is read once, and again after each handler call, which may have added to it.
        let batched = subscription.max_batch > 1;
        let mut waiting = if batched { self.waiting_subjects(consumer).await? } else { HashSet::new() };
        let mut run: Vec<Fresh> = Vec::new();
        for event in fresh {
            if !subscription.wants(&event.1) {
                continue;
            }
            if batched && !waiting.contains(&event.2) {
                run.push(event);
                if run.len() >= subscription.max_batch {
                    self.apply_run(subscription, std::mem::take(&mut run)).await?;
                    waiting = self.waiting_subjects(consumer).await?;
                }
                continue;
            }
            self.apply_run(subscription, std::mem::take(&mut run)).await?;
            self.apply_one(subscription, event).await?;
            if batched {
                waiting = self.waiting_subjects(consumer).await?;
            }
        }
        self.apply_run(subscription, run).await?;
        sqlx::query("UPDATE bus_consumers SET position = $2 WHERE consumer = $1")
            .bind(consumer)
            .bind(last)
            .execute(&self.pool)
            .await?;
        Ok(more)
    }

    /// The subjects with an event waiting in the retries.
    async fn waiting_subjects(&self, consumer: &str) -> Result<HashSet<String>, BusError> {
        let subjects: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT subject FROM bus_retries WHERE consumer = $1 AND subject <> ''")
                .bind(consumer)
                .fetch_all(&self.pool)
                .await?;
        Ok(subjects.into_iter().collect())
    }

    /// Whether an earlier event of `subject` waits in the retries: a later one queues behind it.
    async fn waiting(&self, consumer: &str, subject: &str) -> Result<bool, BusError> {
        if subject.is_empty() {
            return Ok(false);
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bus_retries WHERE consumer = $1 AND subject = $2")
            .bind(consumer)
            .bind(subject)
            .fetch_one(&self.pool)
            .await?;
        Ok(count > 0)
    }

    /// One new event: deferred behind its subject, applied, or scheduled for a retry.
    async fn apply_one(&self, subscription: &Subscription, (seq, _, subject, envelope): Fresh) -> Result<(), BusError> {
        let consumer = subscription.consumer.as_str();
        if self.waiting(consumer, &subject).await? {
            return self.schedule(consumer, seq, &subject, 0, now_ms(), None).await;
        }
        if let Err((event_type, error)) = self.apply(subscription, &[envelope]).await {
            self.failed(consumer, seq, &subject, &event_type, 1, &error).await?;
        }
        Ok(())
    }

    /// A run in one handler call; when it fails (and so took no effect), event by event.
    async fn apply_run(&self, subscription: &Subscription, run: Vec<Fresh>) -> Result<(), BusError> {
        if run.len() > 1 {
            let envelopes: Vec<String> = run.iter().map(|f| f.3.clone()).collect();
            if self.apply(subscription, &envelopes).await.is_ok() {
                return Ok(());
            }
        }
        for event in run {
            self.apply_one(subscription, event).await?;
        }
        Ok(())
    }

    /// Runs the handler on the events; on failure returns the (first) event type and the reason.
    async fn apply(&self, subscription: &Subscription, envelopes: &[String]) -> Result<(), (String, String)> {
        let events = envelopes
            .iter()
            .map(|envelope| serde_json::from_str::<CloudEvent>(envelope))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ("unknown".to_owned(), format!("unreadable: {e}")))?;
        let types: Vec<String> = events.iter().map(|e| e.event_type.clone()).collect();
        let outcome = tokio::time::timeout(self.config.handler_timeout, (subscription.handler)(events)).await;
        let first = types.first().cloned().unwrap_or_default();
        match outcome {
            Ok(Ok(())) => {
                for event_type in &types {
                    record_consumed(&subscription.consumer, event_type, "ok");
                }
                Ok(())
            }
            Ok(Err(error)) => Err((first, error.0)),
            Err(_) => Err((first, format!("handler timed out after {:?}", self.config.handler_timeout))),
        }
    }

    /// Records a failed attempt: a retry after a delay, or the parking lot after the last one.
    async fn failed(
        &self,
        consumer: &str,
        seq: i64,
        subject: &str,
        event_type: &str,
        failures: u32,
        error: &str,
    ) -> Result<(), BusError> {
        if failures >= self.config.max_attempts {
            tracing::error!(consumer, seq, event_type, attempts = failures, error, "event parked");
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(
                "INSERT INTO bus_parked (consumer, seq, attempts, error, parked_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (consumer, seq) DO UPDATE SET attempts = excluded.attempts, error = excluded.error",
            )
            .bind(consumer)
            .bind(seq)
            .bind(failures as i64)
            .bind(error)
            .bind(platform::time::now())
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM bus_retries WHERE consumer = $1 AND seq = $2")
                .bind(consumer)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            record_consumed(consumer, event_type, "parked");
            metrics::counter!("events_dead_lettered_total", "consumer" => consumer.to_owned(), "type" => event_type.to_owned())
                .increment(1);
            return Ok(());
        }
        let delay = self.config.retry_delay(failures);
        tracing::warn!(consumer, seq, event_type, attempt = failures, retry_in = ?delay, error, "event failed, will retry");
        self.schedule(consumer, seq, subject, failures, now_ms() + delay.as_millis() as i64, Some(error)).await?;
        record_consumed(consumer, event_type, "retried");
        metrics::counter!("events_retried_total", "consumer" => consumer.to_owned(), "type" => event_type.to_owned())
            .increment(1);
        Ok(())
    }

    async fn schedule(
        &self,
        consumer: &str,
        seq: i64,
        subject: &str,
        attempts: u32,
        due_at: i64,
        error: Option<&str>,
    ) -> Result<(), BusError> {
        sqlx::query(
            "INSERT INTO bus_retries (consumer, seq, subject, attempts, due_at, last_error) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (consumer, seq) DO UPDATE SET attempts = excluded.attempts, due_at = excluded.due_at,
                 last_error = excluded.last_error",
        )
        .bind(consumer)
        .bind(seq)
        .bind(subject)
        .bind(attempts as i64)
        .bind(due_at)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn dead_letters(&self, consumer: &str) -> Result<Vec<Parked>, BusError> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT p.attempts, p.error, l.envelope FROM bus_parked p JOIN bus_log l ON l.seq = p.seq
             WHERE p.consumer = $1 ORDER BY p.seq",
        )
        .bind(consumer)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(attempts, error, envelope)| {
                Some(Parked { event: serde_json::from_str(&envelope).ok()?, attempts: attempts as u32, error })
            })
            .collect())
    }

    pub async fn replay_dead_letters(&self, consumer: &str) -> Result<usize, BusError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let moved = sqlx::query(
            "INSERT INTO bus_retries (consumer, seq, subject, attempts, due_at, last_error)
             SELECT p.consumer, p.seq, l.subject, 0, $2, p.error FROM bus_parked p JOIN bus_log l ON l.seq = p.seq
             WHERE p.consumer = $1
             ON CONFLICT (consumer, seq) DO NOTHING",
        )
        .bind(consumer)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM bus_parked WHERE consumer = $1").bind(consumer).execute(&mut *tx).await?;
        tx.commit().await?;
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
        Ok(moved as usize)
    }

    pub async fn tail(
        &self,
        from: TailFrom,
        pattern: &str,
        shutdown: CancellationToken,
        mut each: impl FnMut(CloudEvent) -> bool + Send,
    ) -> Result<(), BusError> {
        let mut woken = self.appended.subscribe();
        // `position` is the last sequence number already seen.
        let mut position: i64 = match from {
            TailFrom::Start => 0,
            TailFrom::Now => sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM bus_log").fetch_one(&self.pool).await?,
            // Offsets count from 0, as a RabbitMQ stream's do; sequence numbers count from 1.
            TailFrom::Offset(n) => n.min(i64::MAX as u64) as i64,
            TailFrom::Since(at) => {
                sqlx::query_scalar("SELECT COALESCE(MIN(seq), (SELECT COALESCE(MAX(seq), 0) + 1 FROM bus_log)) - 1 FROM bus_log WHERE appended_at >= $1")
                    .bind(at)
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        loop {
            let rows: Vec<(i64, String, String)> =
                sqlx::query_as("SELECT seq, event_type, envelope FROM bus_log WHERE seq > $1 ORDER BY seq LIMIT 256")
                    .bind(position)
                    .fetch_all(&self.pool)
                    .await?;
            let idle = rows.is_empty();
            for (seq, event_type, envelope) in rows {
                position = seq;
                if topic_matches(pattern, &event_type)
                    && let Ok(event) = serde_json::from_str::<CloudEvent>(&envelope)
                    && !each(event)
                {
                    return Ok(());
                }
            }
            if idle {
                // Another process may be appending: poll as well as listen.
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    _ = woken.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            } else if shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }

    pub async fn ping(&self) -> Result<(), BusError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Drops log entries past the retention that no consumer still needs.
    async fn prune_now_and_then(&self) {
        let now = now_ms();
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now - last < PRUNE_EVERY_MS
            || self.last_prune_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let Ok(retention) = chrono::Duration::from_std(self.config.log_retention) else { return };
        let cutoff = platform::time::now() - retention;
        let pruned = sqlx::query(
            "DELETE FROM bus_log WHERE appended_at < $1
               AND seq NOT IN (SELECT seq FROM bus_retries) AND seq NOT IN (SELECT seq FROM bus_parked)
               AND seq <= (SELECT COALESCE(MIN(position), 0) FROM bus_consumers)",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await;
        if let Err(error) = pruned {
            tracing::warn!(error = %error, "could not prune the event log");
        }
    }
}
