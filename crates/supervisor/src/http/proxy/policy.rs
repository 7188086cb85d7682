//! The forwarding rules, stated once. Every writer of a head on the way
//! through applies them: the direct path's byte writer (`direct::wire`),
//! hyper's `HeaderMap` (the general path, gRPC) and the WebSocket handshake
//! (`upgrade`). A writer reads the lines once (`kind`, `RequestSeen`),
//! passes on those the rules let through (`passes`), and lets the rules add
//! theirs through [`HeadOut`], which a byte buffer and a `HeaderMap` both
//! implement. The rules:
//!
//! - hop-by-hop headers (RFC 9110 §7.6.1) and those a `Connection` line
//!   names go, except what delimits a message or names its target
//!   (`framing`) and gRPC's `te`;
//! - a header a `Connection` line names was the hop's: for the worker it
//!   was never sent (no request id, forwarded chain or scheme is read from it);
//! - the admin token never reaches agent code, whoever sends it along;
//! - `x-request-id`: the client's (its first), else one made here;
//! - `traceparent` and `tracestate` (tracing on): the worker gets the
//!   supervisor span's context, never the client's (the client's is the
//!   span's parent; its tracestate is carried on in the span's);
//! - `X-Forwarded-For` continued with the peer's address, `-Proto` `http`
//!   unless the client said, `-Prefix` the `/agents/{id}` the worker does
//!   not see (not for gRPC);
//! - on a response: `x-par-process`, `x-par-session-id` and
//!   `x-par-session-rebound` are the supervisor's alone, whatever the worker
//!   sent; `x-request-id` the worker's, else the request's.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use par_telemetry::trace::SpanContext;

use crate::http::api::auth::AdminCredential;
use crate::http::proxy::framing::has_token;
use crate::http::sessions::key;

const REQUEST_ID: &str = "x-request-id";
const PROCESS: &str = "x-par-process";
const FORWARDED_FOR: &str = "x-forwarded-for";
const FORWARDED_PROTO: &str = "x-forwarded-proto";
const FORWARDED_PREFIX: &str = "x-forwarded-prefix";
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
const AMZN_TRACE_ID: &str = "x-amzn-trace-id";
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID);
pub static X_PAR_PROCESS: HeaderName = HeaderName::from_static(PROCESS);
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static(FORWARDED_FOR);
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static(FORWARDED_PROTO);
pub static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static(FORWARDED_PREFIX);
static X_PAR_SESSION_ID: HeaderName = HeaderName::from_static(key::HEADER);
static X_PAR_SESSION_REBOUND: HeaderName = HeaderName::from_static(key::REBOUND_HEADER);
static HTTP: HeaderValue = HeaderValue::from_static("http");
static ONE: HeaderValue = HeaderValue::from_static("1");
static X_TRACEPARENT: HeaderName = HeaderName::from_static(TRACEPARENT);
static X_TRACESTATE: HeaderName = HeaderName::from_static(TRACESTATE);

/// What a header line is to the rules (and to the writers), by its name in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connection,
    /// `keep-alive`, `proxy-connection`, `proxy-authenticate`,
    /// `proxy-authorization`, `trailer`.
    HopByHop,
    Upgrade,
    TransferEncoding,
    Te,
    ContentLength,
    Host,
    Expect,
    Authorization,
    RequestId,
    ForwardedFor,
    ForwardedProto,
    ForwardedPrefix,
    Process,
    SessionId,
    SessionRebound,
    TraceParent,
    TraceState,
    /// `x-amzn-trace-id`: read for the span's link, passed on as it is.
    AmznTraceId,
    Other,
}

