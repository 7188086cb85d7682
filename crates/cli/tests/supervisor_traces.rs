//! End-to-end: one request followed from the client's `traceparent` through
//! the supervisor and the worker into the agent's own OpenTelemetry spans,
//! received by a real OTLP/HTTP receiver; the supervisor's span says how
//! long the request waited in the agent's queue and for a wake from zero;
//! gRPC A2A calls routed by `x-agent-id` are traced the same way. A plain
//! request (no body, or a `Content-Length` one) is served by the direct
//! path, a chunked one by the general path (hyper): both give the same span.

mod otlp_support;
mod supervisor_support;

use std::path::PathBuf;
use std::time::Duration;

use otlp_support::Receiver;
use serde_json::Value;
use supervisor_support::*;

fn traced_agent() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/agents/traced")
}

/// A receiver, and a supervisor (access log on) exporting to it with one
/// agent `traced` ready, whose SDK sends its batches soon.
fn one_traced_agent(dir: &std::path::Path, tag: &str) -> (Receiver, Supervisor) {
    let rx = Receiver::start(dir);
    let agents = format!(
        "[[agents]]\nid = \"traced\"\npackage = \"{}\"\n\
         env_vars = {{ OTEL_BSP_SCHEDULE_DELAY = \"100\" }}\n",
        traced_agent().display()
    );
    let sup = exporting_to(&rx, tag, &agents);
    (rx, sup)
}

/// A supervisor (access log on) with `agents`, exporting to `rx`, its
/// agent `traced` ready.
fn exporting_to(rx: &Receiver, tag: &str, agents: &str) -> Supervisor {
    let home = par_home();
    let endpoint = format!("http://127.0.0.1:{}", rx.port);
    let sup = Supervisor::start_with(
        tag,
        "",
        agents,
        &[
            ("PAR_HOME", home.to_str().unwrap()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("PAR_ACCESS_LOG", "true"),
        ],
    );
    sup.wait_ready("traced", Duration::from_secs(600));
    sup
}

fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

fn event<'a>(span: &'a Value, name: &str) -> &'a Value {
    span["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no event {name:?} in {span:#}"))
}

