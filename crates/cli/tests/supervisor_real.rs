//! The supervisor with the real `par worker` and the example agents
//! (examples/multipar.toml): A, B and C up, invoke through the supervisor,
//! crash recovery, a package that cannot load.

mod supervisor_support;

use std::time::{Duration, Instant};

use supervisor_support::*;

/// The example config with this test's ports and the example agents' absolute paths.
fn example_config() -> String {
    let text = std::fs::read_to_string(repo_root().join("examples/multipar.toml")).unwrap();
    let agents = text
        .split_once("[[agents]]")
        .map(|(_, a)| format!("[[agents]]{a}"))
        .unwrap();
    agents.replace(
        "package = \"agents/",
        &format!("package = \"{}/examples/agents/", repo_root().display()),
    )
}

fn start(tag: &str) -> Supervisor {
    // The real worker: this very binary, `par worker` (the default command).
    Supervisor::start_with(tag, "", &example_config(), &[])
}

#[test]
fn the_example_agents_run_under_the_supervisor() {
    let sup = start("real");
    for id in ["a", "b", "c"] {
        let p = sup.wait_ready(id, Duration::from_secs(120));
        assert!(p["port"].as_u64().is_some());
        assert!(p["package_id"].as_str().unwrap().contains('@'), "{p}");
    }
    let r = http(
        sup.port,
        "POST",
        "/agents/a/invoke",
        &[("Content-Type", "application/json")],
        br#"{"text":"hi"}"#,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["agent_id"], "a");
    let agents = get(sup.port, "/agents").unwrap().json();
    assert_eq!(agents["agents"][0]["name"], "Echo");

    // C crashes on request: routed to 502/503 only while it restarts, then back.
    let c = sup.process("c").unwrap();
    let _ = http(
        sup.port,
        "POST",
        "/agents/c/invoke",
        &[("Content-Type", "application/json")],
        br#"{"action":"crash"}"#,
    );
    let t0 = Instant::now();
    wait_until(Duration::from_secs(60), "c restarted and ready", || {
        sup.process("c")
            .filter(|p| p["state"] == "ready" && p["pid"] != c["pid"])
    });
    eprintln!("agent c back after {:?}", t0.elapsed());
    assert_eq!(sup.process("c").unwrap()["restarts"], 1);

    // kill -9 of A's worker: A routable again, B untouched.
    let a = sup.process("a").unwrap();
    let t0 = Instant::now();
    unsafe_free_kill(a["pid"].as_u64().unwrap() as i32, 9);
    wait_until(Duration::from_secs(60), "a routable again", || {
        let r = get(sup.port, "/agents/a/health").ok()?;
        (r.status == 200 && sup.process("a")?["pid"] != a["pid"]).then_some(())
    });
    eprintln!(
        "agent a routable {:?} after kill -9 of its worker",
        t0.elapsed()
    );
    assert_eq!(sup.process("b").unwrap()["restarts"], 0);
}

#[test]
fn a_package_that_cannot_load_fails_at_once_with_its_reason() {
    let sup = Supervisor::start_with("realbad", "", "", &[]);
    let pkg = sup.dir.path().join("broken");
    std::fs::create_dir_all(pkg.join("src")).unwrap();
    std::fs::write(pkg.join("agent.yaml"), "name: broken\nversion: '1.0'\nentrypoint: src.main:handler\nruntime: python3.11\nmetadata:\n  version: 0.1.0\n").unwrap();
    std::fs::write(pkg.join("src/__init__.py"), "").unwrap();
    std::fs::write(
        pkg.join("src/main.py"),
        "import module_that_does_not_exist\n\ndef handler(ctx):\n    return {}\n",
    )
    .unwrap();
    let body = format!(
        r#"{{"agent_id":"broken","package_path":"{}"}}"#,
        pkg.display()
    );
    let r = sup.spawn_wait(&body);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("module_that_does_not_exist"),
        "{}",
        r.text()
    );
    std::thread::sleep(Duration::from_secs(1));
    let p = sup.process("broken").unwrap();
    assert_eq!(p["state"], "failed");
    assert_eq!(p["restarts"], 0);
}
