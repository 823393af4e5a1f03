//! OTLP export of the spans of sampled work: a `tracing` layer that records them as OTLP spans,
//! and one task per process that sends them in batches over gRPC or HTTP/protobuf.
//!
//! Ours rather than `tracing-opentelemetry` feeding the SDK's batch processor and the OTLP
//! exporter: `bench tracing` measured that chain at about 11 µs of CPU per span (span builder,
//! SDK span, span data, a channel send, then regrouping and cloning every span by scope before
//! encoding), which put 100% sampling at −21% of throughput. Here a span is one record in the
//! span's extensions, encoded into its protobuf bytes by the thread that closes it (so nothing
//! it allocated is freed on another thread) and appended to one buffer; every span of a process
//! shares one resource and one scope, so a batch is those bytes behind a prefix encoded once,
//! in buffers that are reused rather than allocated per batch. The wire format is OTLP's
//! (`opentelemetry-proto`'s messages encode the resource and decode what the tests check).
//!
//! What a span is made of follows `tracing-opentelemetry`'s conventions, which the spans of
//! every service were written for: `otel.name`, `otel.kind`, `otel.status_code` and
//! `otel.status_description` fields set the span's name, kind and status; other fields are
//! attributes; warnings and errors inside a span are its events, and an error marks it failed.