#[test]
fn a_request_is_one_trace_from_the_client_through_the_supervisor_into_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = Receiver::start(dir.path());
    // The agents' own SDK sends its batches soon (an agent's env_vars, as
    // a user would set it): a woken agent goes idle again a second later.
    let agents = format!(
        "[[agents]]\nid = \"traced\"\npackage = \"{0}\"\nmax_concurrency = 1\n\
         env_vars = {{ OTEL_BSP_SCHEDULE_DELAY = \"100\" }}\n\n\
         [[agents]]\nid = \"sleepy\"\npackage = \"{0}\"\nidle_timeout = \"1s\"\n\
         env_vars = {{ OTEL_BSP_SCHEDULE_DELAY = \"100\" }}\n",
        traced_agent().display()
    );
    let sup = exporting_to(&rx, "traces", &agents);

    // Through the supervisor: its span continues the client's, the worker's
    // continues the supervisor's, the agent's own descend from the worker's.
    let (t1, p1) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let r = http(
        sup.port,
        "GET",
        "/agents/traced/work",
        &[("traceparent", &traceparent(t1, p1))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let supervisor = rx.wait_span(t1, "GET /agents/traced");
    assert_eq!(supervisor["service"], "par-supervisor");
    assert_eq!(supervisor["kind"], 2);
    assert_eq!(supervisor["parent_span_id"], p1);
    let a = &supervisor["attributes"];
    assert_eq!(a["par.agent_id"], "traced", "{supervisor:#}");
    assert_eq!(a["par.process_id"], "par-traced");
    assert_eq!(a["http.response.status_code"], 200);
    assert!(a["par.time_to_first_byte_ms"].as_f64().is_some());
    assert!(a["http.response.body.size"].as_i64() > Some(0));
    event(&supervisor, "admitted");
    let worker = rx.wait_span(t1, "GET");
    assert_eq!(worker["service"], "traced");
    assert_eq!(worker["parent_span_id"], supervisor["span_id"]);
    let agent = rx.wait_span(t1, "agent-work");
    rx.assert_descends(&agent, &worker);
    // The access log line carries the supervisor span's ids.
    wait_until(Duration::from_secs(10), "the access log line", || {
        sup.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| {
                l["fields"]["target"] == "par::access"
                    && l["fields"]["trace_id"] == t1
                    && l["fields"]["span_id"] == supervisor["span_id"]
            })
    });

    // Queued: the second request waits for the one slot (max_concurrency 1).
    let (t2, p2) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let port = sup.port;
    let slow = std::thread::spawn(move || {
        http(port, "GET", "/agents/traced/slow?seconds=1.5", &[], b"").unwrap()
    });
    wait_until(
        Duration::from_secs(10),
        "the slow request in flight",
        || (sup.agent_status("traced")["in_flight"] == 1).then_some(()),
    );
    let r = http(
        sup.port,
        "GET",
        "/agents/traced/work",
        &[("traceparent", &traceparent(t2, p2))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(slow.join().unwrap().status, 200);
    let queued = rx.wait_span(t2, "GET /agents/traced");
    let waited = event(&queued, "admitted")["attributes"]["par.admission.wait_ms"]
        .as_f64()
        .unwrap();
    eprintln!("queued request: admission wait {waited:.1} ms");
    assert!(waited > 100.0, "{queued:#}");

    // Woken from zero: the span says how long the wake took.
    wait_until(Duration::from_secs(600), "sleepy to idle", || {
        (sup.agent_status("sleepy")["state"] == "idle").then_some(())
    });
    let (t3, p3) = ("5b8aa5a2d2c872e8321cf37308d69df2", "051581bf3cb55c13");
    let r = http(
        sup.port,
        "GET",
        "/agents/sleepy/work",
        &[("traceparent", &traceparent(t3, p3))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let woken = rx.wait_span(t3, "GET /agents/sleepy");
    let wake = woken["attributes"]["par.wake.wait_ms"].as_f64().unwrap();
    eprintln!("woken request: wake wait {wake:.1} ms");
    assert!(wake > 0.0, "{woken:#}");
    rx.assert_descends(&rx.wait_span(t3, "agent-work"), &woken);

    // gRPC A2A through the supervisor (`x-agent-id`), traceparent in metadata.
    let (t4, p4) = ("a3ce929d0e0e47364bf92f3577b34da6", "0ba902b700f067aa");
    let result = otlp_support::grpc_echo(sup.port, &traceparent(t4, p4), Some("traced"));
    assert!(result.success, "{result:?}");
    let grpc = rx.wait_span(t4, "POST /agents/traced");
    assert_eq!(grpc["parent_span_id"], p4);
    assert_eq!(grpc["attributes"]["rpc.system"], "grpc");
    let worker = rx.wait_span(t4, "pixell.agent.AgentService/Invoke");
    assert_eq!(worker["parent_span_id"], grpc["span_id"]);
    rx.assert_descends(&rx.wait_span(t4, "agent-a2a"), &worker);

    // Exported, nothing dropped.
    let text = get(sup.port, "/metrics").unwrap().text();
    assert!(text.contains("par_trace_spans_dropped_total 0"), "{text}");
}

/// A POST with a chunked body (the general path's), read to its close.
fn post_chunked(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("\r\n{:x}\r\n", body.len()));
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    s.write_all(&raw).expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn both_paths_give_the_same_span_and_the_worker_continues_it_not_the_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rx, sup) = one_traced_agent(dir.path(), "traces-paths");
    let body = br#"{"x": 1}"#;
    let mut spans = Vec::new();
    for (chunked, trace, parent) in [
        (
            false,
            "6e0c63257de34c926f9efcd03927272e",
            "3f4a2b1c0d9e8f7a",
        ),
        (true, "7f1d74368ef45da37a0f0de14a38383f", "4e5b3c2d1e0f9a8b"),
    ] {
        let tp = traceparent(trace, parent);
        let headers = [
            ("traceparent", tp.as_str()),
            ("tracestate", "client=1"),
            ("content-type", "application/json"),
        ];
        if chunked {
            let (status, text) =
                post_chunked(sup.port, "/agents/traced/invoke", &headers[..2], body);
            assert_eq!(status, 200, "{text}");
        } else {
            let r = http(sup.port, "POST", "/agents/traced/invoke", &headers, body).unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
        }
        // The supervisor's span continues the client's...
        let s = rx.wait_span(trace, "POST /agents/traced");
        assert_eq!(s["parent_span_id"], parent, "chunked {chunked}: {s:#}");
        assert_eq!(s["trace_state"], "client=1");
        assert_eq!(s["kind"], 2);
        let a = &s["attributes"];
        assert_eq!(a["http.request.method"], "POST");
        assert_eq!(a["url.path"], "/agents/traced/invoke");
        assert_eq!(a["client.address"], "127.0.0.1");
        assert_eq!(a["par.agent_id"], "traced");
        assert_eq!(a["par.process_id"], "par-traced");
        assert_eq!(a["http.response.status_code"], 200);
        assert_eq!(a["par.retries"], 0);
        assert!(a["par.time_to_first_byte_ms"].as_f64().is_some(), "{s:#}");
        assert!(a["http.response.body.size"].as_i64() > Some(0), "{s:#}");
        event(&s, "admitted");
        // ... and the worker's continues the supervisor's, not the client's:
        // the worker got the span's traceparent (and the tracestate on).
        let w = rx.wait_span(trace, "POST /invoke");
        assert_eq!(w["service"], "traced");
        assert_eq!(
            w["parent_span_id"], s["span_id"],
            "chunked {chunked}: {w:#}"
        );
        assert_eq!(w["trace_state"], "client=1");
        rx.assert_descends(&rx.wait_span(trace, "agent-invoke"), &w);
        spans.push(s);
    }
    // The same span on both paths: the same attributes, the same events.
    assert_eq!(keys(&spans[0]["attributes"]), keys(&spans[1]["attributes"]));
    let events = |s: &Value| -> Vec<Value> {
        s["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].clone())
            .collect()
    };
    assert_eq!(events(&spans[0]), events(&spans[1]));
}

#[test]
fn a_receiver_that_is_down_costs_requests_nothing_and_drops_are_counted() {
    // A port nothing listens on.
    let dead = free_port();
    let agents = format!(
        "[[agents]]\nid = \"traced\"\npackage = \"{}\"\n",
        traced_agent().display()
    );
    let home = par_home();
    let endpoint = format!("http://127.0.0.1:{dead}");
    let sup = Supervisor::start_with(
        "traces-down",
        "",
        &agents,
        &[
            ("PAR_HOME", home.to_str().unwrap()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ],
    );
    sup.wait_ready("traced", Duration::from_secs(600));
    let mut conn = Conn::open(sup.port).unwrap();
    for _ in 0..50 {
        let r = conn
            .request("GET", "/agents/traced/plain", &[], b"")
            .unwrap();
        assert_eq!(r.status, 200);
    }
    wait_until(Duration::from_secs(20), "failed exports counted", || {
        let text = get(sup.port, "/metrics").ok()?.text();
        text.lines()
            .find_map(|l| l.strip_prefix("par_trace_export_failures_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|n| *n > 0)
    });
}

#[test]
fn a_websocket_handshake_is_traced_and_logged_like_any_request() {
    use tungstenite::client::IntoClientRequest;
    let dir = tempfile::tempdir().expect("tempdir");
    let (rx, sup) = one_traced_agent(dir.path(), "traces-ws");
    let (trace, parent) = ("5c1e9a2b7d3f40e68a9b0c1d2e3f4a5b", "1a2b3c4d5e6f7a8b");
    let mut req = format!("ws://127.0.0.1:{}/agents/traced/ws", sup.port)
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert("traceparent", traceparent(trace, parent).parse().unwrap());
    h.insert("tracestate", "client=1".parse().unwrap());
    let stream = std::net::TcpStream::connect(("127.0.0.1", sup.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (mut ws, resp) = tungstenite::client(req, stream).expect("handshake");
    assert_eq!(resp.status(), 101);
    // The context the agent was handed.
    let seen = ws
        .read()
        .expect("the agent's first message")
        .into_text()
        .unwrap();
    ws.send(tungstenite::Message::text("bye")).unwrap();

    // The supervisor's span continues the client's; it ends at the 101.
    let s = rx.wait_span(trace, "GET /agents/traced");
    assert_eq!(s["parent_span_id"], parent, "{s:#}");
    assert_eq!(s["trace_state"], "client=1");
    let a = &s["attributes"];
    assert_eq!(a["url.path"], "/agents/traced/ws");
    assert_eq!(a["par.process_id"], "par-traced");
    assert_eq!(a["http.response.status_code"], 101);
    event(&s, "admitted");
    // What reached the worker is the supervisor's context, never the
    // client's: the agent's parent is the supervisor's span or below it.
    let fields: Vec<&str> = seen.split('-').collect();
    assert_eq!(fields.len(), 4, "the agent saw {seen:?}");
    assert_eq!(fields[1], trace, "the agent saw {seen:?}");
    assert_ne!(
        fields[2], parent,
        "the client's context went through: {seen:?}"
    );
    if fields[2] != s["span_id"] {
        let worker = wait_until(Duration::from_secs(20), "the agent's parent span", || {
            rx.spans()
                .into_iter()
                .find(|w| w["trace_id"] == trace && w["span_id"] == fields[2])
        });
        rx.assert_descends(&worker, &s);
    }
    // The access log has the handshake, with the span's ids.
    wait_until(
        Duration::from_secs(10),
        "the handshake's access log line",
        || {
            sup.log_text()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| {
                    l["fields"]["target"] == "par::access"
                        && l["fields"]["path"] == "/ws"
                        && l["fields"]["status"] == 101
                        && l["fields"]["trace_id"] == trace
                        && l["fields"]["span_id"] == s["span_id"]
                })
        },
    );
}
