//! Routing through the supervisor end to end: methods, queries, headers,
//! streaming, JSON errors, logs, metrics.

mod supervisor_support;

use std::io::Write as _;
use std::time::{Duration, Instant};

use supervisor_support::*;

const AGENTS: &str = "[[agents]]\nid = \"a\"\npackage = \"pkg\"\n\
[[agents]]\nid = \"slow\"\npackage = \"pkg\"\nenv_vars = { FAKE_NEVER_READY = \"1\" }\n";

fn sup() -> Supervisor {
    let s = Supervisor::start("routing", "upstream_timeout = \"1s\"\n", AGENTS, &[]);
    s.wait_ready("a", Duration::from_secs(20));
    s
}

#[test]
fn methods_queries_headers_and_errors() {
    let s = sup();
    // Prefix stripped, repeated query keys kept in order, body passed.
    let r = http(
        s.port,
        "POST",
        "/agents/a/api/items?k=1&k=2&x=%20y",
        &[("X-Custom", "v")],
        b"hello",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["path"], "/api/items");
    assert_eq!(j["query"], "k=1&k=2&x=%20y");
    assert_eq!(j["body"], "hello");
    assert_eq!(j["headers"]["x-custom"], "v");
    assert_eq!(j["headers"]["x-forwarded-prefix"], "/agents/a");
    // One date and one server header (the worker's), never two.
    assert_eq!(r.header_count("date"), 1);
    assert!(r.header_count("server") <= 1);
    // X-Request-Id: made when missing, passed to the worker, returned.
    let id = r
        .header("x-request-id")
        .expect("x-request-id returned")
        .to_string();
    assert_eq!(j["headers"]["x-request-id"], id.as_str());
    let r = http(
        s.port,
        "GET",
        "/agents/a/",
        &[("X-Request-Id", "abc-123")],
        b"",
    )
    .unwrap();
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    assert_eq!(r.json()["headers"]["x-request-id"], "abc-123");
    // `/agents/a` alone goes to the worker's `/`.
    let r = http(s.port, "POST", "/agents/a", &[], b"{}").unwrap();
    assert_eq!(r.json()["path"], "/");
    // HEAD and OPTIONS pass through.
    let r = http(s.port, "HEAD", "/agents/a/x", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = http(s.port, "OPTIONS", "/agents/a/x", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("allow"), Some("GET, POST, HEAD, OPTIONS"));
    assert_eq!(r.json()["method"], "OPTIONS");
    for m in ["PUT", "DELETE", "PATCH"] {
        assert_eq!(
            http(s.port, m, "/agents/a/x", &[], b"").unwrap().json()["method"],
            m
        );
    }
    // Hop-by-hop headers are not passed on.
    let r = http(
        s.port,
        "GET",
        "/agents/a/x",
        &[
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
        ],
        b"",
    )
    .unwrap();
    assert!(r.json()["headers"].get("x-secret-hop").is_none());
    // JSON errors: unknown 404, not ready 503 + Retry-After, timeout 504, worker gone 502/503.
    let r = get(s.port, "/agents/nobody/x").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    let r = get(s.port, "/agents/slow/x").unwrap();
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.json()["error"]["code"], "not_ready");
    let r = get(s.port, "/agents/a/sleep?s=3").unwrap();
    assert_eq!(r.status, 504);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");
    let r = get(s.port, "/agents/a/crash").unwrap();
    assert!(
        r.status == 502 || r.status == 503,
        "{} {}",
        r.status,
        r.text()
    );
    assert!(r.json()["error"]["message"].as_str().is_some());
}

#[test]
fn sse_passes_through_unbuffered() {
    let s = sup();
    let mut c = Conn::open(s.port).unwrap();
    let t0 = Instant::now();
    c.send(
        "GET",
        "/agents/a/sse?n=3&delay=1",
        &[("Accept", "text/event-stream")],
        b"",
    )
    .unwrap();
    let (status, headers) = c.read_head().unwrap();
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v == "text/event-stream"));
    let first = c.read_chunk().unwrap().expect("a first chunk");
    let first_at = t0.elapsed();
    let text = String::from_utf8(first).unwrap();
    assert!(
        text.starts_with(&format!(": {}\n\n", "-".repeat(2048))),
        "the padding comment arrives byte-exact"
    );
    assert!(text.contains("id: 0\nevent: tick\ndata: {\"i\": 0}\n\n"));
    let mut rest = Vec::new();
    while let Some(c) = c.read_chunk().unwrap() {
        rest.extend(c);
    }
    let total = t0.elapsed();
    assert!(String::from_utf8(rest).unwrap().contains("id: 2\n"));
    eprintln!("first event after {first_at:?}, stream ended after {total:?}");
    assert!(
        first_at + Duration::from_millis(1500) < total,
        "first event before the end: {first_at:?} vs {total:?}"
    );
}

