//! Spans and metrics of events on both ends: the relay's publish (a producer span per event,
//! a child of the change that wrote it) and a consumer's handling (a consumer span continuing
//! the `traceparent` the event carries, so the consumer's work joins the originating trace,
//! in the logs as well as in exported traces).

use std::{future::Future, time::Instant};

use chrono::{DateTime, Utc};
use platform::telemetry::trace;
use tracing::{Instrument, Span, field::Empty};

use crate::{CloudEvent, HandlerError, bus::Outgoing};

/// One handler call under way.
pub(crate) struct Handling {
    consumer: std::sync::Arc<str>,
    span: Span,
    scope: trace::Scope,
    started: Instant,
}

impl Handling {
    /// Records the events' lag and opens the consumer span.
    pub(crate) fn start(consumer: &std::sync::Arc<str>, events: &[CloudEvent]) -> Self {
        let now = Utc::now();
        let lag = metrics::histogram!("events_consume_lag_seconds", "consumer" => consumer.to_string());
        for event in events {
            lag.record(seconds_since(event.time, now));
        }
        let first = events.first();
        let event_type = first.map_or("", |e| e.event_type.as_str());
        let (span, scope) = trace::start(first.and_then(|e| e.traceparent.as_deref()), || {
            let span = tracing::info_span!(
                "event",
                otel.name = Empty,
                otel.kind = "consumer",
                otel.status_code = Empty,
                "messaging.operation.type" = "process",
                "messaging.destination.name" = event_type,
                "messaging.consumer.group.name" = &**consumer,
                "messaging.message.id" = first.map(|e| e.id.to_string()),
                "messaging.batch.message_count" = events.len() as i64,
            );
            if trace::recording() {
                span.record("otel.name", format!("process {event_type}"));
            }
            span
        });
        Self { consumer: consumer.clone(), span, scope, started: Instant::now() }
    }

    /// Runs the handler inside the span and records how it went.
    pub(crate) async fn finish(
        self,
        applying: impl Future<Output = Result<(), HandlerError>>,
    ) -> Result<(), HandlerError> {
        let result = self.scope.run(applying.instrument(self.span.clone())).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        if let Err(error) = &result {
            trace::fail(&self.span, error.0.clone());
        }
        metrics::histogram!("events_handle_duration_seconds", "consumer" => self.consumer.to_string(), "outcome" => outcome)
            .record(self.started.elapsed().as_secs_f64());
        result
    }
}

/// Producer spans for a batch the relay publishes, when spans are exported: each is a child of
/// the trace its event carries.
pub(crate) fn publishing(service: &'static str, events: &[Outgoing]) -> Vec<Span> {
    if !trace::enabled() {
        return Vec::new();
    }
    #[derive(serde::Deserialize)]
    struct Traced {
        traceparent: Option<String>,
    }
    events
        .iter()
        .map(|event| {
            let traceparent = serde_json::from_str::<Traced>(&event.envelope).ok().and_then(|t| t.traceparent);
            let (span, _) = trace::start(traceparent.as_deref(), || {
                tracing::info_span!(
                    target: trace::TRACE_ONLY,
                    "publish",
                    otel.name = format!("publish {}", event.event_type),
                    otel.kind = "producer",
                    otel.status_code = Empty,
                    "service.name" = service,
                    "messaging.operation.type" = "send",
                    "messaging.destination.name" = event.event_type.as_str(),
                    "messaging.message.id" = event.id.to_string(),
                )
            });
            span
        })
        .collect()
}

/// Records one publish round trip of the relay, and the lag of each event it delivered.
pub(crate) fn published(service: &'static str, events: &[Outgoing], spans: &[Span], started: Instant, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::histogram!("events_publish_duration_seconds", "service" => service, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    if !ok {
        for span in spans {
            trace::fail(span, "the broker did not confirm");
        }
        return;
    }
    let now = Utc::now();
    let lag = metrics::histogram!("events_relay_lag_seconds", "service" => service);
    for event in events {
        lag.record(seconds_since(event.time, now));
    }
}

fn seconds_since(time: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - time).num_microseconds().map_or(0.0, |us| us.max(0) as f64 / 1e6)
}
