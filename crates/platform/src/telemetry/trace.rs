//! Distributed traces: W3C trace context, OTLP export, and the spans every service shares.
//!
//! The `traceparent` travels on HTTP requests (the gateway sets it), in gRPC metadata, and inside
//! each CloudEvent, so a checkout is one trace from the gateway to the consumers of its events.
//! With no OTLP endpoint configured nothing is exported: request spans keep the caller's trace id
//! for the logs, and the client, producer and consumer spans are not even created.
//!
//! The sampling decision is ours, taken before a unit of work (a request, a gRPC call, an event)
//! builds its span ([`start`]), and held for the task that does the work ([`Scope`]): the spans
//! of unsampled work never reach the trace layer, so they cost what they cost with export off.
//! The decision follows `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` as the SDK's samplers
//! would; the exporter ([`super::export`]) then keeps every span it is given.

use std::{
    cell::Cell,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use http::{HeaderMap, HeaderValue};
use rand::RngCore;
use tracing::Span;
use tracing_subscriber::{
    Registry,
    registry::{LookupSpan, SpanRef},
};

use super::export::Recording;

pub const TRACEPARENT: &str = "traceparent";

/// The target of spans made only for the exporter, when work is sampled (client and producer
/// spans): log lines leave them out, so that what a line says does not depend on sampling.
pub const TRACE_ONLY: &str = "emporium::trace";

/// Share of new traces sampled when `OTEL_TRACES_SAMPLER` does not say: enough to see every
/// route within minutes of traffic, few enough to cost next to nothing.
pub const DEFAULT_RATIO: f64 = 0.1;

static ENABLED: AtomicBool = AtomicBool::new(false);
static SAMPLING: OnceLock<Sampling> = OnceLock::new();

tokio::task_local! {
    /// The decision and trace context of the work the current task does.
    static SCOPE: Scope;
}

std::thread_local! {
    /// The identity of the span [`start`] is making, for the trace layer to give it.
    static OPENING: Cell<Option<Identity>> = const { Cell::new(None) };
}

/// Who a recorded span is, and whose child.
#[derive(Debug, Clone, Copy)]
pub(super) struct Identity {
    pub(super) context: TraceContext,
    pub(super) parent: Option<[u8; 8]>,
    /// The parent is another process's span (a caller's `traceparent`).
    pub(super) remote_parent: bool,
}

/// How new work is sampled: `OTEL_TRACES_SAMPLER`'s choices.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sampling {
    /// Work with a caller follows the caller's decision.
    parent_based: bool,
    /// The share of traces kept otherwise, decided on the trace id as the SDK's
    /// `TraceIdRatioBased` does (so every service keeps the same traces).
    ratio: f64,
}

impl Sampling {
    fn from_env() -> Self {
        let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|r| (0.0..=1.0).contains(r));
        let (parent_based, ratio) = match std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default().trim() {
            "always_on" => (false, 1.0),
            "always_off" => (false, 0.0),
            "traceidratio" => (false, arg.unwrap_or(1.0)),
            "parentbased_always_on" => (true, 1.0),
            "parentbased_always_off" => (true, 0.0),
            "parentbased_traceidratio" => (true, arg.unwrap_or(1.0)),
            _ => (true, arg.unwrap_or(DEFAULT_RATIO)),
        };
        Self { parent_based, ratio }
    }

    fn keeps(&self, parent: Option<&TraceContext>, trace_id: &[u8; 16]) -> bool {
        match parent {
            Some(parent) if self.parent_based => parent.flags & 1 == 1,
            _ if self.ratio >= 1.0 => true,
            _ => {
                let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or_default());
                (low >> 1) < (self.ratio.max(0.0) * (1u64 << 63) as f64) as u64
            }
        }
    }
}

/// The sampling decision and trace context of one unit of work, for the task doing it.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub(super) sampled: bool,
    pub(super) context: TraceContext,
}

impl Scope {
    /// Runs `work` in this scope: the spans it makes are exported if the scope is sampled.
    pub async fn run<F: std::future::Future>(self, work: F) -> F::Output {
        SCOPE.scope(self, work).await
    }

    /// The context this work hands on.
    pub fn context(&self) -> TraceContext {
        self.context
    }

