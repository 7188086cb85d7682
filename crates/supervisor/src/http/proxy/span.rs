//! A proxied request's span (tracing on), built the same way on both
//! paths: its name, its attributes, its events, and how it ends. The
//! worker continues it: the forwarding rules write its context into the
//! worker's head (`policy::RequestRules::trace`).

use std::time::Instant;

use par_telemetry::trace::{Incoming, Kind, Span, SpanId, Status, TraceId, Tracer, Value};

use super::admit::Admitted;
use crate::http::route_table::Upstream;

/// The span of a request for `agent_id`, continuing what came in
/// (`traceparent`, `tracestate`, `x-amzn-trace-id`): `{method} /agents/{id}`.
pub(super) fn start(t: &'static Tracer, method: &str, agent_id: &str, incoming: Incoming) -> Span {
    // Written in the span's own text: no allocation.
    t.start_parts(&[method, " /agents/", agent_id], Kind::Server, incoming)
}

/// The span of a request on hyper's path (tracing on): continuing the
/// context in `headers`, described by `request` (built only then).
pub(super) fn of_request<'a>(
    headers: &http::HeaderMap,
    request: impl FnOnce() -> Request<'a>,
) -> Option<Span> {
    let t = par_telemetry::trace::tracer()?;
    let r = request();
    let mut s = start(t, r.method, r.agent_id, Incoming::from_headers(headers));
    describe(&mut s, r);
    Some(s)
}

/// What a span says of the request itself.
pub(super) struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The client's address (`policy::ip_text`).
    pub client: Value,
    pub agent_id: &'a str,
    pub grpc: bool,
    /// The session key it names (shown hashed).
    pub session: Option<&'a str>,
}

/// Sets the request's attributes (when the span records).
pub(super) fn describe(s: &mut Span, r: Request<'_>) {
    if !s.is_recording() {
        return;
    }
    // A span just started: nothing set yet (no search for earlier values).
    s.add("http.request.method", method_value(r.method));
    s.add_text("url.path", r.path);
    s.add("client.address", r.client);
    s.add_text("par.agent_id", r.agent_id);
    if r.grpc {
        s.add("rpc.system", "grpc");
    }
    if let Some(k) = r.session {
        session(s, k);
    }
}

/// The session key the request names (shown hashed).
pub(super) fn session(s: &mut Span, key: &str) {
    if s.is_recording() {
        s.set("par.session.hash", super::hint::trace_hash(key));
    }
}

/// A method as an attribute: the common ones are constants (no copy).
fn method_value(m: &str) -> Value {
    match m {
        "GET" => "GET".into(),
        "POST" => "POST".into(),
        "PUT" => "PUT".into(),
        "DELETE" => "DELETE".into(),
        "PATCH" => "PATCH".into(),
        "HEAD" => "HEAD".into(),
        "OPTIONS" => "OPTIONS".into(),
        _ => m.to_owned().into(),
    }
}

/// Its process id as an attribute: the proxy's header value, shared (no copy).
fn process(u: &Upstream) -> Value {
    u.process_id.clone().into()
}

/// The request was admitted (a worker chosen) after waiting since `started`.
pub(super) fn admitted(s: &mut Span, started: Instant, a: &Admitted) {
    if !s.is_recording() {
        return;
    }
    let waited = started.elapsed().as_secs_f64() * 1000.0;
    s.event(
        "admitted",
        &[
            ("par.process_id", process(&a.upstream)),
            ("par.admission.wait_ms", waited.into()),
        ],
    );
    if let Some(w) = a.woke {
        s.set("par.wake.wait_ms", w.as_secs_f64() * 1000.0);
    }
    if a.rebound {
        s.set("par.session.rebound", true);
    }
}

/// The worker's response head came: its status, who answered, how soon,
/// after how many tries that never reached a worker.
pub(super) fn answered(
    s: &mut Span,
    status: u16,
    upstream: &Upstream,
    started: Instant,
    retries: usize,
) {
    if !s.is_recording() {
        return;
    }
    // Once a span, and nothing before it sets these (no search for them).
    s.add("http.response.status_code", status);
    s.add("par.process_id", process(upstream));
    s.add(
        "par.time_to_first_byte_ms",
        started.elapsed().as_secs_f64() * 1000.0,
    );
    s.add("par.retries", retries);
}

/// A try that never reached the worker: the request goes to another one.
pub(super) fn retry(s: &mut Span, upstream: &Upstream) {
    if s.is_recording() {
        s.event("retry", &[("par.process_id", process(upstream))]);
    }
}

/// The worker failed the request (a reply is made here).
pub(super) fn worker_failed(s: &mut Span, upstream: &Upstream) {
    if s.is_recording() {
        s.event("worker_failed", &[("par.process_id", process(upstream))]);
    }
}

/// The client went away before its reply.
pub(super) fn client_gone(s: &mut Span) {
    s.event("client_gone", &[]);
}

/// Ends the span of a request answered here (no worker's body to carry it
/// to its end): its status, an error when 5xx.
pub(super) fn made_here(mut s: Span, status: u16) {
    if s.is_recording() {
        s.set("http.response.status_code", status);
        if status >= 500 {
            s.set_status(Status::Error(
                format!("answered {status} by the supervisor").into(),
            ));
        }
    }
    s.end();
}

/// Ends the span of a request whose worker's reply body was passed on
/// (`bytes` of it).
pub(super) fn body_ended(mut s: Span, bytes: u64) {
    s.add("http.response.body.size", bytes);
    s.end();
}

/// The ids an access-log line shows (empty with tracing off).
pub(super) fn log_ids(ids: Option<(TraceId, SpanId)>) -> (String, String) {
    ids.map(|(t, s)| (t.to_hex(), s.to_hex()))
        .unwrap_or_default()
}