/// The kind of a header line (`name`: a header name, token characters
/// only). Most names stop at the length check; the rest cost a compare or two.
#[inline]
pub fn kind(name: &str) -> Kind {
    let n = name.as_bytes();
    let is = |s: &str| same_token(n, s.as_bytes());
    match n.len() {
        2 if is("te") => Kind::Te,
        4 if is("host") => Kind::Host,
        6 if is("expect") => Kind::Expect,
        7 if is("upgrade") => Kind::Upgrade,
        7 if is("trailer") => Kind::HopByHop,
        10 if is("connection") => Kind::Connection,
        10 if is("keep-alive") => Kind::HopByHop,
        10 if is(TRACESTATE) => Kind::TraceState,
        11 if is(TRACEPARENT) => Kind::TraceParent,
        12 if is(REQUEST_ID) => Kind::RequestId,
        13 if is("authorization") => Kind::Authorization,
        13 if is(PROCESS) => Kind::Process,
        14 if is("content-length") => Kind::ContentLength,
        15 if is(FORWARDED_FOR) => Kind::ForwardedFor,
        15 if is(AMZN_TRACE_ID) => Kind::AmznTraceId,
        16 if is(key::HEADER) => Kind::SessionId,
        16 if is("proxy-connection") => Kind::HopByHop,
        17 if is("transfer-encoding") => Kind::TransferEncoding,
        17 if is(FORWARDED_PROTO) => Kind::ForwardedProto,
        18 if is(FORWARDED_PREFIX) => Kind::ForwardedPrefix,
        18 if is("proxy-authenticate") => Kind::HopByHop,
        19 if is("proxy-authorization") => Kind::HopByHop,
        21 if is(key::REBOUND_HEADER) => Kind::SessionRebound,
        _ => Kind::Other,
    }
}

/// Whether `name` (token characters, as long as `lower`) is `lower` (lowercase
/// letters and `-`) in any case. A token character with bit 5 set is a
/// lowercase letter or `-` only when it was that letter in either case or
/// `-`, so whole words are compared at once.
#[inline(always)]
fn same_token(name: &[u8], lower: &[u8]) -> bool {
    const LOW64: u64 = 0x2020_2020_2020_2020;
    const LOW32: u32 = 0x2020_2020;
    let n = lower.len();
    if name.len() != n {
        return false;
    }
    let w64 = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().unwrap_or([0; 8]));
    let w32 = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().unwrap_or([0; 4]));
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            if w64(name, i) | LOW64 != w64(lower, i) {
                return false;
            }
            i += 8;
        }
        w64(name, n - 8) | LOW64 == w64(lower, n - 8)
    } else if n >= 4 {
        w32(name, 0) | LOW32 == w32(lower, 0) && w32(name, n - 4) | LOW32 == w32(lower, n - 4)
    } else {
        name.iter().zip(lower).all(|(a, b)| a | 0x20 == *b)
    }
}

/// Where the rules write the lines they add: the direct path's bytes or
/// hyper's `HeaderMap`. The rules add a name only when no line of it was
/// passed on.
pub trait HeadOut {
    fn add(&mut self, name: &Name, value: &HeaderValue);
    /// A value written in parts (`first, then`), not joined first.
    fn add_parts(&mut self, name: &Name, parts: &[&[u8]]);
}

/// A name the rules write: its text for a byte writer (a constant where
/// the writer is inlined), its `HeaderName` for a map.
pub struct Name {
    /// `name: `, as a line of bytes starts (one copy, not three).
    line: &'static str,
    header: &'static HeaderName,
}

const REQUEST_ID_NAME: Name = Name {
    line: "x-request-id: ",
    header: &X_REQUEST_ID,
};
const PROCESS_NAME: Name = Name {
    line: "x-par-process: ",
    header: &X_PAR_PROCESS,
};
const FORWARDED_FOR_NAME: Name = Name {
    line: "x-forwarded-for: ",
    header: &X_FORWARDED_FOR,
};
const FORWARDED_PROTO_NAME: Name = Name {
    line: "x-forwarded-proto: ",
    header: &X_FORWARDED_PROTO,
};
const FORWARDED_PREFIX_NAME: Name = Name {
    line: "x-forwarded-prefix: ",
    header: &X_FORWARDED_PREFIX,
};
const SESSION_ID_NAME: Name = Name {
    line: "x-par-session-id: ",
    header: &X_PAR_SESSION_ID,
};
const SESSION_REBOUND_NAME: Name = Name {
    line: "x-par-session-rebound: ",
    header: &X_PAR_SESSION_REBOUND,
};
const TRACEPARENT_NAME: Name = Name {
    line: "traceparent: ",
    header: &X_TRACEPARENT,
};
const TRACESTATE_NAME: Name = Name {
    line: "tracestate: ",
    header: &X_TRACESTATE,
};

