//! `/health/live` and `/health/ready` with named readiness checks.
//!
//! Liveness says only that the process serves HTTP. Readiness runs every named check (the
//! database, the cache, the broker) concurrently, each with a deadline, so a hung dependency
//! makes the answer a prompt 503 naming it rather than a hung probe.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{Json, Router, extract::State, response::IntoResponse, routing::get};
use futures_util::future::{BoxFuture, join_all};
use serde_json::json;

use crate::{ErrorCode, Problem};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The readiness checks of one service.
#[derive(Clone, Default)]
pub struct Health {
    checks: Vec<(&'static str, CheckFn)>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a named check; it reports why it failed as a short, non-sensitive message.
    pub fn check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    /// The `database` check every service with a database has: a round trip to it.
    pub fn database(self, db: crate::db::Db) -> Self {
        self.check("database", move || {
            let db = db.clone();
            async move { db.ping().await.map_err(|_| "unreachable".to_owned()) }
        })
    }

    /// Runs every check; `Err` carries the names of the failing ones.
    pub async fn run(&self) -> Result<BTreeMap<&'static str, String>, BTreeMap<&'static str, String>> {
        let results = join_all(self.checks.iter().map(|(name, check)| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(reason)) => Err(reason),
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            (*name, outcome)
        }))
        .await;
        let failing = results.iter().any(|(_, outcome)| outcome.is_err());
        let report = results
            .into_iter()
            .map(|(name, outcome)| (name, outcome.err().unwrap_or_else(|| "ok".to_owned())))
            .collect();
        if failing { Err(report) } else { Ok(report) }
    }

    /// The two health routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/health/live", get(|| async { Json(json!({"status": "live"})) }))
            .route("/health/ready", get(ready))
            .with_state(self)
    }
}

async fn ready(State(health): State<Health>) -> axum::response::Response {
    match health.run().await {
        Ok(checks) => Json(json!({"status": "ready", "checks": checks})).into_response(),
        Err(checks) => {
            let failing: Vec<&str> = checks.iter().filter(|(_, v)| v.as_str() != "ok").map(|(k, _)| *k).collect();
            Problem::with_detail(ErrorCode::Unavailable, format!("not ready: {}", failing.join(", ")))
                .retry_after(5)
                .extension("checks", serde_json::to_value(&checks).unwrap_or_default())
                .into_response()
        }
    }
}
