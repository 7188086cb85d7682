//! The forwarding rules agree on both paths: the same request, written for
//! the worker by the direct path's byte writer (`parse_request`) and by the
//! general path's `HeaderMap` (`RequestRules::apply`, as `Proxy::send` and
//! the WebSocket handshake do), gives the worker the same header lines;
//! and the same worker response gives the client the same lines. With
//! tracing on, both read the same trace context from the client and give
//! the worker the span's (a span id fixed here), never the client's.

use std::collections::BTreeMap;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use par_telemetry::trace::{SpanId, TraceId};
use proptest::prelude::*;

use super::*;
use crate::http::api::auth::AdminCredential;
use crate::http::proxy::policy::Forwarded;

/// Header lines, names lowercased, each name's values in the order sent.
type Lines = BTreeMap<String, Vec<Vec<u8>>>;

fn lines<'a>(it: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Lines {
    let mut m = Lines::new();
    for (n, v) in it {
        m.entry(n.to_ascii_lowercase())
            .or_default()
            .push(v.to_vec());
    }
    m
}

/// A name in one of a few spellings.
fn spelled(name: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(name.to_string()),
        Just(name.to_ascii_uppercase()),
        Just(
            name.split('-')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("-")
        ),
    ]
}

/// Names a `Connection` line may give (none that delimits the message:
/// `framing` refuses those before any rule is applied).
const NAMEABLE: [&str; 11] = [
    "keep-alive",
    "close",
    "upgrade-insecure",
    "x-secret",
    "X-Request-Id",
    "x-forwarded-for",
    "X-Forwarded-Proto",
    "x-forwarded-prefix",
    "authorization",
    "x-par-session-id",
    "Accept",
];

fn connection_value() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(&NAMEABLE[..]), 1..4)
        .prop_map(|names| names.join(", "))
}

/// One header line a client may send (not one that delimits the body).
fn request_line() -> impl Strategy<Value = (String, String)> {
    let value = |vs: &'static [&'static str]| proptest::sample::select(vs).prop_map(String::from);
    prop_oneof![
        (spelled("keep-alive"), value(&["timeout=5"])),
        (spelled("proxy-connection"), value(&["keep-alive"])),
        (spelled("proxy-authorization"), value(&["Basic cHJveHk="])),
        (spelled("trailer"), value(&["x-checksum"])),
        (spelled("te"), value(&["trailers", "gzip"])),
        (spelled("connection"), connection_value()),
        (
            spelled("authorization"),
            value(&[
                "Bearer root",
                "bearer  root",
                "BEARER\troot",
                "Bearer root  ",
                "Bearer user",
                "Basic dXNlcjpyb290",
                "root",
            ])
        ),
        (
            spelled("x-forwarded-for"),
            value(&["1.2.3.4", "5.6.7.8, 9.9.9.9", "unknown"])
        ),
        (spelled("x-forwarded-proto"), value(&["https", "http"])),
        (spelled("x-forwarded-prefix"), value(&["/evil", "/"])),
        (spelled("x-request-id"), value(&["abc", "req-2"])),
        (spelled("x-par-session-id"), value(&["s-1", "other"])),
        (spelled("x-par-process"), value(&["forged"])),
        (spelled("x-secret"), value(&["1", "2"])),
        (spelled("accept"), value(&["*/*", "text/plain"])),
        (spelled("x-custom"), value(&["a", "b,c", " spaced "])),
        (spelled("content-type"), value(&["application/json"])),
        (
            spelled("traceparent"),
            value(&[
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 ",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "garbage",
            ])
        ),
        (
            spelled("tracestate"),
            value(&["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "novalue", "a=b"])
        ),
        (
            spelled("x-amzn-trace-id"),
            value(&[
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
                "Root=2-x",
            ])
        ),
    ]
}

/// Tracing on, the span's id fixed: its context made from what came in as
/// `Tracer::start_from` makes it (the trace continued, its tracestate carried on).
fn context_of(i: &Incoming) -> SpanContext {
    SpanContext {
        trace_id: i.parent.as_ref().map_or(TraceId([7; 16]), |p| p.trace_id),
        span_id: SpanId([9; 8]),
        flags: par_telemetry::trace::SAMPLED,
        state: i.parent.as_ref().and_then(|p| p.state.clone()),
    }
}

/// The direct path's span starter with a fixed span id; keeps what it was given.
#[derive(Default)]
struct Fixed {
    started: Option<(String, String, String, Incoming)>,
    context: Option<SpanContext>,
}

impl Trace for Fixed {
    fn on(&self) -> bool {
        true
    }
    fn start(
        &mut self,
        method: &str,
        path: &str,
        agent_id: &str,
        incoming: Incoming,
    ) -> Option<&SpanContext> {
        self.context = Some(context_of(&incoming));
        self.started = Some((method.into(), path.into(), agent_id.into(), incoming));
        self.context.as_ref()
    }
}

#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    target: String,
    head: Vec<(String, String)>,
    body: &'static str,
    admin: Option<&'static str>,
    /// Tracing on.
    traced: bool,
}