/// A head written as bytes, one `name: value\r\n` line each.
impl HeadOut for Vec<u8> {
    #[inline(always)]
    fn add(&mut self, name: &Name, value: &HeaderValue) {
        self.add_parts(name, &[value.as_bytes()]);
    }

    #[inline(always)]
    fn add_parts(&mut self, name: &Name, parts: &[&[u8]]) {
        self.extend_from_slice(name.line.as_bytes());
        for p in parts {
            self.extend_from_slice(p);
        }
        self.extend_from_slice(b"\r\n");
    }
}

impl HeadOut for HeaderMap {
    fn add(&mut self, name: &Name, value: &HeaderValue) {
        self.insert(name.header.clone(), value.clone());
    }

    fn add_parts(&mut self, name: &Name, parts: &[&[u8]]) {
        let value = match parts {
            [one] => HeaderValue::from_bytes(one),
            _ => HeaderValue::from_bytes(&parts.concat()),
        };
        if let Ok(v) = value {
            self.insert(name.header.clone(), v);
        }
    }
}

/// Whether a `Connection` line names `name` (the lines as given).
pub fn named_in<'v>(lines: impl IntoIterator<Item = &'v [u8]>, name: &str) -> bool {
    lines.into_iter().any(|v| has_token(v, name))
}

/// Whether a line of this kind is the hop's because a `Connection` line
/// names it: never what delimits a message or names its target.
#[inline]
fn by_connection<N: Fn(&str) -> bool + ?Sized>(
    kind: Kind,
    grpc: bool,
    name: &str,
    named: &N,
) -> bool {
    match kind {
        Kind::ContentLength | Kind::TransferEncoding | Kind::Host => false,
        Kind::Te if grpc => false,
        _ => named(name),
    }
}

/// The rules for a request on its way to a worker.
#[derive(Clone, Copy)]
pub struct RequestRules<'a> {
    pub admin: Option<&'a AdminCredential>,
    /// A gRPC call: keeps `te: trailers`, gets no `X-Forwarded-*`.
    pub grpc: bool,
    /// The request's span (tracing on): its context is the worker's
    /// `traceparent` and `tracestate`, in place of the client's.
    pub trace: Option<&'a SpanContext>,
}

/// Where the request came from, for `X-Forwarded-*` (not for gRPC).
#[derive(Clone, Copy)]
pub struct Forwarded<'a> {
    /// The client's address as written (`ip_text`).
    pub peer_ip: &'a [u8],
    /// `/agents/{id}`, as the client sent it.
    pub prefix: Option<&'a [u8]>,
}

/// What the rules read of a request's lines (the values as `V`: borrowed
/// bytes on the direct path, `HeaderValue`s on hyper's).
#[derive(Debug)]
pub struct RequestSeen<V> {
    pub request_id: Option<V>,
    pub forwarded_for: Option<V>,
    pub forwarded_proto: bool,
}

impl<V> Default for RequestSeen<V> {
    fn default() -> Self {
        RequestSeen {
            request_id: None,
            forwarded_for: None,
            forwarded_proto: false,
        }
    }
}

impl<V> RequestSeen<V> {
    #[inline]
    pub fn see(&mut self, kind: Kind, value: impl FnOnce() -> V) {
        match kind {
            Kind::RequestId if self.request_id.is_none() => self.request_id = Some(value()),
            Kind::ForwardedFor if self.forwarded_for.is_none() => {
                self.forwarded_for = Some(value())
            }
            Kind::ForwardedProto => self.forwarded_proto = true,
            _ => {}
        }
    }

