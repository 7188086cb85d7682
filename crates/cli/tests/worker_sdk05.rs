//! End-to-end: an agent built on the real pixell-sdk 0.5 (from PyPI) whose
//! `http_server` is the sdk's own `AgentServer` app, served by the real worker:
//! JSON-RPC `message/stream` over SSE (first event before the stream ends,
//! byte-exact), `message/send`, the file download route and the agent card.

mod worker_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use worker_support::*;

/// The sdk and its dependencies install on first use (cached under the shared PAR_HOME).
const READY: Duration = Duration::from_secs(900);

fn sdk05_agent() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/agents/sdk05")
}

fn rpc(method: &str, id: &str, text: &str) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": method,
        "params": {
            "message": {"messageId": format!("m-{id}"), "role": "user", "parts": [{"text": text}]},
            "sessionId": "session-1",
            "metadata": {"language": "en"},
        },
    })
    .to_string()
}

/// Splits an SSE body into events after the leading padding comment.
fn events(body: &str) -> Vec<(String, String, serde_json::Value)> {
    body.split("\n\n")
        .filter(|e| !e.is_empty() && !e.starts_with(':'))
        .map(|e| {
            let mut id = String::new();
            let mut event = String::new();
            let mut data = serde_json::Value::Null;
            for line in e.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_string();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).expect("event data is JSON");
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (id, event, data)
        })
        .collect()
}

#[test]
fn pixell_sdk_agent_server_through_the_worker() {
    let mut w = Worker::start(&sdk05_agent(), "sdk05-agent", &[("SDK05_DELAY", "1.0")]);
    let health = w.wait_ready(READY);
    assert_eq!(health["surfaces"], json!({"rest": {"status": "ready"}}));

    // The agent card comes from the sdk's AgentServer.
    let card = w.get("/.well-known/agent.json").expect("agent card");
    assert_eq!(card.status, 200, "{}", card.text());
    let card = card.json();
    assert_eq!(card["name"], "SDK 0.5 Agent");
    assert_eq!(card["description"], "echoes the message in three events");
    assert_eq!(card["capabilities"]["streaming"], true);

    // message/stream: SSE, the 2 KB padding comment first, events as they are emitted.
    let body = rpc("message/stream", "req-1", "hello sdk");
    let t = Instant::now();
    let (status, headers, mut reader) = open_request(
        w.port,
        "POST",
        "/",
        &[
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(status, 200);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert!(
        header("content-type").is_some_and(|v| v.starts_with("text/event-stream")),
        "{headers:?}"
    );
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
    let mut seen = Vec::new();
    let mut first_event_at = None;
    while let Some(c) = read_chunk(&mut reader).expect("chunk") {
        seen.extend_from_slice(&c);
        if first_event_at.is_none() && String::from_utf8_lossy(&seen).contains("event: ") {
            first_event_at = Some(t.elapsed());
        }
    }
    let end_at = t.elapsed();
    let first_event_at = first_event_at.expect("an SSE event");
    eprintln!("sdk SSE: first event after {first_event_at:?}, stream ended after {end_at:?}");
    // The handler sleeps 2 x 1 s between its three events.
    assert!(
        first_event_at + Duration::from_millis(1500) < end_at,
        "first event {first_event_at:?}, end {end_at:?}: the stream was buffered"
    );

    let text = String::from_utf8(seen.clone()).expect("utf-8 stream");
    let padding = format!(": {}\n\n", "-".repeat(2048));
    assert!(
        text.starts_with(&padding),
        "stream opens with the padding comment"
    );
    // Byte-exact: what the client read is the padding plus every event exactly as
    // the sdk encoded it, in order.
    let sent = w.get("/test/sent").expect("sent").json();
    let sent: String = sent["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e.as_str().expect("str"))
        .collect();
    assert_eq!(text, format!("{padding}{sent}"), "byte-exact stream");

    let evs = events(&text);
    let kinds: Vec<_> = evs
        .iter()
        .map(|(id, ev, d)| (id.as_str(), ev.as_str(), d["state"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        kinds,
        [
            ("1", "status-update", "working"),
            ("2", "status-update", "working"),
            ("3", "message", "completed"),
        ]
    );
    assert_eq!(evs[0].2["message"], "received: hello sdk");
    assert_eq!(evs[1].2["progress"], 50.0);
    assert_eq!(evs[2].2["result"], json!({"answer": "HELLO SDK"}));
    for (_, _, d) in &evs {
        assert_eq!(d["sessionId"], "session-1");
    }

    // message/send: a plain JSON-RPC response.
    let r = request(
        w.port,
        "POST",
        "/",
        &[("content-type", "application/json")],
        Some(rpc("message/send", "req-2", "plain").as_bytes()),
    )
    .expect("message/send");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"jsonrpc": "2.0", "id": "req-2", "result": {"sessionId": "session-1"}})
    );

    // The sdk's file download route (outputs_dir), with its content type and name.
    let r = w
        .get("/files/download?path=outputs/report.csv")
        .expect("download");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(
        r.header("content-disposition")
            .is_some_and(|v| v.contains("report.csv")),
        "{:?}",
        r.headers
    );
    let expected = std::fs::read(sdk05_agent().join("src/outputs/report.csv")).expect("csv");
    assert_eq!(r.body, expected);
    assert_eq!(
        r.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    // Its traversal guard and missing files, as the sdk answers them.
    let r = w
        .get("/files/download?path=../server.py")
        .expect("traversal");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = w.get("/files/download?path=nope.csv").expect("missing");
    assert_eq!(r.status, 404, "{}", r.text());
}
