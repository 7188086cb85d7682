use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

#[test]
fn addresses_are_written_as_display_writes_them() {
    let mut buf = [0u8; 45];
    for ip in [
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(0, 0, 0, 0),
        Ipv4Addr::new(255, 255, 255, 255),
        Ipv4Addr::new(10, 99, 100, 9),
        Ipv4Addr::new(192, 168, 1, 250),
    ] {
        assert_eq!(ip_text(IpAddr::V4(ip), &mut buf), ip.to_string().as_bytes());
    }
    assert_eq!(ip_text(IpAddr::V6(Ipv6Addr::LOCALHOST), &mut buf), b"::1");
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped());
    assert_eq!(ip_text(mapped, &mut buf), b"10.0.0.7");
    let long: Ipv6Addr = "1111:2222:3333:4444:5555:6666:7777:8888".parse().unwrap();
    assert_eq!(
        ip_text(IpAddr::V6(long), &mut buf),
        long.to_string().as_bytes()
    );
}

#[test]
fn every_name_has_its_kind_in_any_case() {
    for (name, k) in [
        ("TE", Kind::Te),
        ("Connection", Kind::Connection),
        ("KEEP-ALIVE", Kind::HopByHop),
        ("proxy-Connection", Kind::HopByHop),
        ("Proxy-Authenticate", Kind::HopByHop),
        ("Proxy-Authorization", Kind::HopByHop),
        ("Trailer", Kind::HopByHop),
        ("Upgrade", Kind::Upgrade),
        ("Transfer-Encoding", Kind::TransferEncoding),
        ("Content-Length", Kind::ContentLength),
        ("Host", Kind::Host),
        ("Expect", Kind::Expect),
        ("Authorization", Kind::Authorization),
        ("X-Request-Id", Kind::RequestId),
        ("X-Forwarded-For", Kind::ForwardedFor),
        ("X-Forwarded-Proto", Kind::ForwardedProto),
        ("X-Forwarded-Prefix", Kind::ForwardedPrefix),
        ("X-Par-Process", Kind::Process),
        ("X-Par-Session-Id", Kind::SessionId),
        ("X-Par-Session-Rebound", Kind::SessionRebound),
        ("x-trailer", Kind::Other),
        ("accept", Kind::Other),
    ] {
        assert_eq!(kind(name), k, "{name}");
    }
}

#[test]
fn a_token_is_matched_in_any_case_and_nothing_else_is() {
    // Every name `kind` knows is lowercase letters and `-` (what `same_token` needs).
    for name in [
        "te",
        "host",
        "expect",
        "upgrade",
        "trailer",
        "connection",
        "keep-alive",
        REQUEST_ID,
        "authorization",
        PROCESS,
        "content-length",
        FORWARDED_FOR,
        key::HEADER,
        "proxy-connection",
        "transfer-encoding",
        FORWARDED_PROTO,
        FORWARDED_PREFIX,
        "proxy-authenticate",
        "proxy-authorization",
        key::REBOUND_HEADER,
    ] {
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "{name}"
        );
        assert_ne!(kind(name), Kind::Other, "{name}");
        // Each byte changed to every other token character: no longer the name.
        let tchars: Vec<u8> = (0x21u8..0x7f)
            .filter(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
            .collect();
        for i in 0..name.len() {
            for &t in &tchars {
                let mut other = name.as_bytes().to_vec();
                other[i] = t;
                let other = String::from_utf8(other).unwrap();
                let same = other.eq_ignore_ascii_case(name);
                assert_eq!(
                    same_token(other.as_bytes(), name.as_bytes()),
                    same,
                    "{other:?}"
                );
            }
        }
    }
}

fn map(lines: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in lines {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn names(h: &HeaderMap) -> Vec<&str> {
    let mut v: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
    v.sort();
    v
}

#[test]
fn hop_by_hop_headers_go_and_the_others_stay() {
    let lines = [
        ("connection", "keep-alive, x-secret"),
        ("keep-alive", "timeout=5"),
        ("x-secret", "1"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("accept", "*/*"),
        ("x-request-id", "r"),
    ];
    let rules = RequestRules {
        admin: None,
        grpc: false,
        trace: None,
    };
    let mut h = map(&lines);
    let id = rules.apply(&mut h, None);
    assert_eq!(id, "r");
    assert_eq!(names(&h), ["accept", "x-request-id"]);
    let mut grpc = map(&lines);
    RequestRules {
        admin: None,
        grpc: true,
        trace: None,
    }
    .apply(&mut grpc, None);
    assert_eq!(names(&grpc), ["accept", "te", "x-request-id"]);
}

#[test]
fn forwarded_for_is_continued_and_what_connection_names_is_not_read() {
    let rules = RequestRules {
        admin: None,
        grpc: false,
        trace: None,
    };
    let f = Forwarded {
        peer_ip: b"10.0.0.7",
        prefix: None,
    };
    let mut h = HeaderMap::new();
    rules.apply(&mut h, Some(&f));
    assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.7");
    assert_eq!(h[&X_FORWARDED_PROTO], "http");
    assert_eq!(h[&X_REQUEST_ID].len(), 32);
    let prefixed = Forwarded {
        prefix: Some(b"/agents/a"),
        ..f
    };
    let mut h = map(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-for", "5.6.7.8"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-prefix", "/evil"),
    ]);
    rules.apply(&mut h, Some(&prefixed));
    assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.7");
    assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
    assert_eq!(h[&X_FORWARDED_PROTO], "https");
    assert_eq!(h[&X_FORWARDED_PREFIX], "/agents/a");
    let mut h = map(&[
        (
            "connection",
            "X-Forwarded-For, x-forwarded-proto, x-request-id",
        ),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "mine"),
    ]);
    let id = rules.apply(&mut h, Some(&f));
    assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.7");
    assert_eq!(h[&X_FORWARDED_PROTO], "http");
    assert_ne!(id, "mine");
    assert_eq!(h[&X_REQUEST_ID], id);
}