    /// Once every line is read: what a `Connection` line names was never sent.
    #[inline]
    pub fn settle(&mut self, named: impl Fn(&str) -> bool) {
        if self.request_id.is_some() && named(REQUEST_ID) {
            self.request_id = None;
        }
        if self.forwarded_for.is_some() && named(FORWARDED_FOR) {
            self.forwarded_for = None;
        }
        if self.forwarded_proto && named(FORWARDED_PROTO) {
            self.forwarded_proto = false;
        }
    }
}

impl RequestRules<'_> {
    /// Whether lines of this name go on to the worker (`authorization`
    /// lines are judged one by one: `passes`).
    #[inline]
    pub fn name_passes<N: Fn(&str) -> bool + ?Sized>(
        &self,
        kind: Kind,
        name: &str,
        named: &N,
    ) -> bool {
        match kind {
            Kind::Connection | Kind::HopByHop | Kind::Upgrade | Kind::TransferEncoding => false,
            Kind::Te => self.grpc,
            // Replaced by the rules' own.
            Kind::ForwardedFor | Kind::ForwardedPrefix if !self.grpc => false,
            Kind::TraceParent | Kind::TraceState if self.trace.is_some() => false,
            _ => !by_connection(kind, self.grpc, name, named),
        }
    }

    /// Whether this line goes on to the worker.
    #[inline]
    pub fn passes<N: Fn(&str) -> bool + ?Sized>(
        &self,
        kind: Kind,
        name: &str,
        value: &[u8],
        named: &N,
    ) -> bool {
        self.name_passes(kind, name, named)
            && !(kind == Kind::Authorization && self.is_admin(value))
    }

    fn is_admin(&self, value: &[u8]) -> bool {
        self.admin.is_some_and(|a| a.is(value))
    }

    /// Adds the rules' lines after those passed on: `made` is the request
    /// id made here when the client sent none (`seen` settled).
    #[inline(always)]
    pub fn add<V: AsRef<[u8]>>(
        &self,
        seen: &RequestSeen<V>,
        made: Option<&HeaderValue>,
        forwarded: Option<&Forwarded<'_>>,
        out: &mut impl HeadOut,
    ) {
        if let Some(id) = made {
            out.add(&REQUEST_ID_NAME, id);
        }
        if let Some(c) = self.trace {
            out.add_parts(&TRACEPARENT_NAME, &[&c.traceparent_bytes()]);
            if let Some(state) = &c.state {
                out.add_parts(&TRACESTATE_NAME, &[state.as_bytes()]);
            }
        }
        let Some(f) = forwarded.filter(|_| !self.grpc) else {
            return;
        };
        match &seen.forwarded_for {
            Some(prev) => out.add_parts(&FORWARDED_FOR_NAME, &[prev.as_ref(), b", ", f.peer_ip]),
            None => out.add_parts(&FORWARDED_FOR_NAME, &[f.peer_ip]),
        }
        if !seen.forwarded_proto {
            out.add(&FORWARDED_PROTO_NAME, &HTTP);
        }
        if let Some(p) = f.prefix {
            out.add_parts(&FORWARDED_PREFIX_NAME, &[p]);
        }
    }

    /// The rules applied to hyper's request headers in place; the request's
    /// id (the client's, or made here and added).
    pub fn apply(&self, headers: &mut HeaderMap, forwarded: Option<&Forwarded<'_>>) -> HeaderValue {
        let mut seen = RequestSeen::<HeaderValue>::default();
        for (name, value) in headers.iter() {
            seen.see(kind(name.as_str()), || value.clone());
        }
        let gone: Vec<HeaderName> = {
            let connection = headers.get_all(header::CONNECTION);
            let named = |n: &str| named_in(connection.iter().map(HeaderValue::as_bytes), n);
            seen.settle(named);
            headers
                .keys()
                .filter(|n| !self.name_passes(kind(n.as_str()), n.as_str(), &named))
                .cloned()
                .collect()
        };
        for name in gone {
            headers.remove(name);
        }
        if self.admin.is_some() {
            drop_values(headers, header::AUTHORIZATION, |v| self.is_admin(v));
        }
        let made = seen
            .request_id
            .is_none()
            .then(crate::http::proxy::headers::new_request_id);
        self.add(&seen, made.as_ref(), forwarded, headers);
        match (made, &seen.request_id) {
            (Some(id), _) => id,
            (None, Some(id)) => id.clone(),
            (None, None) => HeaderValue::from_static(""),
        }
    }
}

