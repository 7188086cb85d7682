//! HTTP/1.1 on the wire for the direct path: a client's request head read
//! and rewritten for the worker in one pass, the worker's response head
//! rewritten for the client, where a chunked body ends, and a reply made
//! here (an error) written out. Nothing here does I/O.

use http::HeaderValue;
use par_telemetry::trace::{Incoming, SpanContext};

use crate::http::proxy::framing::{has_token, parse_length, BodyFraming, HeadRules, Refusal};
use crate::http::proxy::policy::{self, Kind, RequestRules, RequestSeen, ResponseRules};

mod chunks;
pub(super) use chunks::Chunks;

/// Headers read from one message head; more → the general path.
pub(super) const MAX_HEADERS: usize = 64;
/// Longest request head served directly; longer → the general path.
pub(in crate::http::proxy) const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Longest request body read whole before it is sent; longer → the general path.
pub(super) const MAX_REQUEST_BODY: u64 = 64 * 1024;
/// Longest response head accepted from a worker.
pub(super) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A request the direct path serves, its head already rewritten for the worker.
#[derive(Debug)]
pub(super) struct Request {
    /// Bytes of the head in the client's buffer.
    pub head_len: usize,
    /// Body bytes that follow it.
    pub body_len: usize,
    /// The agent the path names.
    pub agent_id: std::ops::Range<usize>,
    pub method: Method,
    /// The client asked to close after this reply.
    pub close: bool,
    /// `x-request-id`, the client's or made here.
    pub request_id: HeaderValue,
    /// Where the first `x-par-session-id` value is in the client's buffer.
    pub session: Option<std::ops::Range<usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    /// GET, HEAD, OPTIONS: safe to send again when no answer came.
    Idempotent {
        head: bool,
    },
    Other,
}

/// What a client's buffer holds.
#[derive(Debug)]
pub(super) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request for an agent: `out` holds the head for the worker (the body follows it).
    Direct(Request),
    /// Anything else (the management API, an upgrade, a chunked upload,
    /// HTTP/1.0, a malformed head…): served by the general path.
    General,
    /// A head the framing rules refuse (`proxy::framing`): answered here,
    /// and the connection closed.
    Refused(Refusal),
}

/// Who starts a request's span (tracing on): the direct path's tracer, or
/// a test's fixed context. The worker's head carries the span's context
/// (`policy::RequestRules::trace`), not the client's.
pub(super) trait Trace {
    /// Whether a span is started (the trace headers are read only then).
    fn on(&self) -> bool;
    /// Starts the span of a request the direct path serves (`method` and
    /// `path` as the client sent them, without the query) continuing what
    /// came in; the span's context.
    fn start(
        &mut self,
        method: &str,
        path: &str,
        agent_id: &str,
        incoming: Incoming,
    ) -> Option<&SpanContext>;
}

/// Tracing off.
impl Trace for () {
    fn on(&self) -> bool {
        false
    }
    fn start(&mut self, _: &str, _: &str, _: &str, _: Incoming) -> Option<&SpanContext> {
        None
    }
}

/// A trace header's value as read from a head: absent, or given twice
/// (then absent too, as `Incoming::from_headers` has it).
#[derive(Default, Clone, Copy)]
struct One<'b> {
    value: Option<&'b [u8]>,
    twice: bool,
}

impl<'b> One<'b> {
    fn see(&mut self, v: &'b [u8]) {
        self.twice |= self.value.is_some();
        self.value = Some(v);
    }
    fn get(self) -> Option<&'b [u8]> {
        self.value.filter(|_| !self.twice)
    }
}

/// What the rewrite needs to know besides the request.
pub(super) struct Context<'a> {
    /// The client's address as `X-Forwarded-For` writes it (`policy::ip_text`).
    pub peer_ip: &'a [u8],
    pub rules: RequestRules<'a>,
}