    /// Runs `f` in this scope, outside the work's future (its last log line, say).
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        SCOPE.sync_scope(*self, f)
    }
}

/// The trace context of the work the current task does, for its log lines.
pub fn current() -> Option<TraceContext> {
    SCOPE.try_with(|scope| scope.context).ok()
}

/// Starts a unit of work continuing the caller's `traceparent` (or a new trace): decides whether
/// it is sampled, makes its span with `make` (exported only if sampled), and returns the span
/// with the scope to run the work in (whose lines carry its `trace.id` and `span.id`). The
/// context handed on is the span's own when exported, otherwise the caller's trace with a fresh
/// span id (or a new root), so that logs still carry the caller's trace id.
pub fn start(traceparent: Option<&str>, make: impl FnOnce() -> Span) -> (Span, Scope) {
    let parent = traceparent.and_then(TraceContext::parse);
    let mut fresh = parent.as_ref().map_or_else(TraceContext::new_root, TraceContext::child);
    let sampled = enabled() && SAMPLING.get_or_init(Sampling::from_env).keeps(parent.as_ref(), &fresh.trace_id);
    if enabled() {
        fresh.flags = u8::from(sampled);
    }
    begin(Scope { sampled, context: fresh }, parent, make)
}

/// Makes the span of work in `scope`, whose caller is `parent`.
pub(super) fn begin(scope: Scope, parent: Option<TraceContext>, make: impl FnOnce() -> Span) -> (Span, Scope) {
    /// Takes back what the trace layer did not take (`make` made nothing it records, or
    /// panicked), so that no later span of this thread gets it.
    struct Cleared;
    impl Drop for Cleared {
        fn drop(&mut self) {
            let _ = OPENING.try_with(Cell::take);
        }
    }
    let _cleared = Cleared;
    if scope.sampled {
        let parent_span = parent.map(|p| p.span_id);
        let identity = Identity { context: scope.context, parent: parent_span, remote_parent: parent.is_some() };
        let _ = OPENING.try_with(|opening| opening.set(Some(identity)));
    }
    let span = SCOPE.sync_scope(scope, make);
    (span, scope)
}

/// The identity [`start`] chose for the span being made, once.
pub(super) fn take_opening() -> Option<Identity> {
    OPENING.try_with(Cell::take).ok().flatten()
}

/// The identity of a sampled span with no recorded span above it, made by the current work
/// outside [`start`] (a task it spawned without its span): a child of the work's span.
pub(super) fn orphan() -> Identity {
    match SCOPE.try_with(|scope| scope.context) {
        Ok(work) => Identity { context: work.child(), parent: Some(work.span_id), remote_parent: false },
        Err(_) => Identity { context: TraceContext::new_root(), parent: None, remote_parent: false },
    }
}

/// Whether the current task's work is sampled: client spans are made only then.
pub fn recording() -> bool {
    enabled() && SCOPE.try_with(|scope| scope.sampled).unwrap_or(false)
}

/// Whether a span being made now may reach the trace layer.
pub(super) fn admitted() -> bool {
    SCOPE.try_with(|scope| scope.sampled).unwrap_or(false)
}

/// Whether spans are exported by this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(super) fn mark_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// W3C trace context of one hop: the trace id, and a span id (whose meaning depends on where
/// the value came from: see [`TraceContext::parse`] and [`TraceContext::child`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceContext {
    /// A new root trace.
    pub fn new_root() -> Self {
        let mut rng = rand::thread_rng();
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        rng.fill_bytes(&mut trace_id);
        rng.fill_bytes(&mut span_id);
        Self { trace_id, span_id, flags: 1 }
    }

    /// The caller's context as sent: its span id is the caller's span, our parent.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace)?;
        let span_id: [u8; 8] = decode_hex(parent)?;
        let [flags]: [u8; 1] = decode_hex(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, span_id, flags })
    }

    /// The caller's trace continued by a new span of ours.
    pub fn child(&self) -> Self {
        let mut context = *self;
        rand::thread_rng().fill_bytes(&mut context.span_id);
        context
    }

    pub fn trace_id_hex(&self) -> String {
        encode_hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        encode_hex(&self.span_id)
    }

    /// The `traceparent` to send downstream: our trace, with this span as the parent.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", encode_hex(&self.trace_id), encode_hex(&self.span_id), self.flags)
    }
}

