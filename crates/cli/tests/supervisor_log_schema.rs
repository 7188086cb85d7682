//! One JSON schema for every line the supervisor writes to stdout (what
//! CloudWatch Logs receives): a real supervisor with the real worker is
//! started, spawns agents, has a worker killed, proxies a request (access
//! log on), rolls an agent out to a new version and is stopped by SIGTERM;
//! every line of its stdout is then read and checked, and the events of
//! each step are looked for.

mod supervisor_support;

use std::time::Duration;

use serde_json::{Map, Value};
use supervisor_support::*;

const LONG: Duration = Duration::from_secs(120);

/// The keys of every line, whatever wrote it.
const REQUIRED: [&str; 7] = [
    "timestamp",
    "level",
    "source",
    "agent_id",
    "process_id",
    "message",
    "fields",
];
/// The keys of a line an agent's worker printed, besides [`REQUIRED`].
const AGENT_ONLY: [&str; 2] = ["seq", "stream"];
const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// An agent printing on both streams at import, one of them a JSON line of
/// its own with keys the schema also has.
const MAIN: &str = r#"import json, sys

print("plain-stdout-marker", flush=True)
print("plain-stderr-marker", file=sys.stderr, flush=True)
print(json.dumps({"levelname": "WARNING", "msg": "json-marker", "agent_id": "spoofed", "rows": 3}), flush=True)


def handler(context):
    return {"version": VERSION}
"#;

fn main_py(version: &str) -> String {
    format!("VERSION = {version:?}\n{MAIN}")
}

/// Whether `ts` is RFC 3339 in UTC with milliseconds: `2025-01-01T12:00:00.123Z`.
fn is_millis_utc(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

/// What is wrong with `line` against the schema, if anything.
fn schema_problem(line: &str) -> Option<String> {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Some(format!("not JSON ({e})")),
    };
    let Some(o) = v.as_object() else {
        return Some("not a JSON object".into());
    };
    for k in REQUIRED {
        if !o.contains_key(k) {
            return Some(format!("no {k:?}"));
        }
    }
    let source = o["source"].as_str().unwrap_or_default();
    let allowed: Vec<&str> = match source {
        "supervisor" => REQUIRED.to_vec(),
        "agent" => REQUIRED.iter().chain(AGENT_ONLY.iter()).copied().collect(),
        other => return Some(format!("source {other:?} is not supervisor or agent")),
    };
    if let Some(extra) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Some(format!("key {extra:?} at the top level of a {source} line"));
    }
    if !o["timestamp"].as_str().is_some_and(is_millis_utc) {
        return Some("timestamp is not RFC 3339 UTC with milliseconds".into());
    }
    if !o["level"].as_str().is_some_and(|l| LEVELS.contains(&l)) {
        return Some(format!("level {} is not one of {LEVELS:?}", o["level"]));
    }
    if !o["message"].is_string() {
        return Some("message is not a string".into());
    }
    if !o["fields"].is_object() {
        return Some("fields is not an object".into());
    }
    for k in ["agent_id", "process_id"] {
        if !(o[k].is_string() || o[k].is_null()) {
            return Some(format!("{k} is neither a string nor null"));
        }
    }
    if source == "agent" {
        if !o["seq"].is_u64() {
            return Some("an agent line without a numeric seq".into());
        }
        if !matches!(o["stream"].as_str(), Some("stdout" | "stderr")) {
            return Some(format!("stream {} is not stdout or stderr", o["stream"]));
        }
        if !o["agent_id"].is_string() || !o["process_id"].is_string() {
            return Some("an agent line without its agent_id and process_id".into());
        }
    }
    None
}

fn field<'a>(v: &'a Value, k: &str) -> &'a Value {
    &v["fields"][k]
}