use std::{
    borrow::Cow,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::{Buf, BufMut, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri, header, uri::PathAndQuery};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{SpanFlags, span::SpanKind, status::StatusCode},
};
use prost::{
    Message,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint},
};
use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{
    Event, Level, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

use super::trace::{self, Identity, TraceContext};
use crate::http::client::{self, Egress, HttpsClient};

/// A span of sampled work while it is open, kept in its extensions.
pub(super) struct Recording {
    pub(super) context: TraceContext,
    parent: Option<[u8; 8]>,
    remote_parent: bool,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: u64,
    attributes: Vec<Attribute>,
    events: Vec<SpanEvent>,
    /// Attributes and events past the limits, counted as OTLP asks.
    dropped_attributes: u32,
    dropped_events: u32,
    status: Option<(StatusCode, String)>,
}

/// The SDKs' default limits: a span recorded in a loop cannot grow without end.
const MAX_ATTRIBUTES: usize = 128;
const MAX_EVENTS: usize = 128;

impl Recording {
    /// Sets an attribute; a key recorded again (a retry's `server.address`, say) keeps its
    /// latest value, as OTLP wants each key once.
    fn set(&mut self, attribute: Attribute) {
        if let Some(existing) = self.attributes.iter_mut().find(|a| a.key == attribute.key) {
            existing.value = attribute.value;
        } else if self.attributes.len() < MAX_ATTRIBUTES {
            self.attributes.push(attribute);
        } else {
            self.dropped_attributes += 1;
        }
    }

    fn add_event(&mut self, event: SpanEvent) {
        if self.events.len() < MAX_EVENTS {
            self.events.push(event);
        } else {
            self.dropped_events += 1;
        }
    }

    /// Marks the span failed, with a short reason.
    pub(super) fn fail(&mut self, reason: String) {
        self.status = Some((StatusCode::Error, reason));
    }
}

/// An attribute as `tracing` hands it over: the key is the field's static name.
#[derive(Debug, Clone, PartialEq)]
struct Attribute {
    key: &'static str,
    value: Value,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

struct SpanEvent {
    time: u64,
    name: String,
    attributes: Vec<Attribute>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// OTLP's protobuf encoding of what this layer records, written straight from the records.
mod wire {
    use super::*;

    fn key_len(tag: u32) -> usize {
        prost::encoding::key_len(tag)
    }

    fn delimited_len(tag: u32, len: usize) -> usize {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }

    pub(super) fn delimited(buf: &mut Vec<u8>, tag: u32, len: usize) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
    }

    fn bytes(buf: &mut Vec<u8>, tag: u32, value: &[u8]) {
        if !value.is_empty() {
            delimited(buf, tag, value.len());
            buf.extend_from_slice(value);
        }
    }

    fn bytes_len(tag: u32, value: &[u8]) -> usize {
        if value.is_empty() { 0 } else { delimited_len(tag, value.len()) }
    }

    fn fixed64(buf: &mut Vec<u8>, tag: u32, value: u64) {
        if value != 0 {
            encode_key(tag, WireType::SixtyFourBit, buf);
            buf.put_u64_le(value);
        }
    }

    fn fixed64_len(tag: u32, value: u64) -> usize {
        if value == 0 { 0 } else { key_len(tag) + 8 }
    }

    fn varint(buf: &mut Vec<u8>, tag: u32, value: u64) {
        if value != 0 {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(value, buf);
        }
    }

    fn varint_len(tag: u32, value: u64) -> usize {
        if value == 0 { 0 } else { key_len(tag) + encoded_len_varint(value) }
    }

    /// `AnyValue`: a oneof, written even when it holds its type's default.
    fn any_value_len(value: &Value) -> usize {
        match value {
            Value::Text(text) => delimited_len(1, text.len()),
            Value::Bool(_) => key_len(2) + 1,
            Value::Int(int) => key_len(3) + encoded_len_varint(*int as u64),
            Value::Float(_) => key_len(4) + 8,
        }
    }

    fn any_value(buf: &mut Vec<u8>, value: &Value) {
        match value {
            Value::Text(text) => {
                delimited(buf, 1, text.len());
                buf.extend_from_slice(text.as_bytes());
            }
            Value::Bool(flag) => {
                encode_key(2, WireType::Varint, buf);
                encode_varint(u64::from(*flag), buf);
            }
            Value::Int(int) => {
                encode_key(3, WireType::Varint, buf);
                encode_varint(*int as u64, buf);
            }
            Value::Float(float) => {
                encode_key(4, WireType::SixtyFourBit, buf);
                buf.put_f64_le(*float);
            }
        }
    }

    fn key_value_len(attribute: &Attribute) -> usize {
        bytes_len(1, attribute.key.as_bytes()) + delimited_len(2, any_value_len(&attribute.value))
    }

    fn attributes_len(tag: u32, attributes: &[Attribute]) -> usize {
        attributes.iter().map(|a| delimited_len(tag, key_value_len(a))).sum()
    }

    fn attributes(buf: &mut Vec<u8>, tag: u32, attributes: &[Attribute]) {
        for attribute in attributes {
            delimited(buf, tag, key_value_len(attribute));
            bytes(buf, 1, attribute.key.as_bytes());
            delimited(buf, 2, any_value_len(&attribute.value));
            any_value(buf, &attribute.value);
        }
    }

    fn event_len(event: &SpanEvent) -> usize {
        fixed64_len(1, event.time) + bytes_len(2, event.name.as_bytes()) + attributes_len(3, &event.attributes)
    }

    fn status_len(message: &str, code: StatusCode) -> usize {
        bytes_len(2, message.as_bytes()) + varint_len(3, code as u64)
    }

    fn span_len(span: &Recording, end: u64) -> usize {
        let parent = span.parent.as_ref().map_or(0, |p| bytes_len(4, p));
        let events: usize = span.events.iter().map(|e| delimited_len(11, event_len(e))).sum();
        let status = span.status.as_ref().map_or(0, |(code, message)| delimited_len(15, status_len(message, *code)));
        bytes_len(1, &span.context.trace_id)
            + bytes_len(2, &span.context.span_id)
            + parent
            + bytes_len(5, span.name.as_bytes())
            + varint_len(6, span.kind as u64)
            + fixed64_len(7, span.start)
            + fixed64_len(8, end)
            + attributes_len(9, &span.attributes)
            + varint_len(10, u64::from(span.dropped_attributes))
            + events
            + varint_len(12, u64::from(span.dropped_events))
            + status
            + key_len(16)
            + 4
    }

    /// `span` as one element of `ScopeSpans.spans` (field 2), ended at `end`.
    pub(super) fn span(buf: &mut Vec<u8>, span: &Recording, end: u64) {
        let remote = if span.remote_parent { SpanFlags::ContextIsRemoteMask as u32 } else { 0 };
        let flags = u32::from(span.context.flags) | SpanFlags::ContextHasIsRemoteMask as u32 | remote;
        delimited(buf, 2, span_len(span, end));
        bytes(buf, 1, &span.context.trace_id);
        bytes(buf, 2, &span.context.span_id);
        if let Some(parent) = &span.parent {
            bytes(buf, 4, parent);
        }
        bytes(buf, 5, span.name.as_bytes());
        varint(buf, 6, span.kind as u64);
        fixed64(buf, 7, span.start);
        fixed64(buf, 8, end);
        attributes(buf, 9, &span.attributes);
        varint(buf, 10, u64::from(span.dropped_attributes));
        for event in &span.events {
            delimited(buf, 11, event_len(event));
            fixed64(buf, 1, event.time);
            bytes(buf, 2, event.name.as_bytes());
            attributes(buf, 3, &event.attributes);
        }
        varint(buf, 12, u64::from(span.dropped_events));
        if let Some((code, message)) = &span.status {
            delimited(buf, 15, status_len(message, *code));
            bytes(buf, 2, message.as_bytes());
            varint(buf, 3, *code as u64);
        }
        encode_key(16, WireType::ThirtyTwoBit, buf);
        buf.put_u32_le(flags);
    }

    /// An `ExportTraceServiceRequest` of one resource and one scope (each already encoded as its
    /// field) holding `spans` (encoded by [`span`]).
    pub(super) fn request(buf: &mut Vec<u8>, resource: &[u8], scope: &[u8], spans: &[u8]) {
        let scope_spans = scope.len() + spans.len();
        let resource_spans = resource.len() + delimited_len(2, scope_spans);
        buf.reserve(delimited_len(1, resource_spans));
        delimited(buf, 1, resource_spans);
        buf.extend_from_slice(resource);
        delimited(buf, 2, scope_spans);
        buf.extend_from_slice(scope);
        buf.extend_from_slice(spans);
    }
}

fn text(key: &'static str, value: impl Into<String>) -> Attribute {
    Attribute { key, value: Value::Text(value.into()) }
}

fn kind_named(name: &str) -> Option<SpanKind> {
    Some(match name.to_ascii_lowercase().as_str() {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "internal" => SpanKind::Internal,
        _ => return None,
    })
}

/// A span's fields, the `otel.*` ones steering the span itself.
struct SpanFields<'a>(&'a mut Recording);

impl SpanFields<'_> {
    fn value(&mut self, field: &Field, value: Value) {
        self.0.set(Attribute { key: field.name(), value });
    }

    fn text(&mut self, field: &Field, value: String) {
        let recording = &mut *self.0;
        match field.name() {
            "otel.name" => recording.name = Cow::Owned(value),
            "otel.kind" => recording.kind = kind_named(&value).unwrap_or(recording.kind),
            "otel.status_code" => {
                recording.status = match value.to_ascii_lowercase().as_str() {
                    "error" => Some((StatusCode::Error, String::new())),
                    "ok" => Some((StatusCode::Ok, String::new())),
                    _ => None,
                }
            }
            "otel.status_description" => recording.fail(value),
            name => recording.set(text(name, value)),
        }
    }
}