/// Removes the values of `name` that `drop` picks, keeping the others in order.
fn drop_values(headers: &mut HeaderMap, name: HeaderName, drop: impl Fn(&[u8]) -> bool) {
    if !headers.get_all(&name).iter().any(|v| drop(v.as_bytes())) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(&name)
        .iter()
        .filter(|v| !drop(v.as_bytes()))
        .cloned()
        .collect();
    headers.remove(&name);
    for v in kept {
        headers.append(name.clone(), v);
    }
}

/// The rules for a worker's response on its way to the client.
#[derive(Clone, Copy)]
pub struct ResponseRules<'a> {
    pub grpc: bool,
    /// The request's id, for a response that carries none.
    pub request_id: &'a HeaderValue,
    /// The process that answered.
    pub process: &'a HeaderValue,
    /// The request's session (agents whose sessions are tracked), and
    /// whether it had to move to another process.
    pub session: Option<&'a str>,
    pub rebound: bool,
}

impl ResponseRules<'_> {
    /// Whether lines of this name go on to the client (what delimits the
    /// body is the writer's: hyper frames it again, the direct path passes
    /// a chunked body through as it is).
    #[inline]
    pub fn passes<N: Fn(&str) -> bool + ?Sized>(&self, kind: Kind, name: &str, named: &N) -> bool {
        match kind {
            Kind::Connection | Kind::HopByHop | Kind::Upgrade | Kind::TransferEncoding => false,
            Kind::Te => self.grpc,
            Kind::Process | Kind::SessionId | Kind::SessionRebound => false,
            _ => !by_connection(kind, self.grpc, name, named),
        }
    }

    /// Adds the rules' lines after those passed on; `has_request_id`:
    /// an `x-request-id` line was passed on.
    #[inline(always)]
    pub fn add(&self, has_request_id: bool, out: &mut impl HeadOut) {
        if !has_request_id {
            out.add(&REQUEST_ID_NAME, self.request_id);
        }
        out.add(&PROCESS_NAME, self.process);
        if let Some(k) = self.session {
            out.add_parts(&SESSION_ID_NAME, &[k.as_bytes()]);
            if self.rebound {
                out.add(&SESSION_REBOUND_NAME, &ONE);
            }
        }
    }

    /// The rules applied to hyper's response headers in place.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let gone: Vec<HeaderName> = {
            let connection = headers.get_all(header::CONNECTION);
            let named = |n: &str| named_in(connection.iter().map(HeaderValue::as_bytes), n);
            headers
                .keys()
                .filter(|n| !self.passes(kind(n.as_str()), n.as_str(), &named))
                .cloned()
                .collect()
        };
        for name in gone {
            headers.remove(name);
        }
        let has_request_id = headers.contains_key(&X_REQUEST_ID);
        self.add(has_request_id, headers);
    }
}

/// The address as written in `X-Forwarded-For` (its canonical form: an
/// IPv4-mapped IPv6 address is the IPv4 one); IPv4 written by hand (it runs
/// per request, and the formatting machinery costs more than the rest).
pub fn ip_text(ip: IpAddr, buf: &mut [u8; 45]) -> &[u8] {
    let v4 = match ip.to_canonical() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{v6}");
            let n = cursor.position() as usize;
            return &buf[..n];
        }
    };
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    &buf[..n]
}

#[cfg(test)]
mod tests;