/// `f` of `span` as the registry holds it (where the trace layer keeps its [`Recording`]).
fn in_registry<R>(span: &Span, f: impl FnOnce(SpanRef<'_, Registry>) -> Option<R>) -> Option<R> {
    span.with_subscriber(|(id, dispatch)| f(dispatch.downcast_ref::<Registry>()?.span(id)?)).flatten()
}

/// The context of `span`'s nearest recorded span (itself, or the closest above it).
fn recorded(span: &Span) -> Option<TraceContext> {
    in_registry(span, |span| span.scope().find_map(|s| s.extensions().get::<Recording>().map(|r| r.context)))
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    // W3C trace context allows lowercase hex only.
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

// `hex`, not `format!`: every log line carries two ids, and every proxied request a `traceparent`.
fn encode_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// The `traceparent` naming `span` as the parent, when spans are exported.
pub fn traceparent_of(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    recorded(span).map(|context| context.traceparent())
}

/// The `traceparent` the current task's work hands on, when spans are exported: for events
/// written by work that has no request context of its own (a gRPC call, say).
pub fn current_traceparent() -> Option<String> {
    if recording()
        && let Some(traceparent) = traceparent_of(&Span::current())
    {
        return Some(traceparent);
    }
    // No recorded span is current (sampled work's task spawned without its span): the work's.
    enabled().then(|| SCOPE.try_with(|scope| scope.context.traceparent()).ok()).flatten()
}

/// Sets `traceparent` on an outgoing request so that the callee continues `span` (a client span
/// of sampled work), or the current work's unsampled trace, so that the callee does not sample
/// what its caller did not.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    let traceparent =
        if recording() { traceparent_of(span).or_else(current_traceparent) } else { current_traceparent() };
    if let Some(value) = traceparent.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(TRACEPARENT, value);
    }
}

/// Marks `span` as failed (OpenTelemetry status `Error`) with a short reason.
pub fn fail(span: &Span, reason: impl Into<std::borrow::Cow<'static, str>>) {
    if enabled() {
        // This span only: an unsampled one is not recorded, and its parent did not fail.
        in_registry(span, |span| {
            let mut extensions = span.extensions_mut();
            extensions.get_mut::<Recording>().map(|recording| recording.fail(reason.into().into_owned()))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_traceparent_with_a_new_span() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = TraceContext::parse(header).unwrap().child();
        assert_eq!(trace.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let downstream = trace.traceparent();
        assert!(downstream.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(downstream.ends_with("-01"));
        assert_ne!(&downstream[36..52], "00f067aa0ba902b7");
        assert_eq!(TraceContext::parse(header).unwrap().traceparent(), header);
    }

    #[test]
    fn rejects_invalid_traceparents() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn without_export_a_span_keeps_the_callers_trace() {
        let make = || tracing::info_span!("test");
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (span, scope) = start(Some(header), make);
        assert_eq!(scope.context().trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(scope.context().span_id_hex(), "00f067aa0ba902b7");
        assert!(traceparent_of(&span).is_none());
        assert_ne!(start(None, make).1.context().trace_id, scope.context().trace_id);
    }

    #[test]
    fn sampling_follows_the_parent_or_the_trace_id() {
        let parent = |flags| TraceContext { trace_id: [7; 16], span_id: [1; 8], flags };
        let parent_based = Sampling { parent_based: true, ratio: 0.0 };
        assert!(parent_based.keeps(Some(&parent(1)), &[0; 16]));
        assert!(!parent_based.keeps(Some(&parent(0)), &[0; 16]));
        let half = Sampling { parent_based: false, ratio: 0.5 };
        // The SDK's rule: the trace id's low 63 bits against ratio × 2^63.
        let mut low = [0u8; 16];
        low[8] = 0x7f;
        assert!(half.keeps(Some(&parent(0)), &low));
        let mut high = [0u8; 16];
        high[8] = 0x81;
        assert!(!half.keeps(Some(&parent(1)), &high));
        // Over many random roots, about the ratio is kept.
        let tenth = Sampling { parent_based: true, ratio: 0.1 };
        let kept = (0..20_000).filter(|_| tenth.keeps(None, &TraceContext::new_root().trace_id)).count();
        assert!((1_600..2_400).contains(&kept), "{kept}");
    }
}
