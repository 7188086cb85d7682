//! Traces: W3C trace context in and out, spans recorded per request, and
//! their export over OTLP/HTTP (protobuf) to a collector.
//!
//! Off unless an endpoint is set (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
//! `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`): then [`tracer`] is `None`
//! (one atomic load) and callers build no span at all.
//!
//! Use, for a request coming in:
//!
//! ```no_run
//! use par_telemetry::trace::{self, Kind};
//! # let headers = http::HeaderMap::new();
//! if let Some(t) = trace::tracer() {
//!     let mut span = t.server_span("POST /invoke", &headers);
//!     span.set("http.request.method", "POST");
//!     let mut to_worker = http::HeaderMap::new();
//!     span.context().inject(&mut to_worker); // traceparent (+ tracestate) for the next hop
//!     span.event("admitted", &[("wait_ms", 3i64.into())]);
//!     span.set("http.response.status_code", 200i64);
//!     span.end(); // or drop it
//! }
//! ```
//!
//! Variables: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`, `traceidratio`,
//! `parentbased_always_on` (default), `parentbased_always_off`,
//! `parentbased_traceidratio`) and `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_EXPORTER_OTLP_HEADERS` / `OTEL_EXPORTER_OTLP_TRACES_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT` / `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` (ms),
//! `OTEL_SDK_DISABLED=true` and `OTEL_TRACES_EXPORTER=none` (off).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod config;
mod context;
mod data;
mod export;
pub mod proto;

pub use config::{Config, Sampler};
pub use context::{
    parse_amzn_trace_id, parse_traceparent, parse_traceparent_bytes, parse_tracestate,
    parse_tracestate_bytes, Incoming, SpanContext, SpanId, TraceId, SAMPLED, TRACEPARENT_LEN,
};
pub use data::{Attribute, EventData, Kind, SpanData, Status, Value};

/// Most attributes, events and links one span keeps (the SDKs' defaults);
/// more are counted as dropped.
const MAX_ATTRIBUTES: usize = 128;
const MAX_EVENTS: usize = 128;
const MAX_LINKS: usize = 128;

/// Spans waiting for export at most; more are dropped (and counted).
pub const QUEUE: usize = 2048;
/// Spans per export request at most.
pub const BATCH: usize = 512;
/// Longest a span waits in the queue before its batch is sent.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);

static TRACER: OnceLock<Tracer> = OnceLock::new();

/// The process's tracer: `None` when tracing is off (no endpoint, or
/// disabled) or not yet initialised. One atomic load.
#[inline]
pub fn tracer() -> Option<&'static Tracer> {
    TRACER.get()
}

/// Sets up the process's tracer from the environment (once; later calls
/// return the first result). `default_service` names this process when
/// `OTEL_SERVICE_NAME` does not (`par-supervisor`, the agent id); with
/// `default_wins_over_resource`, it also wins over a `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES` (a worker: the supervisor's resource
/// attributes reach it, its service is its agent). The exporter runs on a
/// thread of its own; the ECS task's identity is read there, never on a
/// request's path.
pub fn init(default_service: &str, default_wins_over_resource: bool) -> Option<&'static Tracer> {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let vars = |k: &str| std::env::var(k).ok();
        match Config::from_env(&vars, default_service, default_wins_over_resource) {
            Ok(Some(cfg)) => {
                tracing::info!(endpoint = %cfg.endpoint, service = %cfg.service_name, sampler = ?cfg.sampler, "traces exported over OTLP/HTTP");
                let _ = TRACER.set(Tracer::new(cfg));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("traces off: {e}"),
        }
    });
    tracer()
}

/// Sends what is queued and waits for it, at most `within` (at shutdown).
pub fn shutdown(within: Duration) {
    if let Some(t) = tracer() {
        t.flush(within);
    }
}

/// What the exporter has done, for `/metrics` (zeros when tracing is off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans lost: the queue was full, or their export failed.
    pub dropped: u64,
    /// Export requests that failed (connection, timeout, non-2xx status).
    pub failed_exports: u64,
}

