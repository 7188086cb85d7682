//! The supervisor's lifecycle end to end: real `par supervisor`, real worker
//! processes (the fake worker), real sockets.

mod supervisor_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use supervisor_support::*;

const AB: &str =
    "[[agents]]\nid = \"a\"\npackage = \"pkg\"\n[[agents]]\nid = \"b\"\npackage = \"pkg\"\n";

#[test]
fn three_agents_from_config_are_listed_ready_with_ports() {
    let agents = "[[agents]]\nid = \"a\"\npackage = \"pkg\"\n[[agents]]\nid = \"b\"\npackage = \"pkg\"\n[[agents]]\nid = \"c\"\npackage = \"pkg\"\n";
    let sup = Supervisor::start("three", "", agents, &[]);
    let mut ports = Vec::new();
    for id in ["a", "b", "c"] {
        let p = sup.wait_ready(id, Duration::from_secs(20));
        assert_eq!(p["process_id"], format!("par-{id}"));
        ports.push(p["port"].as_u64().unwrap());
        assert!(p["pid"].as_u64().unwrap() > 0);
        let r = get(sup.port, &format!("/agents/{id}/whoami")).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["agent_id"], id);
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "distinct ports: {ports:?}");
    let agents = get(sup.port, "/agents").unwrap().json();
    let ids: Vec<_> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_app_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(agents["agents"][0]["name"], "fake");
    assert_eq!(agents["agents"][0]["version"], "1.0.0");
}