impl Visit for SpanFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, format!("{value:?}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, Value::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(value) => self.value(field, Value::Int(value)),
            Err(_) => self.text(field, value.to_string()),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.value(field, Value::Float(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field, Value::Bool(value));
    }
}

/// An event's fields: its message names it, the rest are its attributes.
struct EventFields<'a>(&'a mut SpanEvent);

impl Visit for EventFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.0.name = format!("{value:?}"),
            name => self.0.attributes.push(text(name, format!("{value:?}"))),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.attributes.push(Attribute { key: field.name(), value: Value::Int(value) });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.attributes.push(Attribute { key: field.name(), value: Value::Bool(value) });
    }
}

/// Encoded spans waiting for the exporter, and where each ends.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Pending {
    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// The encoded spans in batches of at most `batch`, with the number each holds.
    fn batches(&self, batch: usize) -> impl Iterator<Item = (&[u8], usize)> {
        self.ends.chunks(batch).scan(0, |start, ends| {
            let (from, to) = (*start, *ends.last()?);
            *start = to;
            Some((&self.bytes[from..to], ends.len()))
        })
    }
}

/// The spans of a process on their way out; when it is full, new ones are dropped and counted.
struct Queue {
    pending: Mutex<Pending>,
    /// How many spans `pending` holds, read without the lock to refuse a span before encoding it.
    queued: AtomicUsize,
    capacity: usize,
    batch: usize,
    full_batch: Notify,
    dropped: AtomicU64,
}