/// Parses a request head at the start of `buf` and, when it is one the direct
/// path serves, writes the head for the worker to `out`: origin-form target
/// without `/agents/{id}`, hop-by-hop headers gone, the admin token dropped,
/// `x-request-id`, `x-forwarded-for`, `-proto` and `-prefix` set.
/// With tracing on (`trace`), the request's span is started here once the
/// request is known to be the direct path's, and the worker's head carries
/// its context.
pub(super) fn parse_request(
    buf: &[u8],
    cx: &Context<'_>,
    trace: &mut impl Trace,
    out: &mut Vec<u8>,
) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_HEAD => return Parsed::Partial,
        _ => return Parsed::General,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::General;
    };
    if !crate::http::proxy::target::for_an_agent(target.as_bytes()) {
        return Parsed::General;
    }
    let after = &target[crate::http::proxy::target::PREFIX.len()..];
    // `/agents//x` is the general path's (an agent without a name).
    let id_len = after.find(['/', '?']).unwrap_or(after.len());
    if id_len == 0 {
        return Parsed::General;
    }
    // A target the URI parser refuses is the general path's to refuse.
    if http::uri::PathAndQuery::try_from(target).is_err() {
        return Parsed::General;
    }
    let rest = &after[id_len..];
    let prefix = &target[..8 + id_len];
    let base = target.as_ptr() as usize - buf.as_ptr() as usize;
    let agent_id = base + 8..base + 8 + id_len;

    let mut connection: [&[u8]; 4] = [&[]; 4];
    let mut n_connection = 0;
    let mut rules = HeadRules::default();
    let mut general = false;
    let mut seen = RequestSeen::<&[u8]>::default();
    let mut session = None;
    let traced = trace.on();
    let (mut traceparent, mut tracestate, mut amzn) = <(One, One, One)>::default();
    // Each line's kind, for both passes.
    let mut kinds = [Kind::Other; MAX_HEADERS];
    for (h, k) in req.headers.iter().zip(kinds.iter_mut()) {
        let name = h.name;
        rules.header(name.as_bytes(), h.value);
        let kind = policy::kind(name);
        *k = kind;
        seen.see(kind, || h.value);
        match kind {
            Kind::Upgrade | Kind::Expect | Kind::TransferEncoding => general = true,
            Kind::Connection if n_connection == connection.len() => general = true,
            Kind::Connection => {
                connection[n_connection] = h.value;
                n_connection += 1;
            }
            Kind::SessionId if session.is_none() => {
                let at = h.value.as_ptr() as usize - buf.as_ptr() as usize;
                session = Some(at..at + h.value.len());
            }
            Kind::TraceParent if traced => traceparent.see(h.value),
            Kind::TraceState if traced => tracestate.see(h.value),
            Kind::AmznTraceId if traced => amzn.see(h.value),
            _ => {}
        }
    }
    let body_len = match rules.finish(method.as_bytes(), true) {
        Err(refused) => return Parsed::Refused(refused),
        // Chunked uploads, `Expect`, upgrades: the general path's.
        _ if general => return Parsed::General,
        Ok(BodyFraming::Chunked) => return Parsed::General,
        Ok(BodyFraming::Length(n)) => n,
        Ok(BodyFraming::None) => 0,
    };
    if body_len > MAX_REQUEST_BODY {
        return Parsed::General;
    }
    let repeated_length = rules.repeated_length();
    let mut length_written = false;
    let connection = &connection[..n_connection];
    let close = connection.iter().any(|v| has_token(v, "close"));
    // Most requests have no `Connection` line: nothing named, no search.
    let named = |n: &str| !connection.is_empty() && policy::named_in(connection.iter().copied(), n);
    seen.settle(named);
    let context = if traced {
        let incoming = Incoming::from_bytes(traceparent.get(), tracestate.get(), amzn.get());
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        trace.start(method, path, &target[8..8 + id_len], incoming)
    } else {
        None
    };
    let rules = RequestRules {
        trace: context,
        ..cx.rules
    };

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    // `/agents/{id}` and `/agents/{id}?q` are `/` and `/?q` to the worker.
    if !rest.starts_with('/') {
        out.push(b'/');
    }
    out.extend_from_slice(rest.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut lines = Lines::new(buf);
    for (h, &kind) in req.headers.iter().zip(kinds.iter()) {
        let name = h.name;
        if !rules.passes(kind, name, h.value, &named) {
            continue;
        }
        // The same length given twice is passed on once (as hyper does).
        if repeated_length && kind == Kind::ContentLength {
            if length_written {
                continue;
            }
            length_written = true;
        }
        lines.pass(out, name.as_bytes(), h.value);
    }
    lines.flush(out);
    let (request_id, made) = match seen.request_id.map(HeaderValue::from_bytes) {
        Some(Ok(id)) => (id, false),
        _ => (crate::http::proxy::headers::new_request_id(), true),
    };
    let forwarded = policy::Forwarded {
        peer_ip: cx.peer_ip,
        prefix: Some(prefix.as_bytes()),
    };
    rules.add(&seen, made.then_some(&request_id), Some(&forwarded), out);
    out.extend_from_slice(b"\r\n");

    let method = match method {
        "GET" | "OPTIONS" => Method::Idempotent { head: false },
        "HEAD" => Method::Idempotent { head: true },
        _ => Method::Other,
    };
    Parsed::Direct(Request {
        head_len,
        body_len: body_len as usize,
        agent_id,
        method,
        close,
        request_id,
        session,
    })
}