impl Case {
    fn raw(&self) -> Vec<u8> {
        let mut raw = format!("{} {} HTTP/1.1\r\nHost: par\r\n", self.method, self.target);
        for (n, v) in &self.head {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        if !self.body.is_empty() {
            raw.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        raw.push_str("\r\n");
        raw.push_str(self.body);
        raw.into_bytes()
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(&["GET", "HEAD", "OPTIONS", "POST", "DELETE"][..]),
        "[a-z][a-z0-9-]{0,8}",
        proptest::sample::select(&["", "/", "/invoke", "/a/b?q=1", "?q=1"][..]),
        proptest::collection::vec(request_line(), 0..12),
        proptest::sample::select(&["", "{}"][..]),
        proptest::option::of(proptest::sample::select(&["root", "other"][..])),
        any::<bool>(),
    )
        .prop_map(|(method, id, rest, head, body, admin, traced)| Case {
            method,
            target: format!("/agents/{id}{rest}"),
            head,
            body,
            admin,
            traced,
        })
        // The direct path takes at most four `Connection` lines (more: the general path).
        .prop_filter("at most 4 connection lines", |c| {
            c.head
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
                .count()
                <= 4
        })
}

/// What the direct path sends the worker: its request id and head lines,
/// and (tracing on) what its span was started with.
fn direct_path(c: &Case, admin: Option<&AdminCredential>) -> (HeaderValue, Lines, String, Fixed) {
    let raw = c.raw();
    let cx = Context {
        peer_ip: b"10.0.0.7",
        rules: RequestRules {
            admin,
            grpc: false,
            trace: None,
        },
    };
    let mut out = Vec::new();
    let mut fixed = Fixed::default();
    let parsed = if c.traced {
        parse_request(&raw, &cx, &mut fixed, &mut out)
    } else {
        parse_request(&raw, &cx, &mut (), &mut out)
    };
    let r = match parsed {
        Parsed::Direct(r) => r,
        other => panic!("not served directly: {other:?}"),
    };
    let mut headers = [httparse::EMPTY_HEADER; 2 * MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(&out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("the worker's head does not parse: {other:?}"),
    };
    assert_eq!(n, out.len(), "the head is all that is written");
    let target = req.path.unwrap().to_string();
    let l = lines(req.headers.iter().map(|h| (h.name, h.value)));
    (r.request_id, l, target, fixed)
}

/// What the general path sends: the client's lines as hyper parses them
/// into a `HeaderMap`, the rules applied (tracing on: what its span would
/// continue, read from the map as `Proxy::send` reads it).
fn general_path(
    c: &Case,
    admin: Option<&AdminCredential>,
    prefix: &str,
) -> (HeaderValue, Lines, Option<Incoming>) {
    let raw = c.raw();
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&raw).unwrap();
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        map.append(
            HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(h.value).unwrap(),
        );
    }
    let forwarded = Forwarded {
        peer_ip: b"10.0.0.7",
        prefix: Some(prefix.as_bytes()),
    };
    let incoming = c.traced.then(|| Incoming::from_headers(&map));
    let context = incoming.as_ref().map(context_of);
    let rules = RequestRules {
        admin,
        grpc: false,
        trace: context.as_ref(),
    };
    let id = rules.apply(&mut map, Some(&forwarded));
    let l = lines(map.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
    (id, l, incoming)
}

/// A request id made here stands in for "made"; the worker must have it.
fn normalised(id: &HeaderValue, mut l: Lines, client_sent: Option<&str>) -> Lines {
    let ids = l
        .get_mut("x-request-id")
        .expect("the worker gets a request id");
    assert!(
        ids.contains(&id.as_bytes().to_vec()),
        "{ids:?} lacks {id:?}"
    );
    if client_sent != Some(id.to_str().unwrap()) {
        assert_eq!(ids.len(), 1);
        ids[0] = b"(made here)".to_vec();
    }
    l
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_worker_receives_the_same_head_on_both_paths(c in case()) {
        let admin = c.admin.map(AdminCredential::new);
        let (direct_id, direct, target, fixed) = direct_path(&c, admin.as_ref());
        let id = c.target.strip_prefix("/agents/").unwrap();
        let id_len = id.find(['/', '?']).unwrap_or(id.len());
        let prefix = &c.target[..8 + id_len];
        let (general_id, general, incoming) = general_path(&c, admin.as_ref(), prefix);
        // Both read the same trace context from the client; the span is
        // named after the method and the agent, its path without the query.
        match (&fixed.started, &incoming) {
            (Some((method, path, agent, direct_in)), Some(general_in)) => {
                prop_assert_eq!(direct_in, general_in);
                prop_assert_eq!(method.as_str(), c.method);
                prop_assert_eq!(agent.as_str(), &id[..id_len]);
                prop_assert_eq!(path.as_str(), c.target.split('?').next().unwrap());
            }
            (None, None) => prop_assert!(!c.traced),
            other => prop_assert!(false, "a span on one path only: {:?}", other),
        }
        // The worker gets the span's context, never the client's.
        if let Some(ctx) = &fixed.context {
            prop_assert_eq!(&direct["traceparent"], &vec![ctx.traceparent().into_bytes()]);
            let state = ctx.state.as_ref().map(|s| vec![s.as_bytes().to_vec()]);
            prop_assert_eq!(direct.get("tracestate"), state.as_ref());
        }
        // The client's id, when it sent one both paths read.
        let client_id = c
            .head
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-request-id"))
            .map(|(_, v)| v.as_str());
        let direct_made = client_id != direct_id.to_str().ok();
        let general_made = client_id != general_id.to_str().ok();
        prop_assert_eq!(direct_made, general_made, "one path made an id, the other did not");
        prop_assert_eq!(
            normalised(&direct_id, direct.clone(), client_id),
            normalised(&general_id, general, client_id)
        );
        // The rules themselves, as the worker sees them.
        prop_assert!(target.starts_with('/'));
        if let Some(a) = &admin {
            for v in direct.get("authorization").into_iter().flatten() {
                prop_assert!(!a.is(v), "the admin token passed: {:?}", String::from_utf8_lossy(v));
            }
        }
        for gone in ["connection", "keep-alive", "proxy-connection", "proxy-authorization", "trailer", "te"] {
            prop_assert!(!direct.contains_key(gone), "{} passed", gone);
        }
        prop_assert_eq!(direct["x-forwarded-for"].len(), 1);
        prop_assert_eq!(&direct["x-forwarded-prefix"], &vec![prefix.as_bytes().to_vec()]);
    }
}

/// A worker's response line (not one that delimits the body).
fn response_line() -> impl Strategy<Value = (String, String)> {
    let value = |vs: &'static [&'static str]| proptest::sample::select(vs).prop_map(String::from);
    prop_oneof![
        (spelled("keep-alive"), value(&["timeout=5"])),
        (spelled("proxy-authenticate"), value(&["Basic"])),
        (spelled("trailer"), value(&["x-checksum"])),
        (spelled("te"), value(&["trailers"])),
        (spelled("upgrade"), value(&["h2c"])),
        (spelled("connection"), connection_value()),
        (spelled("x-request-id"), value(&["worker-id"])),
        (spelled("x-par-process"), value(&["forged"])),
        (spelled("x-par-session-id"), value(&["forged"])),
        (spelled("x-par-session-rebound"), value(&["1"])),
        (spelled("x-secret"), value(&["1"])),
        (spelled("content-type"), value(&["text/plain"])),
        (spelled("set-cookie"), value(&["a=1", "b=2"])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_client_receives_the_same_response_head_on_both_paths(
        head in proptest::collection::vec(response_line(), 0..10)
            .prop_filter("at most 4 connection lines", |h| {
                h.iter().filter(|(n, _)| n.eq_ignore_ascii_case("connection")).count() <= 4
            }),
        session in proptest::option::of((Just("s-1"), any::<bool>())),
    ) {
        let mut raw = String::from("HTTP/1.1 200 OK\r\n");
        for (n, v) in &head {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        raw.push_str("content-length: 2\r\n\r\nok");
        let (id, process) = (HeaderValue::from_static("rid"), HeaderValue::from_static("par-a"));
        let rules = ResponseRules {
            grpc: false,
            request_id: &id,
            process: &process,
            session: session.map(|(k, _)| k),
            rebound: session.is_some_and(|(_, r)| r),
        };
        let reply = Reply { rules, head_request: false, close: false };
        let (mut out, mut resp) = (Vec::new(), None);
        prop_assert_eq!(parse_response(raw.as_bytes(), &reply, &mut out, &mut resp), ParsedResponse::Final);
        let mut headers = [httparse::EMPTY_HEADER; 2 * MAX_HEADERS];
        let mut r = httparse::Response::new(&mut headers);
        r.parse(&out).unwrap();
        // What delimits the body and the client's connection is each writer's own.
        let framing = |n: &str| ["content-length", "transfer-encoding", "connection"].contains(&n);
        let mut direct = lines(r.headers.iter().map(|h| (h.name, h.value)));
        direct.retain(|n, _| !framing(n));

        let mut src = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut src);
        parsed.parse(raw.as_bytes()).unwrap();
        let mut map = HeaderMap::new();
        for h in parsed.headers.iter() {
            map.append(
                HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(h.value).unwrap(),
            );
        }
        rules.apply(&mut map);
        let mut general = lines(map.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
        general.retain(|n, _| !framing(n));
        prop_assert_eq!(&direct, &general);
        prop_assert_eq!(&direct["x-par-process"], &vec![b"par-a".to_vec()]);
        prop_assert!(direct.contains_key("x-request-id"));
        prop_assert_eq!(direct.get("x-par-session-id").map(Vec::len), session.map(|_| 1));
    }
}