#[test]
fn every_line_of_a_supervisor_run_has_the_one_schema() {
    let dir = TempDir::new("logschema-pkgs");
    let a = agent(dir.path(), "a", &main_py("1.0.0"), &[]);
    let b1 = versioned_agent(dir.path(), "b", "1.0.0", &main_py("1.0.0"), &[]);
    let b2 = versioned_agent(dir.path(), "b", "2.0.0", &main_py("2.0.0"), &[]);
    let mut sup = Supervisor::start_logging(
        "logschema",
        "access_log = true\n",
        &agent_toml("a", &a),
        &[("PAR_PACKAGE_ROOTS", &dir.path().to_string_lossy())],
        true,
    );

    // Start: the declared agent comes up.
    let first = sup.wait_ready("a", LONG);
    // Spawn: a second agent through the API.
    let r = sup.spawn_wait(&format!(
        r#"{{"agent_id":"b","package_path":"{}"}}"#,
        b1.display()
    ));
    assert_eq!(r.status, 201, "{}", r.text());
    // A request, with the access log on.
    let r = http(
        sup.port,
        "POST",
        "/agents/a/invoke?attempt=1",
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // A crash: kill -9 of a's worker; it is restarted.
    unsafe_free_kill(first["pid"].as_u64().unwrap() as i32, 9);
    wait_until(LONG, "a restarted and ready", || {
        sup.process("a")
            .filter(|p| p["state"] == "ready" && p["pid"] != first["pid"])
    });
    // A rollout: b to its version 2.
    let r = http(
        sup.port,
        "PATCH",
        "/supervisor/agents/b?wait=true&timeout=120",
        &[("Content-Type", "application/json")],
        format!(r#"{{"package_path":"{}"}}"#, b2.display()).as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["rollout"]["state"], "rolled_out", "{}", r.text());
    let r = invoke(sup.port, "b", "{}");
    assert_eq!(r.json()["data"]["version"], "2.0.0", "{}", r.text());
    // Shutdown.
    sup.signal(15);
    assert_eq!(sup.wait_exit(Duration::from_secs(60)), Some(0));

    let text = sup.log_text();
    let stderr =
        std::fs::read_to_string(sup.dir.path().join("supervisor.stderr")).unwrap_or_default();
    let mut bad = Vec::new();
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match schema_problem(line) {
            Some(why) => bad.push(format!("line {}: {why}: {line}", n + 1)),
            None => lines.push(serde_json::from_str::<Value>(line).unwrap()),
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} lines break the schema:\n{}\n(stderr:\n{stderr})",
        bad.len(),
        text.lines().count(),
        bad.join("\n")
    );
    // Its stderr (which the container's log driver sends along too) has
    // nothing outside the schema either: nothing at all in a run like this.
    assert_eq!(stderr, "", "the supervisor wrote to stderr");
    eprintln!(
        "{} lines checked ({} of the supervisor, {} of agents)",
        lines.len(),
        lines.iter().filter(|v| v["source"] == "supervisor").count(),
        lines.iter().filter(|v| v["source"] == "agent").count()
    );

    let find = |what: &str, f: &dyn Fn(&Value) -> bool| -> Value {
        lines
            .iter()
            .find(|v| f(v))
            .cloned()
            .unwrap_or_else(|| panic!("no line for {what} in:\n{text}"))
    };
    let sup_line = |v: &Value, agent: Option<&str>| {
        v["source"] == "supervisor" && agent.is_none_or(|a| v["agent_id"] == a)
    };
    let says = |v: &Value, needle: &str| v["message"].as_str().is_some_and(|m| m.contains(needle));

    // Start.
    let listening = find("the start", &|v| {
        sup_line(v, None) && v["message"] == "supervisor listening"
    });
    assert_eq!(field(&listening, "port"), sup.port, "{listening}");
    assert_eq!(listening["agent_id"], Value::Null);
    // Spawn: b's own events name it, and its worker's lines are re-emitted
    // under its ids.
    find("b's start", &|v| {
        sup_line(v, Some("b")) && says(v, "-> ready")
    });
    find("b's worker output", &|v| {
        v["source"] == "agent" && v["agent_id"] == "b" && v["process_id"] == "par-b"
    });
    // The agent's output, both streams, with its ids set by the supervisor.
    let out = find("a's stdout", &|v| {
        v["source"] == "agent" && v["agent_id"] == "a" && v["message"] == "plain-stdout-marker"
    });
    assert_eq!(
        (&out["stream"], &out["level"], &out["process_id"]),
        (
            &Value::from("stdout"),
            &Value::from("info"),
            &Value::from("par-a")
        ),
        "{out}"
    );
    let err = find("a's stderr", &|v| {
        v["source"] == "agent" && v["message"] == "plain-stderr-marker"
    });
    assert_eq!(err["stream"], "stderr", "{err}");
    let json = find("a's JSON line", &|v| {
        v["source"] == "agent" && v["agent_id"] == "a" && v["message"] == "json-marker"
    });
    assert_eq!(json["level"], "warn", "{json}");
    assert_eq!(field(&json, "rows"), 3, "{json}");
    assert_eq!(field(&json, "agent_id"), "spoofed", "{json}");
    // The worker's own events, in the same schema on its stdout, keep
    // their fields once re-emitted (and none of the schema's keys).
    let worker = find("a worker's own event", &|v| {
        v["source"] == "agent"
            && field(v, "target")
                .as_str()
                .is_some_and(|t| t.starts_with("par_worker"))
    });
    let wf: &Map<String, Value> = worker["fields"].as_object().unwrap();
    assert!(
        !wf.contains_key("source") && !wf.contains_key("timestamp"),
        "{worker}"
    );
    // The request.
    let access = find("the access log", &|v| {
        sup_line(v, Some("a")) && field(v, "target") == "par::access"
    });
    assert_eq!(field(&access, "status"), 200, "{access}");
    assert_eq!(
        (field(&access, "method"), field(&access, "path")),
        (&Value::from("POST"), &Value::from("/invoke")),
        "the worker's path, its query left out: {access}"
    );
    assert_eq!(access["level"], "info");
    // The crash.
    let crash = find("a's crash", &|v| {
        sup_line(v, Some("a")) && says(v, "crashed")
    });
    assert_eq!(crash["level"], "error", "{crash}");
    assert!(says(&crash, "SIGKILL"), "{crash}");
    // The rollout.
    find("b's rollout", &|v| {
        sup_line(v, Some("b")) && says(v, "rollout to")
    });
    find("b's rollout done", &|v| {
        sup_line(v, Some("b")) && says(v, "rolled out to")
    });
    // The shutdown.
    find("the signal", &|v| {
        sup_line(v, None) && v["message"] == "SIGTERM received"
    });
    find("the drain", &|v| {
        sup_line(v, None) && says(v, "shutting down")
    });
    let stopped = find("the stop", &|v| {
        sup_line(v, None) && v["message"] == "supervisor stopped"
    });
    assert!(field(&stopped, "took_ms").is_u64(), "{stopped}");
}

#[test]
fn the_old_shapes_are_refused() {
    // The supervisor's tracing line and the re-emitted line before one
    // schema: each is caught.
    let old_supervisor = r#"{"timestamp":"2025-01-01T12:00:00.123456Z","level":"INFO","message":"supervisor listening","port":80,"agent":"a","target":"par_supervisor::supervisor"}"#;
    let old_agent = r#"{"seq":4,"timestamp":"2025-01-01T12:00:00.123Z","level":"info","process_id":"par-echo","agent_id":"echo","stream":"stdout","message":"agent ready","fields":{"elapsed_ms":215}}"#;
    assert!(schema_problem(old_supervisor).is_some());
    assert!(schema_problem(old_agent).is_some());
    let new = r#"{"timestamp":"2025-01-01T12:00:00.123Z","level":"info","source":"agent","agent_id":"echo","process_id":"par-echo","message":"agent ready","fields":{},"seq":4,"stream":"stdout"}"#;
    assert_eq!(schema_problem(new), None);
    let supervisor_with_seq = new.replace("\"source\":\"agent\"", "\"source\":\"supervisor\"");
    assert!(schema_problem(&supervisor_with_seq).is_some());
}