/// The header lines passed on from a head in `buf`, each as `name:
/// value\r\n`: a line written so already (nearly every line) is copied
/// from the head, consecutive ones in one copy; any other is written anew.
struct Lines<'b> {
    buf: &'b [u8],
    /// The run of lines not yet copied.
    start: usize,
    end: usize,
}

impl<'b> Lines<'b> {
    fn new(buf: &'b [u8]) -> Self {
        Lines {
            buf,
            start: 0,
            end: 0,
        }
    }

    /// The line whose parts are `name` and `value` (borrowed from `buf`).
    #[inline]
    fn pass(&mut self, out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        let base = self.buf.as_ptr() as usize;
        let start = (name.as_ptr() as usize).wrapping_sub(base);
        let end = (value.as_ptr() as usize)
            .wrapping_sub(base)
            .wrapping_add(value.len())
            .wrapping_add(2);
        let n = name.len();
        // The name at the start, the value before the end: the line is
        // theirs when exactly ": " is between them and "\r\n" after.
        let whole = end.wrapping_sub(start) == n + 2 + value.len() + 2
            && self.buf.get(start + n..start + n + 2) == Some(b": ")
            && self.buf.get(end.wrapping_sub(2)..end) == Some(b"\r\n");
        if !whole {
            self.flush(out);
            push_header(out, name, value);
            return;
        }
        if start != self.end {
            self.flush(out);
            self.start = start;
        }
        self.end = end;
    }

    /// Copies the run of lines passed so far.
    #[inline]
    fn flush(&mut self, out: &mut Vec<u8>) {
        if self.end > self.start {
            out.extend_from_slice(&self.buf[self.start..self.end]);
        }
        self.start = self.end;
    }
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the worker closes the connection.
    Close,
}

/// A worker's response head, rewritten for the client.
#[derive(Debug)]
pub(super) struct Response {
    pub head_len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The worker's connection can carry another request afterwards.
    pub reusable: bool,
}

