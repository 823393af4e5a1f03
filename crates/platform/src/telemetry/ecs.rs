//! Log lines in Elastic Common Schema: one JSON object per line with flat dotted keys
//! (`@timestamp`, `log.level`, `message`, `service.name`, `trace.id`, `span.id`,
//! `http.request.method`, `url.path`, `http.response.status_code`, `event.duration`,
//! `error.message`, …), as Elastic's own ECS loggers write them.
//!
//! Spans name their fields with ECS names where ECS has one; a line carries the fields of every
//! span it happened in, then its own, and the trace context of the work its task does. Fields
//! meant only for the trace exporter (`otel.*`) are left out; a bare `error` field becomes
//! `error.message`, a bare `service` `service.name`.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    fmt,
    io::{self, Write},
    sync::OnceLock,
};

use serde_json::{Map, Value};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{
    fmt::MakeWriter,
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

/// Writes each event as one ECS JSON line to what `W` makes (stdout in a service), with the
/// fields of the spans it happened in ([`SpanFields`], collected as spans are made and recorded).
/// Our own layer rather than `tracing_subscriber::fmt`'s: that one also formats every span's
/// fields into text of its own, which these lines never print.
pub struct EcsLayer<W = fn() -> io::Stdout> {
    make_writer: W,
}

impl Default for EcsLayer {
    fn default() -> Self {
        Self { make_writer: io::stdout }
    }
}

impl<W> EcsLayer<W> {
    pub fn with_writer(make_writer: W) -> Self {
        Self { make_writer }
    }
}

thread_local! {
    /// The line being written, reused: a line is written on every request.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<S, W> Layer<S> for EcsLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // Spans made only for the exporter exist only when work is sampled: a line must not
        // change with the sampling decision. (Told here rather than by the layer's filter, which
        // would lose the filter's level hint.)
        if attrs.metadata().target() == super::trace::TRACE_ONLY {
            return;
        }
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

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let timestamp = Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        let level = Value::from(metadata.level().as_str().to_ascii_lowercase());
        let version = Value::from(ECS_VERSION);
        let logger = Value::from(metadata.target());
        let trace = super::trace::current()
            .map(|context| (Value::from(context.trace_id_hex()), Value::from(context.span_id_hex())));
        let default_service = Value::from(DEFAULT_SERVICE.get().map_or("emporium", String::as_str));
        let mut own = Map::new();
        event.record(&mut Fields(&mut own));
        let spans: Vec<_> = ctx.event_scope(event).map(|scope| scope.from_root().collect()).unwrap_or_default();
        let extensions: Vec<_> = spans.iter().map(|span| span.extensions()).collect();

        // Later entries win: a span's fields over its parents', the event's over all.
        let mut line: BTreeMap<&str, &Value> = BTreeMap::new();
        line.insert("@timestamp", &timestamp);
        line.insert("log.level", &level);
        line.insert("ecs.version", &version);
        line.insert("log.logger", &logger);
        for extension in &extensions {
            if let Some(SpanFields(fields)) = extension.get::<SpanFields>() {
                line.extend(fields.iter().map(|(k, v)| (k.as_str(), v)));
            }
        }
        if let Some((trace_id, span_id)) = &trace {
            line.insert("trace.id", trace_id);
            line.insert("span.id", span_id);
        }
        line.entry("service.name").or_insert(&default_service);
        line.extend(own.iter().map(|(k, v)| (k.as_str(), v)));

        LINE.with_borrow_mut(|buffer| {
            buffer.clear();
            if serde_json::to_writer(&mut *buffer, &line).is_ok() {
                buffer.push(b'\n');
                let _ = self.make_writer.make_writer_for(metadata).write_all(buffer);
            }
        });
    }
}

/// Collects fields as JSON values under their ECS names.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    /// The ECS name `field` is logged under, or `None` for fields meant only for the trace
    /// exporter.
    fn name(field: &Field) -> Option<&'static str> {
        match field.name() {
            name if name.starts_with("otel.") => None,
            // The few bare names older call sites use, under their ECS names.
            "error" => Some("error.message"),
            "service" => Some("service.name"),
            other => Some(other),
        }
    }

    fn put(&mut self, field: &Field, value: impl Into<Value>) {
        self.put_with(field, || value);
    }

    /// As [`Fields::put`], making the value only for a field that is logged.
    fn put_with<V: Into<Value>>(&mut self, field: &Field, value: impl FnOnce() -> V) {
        if let Some(name) = Self::name(field) {
            self.0.insert(name.to_owned(), value().into());
        }
    }
}

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put_with(field, || crate::http::problem::error_chain(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Formatted only when logged: `otel.name` is often text made for the exporter alone.
        self.put_with(field, || format!("{value:?}"));
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
        let subscriber = tracing_subscriber::registry().with(EcsLayer::with_writer(captured.clone()));
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

    #[test]
    fn spans_made_only_for_the_exporter_stay_out_of_lines() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(EcsLayer::with_writer(captured.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("http_request", "url.path" = "/api/v1/products/x");
            let _request = request.enter();
            let call =
                tracing::info_span!(target: crate::telemetry::trace::TRACE_ONLY, "redis", "db.system.name" = "redis");
            let _call = call.enter();
            tracing::warn!("slow");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["url.path"], "/api/v1/products/x");
        assert_eq!(line["message"], "slow");
        assert!(line.get("db.system.name").is_none(), "{line}");
    }
}
