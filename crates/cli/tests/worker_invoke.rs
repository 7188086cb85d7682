//! End-to-end: the real `par worker` serving the example agents (invoke, exports,
//! errors, timeouts, concurrency, metrics, host death, load failures, shutdown).

mod worker_support;

use std::time::{Duration, Instant};

use worker_support::*;

const READY: Duration = Duration::from_secs(60);

#[test]
fn echo_invoke_meta_metrics_and_malformed_json() {
    let mut w = Worker::start(&example("echo"), "echo-a", &[]);
    let health = w.wait_ready(READY);
    assert_eq!(health["agent_id"], "echo-a");
    assert_eq!(health["package_id"], "echo@0.1.0");
    assert_eq!(health["surfaces"], serde_json::json!({}));

    let r = w.post("/invoke", r#"{"action":"greet","data":{"x":[1,2]}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "success");
    assert_eq!(v["error"], serde_json::Value::Null);
    assert_eq!(
        v["data"]["echo"],
        serde_json::json!({"action":"greet","data":{"x":[1,2]}})
    );
    assert_eq!(
        v["data"]["agent_id"], "echo-a",
        "PAR_AGENT_ID reaches the agent"
    );

    let r = w.post("/invoke", r#"{"action": "#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "bad_request");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));

    let meta = w.get("/meta").expect("meta").json();
    assert_eq!(meta["name"], "echo");
    assert_eq!(meta["capabilities"], serde_json::json!(["echo"]));
    assert_eq!(meta["entrypoint"], "src.main:handler");

    let r = w.get("/no/such/route").expect("404");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");

    let m = w.get("/metrics").expect("metrics").text();
    assert!(
        m.contains(
            r#"par_worker_requests_total{agent_id="echo-a",route="/invoke",status="200"} 1"#
        ),
        "{m}"
    );
    assert!(m.contains(r#"route="/invoke",status="400"} 1"#), "{m}");
    assert!(
        m.contains("par_worker_request_duration_seconds_bucket"),
        "{m}"
    );
}

#[test]
fn multi_exports_public_private_and_unknown() {
    let mut w = Worker::start(&example("multi"), "multi-b", &[]);
    w.wait_ready(READY);
    let r = w.post("/exports/add", r#"{"values":[1,2,3.5]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"], serde_json::json!({"sum": 6.5}));

    // No function named word_count: the handler gets {"action": name, ...body}.
    let r = w.post("/exports/word-count", r#"{"text":"a b c d"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"], serde_json::json!({"words": 4}));

    for name in ["secret", "nope"] {
        let r = w.post(&format!("/exports/{name}"), "{}");
        assert_eq!(r.status, 404, "{name}: {}", r.text());
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(name));
    }
    let meta = w.get("/meta").expect("meta").json();
    let names: Vec<_> = meta["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].clone())
        .collect();
    assert_eq!(names, vec!["add", "word-count"]);
}

#[test]
fn flaky_exception_is_500_and_timeout_is_504() {
    let mut w = Worker::start(&example("flaky"), "flaky-c", &[("PAR_INVOKE_TIMEOUT", "1")]);
    w.wait_ready(READY);
    let r = w.post("/invoke", r#"{"action":"fail"}"#);
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({"status":"error","data":null,"error":"RuntimeError: requested failure"})
    );
    let t = Instant::now();
    let r = w.post("/invoke", r#"{"action":"sleep","seconds":10}"#);
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "timeout");
    // The 1 s timeout answered, not the end of the 10 s handler.
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    // The worker is still fine afterwards.
    assert_eq!(
        w.post("/invoke", "{}").json()["data"],
        serde_json::json!({"ok": true})
    );
}

#[test]
fn fifty_concurrent_requests_with_one_slow_are_all_answered() {
    let mut w = Worker::start(&example("flaky"), "flaky-conc", &[]);
    w.wait_ready(READY);
    let port = w.port;
    let slow = std::thread::spawn(move || {
        let t = Instant::now();
        let r = request(
            port,
            "POST",
            "/invoke",
            &[],
            Some(br#"{"action":"sleep","seconds":2}"#),
        )
        .expect("slow");
        (r.status, r.json(), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let fast: Vec<_> = (0..49)
        .map(|i| {
            std::thread::spawn(move || {
                let body = format!(r#"{{"n":{i}}}"#);
                request(port, "POST", "/invoke", &[], Some(body.as_bytes()))
                    .expect("fast")
                    .status
            })
        })
        .collect();
    for h in fast {
        assert_eq!(h.join().unwrap(), 200);
    }
    let fast_elapsed = t.elapsed();
    let (status, body, slow_elapsed) = slow.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["data"]["slept"], 2.0);
    eprintln!("49 fast requests took {fast_elapsed:?} while the slow one took {slow_elapsed:?}");
}

#[test]
fn sigkill_of_the_agent_host_makes_the_worker_exit_nonzero() {
    let mut w = Worker::start(&example("echo"), "echo-kill", &[]);
    w.wait_ready(READY);
    let worker_pid = w.child.id();
    let children =
        std::fs::read_to_string(format!("/proc/{worker_pid}/task/{worker_pid}/children"))
            .unwrap_or_default();
    let mut host_pids: Vec<String> = Vec::new();
    // The host may have been spawned from any runtime thread: look at all of them.
    for task in std::fs::read_dir(format!("/proc/{worker_pid}/task")).expect("tasks") {
        let task = task.expect("task").path();
        if let Ok(c) = std::fs::read_to_string(task.join("children")) {
            host_pids.extend(c.split_whitespace().map(String::from));
        }
    }
    host_pids.extend(children.split_whitespace().map(String::from));
    host_pids.sort();
    host_pids.dedup();
    assert_eq!(host_pids.len(), 1, "one agent host child: {host_pids:?}");
    let t = Instant::now();
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &host_pids[0]])
        .status()
        .expect("kill");
    assert!(ok.success());
    let status = w
        .wait_exit(Duration::from_secs(5))
        .expect("worker exits after its host is killed");
    eprintln!("worker exited {:?} after {:?}", status, t.elapsed());
    assert!(!status.success(), "non-zero exit: {status}");
    assert_eq!(status.code(), Some(1));
}

#[test]
fn crash_request_exits_the_worker_with_1() {
    let mut w = Worker::start(&example("flaky"), "flaky-crash", &[]);
    w.wait_ready(READY);
    let r = w.post("/invoke", r#"{"action":"crash"}"#);
    assert_eq!(r.status, 502, "{}", r.text());
    let status = w.wait_exit(Duration::from_secs(5)).expect("worker exits");
    assert_eq!(status.code(), Some(1));
}

#[test]
fn health_says_starting_while_the_agent_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = write_agent(
        dir.path(),
        &[
            ("agent.yaml", "name: slow-load\nversion: '1.0'\nentrypoint: src.main:handler\nmetadata:\n  version: 1.0.0\n"),
            ("src/__init__.py", ""),
            ("src/main.py", "import time\ntime.sleep(3)\n\ndef handler(ctx):\n    return ctx\n"),
        ],
    );
    let mut w = Worker::start(&pkg, "slow-load", &[]);
    let t = Instant::now();
    let r = loop {
        if let Ok(r) = w.get("/health") {
            break r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "port not bound at once"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(v["status"], "starting", "{v}");
    assert_eq!(v["agent_id"], "slow-load");
    let r = w.post("/invoke", "{}");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "not_ready");
    w.wait_ready(READY);
    assert_eq!(
        w.post("/invoke", r#"{"k":1}"#).json()["data"],
        serde_json::json!({"k":1})
    );
}

#[test]
fn import_error_in_agent_code_exits_78_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = write_agent(
        dir.path(),
        &[
            (
                "agent.yaml",
                "name: broken\nversion: '1.0'\nentrypoint: src.main:handler\n",
            ),
            ("src/__init__.py", ""),
            ("src/main.py", "import definitely_not_a_module_xyz\n"),
        ],
    );
    let port = free_port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_par"))
        .args([
            "worker",
            "--port",
            &port.to_string(),
            "--agent-id",
            "broken",
            "--package",
        ])
        .arg(&pkg)
        .env("PAR_HOME", par_home())
        .output()
        .expect("run worker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains("definitely_not_a_module_xyz"), "{text}");
}

#[test]
fn bad_manifest_and_missing_package_exit_78() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = write_agent(
        dir.path(),
        &[("agent.yaml", "name: Bad_Name\nentrypoint: nocolon\n")],
    );
    for (source, needle) in [
        (pkg, "name"),
        (dir.path().join("missing.apkg"), "does not exist"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_par"))
            .args(["worker", "--port", &free_port().to_string(), "--package"])
            .arg(&source)
            .env("PAR_HOME", par_home())
            .output()
            .expect("run worker");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(78), "{text}");
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let mut w = Worker::start(&example("flaky"), "flaky-term", &[]);
    w.wait_ready(READY);
    let port = w.port;
    let slow = std::thread::spawn(move || {
        request(
            port,
            "POST",
            "/invoke",
            &[],
            Some(br#"{"action":"sleep","seconds":1}"#),
        )
        .expect("in-flight")
    });
    std::thread::sleep(Duration::from_millis(300));
    w.sigterm();
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let status = w
        .wait_exit(Duration::from_secs(15))
        .expect("worker exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}