/// What the reply to the client should say besides the worker's head.
pub(super) struct Reply<'a> {
    /// The request id, the process, the session (`policy`).
    pub rules: ResponseRules<'a>,
    pub head_request: bool,
    /// The client's connection ends after this reply.
    pub close: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum ParsedResponse {
    Partial,
    /// An interim response (1xx but 101), passed on as it is; the real one follows.
    Interim(usize),
    Final,
    Invalid(&'static str),
}

/// Parses the worker's response head at the start of `buf` and writes the
/// client's to `out`; `resp` says how its body is delimited.
pub(super) fn parse_response(
    buf: &[u8],
    reply: &Reply<'_>,
    out: &mut Vec<u8>,
    resp: &mut Option<Response>,
) -> ParsedResponse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS * 2];
    let mut r = httparse::Response::new(&mut headers);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => {
            return ParsedResponse::Partial
        }
        Ok(httparse::Status::Partial) => {
            return ParsedResponse::Invalid("a response head too large")
        }
        Err(_) => return ParsedResponse::Invalid("a malformed response head"),
    };
    let (Some(status), Some(version)) = (r.code, r.version) else {
        return ParsedResponse::Invalid("a malformed response head");
    };
    if (100..200).contains(&status) {
        if status == 101 {
            return ParsedResponse::Invalid("a protocol switch nobody asked for");
        }
        out.extend_from_slice(&buf[..head_len]);
        return ParsedResponse::Interim(head_len);
    }
    let mut connection: [&[u8]; 4] = [&[]; 4];
    let mut n_connection = 0;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut kinds = [Kind::Other; MAX_HEADERS * 2];
    for (h, k) in r.headers.iter().zip(kinds.iter_mut()) {
        *k = policy::kind(h.name);
        match *k {
            Kind::ContentLength => match parse_length(h.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return ParsedResponse::Invalid("an invalid content-length"),
            },
            Kind::TransferEncoding => {
                // Only a final `chunked` delimits the body; anything else is not HTTP/1.1 a client can read.
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return ParsedResponse::Invalid("a transfer-encoding other than chunked");
                }
                chunked = true;
            }
            Kind::Connection if n_connection < connection.len() => {
                connection[n_connection] = h.value;
                n_connection += 1;
            }
            _ => {}
        }
    }
    let connection = &connection[..n_connection];
    let framing = if reply.head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        if n == 0 {
            Framing::Empty
        } else {
            Framing::Length(n)
        }
    } else {
        Framing::Close
    };
    let reusable = version == 1
        && framing != Framing::Close
        && !connection.iter().any(|v| has_token(v, "close"));

    // `HTTP/1.1 {code} {reason}`: the worker's own line when it is that
    // already (one copy), else written so.
    let reason = r.reason.unwrap_or_default().as_bytes();
    let line = 13 + reason.len();
    if buf.starts_with(b"HTTP/1.1 ")
        && buf.get(12) == Some(&b' ')
        && reason.as_ptr() as usize == buf.as_ptr() as usize + 13
        && buf.get(line..line + 2) == Some(b"\r\n")
    {
        out.extend_from_slice(&buf[..line + 2]);
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(&buf[9..12]);
        out.push(b' ');
        out.extend_from_slice(reason);
        out.extend_from_slice(b"\r\n");
    }
    let named = |n: &str| !connection.is_empty() && policy::named_in(connection.iter().copied(), n);
    let mut has_request_id = false;
    let mut lines = Lines::new(buf);
    for (h, &kind) in r.headers.iter().zip(kinds.iter()) {
        let name = h.name;
        // A chunked body is passed through as it is, framing and all; a
        // length beside it is not the body's (RFC 9112 §6.3) and goes.
        let pass = match kind {
            Kind::TransferEncoding if chunked => true,
            Kind::ContentLength if chunked => false,
            _ => reply.rules.passes(kind, name, &named),
        };
        if !pass {
            continue;
        }
        has_request_id |= kind == Kind::RequestId;
        lines.pass(out, name.as_bytes(), h.value);
    }
    lines.flush(out);
    reply.rules.add(has_request_id, out);
    if reply.close || framing == Framing::Close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    *resp = Some(Response {
        head_len,
        status,
        framing,
        reusable,
    });
    ParsedResponse::Final
}

/// A reply made here (an error): head and whole body, `content-length` set.
pub(super) fn write_reply(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &[u8],
    head_request: bool,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name != http::header::CONTENT_LENGTH && name != http::header::CONNECTION {
            push_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod both_paths;
#[cfg(test)]
mod tests;
