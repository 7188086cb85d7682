//! End-to-end: traces from a request's `traceparent` through the worker into
//! the agent's own OpenTelemetry spans, received by a real OTLP/HTTP
//! receiver (Python, decoding the protobuf with `opentelemetry-proto`).

mod otlp_support;
mod worker_support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otlp_support::Receiver;
use serde_json::Value;
use worker_support::*;

fn agent_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/agents/traced")
}

/// A worker whose stdout (its JSON log lines) is kept.
fn start_worker(env: &[(&str, String)]) -> (Worker, Arc<Mutex<Vec<Value>>>) {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_par"));
    cmd.arg("worker")
        .env("PAR_PORT", port.to_string())
        .env("PAR_AGENT_ID", "traced")
        .env("PAR_PACKAGE_PATH", agent_dir())
        .env("PAR_HOME", par_home())
        .env("PAR_LOG", "info")
        .env("PAR_LOG_FORMAT", "json")
        .env("PAR_ACCESS_LOG", "true")
        // The agent's SDK sends its batches soon.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn par worker");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout");
    let keep = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                keep.lock().unwrap().push(v);
            } else {
                println!("{line}");
            }
        }
    });
    let mut w = Worker { child, port };
    w.wait_ready(Duration::from_secs(300));
    (w, lines)
}

/// (trace id, span id) of a `traceparent` the agent saw.
fn ids(tp: &str) -> (String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len()),
        ("00", 32, 16),
        "{tp}"
    );
    (parts[1].to_string(), parts[2].to_string())
}

fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_callers_trace_reaches_the_agents_own_spans_on_every_surface() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = Receiver::start(dir.path());
    let endpoint = format!("http://127.0.0.1:{}", rx.port);
    let (w, logs) = start_worker(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-test-auth=s3cret".into()),
    ]);

    // ASGI: the app sees the worker span's traceparent, not the caller's.
    let (t1, p1) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let r = request(
        w.port,
        "GET",
        "/work?x=1",
        &[
            ("traceparent", &traceparent(t1, p1)),
            ("tracestate", "rojo=1"),
        ],
        None,
    )
    .expect("GET /work");
    assert_eq!(r.status, 200, "{}", r.text());
    let (seen_trace, seen_span) = ids(r.json()["traceparent"].as_str().expect("traceparent"));
    assert_eq!(seen_trace, t1);
    assert_ne!(seen_span, p1);
    let server = rx.wait_span(t1, "GET");
    assert_eq!(server["service"], "traced");
    assert_eq!(server["auth"], "s3cret");
    assert_eq!(server["kind"], 2, "{server}");
    assert_eq!(server["parent_span_id"], p1);
    assert_eq!(server["span_id"], seen_span);
    assert_eq!(server["trace_state"], "rojo=1");
    let a = &server["attributes"];
    assert_eq!(a["par.surface"], "asgi", "{server}");
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["url.path"], "/work");
    assert_eq!(a["url.query"], "x=1");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["server.port"], w.port);
    assert!(server["end"].as_u64() >= server["start"].as_u64());
    let agent = rx.wait_span(t1, "agent-work");
    assert_eq!(agent["service"], "traced");
    assert_eq!(agent["scope"], "traced-agent");
    rx.assert_descends(&agent, &server);
    let host = rx.wait_span(t1, "agent host http");
    assert_eq!(host["parent_span_id"], server["span_id"]);
    assert_eq!(host["kind"], 1);
    // The resource says what process sent it.
    assert!(server["resource"]["process.pid"].as_i64().is_some());
    assert_eq!(server["resource"]["telemetry.sdk.name"], "par");

    // The access log line of that request carries the ids.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = logs.lock().unwrap().iter().any(|l| {
            l["fields"]["target"] == "par::access"
                && l["fields"]["path"] == "/work"
                && l["fields"]["trace_id"] == t1
                && l["fields"]["span_id"] == server["span_id"]
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no access log line with the trace ids: {:#?}",
            logs.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Invoke: a sync handler in the host's thread pool.
    let (t2, p2) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let r = request(
        w.port,
        "POST",
        "/invoke",
        &[
            ("traceparent", &traceparent(t2, p2)),
            ("content-type", "application/json"),
        ],
        Some(b"{\"q\":1}"),
    )
    .expect("POST /invoke");
    assert_eq!(r.status, 200, "{}", r.text());
    let server = rx.wait_span(t2, "POST /invoke");
    assert_eq!(server["parent_span_id"], p2);
    assert_eq!(server["attributes"]["par.surface"], "invoke");
    assert_eq!(server["attributes"]["http.route"], "/invoke");
    let agent = rx.wait_span(t2, "agent-invoke");
    // A plain handler: its span is the worker span's child.
    assert_eq!(agent["parent_span_id"], server["span_id"], "{agent}");
    let host = rx.wait_span(t2, "agent host invoke");
    assert_eq!(host["parent_span_id"], server["span_id"]);

    // A request without a traceparent starts a trace of its own.
    let r = request(w.port, "GET", "/plain", &[], None).expect("GET /plain");
    let (own_trace, _) = ids(r.json()["traceparent"].as_str().expect("a traceparent"));
    let root = rx.wait_span(&own_trace, "GET");
    assert_eq!(root["parent_span_id"], "");

    // gRPC A2A: `traceparent` in the metadata.
    let (t3, p3) = ("5b8aa5a2d2c872e8321cf37308d69df2", "051581bf3cb55c13");
    let result = otlp_support::grpc_echo(w.port, &traceparent(t3, p3), None);
    assert!(result.success, "{result:?}");
    let server = rx.wait_span(t3, "pixell.agent.AgentService/Invoke");
    assert_eq!(server["parent_span_id"], p3);
    assert_eq!(server["attributes"]["rpc.system"], "grpc");
    assert_eq!(server["attributes"]["par.surface"], "grpc");
    let agent = rx.wait_span(t3, "agent-a2a");
    assert_eq!(agent["parent_span_id"], server["span_id"], "{agent}");

    // The counters on /metrics: 4 requests, each a server span and a host round trip.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = w.get("/metrics").expect("metrics").text();
        if metric(&text, "par_trace_spans_exported_total") >= 8 {
            assert_eq!(metric(&text, "par_trace_spans_dropped_total"), 0, "{text}");
            assert_eq!(
                metric(&text, "par_trace_export_failures_total"),
                0,
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_receiver_that_is_down_leaves_requests_alone_and_is_counted() {
    // A port nobody listens on.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let (w, _logs) = start_worker(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]);
    let mut took = Vec::new();
    for i in 0..50 {
        let tp = format!("00-{:032x}-{:016x}-01", 0xabc0 + i, 0x1230 + i);
        let started = Instant::now();
        let r = request(w.port, "GET", "/plain", &[("traceparent", &tp)], None).expect("GET");
        took.push(started.elapsed());
        assert_eq!(r.status, 200, "{}", r.text());
        // The worker's span still goes to the app.
        let seen = r.json()["traceparent"].as_str().unwrap().to_string();
        assert!(seen.starts_with(&tp[..36]), "{seen} vs {tp}");
    }
    took.sort();
    println!(
        "receiver down: 50 requests, median {:?}, max {:?}",
        took[25], took[49]
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = w.get("/metrics").expect("metrics").text();
        let failures = metric(&text, "par_trace_export_failures_total");
        let dropped = metric(&text, "par_trace_spans_dropped_total");
        if failures >= 1 && dropped >= 50 {
            assert_eq!(metric(&text, "par_trace_spans_exported_total"), 0);
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