/// Bounded keep-alive load on `path`; returns (ok, failed) counts.
fn load(
    port: u16,
    path: &'static str,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(u64, Vec<String>)>> {
    (0..threads)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut ok = 0;
                let mut failed = Vec::new();
                let mut conn = Conn::open(port).unwrap();
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match conn.request(
                        "POST",
                        path,
                        &[("Content-Type", "application/json")],
                        b"{\"x\":1}",
                    ) {
                        Ok(r) if r.status == 200 && r.json()["agent_id"] == "b" => ok += 1,
                        Ok(r) => failed.push(format!("{} {}", r.status, r.text())),
                        Err(e) => {
                            failed.push(e.to_string());
                            conn = Conn::open(port).unwrap();
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

#[test]
fn kill9_of_one_worker_under_load_on_another_and_the_fifth_crash_recovers() {
    // A run of 1 s counts as stable here (30 s by default), so each crash below
    // starts a fresh backoff: the fifth is recovered as fast as the first.
    let agents = "[[agents]]\nid = \"a\"\npackage = \"pkg\"\nstable_period_seconds = 1.0\n[[agents]]\nid = \"b\"\npackage = \"pkg\"\n";
    let sup = Supervisor::start("kill9", "", agents, &[]);
    sup.wait_ready("a", Duration::from_secs(20));
    sup.wait_ready("b", Duration::from_secs(20));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(sup.port, "/agents/b/invoke", 4, Arc::clone(&stop));
    let mut recoveries = Vec::new();
    for crash in 1..=5 {
        let before = sup.wait_ready("a", Duration::from_secs(20));
        let pid = before["pid"].as_u64().unwrap() as i32;
        // Its run counts as stable once its failure count reads 0 again.
        wait_until(Duration::from_secs(20), "a stable run", || {
            sup.process("a")
                .filter(|p| p["pid"] == before["pid"] && p["consecutive_failures"] == 0)
        });
        let t0 = Instant::now();
        unsafe_free_kill(pid, 9);
        // Not routed to the dead worker: 503 until the new one is ready, then 200 from a new pid.
        let new_pid = wait_until(Duration::from_secs(10), "a routable again", || {
            let r = get(sup.port, "/agents/a/whoami").ok()?;
            match r.status {
                200 if r.json()["pid"] != pid => Some(r.json()["pid"].as_u64().unwrap()),
                200 => None,
                503 => {
                    assert!(r.header("retry-after").is_some());
                    None
                }
                other => panic!("crash {crash}: unexpected {other}: {}", r.text()),
            }
        });
        recoveries.push(t0.elapsed());
        assert_ne!(new_pid as i32, pid);
        let p = sup.process("a").unwrap();
        assert!(p["restarts"].as_u64() >= Some(crash), "{p}");
        assert!(p["last_error"].as_str().unwrap().contains("SIGKILL"), "{p}");
    }
    // Each crash after a stable run started a fresh backoff: the supervisor
    // chose the first delay (0.2 s ± 20 %) every time, the fifth included.
    let logs = get(sup.port, "/supervisor/logs?process_id=par-a&limit=1000")
        .unwrap()
        .json();
    let delays: Vec<u64> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let m = e["message"].as_str()?;
            let ms = m.split(" in ").nth(1)?.strip_suffix(" ms")?;
            m.contains("-> backoff: restart #")
                .then(|| ms.parse().ok())?
        })
        .collect();
    assert!(delays.len() >= 5, "{delays:?}");
    assert!(
        delays.iter().all(|d| *d <= 240),
        "delays chosen: {delays:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for w in workers {
        let (o, f) = w.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    eprintln!(
        "recovery times after kill -9: {recoveries:?}; load on b: {ok} ok, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "requests to b failed: {failed:?}");
    assert!(ok > 50, "the load ran ({ok} requests)");
}

#[test]
fn a_crash_loop_backs_off_exponentially() {
    let agents = "[[agents]]\nid = \"loop\"\npackage = \"pkg\"\nenv_vars = { FAKE_CRASH_AFTER = \"0.05\" }\n";
    let sup = Supervisor::start("loop", "", agents, &[]);
    let t0 = Instant::now();
    let p = wait_until(Duration::from_secs(20), "four restarts", || {
        sup.process("loop")
            .filter(|p| p["restarts"].as_u64() >= Some(4))
    });
    // Delays of 0.2, 0.4 and 0.8 s (±20 %) came before the fourth restart.
    assert!(
        t0.elapsed() >= Duration::from_millis(1100),
        "{:?}",
        t0.elapsed()
    );
    assert!(p["consecutive_failures"].as_u64() >= Some(4), "{p}");
    assert!(p["last_error"].as_str().unwrap().contains("code 3"), "{p}");
}

#[test]
fn two_agents_killed_together_never_answer_for_each_other() {
    let sup = Supervisor::start("pair", "", AB, &[]);
    for round in 0..3 {
        let a = sup.wait_ready("a", Duration::from_secs(20));
        let b = sup.wait_ready("b", Duration::from_secs(20));
        unsafe_free_kill(a["pid"].as_u64().unwrap() as i32, 9);
        unsafe_free_kill(b["pid"].as_u64().unwrap() as i32, 9);
        let seen = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut back = [false, false];
        while Instant::now() < deadline && !(back[0] && back[1]) {
            for (i, id) in ["a", "b"].iter().enumerate() {
                if let Ok(r) = get(sup.port, &format!("/agents/{id}/whoami")) {
                    if r.status == 200 {
                        assert_eq!(
                            r.json()["agent_id"],
                            *id,
                            "round {round}: /agents/{id} answered by another agent"
                        );
                        back[i] = true;
                        seen.fetch_add(1, Ordering::Relaxed);
                    } else {
                        assert_eq!(r.status, 503, "{}", r.text());
                    }
                }
            }
        }
        assert!(back[0] && back[1], "round {round}: both agents came back");
    }
}

#[test]
fn a_bad_package_is_refused_or_failed_with_its_reason_and_others_are_unaffected() {
    let sup = Supervisor::start(
        "bad",
        "",
        "[[agents]]\nid = \"good\"\npackage = \"pkg\"\n",
        &[],
    );
    sup.wait_ready("good", Duration::from_secs(20));
    // A path that does not exist: 422 naming the field.
    let r = http(
        sup.port,
        "POST",
        "/supervisor/spawn",
        &[],
        br#"{"agent_id":"x","package_path":"/no/such/package.apkg"}"#,
    )
    .unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["error"]["field"], "package_path");
    // An invalid id.
    let body = format!(r#"{{"agent_id":"a/b","package_path":"{}"}}"#, sup.pkg());
    let r = http(sup.port, "POST", "/supervisor/spawn", &[], body.as_bytes()).unwrap();
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["field"], "agent_id");
    // A package that cannot load (the worker exits 78): failed at once, with the reason, no restarts.
    let body = format!(
        r#"{{"agent_id":"broken","package_path":"{}","env_vars":{{"FAKE_EXIT78":"ModuleNotFoundError: No module named 'missing_dep'"}}}}"#,
        sup.pkg()
    );
    let r = http(
        sup.port,
        "POST",
        "/supervisor/spawn?wait=true",
        &[],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("missing_dep"), "{}", r.text());
    // That it stays failed, with no restart, is the state machine's
    // decision (state::tests::crashes::a_failed_agent_stays_failed_as_time_passes).
    let p = sup.process("broken").unwrap();
    assert_eq!(p["state"], "failed");
    assert_eq!(p["restarts"], 0, "no restart storm: {p}");
    assert!(
        p["last_error"].as_str().unwrap().contains("missing_dep"),
        "{p}"
    );
    // Callers of the agent learn what kind of failure it is, not its output.
    let r = get(sup.port, "/agents/broken/x").unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("package_failure"), "{}", r.text());
    assert!(!r.text().contains("missing_dep"), "{}", r.text());
    // A duplicate is a conflict, not a 500.
    let body = format!(r#"{{"agent_id":"good","package_path":"{}"}}"#, sup.pkg());
    let r = http(sup.port, "POST", "/supervisor/spawn", &[], body.as_bytes()).unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    // The good agent never noticed.
    let r = get(sup.port, "/agents/good/x").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(sup.process("good").unwrap()["restarts"], 0);
    // A failed agent can be removed; then it is gone.
    let r = http(sup.port, "DELETE", "/supervisor/agents/broken", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(sup.process("broken").is_none());
    assert_eq!(get(sup.port, "/agents/broken/x").unwrap().status, 404);
}

#[test]
fn sigterm_under_load_completes_in_flight_requests_and_leaves_no_process() {
    let agents = "[[agents]]\nid = \"a\"\npackage = \"pkg\"\nenv_vars = { FAKE_CHILD = \"1\" }\n[[agents]]\nid = \"b\"\npackage = \"pkg\"\nenv_vars = { FAKE_IGNORE_TERM = \"1\" }\n";
    let mut sup = Supervisor::start("term", "shutdown_grace = \"6s\"\n", agents, &[]);
    let a = sup.wait_ready("a", Duration::from_secs(20));
    let b = sup.wait_ready("b", Duration::from_secs(20));
    let pgids = [
        a["pid"].as_u64().unwrap() as u32,
        b["pid"].as_u64().unwrap() as u32,
    ];
    let port = sup.port;
    let inflight: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let id = if i % 2 == 0 { "a" } else { "b" };
                http(port, "GET", &format!("/agents/{id}/sleep?s=1.5"), &[], b"").map(|r| r.status)
            })
        })
        .collect();
    wait_until(Duration::from_secs(20), "six requests in flight", || {
        let n: u64 = sup
            .processes()
            .iter()
            .filter_map(|p| p["resources"]["in_flight"].as_u64())
            .sum();
        (n == 6).then_some(())
    });
    let t0 = Instant::now();
    sup.signal(15);
    for t in inflight {
        assert_eq!(
            t.join().unwrap().unwrap(),
            200,
            "an in-flight request was cut"
        );
    }
    let code = sup.wait_exit(Duration::from_secs(15));
    let took = t0.elapsed();
    assert_eq!(code, Some(0), "log:\n{}", sup.log_text());
    assert!(
        took < Duration::from_secs(8),
        "stopped within the grace: {took:?}"
    );
    for pgid in pgids {
        assert!(
            !group_alive(pgid),
            "process group {pgid} survived the supervisor"
        );
    }
}