#[test]
fn chunked_request_bodies_stream_to_the_worker() {
    let s = sup();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    stream
        .write_all(b"POST /agents/a/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stream, &mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"body\": \"hello world\""), "{out}");
}

#[test]
fn logs_are_captured_filtered_and_followed_and_metrics_count() {
    let s = sup();
    for _ in 0..3 {
        assert_eq!(get(s.port, "/agents/a/x").unwrap().status, 200);
    }
    let r = get(s.port, "/supervisor/logs?process_id=par-a&limit=50").unwrap();
    assert_eq!(r.status, 200);
    let logs = r.json();
    let msgs: Vec<String> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        msgs.iter().any(|m| m.starts_with("fake worker a on")),
        "{msgs:?}"
    );
    assert!(logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["process_id"] == "par-a"));
    let r = get(s.port, "/supervisor/logs?level=error").unwrap();
    assert!(r.json()["logs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["level"] == "error"));
    let r = get(s.port, "/supervisor/logs?level=loud").unwrap();
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["field"], "level");
    // Worker lines are re-emitted on the supervisor's stdout as JSON lines.
    let out = s.log_text();
    assert!(
        out.lines()
            .any(|l| l.contains("\"process_id\":\"par-a\"") && l.contains("fake worker a on")),
        "{out}"
    );
    // follow=true: SSE with the backlog then new entries.
    let mut c = Conn::open(s.port).unwrap();
    c.send(
        "GET",
        "/supervisor/logs?follow=true&process_id=par-a&limit=1",
        &[],
        b"",
    )
    .unwrap();
    let (status, _) = c.read_head().unwrap();
    assert_eq!(status, 200);
    let first = String::from_utf8(c.read_chunk().unwrap().unwrap()).unwrap();
    assert!(first.contains("event: log"), "{first}");
    let r = http(s.port, "POST", "/supervisor/restart/par-a", &[], b"").unwrap();
    assert_eq!(r.status, 202);
    let next = String::from_utf8(c.read_chunk().unwrap().unwrap()).unwrap();
    assert!(next.contains("par-a"), "{next}");
    // Metrics.
    let m = get(s.port, "/metrics").unwrap().text();
    assert!(
        m.contains("par_agent_requests_total{agent_id=\"a\",class=\"2xx\"}"),
        "{m}"
    );
    assert!(m.contains("par_agent_request_duration_seconds_bucket{agent_id=\"a\",le=\"+Inf\"}"));
    assert!(m.contains(
        "par_agent_state{agent_id=\"slow\",process_id=\"par-slow\",state=\"starting\"} 1"
    ));
    assert!(m.contains("par_unknown_agent_requests_total"));
    // Status has the supervisor and every process; it answers while traffic flows.
    let st = get(s.port, "/supervisor/status").unwrap().json();
    assert_eq!(st["supervisor"]["state"], "running");
    assert!(st["supervisor"]["uptime_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(st["processes"].as_array().unwrap().len(), 2);
    assert!(st["processes"][0]["limits"]["memory_enforcement"].is_string());
    assert_eq!(get(s.port, "/runtime/health").unwrap().status, 200);
    // PUT needs a full spec: an empty body names the missing package.
    assert_eq!(
        http(s.port, "PUT", "/supervisor/agents/a", &[], b"{}")
            .unwrap()
            .status,
        422
    );
}

/// One client connection: requests written back to back (pipelined) are
/// answered in order and whole, a HEAD reply ends at its head, a streamed
/// reply passes through, and the management API and the agent keep
/// answering on the same connection after.
#[test]
fn one_connection_carries_pipelined_requests_a_stream_and_the_api() {
    let s = sup();
    let mut c = Conn::open(s.port).unwrap();
    c.write_raw(
        b"GET /agents/a/one HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\
          POST /agents/a/two HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 8\r\n\r\nbody-two\
          HEAD /agents/a/three HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\
          GET /agents/a/four?q=4 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .unwrap();
    let one = c.read_response("GET").unwrap();
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["path"], "/one");
    assert_eq!(one.header("x-par-process"), Some("par-a"));
    let two = c.read_response("POST").unwrap();
    assert_eq!(two.json()["path"], "/two");
    assert_eq!(two.json()["method"], "POST");
    assert_eq!(two.json()["body"], "body-two");
    let three = c.read_response("HEAD").unwrap();
    assert_eq!(three.status, 200);
    assert!(
        three.header("content-length").is_some_and(|n| n != "0"),
        "HEAD keeps the length of the body it does not send: {:?}",
        three.headers
    );
    assert!(three.body.is_empty());
    // Had the HEAD reply carried a body, this would read it instead.
    let four = c.read_response("GET").unwrap();
    assert_eq!(four.json()["path"], "/four");
    assert_eq!(four.json()["query"], "q=4");

    let sse = c
        .request("GET", "/agents/a/sse?n=3&delay=0.05", &[], b"")
        .unwrap();
    assert_eq!(sse.status, 200);
    assert!(sse
        .header("transfer-encoding")
        .is_some_and(|t| t.contains("chunked")));
    let events = sse.text();
    for i in 0..3 {
        assert!(
            events.contains(&format!("id: {i}\nevent: tick\ndata: {{\"i\": {i}}}\n\n")),
            "{events}"
        );
    }
    let st = c.request("GET", "/supervisor/status", &[], b"").unwrap();
    assert_eq!(st.status, 200, "{}", st.text());
    assert!(st.json()["agents"].is_array());
    let five = c.request("GET", "/agents/a/five", &[], b"").unwrap();
    assert_eq!(five.status, 200);
    assert_eq!(five.json()["path"], "/five");
    assert_eq!(five.header("x-par-process"), Some("par-a"));
}

fn agent_in_flight(s: &Supervisor, id: &str) -> Option<u64> {
    s.agent_status(id)["in_flight"].as_u64()
}

fn agent_queued(s: &Supervisor, id: &str) -> Option<u64> {
    s.agent_status(id)["queued"].as_u64()
}

/// A client that goes away while its request waits for the agent, while a
/// stream it reads waits for its next event, or while it waits in the
/// agent's queue, gives its place back then: on an agent taking one request
/// at a time, the next request is served while the worker still sleeps on
/// the first.
#[test]
fn a_client_gone_mid_request_gives_its_place_back() {
    let agents = "[[agents]]\nid = \"one\"\npackage = \"pkg\"\nmax_concurrency = 1\n";
    let s = Supervisor::start("gone", "", agents, &[]);
    s.wait_ready("one", Duration::from_secs(20));
    let mut c = Conn::open(s.port).unwrap();
    c.send("GET", "/agents/one/sleep?s=60", &[], b"").unwrap();
    wait_until(Duration::from_secs(10), "the request in flight", || {
        (agent_in_flight(&s, "one") == Some(1)).then_some(())
    });
    drop(c);
    wait_until(Duration::from_secs(10), "its place given back", || {
        (agent_in_flight(&s, "one") == Some(0)).then_some(())
    });
    let r = get(s.port, "/agents/one/next").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/next");

    // A stream whose next event is a minute away.
    let mut c = Conn::open(s.port).unwrap();
    c.send("GET", "/agents/one/sse?n=2&delay=60", &[], b"")
        .unwrap();
    assert_eq!(c.read_head().unwrap().0, 200);
    let first = c.read_chunk().unwrap().expect("the first event");
    assert!(String::from_utf8_lossy(&first).contains("id: 0\n"));
    assert_eq!(agent_in_flight(&s, "one"), Some(1));
    drop(c);
    wait_until(
        Duration::from_secs(10),
        "the stream's place given back",
        || (agent_in_flight(&s, "one") == Some(0)).then_some(()),
    );
    let r = get(s.port, "/agents/one/after-the-stream").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // A client that gives up while queued behind a busy worker leaves the
    // queue then (not at the queue's 30 s timeout), and its request never
    // reaches the worker: once the first ends, nothing is in flight.
    let mut busy = Conn::open(s.port).unwrap();
    busy.send("GET", "/agents/one/sleep?s=60", &[], b"")
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the first request in flight",
        || (agent_in_flight(&s, "one") == Some(1)).then_some(()),
    );
    // The second: a plain GET (the direct path), then a 70 KiB upload (the
    // general path, hyper's).
    for body in [Vec::new(), vec![b'x'; 70 * 1024]] {
        let mut waiting = Conn::open(s.port).unwrap();
        let method = if body.is_empty() { "GET" } else { "POST" };
        waiting
            .send(method, "/agents/one/sleep?s=60", &[], &body)
            .unwrap();
        wait_until(Duration::from_secs(10), "the second request queued", || {
            (agent_queued(&s, "one") == Some(1)).then_some(())
        });
        drop(waiting);
        wait_until(Duration::from_secs(10), "the queue empty", || {
            (agent_queued(&s, "one") == Some(0)).then_some(())
        });
    }
    assert_eq!(agent_in_flight(&s, "one"), Some(1), "the first still runs");
    drop(busy);
    wait_until(Duration::from_secs(10), "nothing in flight", || {
        (agent_in_flight(&s, "one") == Some(0)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        agent_in_flight(&s, "one"),
        Some(0),
        "the request of the client that left was sent to the worker"
    );
    let r = get(s.port, "/agents/one/after-the-queue").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}