std::thread_local! {
    /// Where a closing span is encoded before it is queued, reused by every span of the thread.
    static ENCODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Queue {
    fn new(capacity: usize, batch: usize) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            queued: AtomicUsize::new(0),
            capacity,
            batch,
            full_batch: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    fn push(&self, span: &Recording) {
        if self.queued.load(Ordering::Relaxed) >= self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let end = now();
        let queue = |encoded: &mut Vec<u8>| {
            encoded.clear();
            wire::span(encoded, span, end);
            let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if pending.ends.len() >= self.capacity {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            pending.bytes.extend_from_slice(encoded);
            let len = pending.bytes.len();
            pending.ends.push(len);
            self.queued.store(pending.ends.len(), Ordering::Relaxed);
            if pending.ends.len() == self.batch {
                self.full_batch.notify_one();
            }
        };
        // A thread that is ending has no buffer left: the span gets one of its own.
        if ENCODED.try_with(|encoded| queue(&mut encoded.borrow_mut())).is_err() {
            queue(&mut Vec::new());
        }
    }

    /// Swaps everything queued for `into` (emptied first, its capacity kept for the queue) and
    /// says how many spans it holds: the lock is held for the swap only.
    fn take(&self, into: &mut Pending) -> usize {
        into.clear();
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::swap(&mut *pending, into);
        self.queued.store(0, Ordering::Relaxed);
        into.ends.len()
    }
}

/// The layer that records sampled spans (its filter admits only those: see `telemetry::install`).
pub(super) struct TraceLayer {
    queue: Arc<Queue>,
}

impl<S> Layer<S> for TraceLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let identity = trace::take_opening().unwrap_or_else(|| {
            match span.scope().skip(1).find_map(|s| s.extensions().get::<Recording>().map(|r| r.context)) {
                Some(parent) => {
                    Identity { context: parent.child(), parent: Some(parent.span_id), remote_parent: false }
                }
                None => trace::orphan(),
            }
        });
        let mut recording = Recording {
            context: identity.context,
            parent: identity.parent,
            remote_parent: identity.remote_parent,
            name: Cow::Borrowed(attrs.metadata().name()),
            kind: SpanKind::Internal,
            start: now(),
            attributes: Vec::with_capacity(attrs.fields().len()),
            events: Vec::new(),
            dropped_attributes: 0,
            dropped_events: 0,
            status: None,
        };
        attrs.record(&mut SpanFields(&mut recording));
        span.extensions_mut().insert(recording);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(recording) = span.extensions_mut().get_mut::<Recording>()
        {
            values.record(&mut SpanFields(recording));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let recorded =
            ctx.event_span(event).and_then(|span| span.scope().find(|s| s.extensions().get::<Recording>().is_some()));
        let Some(span) = recorded else { return };
        let level = *event.metadata().level();
        let mut otlp = SpanEvent {
            time: now(),
            name: event.metadata().name().to_owned(),
            attributes: vec![text("level", level.as_str())],
        };
        event.record(&mut EventFields(&mut otlp));
        if let Some(recording) = span.extensions_mut().get_mut::<Recording>() {
            if level == Level::ERROR && recording.status.is_none() {
                recording.fail(otlp.name.clone());
            }
            recording.add_event(otlp);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let recording = ctx.span(&id).and_then(|span| span.extensions_mut().remove::<Recording>());
        if let Some(recording) = recording {
            self.queue.push(&recording);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unsupported OTLP protocol {0:?} (use grpc or http/protobuf)")]
    Protocol(String),
    #[error("unsupported OTLP compression {0:?} (none is supported)")]
    Compression(String),
    #[error("invalid OTLP endpoint {0:?} (grpc: http:// only)")]
    Endpoint(String),
    #[error("invalid OTLP header {0:?}")]
    Header(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// How spans leave: `OTEL_EXPORTER_OTLP_*` and `OTEL_BSP_*`, with the specification's defaults.
/// Not `Debug`: the headers may hold a collector's credentials.
struct Settings {
    protocol: Protocol,
    endpoint: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
    schedule_delay: Duration,
    capacity: usize,
    batch: usize,
}

impl Settings {
    fn from(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ExportError> {
        let var = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let either = |specific: &str, general: &str| var(specific).or_else(|| var(general));
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let protocol = match either("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            Some("grpc") => Protocol::Grpc,
            Some("http/protobuf") | None => Protocol::HttpProtobuf,
            Some(other) => return Err(ExportError::Protocol(other.to_owned())),
        };
        // The signal's own endpoint is used as written; the general one is a base for HTTP.
        let endpoint = match (var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(endpoint), _) => endpoint,
            (None, Some(base)) if protocol == Protocol::HttpProtobuf => {
                format!("{}/v1/traces", base.trim_end_matches('/'))
            }
            (None, Some(base)) => base,
            (None, None) => return Ok(None),
        };
        // gRPC is built without TLS: an https collector is refused now, not at every export.
        let schemes: &[&str] = if protocol == Protocol::Grpc { &["http"] } else { &["http", "https"] };
        match endpoint.parse::<Uri>() {
            Ok(uri) if uri.scheme_str().is_some_and(|scheme| schemes.contains(&scheme)) && uri.host().is_some() => {}
            // Said without credentials or query, which may hold a key.
            Ok(uri) => {
                let shown = format!("{}://{}{}", uri.scheme_str().unwrap_or(""), uri.host().unwrap_or(""), uri.path());
                return Err(ExportError::Endpoint(shown));
            }
            Err(_) => return Err(ExportError::Endpoint("(unparseable)".to_owned())),
        }
        if let Some(compression) = either("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
            && compression != "none"
        {
            return Err(ExportError::Compression(compression));
        }
        let mut headers = Vec::new();
        for general in [var("OTEL_EXPORTER_OTLP_HEADERS"), var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")] {
            for (key, value) in pairs(general.as_deref().unwrap_or_default()) {
                let key = key.to_ascii_lowercase();
                if HeaderName::try_from(&key).is_err() || HeaderValue::try_from(&value).is_err() {
                    return Err(ExportError::Header(key));
                }
                headers.retain(|(k, _)| *k != key);
                headers.push((key, value));
            }
        }
        let millis =
            |name: &str, default: u64| Duration::from_millis(var(name).and_then(|v| v.parse().ok()).unwrap_or(default));
        let count =
            |name: &str, default: usize| var(name).and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(default);
        let capacity = count("OTEL_BSP_MAX_QUEUE_SIZE", 2048);
        Ok(Some(Self {
            protocol,
            endpoint,
            headers,
            timeout: either("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
                .and_then(|v| v.parse().ok())
                .filter(|millis| *millis > 0)
                .map_or(Duration::from_secs(10), Duration::from_millis)
                .min(millis("OTEL_BSP_EXPORT_TIMEOUT", 30_000)),
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5_000).max(Duration::from_millis(1)),
            capacity,
            batch: count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512).min(capacity),
        }))
    }
}

/// `key=value,key=value` with percent-encoded values, as `OTEL_RESOURCE_ATTRIBUTES` and
/// `OTEL_EXPORTER_OTLP_HEADERS` are written; malformed members are skipped.
fn pairs(list: &str) -> impl Iterator<Item = (String, String)> + '_ {
    list.split(',').filter_map(|member| {
        let (key, value) = member.split_once('=')?;
        let key = key.trim();
        let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8().ok()?;
        (!key.is_empty()).then(|| (key.to_owned(), value.into_owned()))
    })
}

/// Who sends the spans: `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`,
/// else the service's own name; and the process's identity.
fn resource(service: &str, var: impl Fn(&str) -> Option<String>) -> Resource {
    let mut attributes: Vec<(String, String)> = vec![
        ("service.name".into(), service.into()),
        ("service.namespace".into(), "emporium".into()),
        ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("service.instance.id".into(), uuid::Uuid::new_v4().to_string()),
        ("telemetry.sdk.name".into(), "emporium".into()),
        ("telemetry.sdk.language".into(), "rust".into()),
        ("telemetry.sdk.version".into(), env!("CARGO_PKG_VERSION").into()),
    ];
    let mut set = |key: String, value: String| {
        attributes.retain(|(k, _)| *k != key);
        attributes.push((key, value));
    };
    for (key, value) in pairs(&var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default()) {
        set(key, value);
    }
    if let Some(name) = var("OTEL_SERVICE_NAME").filter(|v| !v.trim().is_empty()) {
        set("service.name".into(), name.trim().to_owned());
    }
    let attributes = attributes
        .into_iter()
        .map(|(key, value)| KeyValue {
            key,
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
            ..Default::default()
        })
        .collect();
    Resource { attributes, ..Default::default() }
}

/// The exporter of this process: its queue, and once started the task that empties it.
pub(super) struct Exporter {
    settings: Settings,
    resource: Resource,
    queue: Arc<Queue>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Exporter {
    /// `None` unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set
    /// (and `OTEL_SDK_DISABLED` is not `true`).
    pub(super) fn from_env(service: &str) -> Result<Option<Self>, ExportError> {
        let var = |name: &str| std::env::var(name).ok();
        let Some(settings) = Settings::from(var)? else { return Ok(None) };
        Ok(Some(Self {
            resource: resource(service, var),
            queue: Arc::new(Queue::new(settings.capacity, settings.batch)),
            settings,
            stop: CancellationToken::new(),
            task: None,
        }))
    }

    pub(super) fn layer(&self) -> TraceLayer {
        TraceLayer { queue: self.queue.clone() }
    }

    /// Starts sending, on the current Tokio runtime.
    pub(super) fn start(&mut self) {
        let sender = Sender::new(&self.settings, &self.resource);
        let (queue, stop, delay) = (self.queue.clone(), self.stop.clone(), self.settings.schedule_delay);
        self.task = Some(tokio::spawn(sender.run(queue, stop, delay)));
    }

    /// Sends what is queued (within 5 s) and stops.
    pub(super) async fn shutdown(self) {
        self.stop.cancel();
        if let Some(mut task) = self.task
            && tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err()
        {
            task.abort();
            tracing::warn!("traces still queued were not exported");
        }
    }
}

/// The resource and the scope as the fields of `ResourceSpans` and `ScopeSpans` that hold them.
fn prefix(resource: &Resource) -> (Vec<u8>, Vec<u8>) {
    let scope = InstrumentationScope {
        name: "emporium".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let field = |message: &dyn Fn(&mut Vec<u8>), len: usize| {
        let mut buf = Vec::with_capacity(len + 8);
        wire::delimited(&mut buf, 1, len);
        message(&mut buf);
        buf
    };
    (
        field(&|buf| resource.encode_raw(buf), resource.encoded_len()),
        field(&|buf| scope.encode_raw(buf), scope.encoded_len()),
    )
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

enum Transport {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    Http { client: Box<HttpsClient>, uri: Uri },
}

/// A request already encoded goes out as it is; the answer (`ExportTraceServiceResponse`,
/// whose partial-success counts a collector rarely sets) is not read.
#[derive(Clone, Copy, Default)]
struct Encoded;

impl tonic::codec::Codec for Encoded {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = Encoded;
    type Decoder = Encoded;

    fn encoder(&mut self) -> Self::Encoder {
        Encoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        Encoded
    }
}

impl tonic::codec::Encoder for Encoded {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Encoded {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

struct Sender {
    transport: Result<Transport, String>,
    /// `OTEL_EXPORTER_OTLP_HEADERS`, checked when read, made once for every request.
    headers: HeaderMap,
    timeout: Duration,
    resource: Vec<u8>,
    scope: Vec<u8>,
    /// The spans taken from the queue, then each request around a batch of them: kept from one
    /// round to the next, so that megabytes are not allocated (and their pages faulted in) five
    /// times a second.
    spans: Pending,
    request: Vec<u8>,
    /// When a failure was last logged, and how many spans were lost since.
    complained: Option<Instant>,
    lost: u64,
}

impl Sender {
    fn new(settings: &Settings, resource: &Resource) -> Self {
        let transport = match settings.protocol {
            Protocol::Grpc => tonic::transport::Channel::from_shared(settings.endpoint.clone())
                .map(|endpoint| {
                    let channel = endpoint.connect_timeout(settings.timeout).timeout(settings.timeout).connect_lazy();
                    Transport::Grpc(tonic::client::Grpc::new(channel))
                })
                .map_err(|error| error.to_string()),
            Protocol::HttpProtobuf => settings
                .endpoint
                .parse::<Uri>()
                .map(|uri| Transport::Http {
                    // The collector is the operator's choice, wherever it is.
                    client: Box::new(client::https(settings.timeout, Egress::trusting([settings.endpoint.as_str()]))),
                    uri,
                })
                .map_err(|error| error.to_string()),
        };
        let (resource, scope) = prefix(resource);
        let headers = settings
            .headers
            .iter()
            .filter_map(|(key, value)| Some((HeaderName::try_from(key).ok()?, HeaderValue::try_from(value).ok()?)))
            .collect();
        Self {
            transport,
            headers,
            timeout: settings.timeout,
            resource,
            scope,
            spans: Pending::default(),
            request: Vec::new(),
            complained: None,
            lost: 0,
        }
    }

    async fn run(mut self, queue: Arc<Queue>, stop: CancellationToken, delay: Duration) {
        let mut tick = tokio::time::interval(delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = queue.full_batch.notified() => false,
                _ = stop.cancelled() => true,
            };
            let mut spans = std::mem::take(&mut self.spans);
            if queue.take(&mut spans) > 0 {
                for (batch, count) in spans.batches(queue.batch) {
                    self.send(batch, count).await;
                }
            }
            self.spans = spans;
            let dropped = queue.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                self.failed(dropped, "the queue was full (OTEL_BSP_MAX_QUEUE_SIZE)");
            }
            if stopping {
                if self.lost > 0 {
                    tracing::warn!(spans_lost = self.lost, "traces were not exported");
                }
                return;
            }
        }
    }

    async fn send(&mut self, spans: &[u8], count: usize) {
        let mut request = std::mem::take(&mut self.request);
        request.clear();
        wire::request(&mut request, &self.resource, &self.scope, spans);
        let body = Bytes::from(request);
        let kept = body.clone();
        let outcome = match &mut self.transport {
            Ok(Transport::Grpc(grpc)) => {
                let metadata = tonic::metadata::MetadataMap::from_headers(self.headers.clone());
                let request = tonic::Request::from_parts(metadata, tonic::Extensions::default(), body);
                match grpc.ready().await {
                    Ok(()) => grpc
                        .unary::<Bytes, (), _>(request, PathAndQuery::from_static(EXPORT_PATH), Encoded)
                        .await
                        .map(drop)
                        // The code and message only: the collector's metadata is not ours to log.
                        .map_err(|status| format!("{:?}: {}", status.code(), status.message())),
                    Err(error) => Err(error.to_string()),
                }
            }
            Ok(Transport::Http { client, uri }) => post(client, uri, &self.headers, self.timeout, body).await,
            Err(error) => Err(error.clone()),
        };
        // The transport has let go of the body by now: its buffer serves the next batch.
        if let Ok(buffer) = kept.try_into_mut() {
            self.request = buffer.into();
        }
        match outcome {
            Err(error) => self.failed(count as u64, &error),
            Ok(()) if self.lost > 0 => {
                tracing::info!(spans_lost = self.lost, "traces are exported again");
                self.lost = 0;
            }
            Ok(()) => {}
        }
    }

    /// Logs a failure at most once a minute, with the spans lost since the last line.
    fn failed(&mut self, spans: u64, error: &str) {
        self.lost += spans;
        if self.complained.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            tracing::warn!(error, spans_lost = self.lost, "traces were not exported");
            self.complained = Some(Instant::now());
            self.lost = 0;
        }
    }
}

async fn post(
    client: &HttpsClient,
    uri: &Uri,
    headers: &HeaderMap,
    timeout: Duration,
    body: Bytes,
) -> Result<(), String> {
    let mut request = Request::post(uri.clone()).body(Full::new(body)).map_err(|e| e.to_string())?;
    *request.headers_mut() = headers.clone();
    request.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        // Read to the end, so the connection goes back to the pool.
        let _ = response.into_body().collect().await;
        if status.is_success() { Ok(()) } else { Err(format!("the collector answered {status}")) }
    };
    tokio::time::timeout(timeout, exchange).await.unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tracing_subscriber::layer::SubscriberExt;

    use opentelemetry_proto::tonic::{collector::trace::v1::ExportTraceServiceRequest, trace::v1::Span as OtlpSpan};

    use super::*;
    use crate::telemetry::trace::Scope;

    /// What the exporter would send for what `queue` holds, decoded as a collector would.
    fn exported(queue: &Queue) -> Vec<OtlpSpan> {
        let mut spans = Pending::default();
        let count = queue.take(&mut spans);
        let decoded = decoded(&spans.bytes);
        assert_eq!(decoded.len(), count);
        decoded
    }

    /// The request made around encoded `spans`, decoded as a collector would.
    fn decoded(spans: &[u8]) -> Vec<OtlpSpan> {
        let (resource, scope) = prefix(&super::resource("test", |_| None));
        let mut request = Vec::new();
        wire::request(&mut request, &resource, &scope, spans);
        let decoded = ExportTraceServiceRequest::decode(request.as_slice()).expect("a valid OTLP request");
        let [resource_spans] = decoded.resource_spans.try_into().expect("one resource");
        assert!(resource_spans.resource.unwrap().attributes.iter().any(|a| a.key == "service.name"));
        let [scope_spans] = resource_spans.scope_spans.try_into().expect("one scope");
        assert_eq!(scope_spans.scope.unwrap().name, "emporium");
        scope_spans.spans
    }

    fn attribute_of<'a>(span: &'a OtlpSpan, key: &str) -> Option<&'a any_value::Value> {
        span.attributes.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()
    }

    #[test]
    fn sampled_work_becomes_otlp_spans_linked_to_their_parents() {
        let queue = Arc::new(Queue::new(100, 100));
        let subscriber = tracing_subscriber::registry().with(TraceLayer { queue: queue.clone() });
        let caller = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let scope = Scope { sampled: true, context: caller.child() };
        tracing::subscriber::with_default(subscriber, || {
            let make = || {
                tracing::info_span!(
                    "request",
                    otel.name = "GET /things/{id}",
                    otel.kind = "server",
                    otel.status_code = tracing::field::Empty,
                    http.response.status_code = tracing::field::Empty,
                    url.path = %"/things/7",
                )
            };
            let (root, scope) = trace::begin(scope, Some(caller), make);
            scope.in_scope(|| {
                root.in_scope(|| {
                    let call = tracing::info_span!("call", otel.kind = "client", retries = 2u64, cached = false);
                    call.in_scope(|| tracing::error!(reason = "refused", "the upstream failed"));
                });
                root.record("http.response.status_code", 503);
                root.record("otel.status_code", "error");
                // A span of the same work made where no span of it is current.
                drop(tracing::info_span!("later"));
            });
        });
        let spans = exported(&queue);
        let named = |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name}: {spans:?}"));
        let (root, call, later) = (named("GET /things/{id}"), named("call"), named("later"));

        assert_eq!(root.trace_id, caller.trace_id);
        assert_eq!(root.span_id, scope.context.span_id, "the span id the work's log lines carry");
        assert_eq!(root.parent_span_id, caller.span_id);
        assert_eq!(root.flags, 0x301, "sampled, with a remote parent");
        assert_eq!(root.kind, SpanKind::Server as i32);
        assert_eq!(root.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
        assert_eq!(attribute_of(root, "http.response.status_code"), Some(&any_value::Value::IntValue(503)));
        assert_eq!(attribute_of(root, "url.path"), Some(&any_value::Value::StringValue("/things/7".into())));
        assert!(attribute_of(root, "otel.kind").is_none());
        assert!(root.end_time_unix_nano >= root.start_time_unix_nano && root.start_time_unix_nano > 0);

        assert_eq!(
            (call.trace_id.as_slice(), call.parent_span_id.as_slice()),
            (&caller.trace_id[..], &root.span_id[..])
        );
        assert_eq!(call.flags, 0x101, "sampled, with a local parent");
        assert_eq!(call.kind, SpanKind::Client as i32);
        assert_eq!(attribute_of(call, "retries"), Some(&any_value::Value::IntValue(2)));
        assert_eq!(attribute_of(call, "cached"), Some(&any_value::Value::BoolValue(false)));
        assert_eq!(call.events.len(), 1);
        assert_eq!(call.events[0].name, "the upstream failed");
        let status = call.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (StatusCode::Error as i32, "the upstream failed"));
        let level = &call.events[0].attributes[0];
        assert_eq!(
            (level.key.as_str(), level.value.as_ref().unwrap().value.as_ref()),
            ("level", Some(&any_value::Value::StringValue("ERROR".into())))
        );

        assert_eq!(later.parent_span_id, root.span_id);
        let ids: std::collections::HashSet<_> = spans.iter().map(|s| s.span_id.clone()).collect();
        assert_eq!(ids.len(), 3);
    }

    fn settings(vars: &[(&str, &str)]) -> Result<Option<Settings>, ExportError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from(|name| vars.get(name).cloned())
    }

    #[test]
    fn export_follows_the_standard_variables() {
        assert!(settings(&[]).unwrap().is_none());
        assert!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SDK_DISABLED", "TRUE")])
                .unwrap()
                .is_none()
        );

        let http = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]).unwrap().unwrap();
        assert_eq!((http.protocol, http.endpoint.as_str()), (Protocol::HttpProtobuf, "http://c:4318/v1/traces"));
        assert_eq!((http.schedule_delay, http.capacity, http.batch), (Duration::from_secs(5), 2048, 512));
        assert_eq!(http.timeout, Duration::from_secs(10));

        let grpc = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20abc,x-tenant=a"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=b"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((grpc.protocol, grpc.endpoint.as_str()), (Protocol::Grpc, "http://c:4317"));
        assert_eq!(
            grpc.headers,
            [("authorization".to_owned(), "Bearer abc".to_owned()), ("x-tenant".to_owned(), "b".to_owned())]
        );
        // A batch is never larger than the queue.
        assert_eq!((grpc.capacity, grpc.batch, grpc.schedule_delay), (100, 100, Duration::from_millis(100)));
        assert_eq!(grpc.timeout, Duration::from_millis(2500));

        let own = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example/otlp"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(own.endpoint, "https://traces.example/otlp");

        for bad in [
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_EXPORTER_OTLP_HEADERS", "a b=c")],
        ] {
            assert!(settings(&bad).is_err(), "{bad:?}");
        }
        let Err(error) = settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://me:s3cret@c/t?key=k3y")]) else {
            panic!("an ftp endpoint is refused")
        };
        let said = error.to_string();
        assert!(said.contains("ftp://c/t") && !said.contains("s3cret") && !said.contains("k3y"), "{said}");
    }

    #[test]
    fn the_resource_names_the_service() {
        let vars: HashMap<&str, &str> = HashMap::from([(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=prod%20eu,service.name=shop,broken",
        )]);
        let get = |name: &str| vars.get(name).map(|v| v.to_string());
        let named = |resource: &Resource, key: &str| {
            resource
                .attributes
                .iter()
                .filter(|a| a.key == key)
                .map(|a| a.value.clone().unwrap().value.unwrap())
                .collect::<Vec<_>>()
        };
        let configured = resource("orders", get);
        assert_eq!(named(&configured, "service.name"), [any_value::Value::StringValue("shop".into())]);
        assert_eq!(
            named(&configured, "deployment.environment.name"),
            [any_value::Value::StringValue("prod eu".into())]
        );
        assert_eq!(named(&configured, "service.namespace"), [any_value::Value::StringValue("emporium".into())]);

        let overridden = resource("orders", |name| (name == "OTEL_SERVICE_NAME").then(|| "checkout".to_owned()));
        assert_eq!(named(&overridden, "service.name"), [any_value::Value::StringValue("checkout".into())]);
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_batches_split_where_spans_end() {
        let queue = Arc::new(Queue::new(3, 2));
        let subscriber = tracing_subscriber::registry().with(TraceLayer { queue: queue.clone() });
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..5_i64 {
                drop(tracing::info_span!("work", n, big = n * -1_000_000_000_000, ratio = 0.5));
            }
        });
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 2);
        let mut taken = Pending::default();
        assert_eq!(queue.take(&mut taken), 3);
        let batches: Vec<_> = taken.batches(2).collect();
        assert_eq!(batches.iter().map(|(_, count)| *count).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(batches.iter().map(|(bytes, _)| bytes.len()).sum::<usize>(), taken.bytes.len());
        let last = decoded(batches[1].0);
        assert_eq!(last.len(), 1);
        assert_eq!(attribute_of(&last[0], "n"), Some(&any_value::Value::IntValue(2)));
        assert_eq!(attribute_of(&last[0], "big"), Some(&any_value::Value::IntValue(-2_000_000_000_000)));
        assert_eq!(attribute_of(&last[0], "ratio"), Some(&any_value::Value::DoubleValue(0.5)));
        assert!(exported(&queue).is_empty());
    }

    #[test]
    fn a_span_keeps_each_key_once_and_within_the_limits() {
        let queue = Arc::new(Queue::new(10, 10));
        let subscriber = tracing_subscriber::registry().with(TraceLayer { queue: queue.clone() });
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("retrying", server.port = tracing::field::Empty);
            for port in [8081_i64, 8082] {
                span.record("server.port", port);
            }
            span.in_scope(|| {
                for _ in 0..MAX_EVENTS + 5 {
                    tracing::warn!("again");
                }
            });
        });
        let spans = exported(&queue);
        let [span] = spans.as_slice() else { panic!("{spans:?}") };
        let ports: Vec<_> = span.attributes.iter().filter(|a| a.key == "server.port").collect();
        assert_eq!(ports.len(), 1);
        assert_eq!(attribute_of(span, "server.port"), Some(&any_value::Value::IntValue(8082)));
        assert_eq!((span.events.len(), span.dropped_events_count), (MAX_EVENTS, 5));
    }
}