#[test]
fn workers_die_with_a_killed_supervisor() {
    let agents = "[[agents]]\nid = \"a\"\npackage = \"pkg\"\n";
    let mut sup = Supervisor::start("pdeath", "", agents, &[]);
    let a = sup.wait_ready("a", Duration::from_secs(20));
    let pid = a["pid"].as_u64().unwrap() as u32;
    sup.child.kill().unwrap();
    sup.child.wait().unwrap();
    wait_until(
        Duration::from_secs(5),
        "the worker to die with the supervisor",
        || (!pid_alive(pid)).then_some(()),
    );
}

#[test]
fn liveness_failures_restart_and_wrong_identity_is_never_routed() {
    let agents = "[[agents]]\nid = \"sick\"\npackage = \"pkg\"\nenv_vars = { FAKE_HEALTH_FAIL_AFTER = \"1\" }\n\
         [[agents]]\nid = \"impostor\"\npackage = \"pkg\"\nenv_vars = { FAKE_WRONG_ID = \"someone-else\" }\n";
    let sup = Supervisor::start(
        "live",
        "probe_interval = \"200ms\"\nprobe_failures = 2\n",
        agents,
        &[],
    );
    wait_until(Duration::from_secs(20), "a liveness restart", || {
        sup.process("sick")
            .filter(|p| p["restarts"].as_u64() >= Some(1))
            .map(|_| ())
    });
    assert!(sup.log_text().contains("liveness"), "the reason is logged");
    let p = sup.process("impostor").unwrap();
    assert_eq!(p["state"], "starting");
    assert!(
        p["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("someone-else"),
        "{p}"
    );
    let r = get(sup.port, "/agents/impostor/x").unwrap();
    assert_eq!(r.status, 503);
}

#[test]
fn stop_restart_and_remove() {
    let sup = Supervisor::start("ops", "stop_timeout = \"3s\"\n", AB, &[]);
    let a = sup.wait_ready("a", Duration::from_secs(20));
    let r = http(sup.port, "POST", "/supervisor/stop/par-a", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "stopped");
    assert!(!pid_alive(a["pid"].as_u64().unwrap() as u32));
    assert_eq!(get(sup.port, "/agents/a/x").unwrap().status, 503);
    let r = http(sup.port, "POST", "/supervisor/restart/par-a", &[], b"").unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    sup.wait_ready("a", Duration::from_secs(20));
    let b = sup.wait_ready("b", Duration::from_secs(20));
    let r = http(sup.port, "POST", "/supervisor/restart/b", &[], b"").unwrap();
    assert_eq!(r.status, 202);
    let b2 = wait_until(Duration::from_secs(20), "b restarted", || {
        sup.process("b")
            .filter(|p| p["state"] == "ready" && p["pid"] != b["pid"])
    });
    assert_eq!(b2["consecutive_failures"], 0);
    let r = http(sup.port, "DELETE", "/supervisor/agents/a", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(sup.process("a").is_none());
    assert_eq!(get(sup.port, "/agents/a/x").unwrap().status, 404);
    assert_eq!(
        http(sup.port, "POST", "/supervisor/stop/par-zz", &[], b"")
            .unwrap()
            .status,
        404
    );
    // The id is free again.
    let body = format!(r#"{{"agent_id":"a","package_path":"{}"}}"#, sup.pkg());
    let r = http(
        sup.port,
        "POST",
        "/supervisor/spawn?wait=true",
        &[],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["state"], "ready");
}

#[test]
fn a_worker_that_stays_over_its_memory_limit_is_restarted_by_the_watchdog() {
    let agents = "[[agents]]\nid = \"fat\"\npackage = \"pkg\"\nmemory_limit_mb = 32\nenv_vars = { FAKE_ALLOC_MB = \"80\" }\n\
                  [[agents]]\nid = \"slim\"\npackage = \"pkg\"\nmemory_limit_mb = 256\n";
    let sup = Supervisor::start("mem", "", agents, &[]);
    let p = sup.wait_ready("fat", Duration::from_secs(20));
    // The watchdog enforces explicit limits, and says so.
    let enforcement = p["limits"]["memory_enforcement"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(enforcement, "watchdog", "{p}");
    assert_eq!(p["limits"]["memory_limit_source"], "explicit");
    if enforcement == "watchdog" {
        let p = wait_until(Duration::from_secs(20), "a watchdog restart", || {
            sup.process("fat")
                .filter(|p| p["restarts"].as_u64() >= Some(1))
        });
        assert!(
            p["last_error"]
                .as_str()
                .unwrap()
                .contains("over the limit of 32 MB"),
            "{p}"
        );
    }
    let slim = sup.process("slim").unwrap();
    assert_eq!(slim["restarts"], 0);
    let usage = wait_until(Duration::from_secs(10), "usage sampled", || {
        sup.process("slim")
            .filter(|p| p["resources"]["rss_mb"].as_f64().is_some())
    });
    assert!(
        usage["resources"]["rss_mb"].as_f64().unwrap() > 1.0,
        "{usage}"
    );
    assert!(usage["resources"]["threads"].as_u64().unwrap() >= 1);
}

/// `spawn?wait=true` of an agent that exits while starting, with no restart
/// coming (policy `never`), answers at the exit with the state in the body —
/// not when the wait's timeout runs out.
#[test]
fn spawn_wait_answers_an_exit_during_start() {
    let sup = Supervisor::start("waitexit", "", "", &[]);
    let body = format!(
        r#"{{"agent_id":"gone","package_path":"{}","restart_policy":"never","env_vars":{{"FAKE_NEVER_READY":"1","FAKE_CRASH_AFTER":"0.3"}}}}"#,
        sup.pkg()
    );
    let t = Instant::now();
    let r = http(
        sup.port,
        "POST",
        "/supervisor/spawn?wait=true&timeout=60",
        &[],
        body.as_bytes(),
    )
    .unwrap();
    let took = t.elapsed();
    eprintln!("spawn?wait answered {} after {took:?}", r.status);
    assert_eq!(r.status, 500, "{}", r.text());
    let v = r.json();
    assert_eq!(v["state"], "crashed", "{v}");
    assert_eq!(v["error"]["code"], "agent_not_running", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("code 3"),
        "{v}"
    );
    // Far below the 60 s timeout it would otherwise have waited for.
    assert!(took < Duration::from_secs(30), "{took:?}");
}
