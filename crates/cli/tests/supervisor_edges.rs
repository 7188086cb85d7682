//! Edges of the lifecycle and of what status says about it: a worker-port
//! range that is full for a while, a rollout superseded while someone waits
//! for it, and status figures that stay true as time passes. (Agent ids
//! that look like process ids are refused: `supervisor_agent_ids.rs`.)

mod supervisor_support;

use std::net::TcpListener;
use std::time::Duration;

use supervisor_support::*;

#[test]
fn a_full_port_range_waits_for_a_free_port() {
    let held = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let range = format!("{port}-{port}");
    let sup = Supervisor::start(
        "fullports",
        "",
        "[[agents]]\nid = \"w\"\npackage = \"pkg\"\nrestart_delay_seconds = 0.1\nmax_restart_delay_seconds = 0.5\n",
        &[("PAR_WORKER_PORTS", range.as_str())],
    );
    let p = wait_until(Duration::from_secs(20), "w waiting for a port", || {
        sup.process("w").filter(|p| p["state"] == "backoff")
    });
    assert_eq!(p["last_error_class"], "no_free_port", "{p}");
    assert!(
        !p["last_error"].as_str().unwrap().contains("package_path"),
        "{p}"
    );
    drop(held);
    let p = sup.wait_ready("w", Duration::from_secs(20));
    assert_eq!(p["port"], port);
}

#[test]
fn a_put_superseded_while_waiting_says_so() {
    let sup = Supervisor::start(
        "supersede",
        "",
        "[[agents]]\nid = \"s\"\npackage = \"pkg\"\n",
        &[],
    );
    sup.wait_ready("s", Duration::from_secs(20));
    let slow = format!(
        r#"{{"package_path":"{}","env_vars":{{"FAKE_START_DELAY":"3","V":"2"}}}}"#,
        sup.pkg()
    );
    let port = sup.port;
    let waiting = std::thread::spawn(move || {
        http(
            port,
            "PUT",
            "/supervisor/agents/s?wait=true&timeout=60",
            &[],
            slow.as_bytes(),
        )
        .unwrap()
    });
    wait_until(
        Duration::from_secs(10),
        "the first rollout under way",
        || {
            sup.process("s")
                .filter(|p| p["rollout"]["state"] == "rolling")
        },
    );
    let newer = format!(
        r#"{{"package_path":"{}","env_vars":{{"V":"3"}}}}"#,
        sup.pkg()
    );
    let r = http(
        sup.port,
        "PUT",
        "/supervisor/agents/s",
        &[],
        newer.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let first = waiting.join().unwrap();
    assert_eq!(first.status, 409, "{}", first.text());
    assert_eq!(first.json()["outcome"], "superseded");
}

#[test]
fn status_figures_stay_true_as_time_passes() {
    let agents = "[[agents]]\nid = \"c\"\npackage = \"pkg\"\nrestart_delay_seconds = 6\nmax_restart_delay_seconds = 6\nstable_period_seconds = 1\nenv_vars = { FAKE_CRASH_AFTER = \"0.5\" }\n";
    let sup = Supervisor::start("drift", "", agents, &[]);
    let first = wait_until(Duration::from_secs(20), "c in backoff", || {
        sup.process("c").filter(|p| p["state"] == "backoff")
    });
    // The countdown moves with the clock while the state stays (the
    // arithmetic is http::api::view's tests, with a hand-moved clock).
    let a = first["next_restart_in_seconds"].as_f64().unwrap();
    let later = wait_until(Duration::from_secs(5), "the countdown to move", || {
        sup.process("c").filter(|p| {
            p["next_restart_in_seconds"]
                .as_f64()
                .is_some_and(|b| a - b >= 1.0)
        })
    });
    assert_eq!(later["state"], "backoff", "{later}");
}

#[test]
fn the_failure_count_reads_zero_after_a_stable_run() {
    let agents = "[[agents]]\nid = \"f\"\npackage = \"pkg\"\nstable_period_seconds = 1\n";
    let sup = Supervisor::start("stable", "", agents, &[]);
    let p = sup.wait_ready("f", Duration::from_secs(20));
    unsafe_free_kill(p["pid"].as_i64().unwrap() as i32, 9);
    let again = wait_until(Duration::from_secs(20), "f restarted", || {
        sup.process("f")
            .filter(|p| p["state"] == "ready" && p["restarts"] == 1)
    });
    assert_eq!(again["consecutive_failures"], 1, "{again}");
    // One stable period (1 s) later it reads 0, the same worker still up.
    let settled = wait_until(Duration::from_secs(10), "the count to read 0", || {
        sup.process("f").filter(|p| p["consecutive_failures"] == 0)
    });
    assert_eq!(settled["pid"], again["pid"], "{settled}");
}

#[test]
fn last_error_is_the_last_runs_own() {
    // Each run prints which run it is, then crashes.
    let agents = "[[agents]]\nid = \"r\"\npackage = \"pkg\"\nrestart_policy = \"always\"\nenv_vars = { FAKE_CRASH_AFTER = \"0.3\", FAKE_ERROR_LINE = \"1\" }\n";
    let sup = Supervisor::start("lasterr", "", agents, &[]);
    let p = wait_until(Duration::from_secs(30), "three runs", || {
        sup.process("r")
            .filter(|p| p["restarts"].as_u64() >= Some(3))
    });
    let err = p["last_error"].as_str().unwrap_or("").to_string();
    let runs = err.matches("run ").count();
    assert!(runs <= 1, "lines of several runs: {err}");
}
