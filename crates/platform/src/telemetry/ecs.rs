//! Log lines in Elastic Common Schema: one JSON object per line with flat dotted keys
//! (`@timestamp`, `log.level`, `message`, `service.name`, `trace.id`, `span.id`,
//! `http.request.method`, `url.path`, `http.response.status_code`, `event.duration`,
//! `error.message`, …), as Elastic's own ECS loggers write them.
//!
//! Spans name their fields with ECS names where ECS has one; a line carries the fields of every
//! span it happened in, then its own, and the trace context of the work its task does. Fields
//! meant only for the trace exporter (`otel.*`) are left out; a bare `error` field becomes
//! `error.message`, a bare `service` `service.name`.

use std::{fmt, sync::OnceLock};

use serde_json::{Map, Value};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::{Context, Layer},
    registry::LookupSpan,
};

/// The ECS version these lines follow.
pub const ECS_VERSION: &str = "8.11.0";

static DEFAULT_SERVICE: OnceLock<String> = OnceLock::new();

/// The `service.name` of lines that happen outside any service's span (start-up, say).
pub(super) fn set_default_service(service: &str) {
    let _ = DEFAULT_SERVICE.set(service.to_owned());
}

/// A span's fields, kept as JSON values for the lines that happen inside it.
struct SpanFields(Map<String, Value>);

/// Keeps each span's fields ([`SpanFields`]) for [`EcsFormat`].
pub struct FieldsLayer;

impl<S> Layer<S> for FieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Map::new();
        attrs.record(&mut Fields(&mut fields));
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            values.record(&mut Fields(fields));
        }
    }
}

/// Collects fields as JSON values under their ECS names.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name.starts_with("otel.") {
            return;
        }
        // The few bare names older call sites use, under their ECS names.
        let name = match name {
            "error" => "error.message",
            "service" => "service.name",
            other => other,
        };
        self.0.insert(name.to_owned(), value);
    }
}

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, crate::http::problem::error_chain(value).into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// Writes each event as one ECS JSON line.
pub struct EcsFormat;

impl<S, N> FormatEvent<S, N> for EcsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "@timestamp".to_owned(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into(),
        );
        line.insert("log.level".to_owned(), metadata.level().as_str().to_ascii_lowercase().into());
        line.insert("ecs.version".to_owned(), ECS_VERSION.into());
        line.insert("log.logger".to_owned(), metadata.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    line.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        if let Some(context) = super::trace::current() {
            line.insert("trace.id".to_owned(), context.trace_id_hex().into());
            line.insert("span.id".to_owned(), context.span_id_hex().into());
        }
        if !line.contains_key("service.name") {
            line.insert("service.name".to_owned(), DEFAULT_SERVICE.get().map_or("emporium", String::as_str).into());
        }
        event.record(&mut Fields(&mut line));
        let mut text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        text.push('\n');
        writer.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn lines_carry_ecs_names_from_spans_and_events() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            FieldsLayer
                .and_then(tracing_subscriber::fmt::layer().event_format(EcsFormat).with_writer(captured.clone())),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "http_request",
                otel.kind = "server",
                "service.name" = "orders",
                "http.request.method" = "POST",
                "url.path" = "/api/v1/orders",
                "trace.id" = tracing::field::Empty,
            );
            span.record("trace.id", "4bf92f3577b34da6a3ce929d0e0e4736");
            let _entered = span.enter();
            let failure = io::Error::other("disk full");
            tracing::warn!(
                "http.response.status_code" = 503,
                "event.duration" = 1_500_000u64,
                error = &failure as &dyn std::error::Error,
                "request completed"
            );
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["log.level"], "warn");
        assert_eq!(line["message"], "request completed");
        assert_eq!(line["service.name"], "orders");
        assert_eq!(line["http.request.method"], "POST");
        assert_eq!(line["url.path"], "/api/v1/orders");
        assert_eq!(line["trace.id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(line["http.response.status_code"], 503);
        assert_eq!(line["event.duration"], 1_500_000);
        assert_eq!(line["error.message"], "disk full");
        assert_eq!(line["ecs.version"], ECS_VERSION);
        assert!(line["@timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(line.get("otel.kind").is_none());
        assert_eq!(text.lines().count(), 1);
    }
}