#[test]
fn only_the_admin_token_is_dropped() {
    let admin = AdminCredential::new("root");
    let rules = RequestRules {
        admin: Some(&admin),
        grpc: false,
        trace: None,
    };
    let mut h = map(&[
        ("authorization", "Bearer user"),
        ("authorization", "bearer  root"),
        ("authorization", "Basic abc"),
    ]);
    rules.apply(&mut h, None);
    let left: Vec<_> = h.get_all(header::AUTHORIZATION).iter().collect();
    assert_eq!(left, ["Bearer user", "Basic abc"]);
}

#[test]
fn a_response_carries_the_supervisors_headers_alone() {
    let id = HeaderValue::from_static("req");
    let process = HeaderValue::from_static("p1");
    let rules = ResponseRules {
        grpc: false,
        request_id: &id,
        process: &process,
        session: Some("s1"),
        rebound: true,
    };
    let mut h = map(&[
        ("x-par-process", "forged"),
        ("x-par-session-id", "forged"),
        ("x-par-session-rebound", "0"),
        ("connection", "x-hop"),
        ("x-hop", "1"),
        ("content-type", "text/plain"),
    ]);
    rules.apply(&mut h);
    assert_eq!(
        names(&h),
        [
            "content-type",
            "x-par-process",
            "x-par-session-id",
            "x-par-session-rebound",
            "x-request-id"
        ]
    );
    assert_eq!(
        (
            &h[&X_PAR_PROCESS],
            &h["x-par-session-id"],
            &h[&X_REQUEST_ID]
        ),
        (&process, &HeaderValue::from_static("s1"), &id)
    );
    // The worker's request id stands, unless its `Connection` names it.
    let mut h = map(&[("x-request-id", "worker's")]);
    rules.apply(&mut h);
    assert_eq!(h[&X_REQUEST_ID], "worker's");
    let mut h = map(&[("x-request-id", "worker's"), ("connection", "x-request-id")]);
    rules.apply(&mut h);
    assert_eq!(h[&X_REQUEST_ID], "req");
}

#[test]
fn the_worker_gets_the_spans_trace_context_not_the_clients() {
    use par_telemetry::trace::{parse_traceparent, SpanContext};
    let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let lines = [
        ("traceparent", client),
        ("tracestate", "client=1"),
        (
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793",
        ),
        ("accept", "*/*"),
    ];
    // Tracing off: passed on as they came.
    let mut h = map(&lines);
    RequestRules {
        admin: None,
        grpc: false,
        trace: None,
    }
    .apply(&mut h, None);
    assert_eq!(h["traceparent"], client);
    assert_eq!(h["tracestate"], "client=1");
    // On: the span's, its tracestate (the client's carried on) or none.
    let span = SpanContext {
        span_id: par_telemetry::trace::SpanId([0xab; 8]),
        state: Some("carried=1".into()),
        ..parse_traceparent(client).unwrap()
    };
    for state in [Some("carried=1"), None] {
        let span = SpanContext {
            state: state.map(Into::into),
            ..span.clone()
        };
        for grpc in [false, true] {
            let rules = RequestRules {
                admin: None,
                grpc,
                trace: Some(&span),
            };
            let mut h = map(&lines);
            rules.apply(&mut h, None);
            assert_eq!(
                h.get_all("traceparent").iter().collect::<Vec<_>>(),
                [&span.traceparent()]
            );
            assert_eq!(
                h.get("tracestate").map(|v| v.to_str().unwrap()),
                state,
                "grpc {grpc}"
            );
            assert_eq!(
                h["x-amzn-trace-id"],
                "Root=1-5759e988-bd862e3fe1be46a994272793"
            );
            let mut out = Vec::new();
            rules.add(&RequestSeen::<&[u8]>::default(), None, None, &mut out);
            let want = match state {
                Some(s) => format!("traceparent: {}\r\ntracestate: {s}\r\n", span.traceparent()),
                None => format!("traceparent: {}\r\n", span.traceparent()),
            };
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}

#[test]
fn each_name_the_rules_write_starts_its_line_as_its_header_is_named() {
    for name in [
        &REQUEST_ID_NAME,
        &PROCESS_NAME,
        &FORWARDED_FOR_NAME,
        &FORWARDED_PROTO_NAME,
        &FORWARDED_PREFIX_NAME,
        &SESSION_ID_NAME,
        &SESSION_REBOUND_NAME,
        &TRACEPARENT_NAME,
        &TRACESTATE_NAME,
    ] {
        assert_eq!(name.line, format!("{}: ", name.header.as_str()));
    }
}
