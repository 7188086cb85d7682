//! Rollouts against the fake worker (which exits at once on SIGTERM, so a
//! request still running on it when it is stopped would fail): the old worker
//! finishes its in-flight request and open stream before it is stopped; a
//! new worker that never gets ready times out and the old one keeps serving.

mod supervisor_rollout_support;
mod supervisor_support;

use std::time::{Duration, Instant};

use supervisor_rollout_support::wait_rollout;
use supervisor_support::*;

fn put(sup: &Supervisor, agent: &str, body: &str) -> Resp {
    http(
        sup.port,
        "PUT",
        &format!("/supervisor/agents/{agent}"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap()
}

#[test]
fn the_old_worker_finishes_in_flight_requests_and_streams_before_it_stops() {
    let agents = "[[agents]]\nid = \"a\"\npackage = \"pkg\"\n";
    let sup = Supervisor::start("drain", "drain_timeout = \"20s\"\n", agents, &[]);
    let before = sup.wait_ready("a", Duration::from_secs(20));
    let old_pid = before["pid"].as_u64().unwrap();

    // A slow request and an SSE stream, both open on the old worker.
    let port = sup.port;
    let slow = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = get(port, "/agents/a/sleep?s=2").unwrap();
        (r.status, r.json()["pid"].as_u64(), t0.elapsed())
    });
    let mut sse = Conn::open(sup.port).unwrap();
    sse.send("GET", "/agents/a/sse?n=12&delay=0.2", &[], b"")
        .unwrap();
    let (status, _) = sse.read_head().unwrap();
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(300));

    let t0 = Instant::now();
    let r = put(
        &sup,
        "a",
        &format!(
            r#"{{"package":"{}","env_vars":{{"VERSION":"2"}}}}"#,
            sup.pkg()
        ),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let p = wait_rollout(&sup, "a", Duration::from_secs(20));
    let switched = t0.elapsed();
    assert_eq!(p["rollout"]["state"], "rolled_out", "{p}");
    assert_eq!(p["rollout"]["strategy"], "blue-green");
    // New requests reach the new worker while the old one drains.
    let r = get(sup.port, "/agents/a/whoami").unwrap();
    assert_eq!(r.status, 200);
    assert_ne!(r.json()["pid"].as_u64(), Some(old_pid));
    let p = sup.process("a").unwrap();
    let draining = p["draining"].as_array().unwrap();
    assert_eq!(draining.len(), 1, "{p}");
    assert_eq!(draining[0]["pid"].as_u64(), Some(old_pid));
    assert!(
        group_alive(old_pid as u32),
        "stopped while requests were in flight"
    );

    // Both finish on the old worker, complete.
    let (status, pid, took) = slow.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(pid, Some(old_pid));
    let mut events = 0;
    while let Some(chunk) = sse.read_chunk().unwrap() {
        events += String::from_utf8_lossy(&chunk)
            .matches("event: tick")
            .count();
    }
    assert_eq!(events, 12, "the stream was cut");
    // Then the old worker is stopped.
    wait_until(Duration::from_secs(10), "the old worker to stop", || {
        (!group_alive(old_pid as u32)).then_some(())
    });
    wait_until(Duration::from_secs(5), "no more draining workers", || {
        sup.process("a")
            .filter(|p| p["draining"].as_array().is_some_and(|d| d.is_empty()))
    });
    assert_eq!(sup.process("a").unwrap()["restarts"], 0);
    eprintln!(
        "drain figures: switched after {} ms; slow request took {} ms; 12/12 SSE events",
        switched.as_millis(),
        took.as_millis()
    );
}

#[test]
fn a_new_worker_that_never_gets_ready_times_out_and_the_old_one_serves_on() {
    let agents = "[[agents]]\nid = \"a\"\npackage = \"pkg\"\n";
    let sup = Supervisor::start("rolltimeout", "startup_timeout = \"2s\"\n", agents, &[]);
    let before = sup.wait_ready("a", Duration::from_secs(20));
    let r = put(
        &sup,
        "a",
        &format!(
            r#"{{"package":"{}","env_vars":{{"FAKE_NEVER_READY":"1"}}}}"#,
            sup.pkg()
        ),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    // While it starts, the old worker serves.
    let rolling = sup.process("a").unwrap();
    assert_eq!(rolling["rollout"]["state"], "rolling", "{rolling}");
    assert_eq!(
        get(sup.port, "/agents/a/x").unwrap().json()["pid"],
        before["pid"]
    );
    let p = wait_rollout(&sup, "a", Duration::from_secs(30));
    assert_eq!(p["rollout"]["state"], "rollout_failed", "{p}");
    let reason = p["rollout"]["reason"].as_str().unwrap();
    assert!(reason.contains("not ready within 2 s"), "{reason}");
    assert_eq!(p["state"], "ready");
    assert_eq!(p["pid"], before["pid"]);
    assert_eq!(p["restarts"], 0);
    let r = get(sup.port, "/agents/a/x").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["pid"], before["pid"]);
    // No worker left behind on the new port.
    assert!(p["rollout"]["worker_pid"].is_null());

    // Remove while a rollout is on its way: everything stops.
    let r = put(
        &sup,
        "a",
        &format!(
            r#"{{"package":"{}","env_vars":{{"FAKE_START_DELAY":"30"}}}}"#,
            sup.pkg()
        ),
    );
    assert_eq!(r.status, 202);
    let next_pid = wait_until(Duration::from_secs(10), "the new worker pid", || {
        sup.process("a")?["rollout"]["worker_pid"].as_u64()
    });
    let r = http(sup.port, "DELETE", "/supervisor/agents/a", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until(Duration::from_secs(10), "both workers gone", || {
        (!group_alive(next_pid as u32) && !group_alive(before["pid"].as_u64().unwrap() as u32))
            .then_some(())
    });
    assert!(sup.process("a").is_none());
}
