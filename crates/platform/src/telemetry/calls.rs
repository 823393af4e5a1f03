//! Calls to backing servers that have no instrumentation of their own (Redis): a client span
//! when spans are exported, and the latency and errors as metrics.

use std::{future::Future, time::Instant};

use tracing::{Instrument, Span, field::Empty};

use super::trace;

/// Runs one Redis round trip of `service`: `command` names it for the metrics and the span
/// (`GET`, `EVALSHA`, `MULTI` for a transaction, or the name of a script).
pub async fn redis<T, E>(
    service: &'static str,
    command: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = if trace::recording() {
        tracing::info_span!(
            target: trace::TRACE_ONLY,
            "redis",
            otel.name = command,
            otel.kind = "client",
            otel.status_code = Empty,
            "db.system.name" = "redis",
            "db.operation.name" = command,
        )
    } else {
        Span::none()
    };
    let started = Instant::now();
    let result = call.instrument(span.clone()).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::histogram!("redis_command_duration_seconds", "service" => service, "command" => command, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!("redis_command_errors_total", "service" => service, "command" => command).increment(1);
        trace::fail(&span, "the Redis call failed");
    }
    result
}

/// Registers `service`'s Redis error counters at zero, so that rates and alerts see a series
/// before the first error.
pub fn register_redis(service: &'static str, commands: &[&'static str]) {
    for command in commands {
        metrics::counter!("redis_command_errors_total", "service" => service, "command" => *command).absolute(0);
    }
}
