//! End-to-end: the four fixture APKGs (built by the real pixell tools), each served by a real
//! `par worker` (their requirements install fastapi/uvicorn/watchdog once per run).

mod worker_support;

use std::time::Duration;

use serde_json::json;
use worker_support::*;

/// First start installs the fixtures' requirements from PyPI.
const READY: Duration = Duration::from_secs(600);

#[test]
fn pk_handler_env_behaves_as_documented() {
    let mut w = Worker::start(&fixture("pk-handler-env-0.2.0.apkg"), "pk-handler-env", &[]);
    let health = w.wait_ready(READY);
    assert_eq!(health["package_id"], "pk-handler-env@0.2.0");
    assert_eq!(health["surfaces"], json!({}));

    let r = w.post("/invoke", r#"{"action":"greet","data":{"x":1}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "success");
    assert_eq!(
        v["data"]["received"],
        json!({"action":"greet","data":{"x":1}})
    );
    assert_eq!(
        v["data"]["env"],
        json!({"MANIFEST_ONLY":"m","DOTENV_ONLY":"d","BOTH":"from-manifest","QUOTED":"q v"})
    );

    let r = w.post("/invoke", r#"{"action":"fail"}"#);
    assert_eq!(r.status, 500, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "error");
    assert_eq!(v["data"], serde_json::Value::Null);
    assert!(
        v["error"].as_str().unwrap().contains("requested failure"),
        "{v}"
    );
}

#[test]
fn pk_rest_only_serves_rest_and_says_no_entrypoint() {
    let mut w = Worker::start(&fixture("pk-rest-only-0.1.0.apkg"), "pk-rest-only", &[]);
    let health = w.wait_ready(READY);
    assert_eq!(health["surfaces"], json!({"rest": {"status": "ready"}}));

    let r = w.post("/api/echo", r#"{"a":1}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"echo":{"a":1},"path":"/api/echo"}));

    let r = w.post("/invoke", r#"{"action":"x"}"#);
    assert_eq!(r.status, 404, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], "no_entrypoint");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no entrypoint"),
        "{v}"
    );
}

#[test]
fn pk_full_serves_rest_ui_a2a_and_reports_each_surface() {
    let mut w = Worker::start(&fixture("pk-full-0.1.0.apkg"), "pk-full", &[]);
    let health = w.wait_ready(READY);
    assert_eq!(
        health["surfaces"],
        json!({"rest":{"status":"ready"},"a2a":{"status":"ready"},"ui":{"status":"ready"}})
    );
    let r = w.get("/api/hello").expect("hello");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"message":"Hello from REST"}));

    let r = w.post("/invoke", r#"{"q":1}"#);
    assert_eq!(
        r.json()["data"],
        json!({"message":"Hello from handler","received":{"q":1}})
    );

    let r = request(w.port, "GET", "/", &[("accept", "text/html")], None).expect("ui");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    // An unknown page that asks for HTML gets the SPA's index.html; the agent's 404 otherwise.
    let r = request(
        w.port,
        "GET",
        "/some/page",
        &[("accept", "text/html")],
        None,
    )
    .expect("spa");
    assert_eq!(r.status, 200);
    assert!(r.text().to_lowercase().contains("<html"), "{}", r.text());
    let r = request(
        w.port,
        "GET",
        "/api/nope",
        &[("accept", "application/json")],
        None,
    )
    .expect("404");
    assert_eq!(r.status, 404);

    let r = w.get("/ui/health").expect("ui health");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w.get("/a2a/health").expect("a2a health");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ok");
}

#[test]
fn sdk_full_becomes_ready_with_its_surfaces() {
    let mut w = Worker::start(&fixture("sdk-full-0.1.0.apkg"), "sdk-full", &[]);
    let health = w.wait_ready(READY);
    assert_eq!(health["package_id"], "sdk-full@0.1.0");
    assert_eq!(
        health["surfaces"],
        json!({"rest":{"status":"ready"},"a2a":{"status":"ready"},"ui":{"status":"ready"}})
    );
    assert_eq!(
        w.get("/api/hello").expect("hello").json(),
        json!({"message":"Hello from REST"})
    );
    let r = request(w.port, "GET", "/", &[("accept", "text/html")], None).expect("ui");
    assert_eq!(r.status, 200);
    assert_eq!(w.get("/a2a/health").expect("a2a").status, 200);
}
