//! Agents that misbehave, end to end with the real worker and real Python:
//! one that drives the management API from its own code, one whose failure
//! message holds a secret, one that exits at import, one that answers JSON no
//! JSON reader accepts — and clean stops that never look like failures.

mod supervisor_support;

use std::time::Duration;

use serde_json::Value;
use supervisor_support::*;

const READY: Duration = Duration::from_secs(120);

/// Calls the management API from inside the agent, as agent code can.
const INTRUDER: &str = r#"
import json, os, urllib.request, urllib.error

def call(method, path):
    url = os.environ["PAR_SUPERVISOR_URL"] + path
    req = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code

def handler(context):
    return {
        "stop": call("POST", "/supervisor/stop/par-b"),
        "logs": call("GET", "/supervisor/logs?process_id=par-b"),
        "delete": call("DELETE", "/supervisor/agents/b"),
        "reload": call("POST", "/supervisor/reload"),
        "status": call("GET", "/supervisor/status"),
    }
"#;

#[test]
fn agent_code_cannot_drive_the_management_api() {
    let dir = TempDir::new("intruder");
    let evil = agent(dir.path(), "intruder", INTRUDER, &[]);
    let b = agent(
        dir.path(),
        "bee",
        "def handler(c):\n    return {'b': True}\n",
        &[],
    );
    let agents = format!("{}{}", agent_toml("evil", &evil), agent_toml("b", &b));
    let sup = Supervisor::start_with("intruder", "", &agents, &[]);
    sup.wait_ready("evil", READY);
    sup.wait_ready("b", READY);
    let r = invoke(sup.port, "evil", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &r.json()["data"];
    assert_eq!(
        (
            &seen["stop"],
            &seen["logs"],
            &seen["delete"],
            &seen["reload"]
        ),
        (
            &Value::from(401),
            &Value::from(401),
            &Value::from(401),
            &Value::from(401)
        ),
        "{seen}"
    );
    // Reading the public status is fine.
    assert_eq!(seen["status"], 200);
    // b never noticed.
    let p = sup.process("b").unwrap();
    assert_eq!(
        (p["state"].clone(), p["restarts"].clone()),
        ("ready".into(), 0.into())
    );
    assert_eq!(invoke(sup.port, "b", "{}").status, 200);
}

#[test]
fn a_secret_in_a_failure_message_stays_behind_the_token() {
    const SECRET: &str = "sk-test-7f3a9c2e1d";
    let dir = TempDir::new("secret");
    let leaky = agent(
        dir.path(),
        "leaky",
        &format!("raise RuntimeError('bad key OPENAI_API_KEY={SECRET}')\n"),
        &[],
    );
    let agents = agent_toml("leaky", &leaky);
    let sup = Supervisor::start_with("secret", "", &agents, &[]);
    wait_until(READY, "leaky failed", || {
        sup.process("leaky").filter(|p| p["state"] == "failed")
    });
    let none = [("Authorization", "")];
    for (method, path) in [
        ("GET", "/supervisor/status"),
        ("GET", "/supervisor/processes"),
        ("GET", "/supervisor/health"),
        ("GET", "/supervisor/agents/leaky"),
        ("GET", "/agents"),
        ("GET", "/metrics"),
        ("GET", "/agents/leaky/health"),
        ("POST", "/agents/leaky/invoke"),
        ("GET", "/supervisor/logs?process_id=par-leaky"),
    ] {
        let r = http(sup.port, method, path, &none, b"{}").unwrap();
        assert!(
            !r.text().contains(SECRET),
            "{method} {path} shows the secret: {}",
            r.text()
        );
    }
    let public = http(sup.port, "GET", "/supervisor/agents/leaky", &none, b"")
        .unwrap()
        .json();
    assert_eq!(public["last_error"], "package_failure", "{public}");
    let r = invoke(sup.port, "leaky", "{}");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("package_failure"), "{}", r.text());
    // The operator, with the token, sees the whole message.
    let full = sup.process("leaky").unwrap();
    assert!(
        full["last_error"].as_str().unwrap().contains(SECRET),
        "{full}"
    );
}

#[test]
fn an_exit_at_import_is_a_package_failure_not_a_restart_loop() {
    let dir = TempDir::new("exit0");
    let quits = agent(dir.path(), "quits", "import os\nos._exit(0)\n", &[]);
    let sup = Supervisor::start_with("exit0", "", &agent_toml("q", &quits), &[]);
    let p = wait_until(READY, "q failed", || {
        sup.process("q").filter(|p| p["state"] == "failed")
    });
    assert_eq!(p["restarts"], 0, "{p}");
    assert_eq!(p["last_error_class"], "package_failure", "{p}");
    // No restart loop: a failed agent stays failed (the state machine's
    // decision: state::tests::crashes::a_failed_agent_stays_failed_as_time_passes).
}

#[test]
fn numbers_json_cannot_hold_are_refused_both_ways() {
    let dir = TempDir::new("json");
    let echo = agent(
        dir.path(),
        "echoes",
        "def handler(c):\n    if c.get('make') == 'inf':\n        return {'x': float('inf')}\n    return c\n", &[]);
    let sup = Supervisor::start_with("json", "", &agent_toml("e", &echo), &[]);
    sup.wait_ready("e", READY);
    let r = invoke(sup.port, "e", r#"{"a":1e999999}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("out of range"), "{}", r.text());
    let r = invoke(sup.port, "e", r#"{"a":NaN}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    // A handler that returns Infinity gets an error, not a body that is not JSON.
    let r = invoke(sup.port, "e", r#"{"make":"inf"}"#);
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(!r.text().contains("Infinity"), "{}", r.text());
    serde_json::from_slice::<Value>(&r.body).expect("the error is JSON");
    assert_eq!(invoke(sup.port, "e", r#"{"a":1e300}"#).status, 200);
}

#[test]
fn a_clean_stop_never_looks_like_a_failure() {
    let dir = TempDir::new("stops");
    let calm = agent(dir.path(), "calm", "def handler(c):\n    return c\n", &[]);
    let sup = Supervisor::start_with("stops", "", &agent_toml("s", &calm), &[]);
    for round in 0..5 {
        sup.wait_ready("s", READY);
        let r = http(sup.port, "POST", "/supervisor/stop/par-s", &[], b"").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let p = sup.process("s").unwrap();
        assert_eq!(p["state"], "stopped", "round {round}: {p}");
        assert_eq!(p["last_exit"]["code"], 0, "round {round}: {p}");
        assert!(p["last_error"].is_null(), "round {round}: {p}");
        let r = http(
            sup.port,
            "POST",
            "/supervisor/restart/par-s?wait=true",
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // No worker said its agent failed while being stopped.
    let logs = get(
        sup.port,
        "/supervisor/logs?process_id=par-s&level=error&limit=1000",
    )
    .unwrap()
    .json();
    assert_eq!(logs["count"], 0, "{logs}");
}