/// The process's counters (zeros when tracing is off).
pub fn counters() -> Counters {
    tracer().map(Tracer::counters).unwrap_or_default()
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    pub failed_exports: AtomicU64,
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The tracer: samples, builds spans, and hands finished ones to the exporter.
pub struct Tracer {
    sampler: Sampler,
    queue: export::Queue,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("sampler", &self.sampler)
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// A tracer exporting as `cfg` says, its exporter on a thread of its own.
    pub fn new(cfg: Config) -> Tracer {
        let stats = Arc::new(Stats::default());
        let sampler = cfg.sampler;
        let queue = export::start(cfg, Arc::clone(&stats));
        Tracer {
            sampler,
            queue,
            stats,
        }
    }

    pub fn counters(&self) -> Counters {
        Counters {
            exported: self.stats.exported.load(Ordering::Relaxed),
            dropped: self.stats.dropped.load(Ordering::Relaxed),
            failed_exports: self.stats.failed_exports.load(Ordering::Relaxed),
        }
    }

    /// A server span for a request with these headers: continues its
    /// `traceparent` (with `tracestate`), links its `X-Amzn-Trace-Id`, or
    /// starts a trace.
    pub fn server_span(
        &'static self,
        name: impl Into<Cow<'static, str>>,
        headers: &http::HeaderMap,
    ) -> Span {
        self.start_from(name, Kind::Server, Incoming::from_headers(headers))
    }

    /// A span continuing what came in (parent and link), sampled by the sampler.
    pub fn start_incoming(
        &'static self,
        name: impl Into<Cow<'static, str>>,
        kind: Kind,
        incoming: &Incoming,
    ) -> Span {
        self.start_from(name, kind, incoming.clone())
    }

    /// [`Tracer::start_incoming`] taking what came in (its `tracestate`
    /// moves to the span, not copied).
    pub fn start_from(
        &'static self,
        name: impl Into<Cow<'static, str>>,
        kind: Kind,
        incoming: Incoming,
    ) -> Span {
        let Incoming { mut parent, link } = incoming;
        let state = parent.as_mut().and_then(|p| p.state.take());
        let mut span = self.start_with(name, kind, parent.as_ref(), state);
        if let (Some(link), Some(r)) = (link, span.recording.as_mut()) {
            r.links
                .push((link, vec![("source", "x-amzn-trace-id".into())]));
        }
        span
    }

    /// [`Tracer::start_from`] with a name made of `parts`, written in the
    /// span's own text when it records (no allocation of its own).
    pub fn start_parts(&'static self, parts: &[&str], kind: Kind, incoming: Incoming) -> Span {
        let mut span = self.start_from("", kind, incoming);
        if let Some(r) = span.recording.as_mut() {
            let from = r.text.len();
            for p in parts {
                r.text.push_str(p);
            }
            r.name_at = Some(from..r.text.len());
        }
        span
    }

    /// A span under `parent` (a remote caller's or one of this process's
    /// own), or the root of a new trace.
    pub fn start(
        &'static self,
        name: impl Into<Cow<'static, str>>,
        kind: Kind,
        parent: Option<&SpanContext>,
    ) -> Span {
        let state = parent.and_then(|p| p.state.clone());
        self.start_with(name, kind, parent, state)
    }

    /// A span under `parent` carrying `state` on (the parent's tracestate).
    fn start_with(
        &'static self,
        name: impl Into<Cow<'static, str>>,
        kind: Kind,
        parent: Option<&SpanContext>,
        state: Option<Box<str>>,
    ) -> Span {
        let trace_id = parent.map_or_else(TraceId::random, |p| p.trace_id);
        let sampled = self.sampler.should_sample(parent, trace_id);
        let span_id = SpanId::random();
        let flags = if sampled { context::SAMPLED } else { 0 };
        let recording = sampled.then(|| {
            // Its tracestate is moved in when the span ends (one copy, not two).
            let context = SpanContext {
                trace_id,
                span_id,
                flags,
                state: None,
            };
            let parent = parent.map(|p| p.span_id);
            let start = now_nanos();
            // One the exporter is done with (its vectors' room kept), or a new one.
            match self.queue.recycled() {
                Some(mut d) => {
                    d.context = context;
                    d.parent = parent;
                    d.name = name.into();
                    d.name_at = None;
                    d.kind = kind;
                    d.start = start;
                    d
                }
                None => Box::new(SpanData {
                    context,
                    parent,
                    name: name.into(),
                    name_at: None,
                    text: String::new(),
                    kind,
                    start,
                    end: 0,
                    attributes: Vec::with_capacity(16),
                    dropped_attributes: 0,
                    events: Vec::with_capacity(4),
                    event_attributes: Vec::with_capacity(4),
                    dropped_events: 0,
                    links: Vec::new(),
                    status: Status::Unset,
                }),
            }
        });
        Span {
            tracer: self,
            context: SpanContext {
                trace_id,
                span_id,
                flags,
                state,
            },
            recording,
        }
    }

    /// Hands a finished span to the exporter; never waits (a full queue
    /// drops it and counts it).
    fn finish(&self, data: Box<SpanData>) {
        if !self.queue.push(data) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Exports what is queued now, waiting at most `within`.
    pub fn flush(&self, within: Duration) {
        self.queue.flush(within);
    }
}

/// A span being recorded. Not sampled, it records nothing but still has a
/// context to pass on (so the next hop continues the trace, not sampled).
/// Ends when [`Span::end`] is called or it is dropped.
pub struct Span {
    tracer: &'static Tracer,
    context: SpanContext,
    recording: Option<Box<SpanData>>,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Span")
            .field("context", &self.context)
            .field("recording", &self.recording.is_some())
            .finish()
    }
}

impl Span {
    /// What the next hop's `traceparent` says (this span is its parent).
    pub fn context(&self) -> &SpanContext {
        &self.context
    }

    /// Whether this span records (is sampled): attributes that cost
    /// something to compute can be skipped when not.
    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// The trace id as 32 hex digits (for log lines).
    pub fn trace_id(&self) -> String {
        self.context.trace_id.to_hex()
    }

    /// The span id as 16 hex digits (for log lines).
    pub fn span_id(&self) -> String {
        self.context.span_id.to_hex()
    }

    /// The trace and span ids (formatted only when shown: a log line).
    pub fn ids(&self) -> (TraceId, SpanId) {
        (self.context.trace_id, self.context.span_id)
    }

    /// A child of this span, in this process.
    pub fn child(&self, name: impl Into<Cow<'static, str>>, kind: Kind) -> Span {
        self.tracer.start(name, kind, Some(&self.context))
    }

    /// Sets an attribute (a later value of the same key replaces it).
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        let Some(r) = self.recording.as_mut() else {
            return;
        };
        if let Some(slot) = r.attributes.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value.into();
        } else if r.attributes.len() < MAX_ATTRIBUTES {
            r.attributes.push((key, value.into()));
        } else {
            r.dropped_attributes += 1;
        }
    }

    /// Adds an attribute the span does not have yet (no search for an
    /// earlier value of it: what describes a request as it starts).
    pub fn add(&mut self, key: &'static str, value: impl Into<Value>) {
        let Some(r) = self.recording.as_mut() else {
            return;
        };
        debug_assert!(
            r.attributes.iter().all(|(k, _)| *k != key),
            "{key} set twice"
        );
        if r.attributes.len() < MAX_ATTRIBUTES {
            r.attributes.push((key, value.into()));
        } else {
            r.dropped_attributes += 1;
        }
    }

    /// [`Span::add`] of a string copied into the span's own text.
    pub fn add_text(&mut self, key: &'static str, value: &str) {
        let Some(r) = self.recording.as_mut() else {
            return;
        };
        let from = r.text.len();
        let to = from + value.len();
        match (u32::try_from(from), u32::try_from(to)) {
            (Ok(a), Ok(b)) => {
                r.text.push_str(value);
                self.add(key, Value::Text(a, b));
            }
            _ => self.add(key, value.to_owned()),
        }
    }

    /// Records an event now.
    pub fn event(&mut self, name: impl Into<Cow<'static, str>>, attributes: &[Attribute]) {
        if self.recording.is_some() {
            self.event_at(now_nanos(), name, attributes);
        }
    }

    /// Records an event at a given time (Unix nanoseconds).
    pub fn event_at(
        &mut self,
        time: u64,
        name: impl Into<Cow<'static, str>>,
        attributes: &[Attribute],
    ) {
        let Some(r) = self.recording.as_mut() else {
            return;
        };
        if r.events.len() < MAX_EVENTS {
            let from = r.event_attributes.len();
            r.event_attributes.extend_from_slice(attributes);
            r.events.push(EventData {
                time,
                name: name.into(),
                attributes: from..r.event_attributes.len(),
            });
        } else {
            r.dropped_events += 1;
        }
    }

    /// Adds a link to another span (another trace's, e.g.).
    pub fn link(&mut self, to: SpanContext, attributes: Vec<Attribute>) {
        if let Some(r) = self.recording.as_mut() {
            if r.links.len() < MAX_LINKS {
                r.links.push((to, attributes));
            }
        }
    }

    pub fn set_status(&mut self, status: Status) {
        if let Some(r) = self.recording.as_mut() {
            r.status = status;
        }
    }

    /// Moves the start (Unix nanoseconds): a span for something that began
    /// before it could be built.
    pub fn set_start(&mut self, start: u64) {
        if let Some(r) = self.recording.as_mut() {
            r.start = start;
        }
    }

    /// Ends the span now and hands it to the exporter.
    pub fn end(mut self) {
        self.finish(now_nanos());
    }

    /// Ends the span at a given time (Unix nanoseconds).
    pub fn end_at(mut self, end: u64) {
        self.finish(end);
    }

    fn finish(&mut self, end: u64) {
        if let Some(mut r) = self.recording.take() {
            r.end = end.max(r.start);
            r.context.state = self.context.state.take();
            self.tracer.finish(r);
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.finish(now_nanos());
    }
}

#[cfg(test)]
mod tests;

/// The exporter's counters as Prometheus families
/// (`par_trace_spans_exported_total`, `par_trace_spans_dropped_total`,
/// `par_trace_export_failures_total`).
pub fn render_counters(t: &mut crate::prometheus::Text, c: Counters) {
    use crate::prometheus::Kind as K;
    for (name, help, v) in [
        (
            "par_trace_spans_exported_total",
            "Spans the OTLP collector accepted.",
            c.exported,
        ),
        (
            "par_trace_spans_dropped_total",
            "Spans lost: the export queue was full, or their export failed.",
            c.dropped,
        ),
        (
            "par_trace_export_failures_total",
            "OTLP export requests that failed (connection, timeout, non-2xx).",
            c.failed_exports,
        ),
    ] {
        t.family(name, K::Counter, help);
        t.sample(name, &[], v);
    }
}
