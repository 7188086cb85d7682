//! Liveness through the agent host, end to end with the real worker and real
//! Python (under per-agent uids when run as root): an agent whose handler
//! blocks its event loop forever still answers the worker's `/health`, but
//! not the worker's pings, which its event loop must answer: it is restarted,
//! the reason named in its status. An agent busy awaiting for longer than the
//! whole liveness budget, or blocking a thread of its sync pool, is not.

mod supervisor_support;

use std::time::Duration;

use serde_json::Value;
use supervisor_support::*;

const READY: Duration = Duration::from_secs(120);

/// Spins in its coroutine when asked: the event loop never runs again.
const BLOCKER: &str = r#"
import os

async def handler(c):
    if c.get("spin"):
        while True:
            pass
    return {"pid": os.getpid()}
"#;

/// Awaits (async) or sleeps in the sync pool (export `nap`) as long as asked.
const BUSY: &str = r#"
import asyncio, os, time

async def handler(c):
    await asyncio.sleep(c.get("seconds", 0))
    return {"pid": os.getpid(), "slept": c.get("seconds", 0)}

def nap(c):
    time.sleep(c.get("seconds", 0))
    return {"napped": c.get("seconds", 0)}
"#;

/// Pinged every 200 ms, each ping given 300 ms, not live after 3 misses:
/// about a second of a blocked event loop.
const QUICK: &str = "env_vars = { PAR_LIVENESS_INTERVAL = \"200ms\", PAR_LIVENESS_TIMEOUT = \"300ms\", PAR_LIVENESS_FAILURES = \"3\" }";

#[test]
fn a_blocked_event_loop_is_restarted_and_a_busy_one_is_not() {
    let dir = TempDir::new("liveness");
    let blocker = agent(dir.path(), "blocker", BLOCKER, &[]);
    let busy = agent(dir.path(), "busy", BUSY, &[]);
    std::fs::write(
        busy.join("agent.yaml"),
        "name: busy\nversion: '1.0'\nentrypoint: src.main:handler\nmetadata:\n  version: 0.1.0\n  \
         sub_agents:\n    - name: nap\n      description: sleeps in a thread\n      public: true\n",
    )
    .unwrap();
    let agents = format!(
        "[[agents]]\nid = \"blocker\"\npackage = \"{}\"\n{QUICK}\n\
         [[agents]]\nid = \"busy\"\npackage = \"{}\"\n{QUICK}\n",
        blocker.display(),
        busy.display()
    );
    let uids = if is_root() {
        supervisor_support::uid_ranges::LIVENESS
    } else {
        "off"
    };
    let sup = Supervisor::start_with("liveness", "", &agents, &[("PAR_AGENT_UIDS", uids)]);
    let b = sup.wait_ready("blocker", READY);
    let first = b["pid"].as_u64().unwrap();
    let busy_pid = sup.wait_ready("busy", READY)["pid"].as_u64().unwrap();

    // Busy for 3 s, three times the budget of a blocked loop: awaiting in a
    // coroutine, and sleeping in a thread of the sync pool.
    let port = sup.port;
    let waiting = std::thread::spawn(move || try_invoke(port, "busy", r#"{"seconds":3}"#));
    let napping = std::thread::spawn(move || {
        http(
            port,
            "POST",
            "/agents/busy/exports/nap",
            &[("Content-Type", "application/json"), ("Authorization", "")],
            br#"{"seconds":3}"#,
        )
    });

    // The blocker spins: its worker's /health still answers, its pings do not.
    let spun = std::time::Instant::now();
    let spinning = std::thread::spawn(move || try_invoke(port, "blocker", r#"{"spin":true}"#));
    let p = wait_until(Duration::from_secs(60), "the blocker restarted", || {
        sup.process("blocker")
            .filter(|p| p["restarts"].as_u64() >= Some(1))
    });
    eprintln!("restarted {:?} after the spin began: {p}", spun.elapsed());
    let error = p["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("event loop") && error.contains("liveness"),
        "the reason is named: {p}"
    );
    assert_eq!(p["last_error_class"], "agent_unresponsive", "{p}");
    let _ = spinning.join();
    let p = wait_until(READY, "the blocker ready again", || {
        sup.process("blocker")
            .filter(|p| p["state"] == "ready" && p["pid"].as_u64() != Some(first))
    });
    let r = try_invoke(sup.port, "blocker", "{}").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let _: Value = p;

    let r = waiting.join().unwrap().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["slept"], 3);
    let r = napping.join().unwrap().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["napped"], 3);
    let p = sup.process("busy").unwrap();
    assert_eq!(
        p["pid"].as_u64(),
        Some(busy_pid),
        "busy is not restarted: {p}"
    );
    assert_eq!(p["restarts"], 0, "{p}");
}
