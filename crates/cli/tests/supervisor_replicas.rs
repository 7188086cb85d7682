//! Many replicas or none, end to end with real workers and real Python
//! agents: load shared between replicas, a replica killed under load, the
//! per-replica concurrency limit and its bounded queue, scale to zero and
//! the wake that follows, and the autoscaler.

mod supervisor_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use supervisor_support::*;

const READY: Duration = Duration::from_secs(120);

fn example(name: &str) -> String {
    format!("{}/examples/agents/{name}", repo_root().display())
}

fn agent_toml(id: &str, package: &str, extra: &str) -> String {
    format!("[[agents]]\nid = \"{id}\"\npackage = \"{package}\"\n{extra}\n")
}

fn processes_of(sup: &Supervisor, id: &str) -> Vec<Value> {
    sup.processes()
        .into_iter()
        .filter(|p| p["agent_id"] == id)
        .collect()
}

fn wait_ready_replicas(sup: &Supervisor, id: &str, n: u64, timeout: Duration) -> Value {
    wait_until(timeout, &format!("{n} ready replicas of {id}"), || {
        let a = sup.agent_status(id);
        (a["ready_replicas"] == n && a["desired_replicas"] == n).then_some(a)
    })
}

#[test]
fn two_replicas_share_the_load_and_one_killed_fails_only_its_own_requests() {
    let agents = agent_toml("r", &example("flaky"), "replicas = 2");
    let sup = Supervisor::start_with("replicas", "", &agents, &[]);
    wait_ready_replicas(&sup, "r", 2, READY);
    let procs = processes_of(&sup, "r");
    let ids: Vec<_> = procs.iter().map(|p| p["process_id"].clone()).collect();
    assert_eq!(ids, ["par-r", "par-r-1"]);

    // 200 requests, 8 at a time: each replica takes at least 30 %.
    let served: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (served, port) = (Arc::clone(&served), sup.port);
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let r = try_invoke_as_admin(port, "r", r#"{"action":"sleep","seconds":0.02}"#)
                        .unwrap();
                    assert_eq!(r.status, 200, "{}", r.text());
                    let by = r
                        .header("x-par-process")
                        .expect("x-par-process")
                        .to_string();
                    *served.lock().unwrap().entry(by).or_default() += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let served = served.lock().unwrap().clone();
    eprintln!("served by: {served:?}");
    for p in ["par-r", "par-r-1"] {
        let n = served.get(p).copied().unwrap_or(0);
        assert!(n >= 60, "{p} served {n} of 200: {served:?}");
    }

    // kill -9 of one replica under 4 request loops: the only failures are
    // requests that were on it (at most one per loop), and they say so.
    let victim = procs[1]["pid"].as_u64().unwrap() as u32;
    let stop = Arc::new(AtomicBool::new(false));
    // (status, the replica that answered) of every failed request
    type Failures = Arc<Mutex<Vec<(u16, Option<String>)>>>;
    let failures: Failures = Arc::default();
    let ok = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failures, ok, port) = (
                Arc::clone(&stop),
                Arc::clone(&failures),
                Arc::clone(&ok),
                sup.port,
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = try_invoke_as_admin(port, "r", r#"{"action":"sleep","seconds":0.02}"#)
                        .unwrap();
                    if r.status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let by = r.header("x-par-process").map(str::to_string);
                        failures.lock().unwrap().push((r.status, by));
                    }
                }
            })
        })
        .collect();
    wait_until(
        Duration::from_secs(20),
        "the request loops under way",
        || (ok.load(Ordering::Relaxed) >= 8).then_some(()),
    );
    kill_group(victim);
    // Load goes on until the replica is back and has served some more.
    wait_until(READY, "par-r-1 ready again as a new process", || {
        sup.processes()
            .into_iter()
            .find(|p| p["process_id"] == "par-r-1")
            .filter(|p| p["state"] == "ready" && p["pid"].as_u64() != Some(victim as u64))
    });
    let after = ok.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(20), "more requests served", || {
        (ok.load(Ordering::Relaxed) >= after + 20).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for t in loops {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    eprintln!(
        "after the kill: {} ok, failures {failures:?}",
        ok.load(Ordering::Relaxed)
    );
    assert!(failures.len() <= 4, "{failures:?}");
    for (status, by) in &failures {
        assert!(matches!(status, 502 | 503), "{failures:?}");
        assert_eq!(by.as_deref(), Some("par-r-1"), "{failures:?}");
    }
    assert!(ok.load(Ordering::Relaxed) > 20);
}

#[test]
fn one_in_flight_per_replica_and_a_queue_of_two() {
    let agents = agent_toml(
        "q",
        &example("flaky"),
        "max_concurrency = 1\nmax_queue = 2\nqueue_timeout = \"60s\"",
    );
    let sup = Supervisor::start_with("queue", "", &agents, &[]);
    sup.wait_ready("q", READY);
    let t0 = Instant::now();
    // (request, status, when answered, Retry-After) in the order answered
    type Done = Arc<Mutex<Vec<(usize, u16, Duration, Option<String>)>>>;
    let done: Done = Arc::default();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (done, port) = (Arc::clone(&done), sup.port);
            // In order: the previous ones are in flight or queued first
            // (else the fourth may overtake the third and take its place).
            if i > 0 {
                wait_until(
                    Duration::from_secs(20),
                    "the earlier requests admitted",
                    || {
                        let a = sup.agent_status("q");
                        let n = a["in_flight"].as_u64()? + a["queued"].as_u64()?;
                        (n == i as u64).then_some(())
                    },
                );
            }
            std::thread::spawn(move || {
                let r =
                    try_invoke_as_admin(port, "q", r#"{"action":"sleep","seconds":2}"#).unwrap();
                let retry = r.header("retry-after").map(str::to_string);
                done.lock()
                    .unwrap()
                    .push((i, r.status, t0.elapsed(), retry));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let done = done.lock().unwrap().clone();
    eprintln!("finished (request, status, at, retry-after): {done:?}");
    // The fourth is refused at once, before the first has finished.
    assert_eq!(done[0].0, 3, "{done:?}");
    assert_eq!(done[0].1, 503);
    assert!(done[0].3.is_some(), "Retry-After: {done:?}");
    // The three others succeed, in the order they came.
    let order: Vec<_> = done[1..].iter().map(|d| (d.0, d.1)).collect();
    assert_eq!(order, [(0, 200), (1, 200), (2, 200)]);
}

#[test]
fn an_idle_agent_scales_to_zero_and_wakes_for_requests() {
    let agents = agent_toml("z", &example("echo"), "idle_timeout = \"1s\"");
    let sup = Supervisor::start_with("idle", "", &agents, &[]);
    // Ready for a second only: on a loaded machine it may be idle again
    // before it is seen ready; a request wakes it for another second.
    let p = wait_until(READY, "z seen ready", || {
        let p = sup.process("z")?;
        if p["state"] == "idle" {
            assert_eq!(
                try_invoke_as_admin(sup.port, "z", "{}").unwrap().status,
                200
            );
            return sup.process("z").filter(|p| p["state"] == "ready");
        }
        (p["state"] == "ready").then_some(p)
    });
    let worker = p["pid"].as_u64().unwrap() as u32;
    assert!(group_alive(worker));
    let a = wait_until(Duration::from_secs(30), "z idle", || {
        let a = sup.agent_status("z");
        (a["state"] == "idle").then_some(a)
    });
    assert_eq!(a["desired_replicas"], 0, "{a}");
    let p = sup.process("z").unwrap();
    assert_eq!(
        (p["state"].clone(), p["pid"].clone()),
        ("idle".into(), Value::Null)
    );
    wait_until(
        Duration::from_secs(10),
        "the worker and its host gone",
        || (!group_alive(worker)).then_some(()),
    );

    // 20 requests at once: the first wakes it, all are held until it is ready.
    let wakeups = |sup: &Supervisor| {
        let m = get(sup.port, "/metrics").unwrap().text();
        m.lines()
            .find_map(|l| l.strip_prefix("par_agent_wakeups_total{agent_id=\"z\"} "))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    let before = wakeups(&sup);
    let t = Instant::now();
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let port = sup.port;
            std::thread::spawn(move || {
                try_invoke_as_admin(port, "z", &format!(r#"{{"n":{i}}}"#)).unwrap()
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.json()["data"]["echo"]["n"], i);
    }
    eprintln!("20 held requests answered {:?} after the wake", t.elapsed());
    assert_eq!(wakeups(&sup), before + 1, "one wake-up for the 20 requests");
}

#[test]
fn a_wake_that_fails_answers_the_held_requests_at_once() {
    let dir = TempDir::new("idle-broken");
    let pkg = dir.path().join("agent");
    std::fs::create_dir_all(pkg.join("src")).unwrap();
    std::fs::write(
        pkg.join("agent.yaml"),
        "name: breaks\nversion: '1.0'\nentrypoint: src.main:handler\nmetadata:\n  version: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(pkg.join("src/__init__.py"), "").unwrap();
    std::fs::write(pkg.join("src/main.py"), "def handler(c):\n    return c\n").unwrap();
    let agents = agent_toml("b", &pkg.display().to_string(), "idle_timeout = \"1s\"");
    let sup = Supervisor::start_with("idle-broken", "", &agents, &[]);
    // Idle comes only after ready (it may pass too fast to be seen).
    wait_until(READY, "b started, then idle", || {
        let state = sup.agent_status("b")["state"].clone();
        assert!(state != "failed", "b failed to start");
        (state == "idle").then_some(())
    });
    // While it sleeps, its code breaks: the wake fails to load it.
    std::fs::write(pkg.join("src/main.py"), "import no_such_module_anywhere\n").unwrap();
    let threads: Vec<_> = (0..5)
        .map(|_| {
            let port = sup.port;
            std::thread::spawn(move || try_invoke_as_admin(port, "b", "{}").unwrap())
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains("did not start (state: failed)"), "{msg}");
    }
}

#[test]
fn the_autoscaler_adds_replicas_under_load_and_removes_them_after() {
    let agents = agent_toml(
        "s",
        &example("flaky"),
        "min_replicas = 1\nmax_replicas = 3\ntarget_concurrency = 2\nscale_down_window = \"2s\"",
    );
    let sup = Supervisor::start_with("autoscale", "", &agents, &[]);
    wait_ready_replicas(&sup, "s", 1, READY);
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..6)
        .map(|_| {
            let (stop, port) = (Arc::clone(&stop), sup.port);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = try_invoke_as_admin(port, "s", r#"{"action":"sleep","seconds":0.5}"#)
                        .unwrap();
                    assert_eq!(r.status, 200, "{}", r.text());
                }
            })
        })
        .collect();
    let up = wait_ready_replicas(&sup, "s", 3, READY);
    eprintln!("under load: {up}");
    stop.store(true, Ordering::Relaxed);
    for t in loops {
        t.join().unwrap();
    }
    let down = wait_until(Duration::from_secs(60), "back to one replica", || {
        let a = sup.agent_status("s");
        (a["desired_replicas"] == 1 && processes_of(&sup, "s").len() == 1).then_some(a)
    });
    eprintln!("after the load: {down}");
    let m = get(sup.port, "/metrics").unwrap().text();
    assert!(
        m.contains("par_agent_autoscale_decisions_total{agent_id=\"s\"}"),
        "{m}"
    );
}
