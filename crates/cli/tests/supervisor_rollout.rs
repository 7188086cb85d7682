//! Blue/green rollouts with the real worker and real agents: an upgrade under
//! continuous load (no failed request, answers switch from v1 to v2), broken
//! packages (the old worker keeps serving, status says why), a registry index
//! change applied within a poll, and SIGHUP reloading a changed config file.

mod supervisor_rollout_support;
mod supervisor_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use supervisor_rollout_support::*;
use supervisor_support::*;

const LONG: Duration = Duration::from_secs(120);

fn put_json(port: u16, path: &str, body: &str) -> Resp {
    http(
        port,
        "PUT",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap()
}

fn spec(id: &str, package: &std::path::Path) -> String {
    format!(
        r#"{{"agent_id":"{id}","package_path":"{}"}}"#,
        package.display()
    )
}

/// Requests for `agent` the supervisor has answered 2xx (its metrics).
fn answered(sup: &Supervisor, agent: &str) -> u64 {
    let m = get(sup.port, "/metrics").unwrap().text();
    let key = format!("par_agent_requests_total{{agent_id=\"{agent}\",class=\"2xx\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the supervisor has answered `agent` `n` more times.
fn until_answered(sup: &Supervisor, agent: &str, n: u64) {
    let base = answered(sup, agent);
    wait_until(
        Duration::from_secs(60),
        "the load's requests answered",
        || (answered(sup, agent) >= base + n).then_some(()),
    );
}

/// Load (4 clients) runs while `during` is called: once the agent has
/// answered `lead` of its requests, and until it has answered `after` more
/// after `during` returned. Also returns when `during` began (since the
/// load began).
fn with_load<T>(
    sup: &Supervisor,
    agent: &str,
    lead: u64,
    after: u64,
    during: impl FnOnce() -> T,
) -> (LoadReport, T, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let load = run_load(sup.port, agent, 4, stop.clone(), LONG);
    until_answered(sup, agent, lead);
    let began = t0.elapsed();
    let out = during();
    until_answered(sup, agent, after);
    stop.store(true, Ordering::Relaxed);
    (load.join().unwrap(), out, began)
}

#[test]
fn an_upgrade_under_load_fails_no_request_and_switches_versions() {
    let sup = Supervisor::start_with("roll", "drain_timeout = \"10s\"\n", "", &[]);
    let v1 = agent_dir(sup.dir.path(), "ver", "1.0.0");
    let v2 = agent_dir(sup.dir.path(), "ver", "2.0.0");
    let r = sup.spawn_wait(&spec("ver", &v1));
    assert_eq!(r.status, 201, "{}", r.text());
    let before = sup.process("ver").unwrap();
    assert_eq!(version_of(sup.port, "ver").as_deref(), Some("1.0.0"));

    let old_pid = before["pid"].as_u64().unwrap() as u32;
    let (load, (rolled, switched_after), put_at) = with_load(&sup, "ver", 200, 400, || {
        let t = Instant::now();
        let r = put_json(sup.port, "/supervisor/agents/ver", &spec("ver", &v2));
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(r.json()["outcome"], "rolling");
        let p = wait_rollout(&sup, "ver", LONG);
        let switched_after = t.elapsed();
        // The old worker drains and exits under the load too.
        wait_until(Duration::from_secs(30), "the old worker to exit", || {
            (!group_alive(old_pid)).then_some(())
        });
        (p, switched_after)
    });
    assert_eq!(rolled["rollout"]["state"], "rolled_out", "{rolled}");
    assert!(
        load.failed.is_empty(),
        "{} failed requests during the rollout, first: {:?}",
        load.failed.len(),
        load.failed.first()
    );
    // Every client saw v1 then v2, never v1 again after v2.
    for (i, seen) in load.versions.iter().enumerate() {
        let first_v2 = seen.iter().position(|v| v == "2.0.0");
        if let Some(k) = first_v2 {
            assert!(
                seen[k..].iter().all(|v| v == "2.0.0"),
                "client {i} went back to v1 after v2"
            );
        }
        assert!(
            seen.iter().all(|v| v == "1.0.0" || v == "2.0.0"),
            "{seen:?}"
        );
    }
    let all: Vec<&String> = load.versions.iter().flatten().collect();
    assert!(all.iter().any(|v| *v == "1.0.0") && all.iter().any(|v| *v == "2.0.0"));
    assert_eq!(load.timeline.last().unwrap().1, "2.0.0");

    // Status: new current, old previous, same restarts, old worker gone.
    let p = sup.process("ver").unwrap();
    assert_eq!(p["state"], "ready");
    assert_eq!(p["restarts"], 0);
    assert_ne!(p["pid"], before["pid"]);
    assert_ne!(p["port"], before["port"]);
    assert_eq!(p["current_package"]["package_id"], "ver@2.0.0", "{p}");
    assert_eq!(p["previous_package"]["package_id"], "ver@1.0.0", "{p}");
    assert!(p["current_package"]["since"].is_string());
    wait_until(Duration::from_secs(5), "draining list to empty", || {
        sup.process("ver")
            .filter(|p| p["draining"].as_array().is_some_and(|d| d.is_empty()))
    });
    let during = load
        .timeline
        .iter()
        .filter(|(t, _)| *t >= put_at && *t <= put_at + switched_after)
        .count();
    eprintln!(
        "rollout figures: rollout {} ms (PUT to rolled_out as seen by the client: {} ms); {} requests served during the rollout, {} in total over {:.1} s by 4 clients; {} failed",
        rolled["rollout"]["duration_ms"],
        switched_after.as_millis(),
        during,
        load.ok,
        load.timeline.last().map_or(0.0, |(t, _)| t.as_secs_f64()),
        load.failed.len()
    );

    // Same spec again: nothing to do.
    let r = put_json(sup.port, "/supervisor/agents/ver", &spec("ver", &v2));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outcome"], "unchanged");
    // An id in the body that differs from the path is refused.
    let r = put_json(sup.port, "/supervisor/agents/ver", &spec("other", &v2));
    assert_eq!(r.status, 422, "{}", r.text());
}

/// An agent answering its version and the GREETING it was given.
fn greeter(root: &std::path::Path, version: &str) -> std::path::PathBuf {
    let dir = agent_dir(root, "greeter", version);
    std::fs::write(
        dir.join("src/main.py"),
        format!(
            "import os\n\ndef handler(context):\n    return {{\"version\": {version:?}, \"greeting\": os.environ.get(\"GREETING\")}}\n"
        ),
    )
    .unwrap();
    dir
}

fn patch_json(port: u16, path: &str, body: &str) -> Resp {
    http(
        port,
        "PATCH",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap()
}

#[test]
fn a_patch_rolls_out_a_new_package_and_keeps_the_rest_of_the_spec() {
    let sup = Supervisor::start_with("patch", "", "", &[]);
    let v1 = greeter(sup.dir.path(), "1.0.0");
    let v2 = greeter(sup.dir.path(), "2.0.0");
    let body = format!(
        r#"{{"agent_id":"g","package_path":"{}","env_vars":{{"GREETING":"hello"}},"restart_policy":"never","memory_limit_mb":300}}"#,
        v1.display()
    );
    let r = sup.spawn_wait(&body);
    assert_eq!(r.status, 201, "{}", r.text());
    let answer = |sup: &Supervisor| {
        let r = http(
            sup.port,
            "POST",
            "/agents/g/invoke",
            &[("Content-Type", "application/json")],
            b"{}",
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["data"].clone()
    };
    assert_eq!(
        answer(&sup),
        serde_json::json!({"version": "1.0.0", "greeting": "hello"})
    );

    // Only the package: env_vars, restart policy and limit are kept.
    let r = patch_json(
        sup.port,
        "/supervisor/agents/g?wait=true&timeout=120",
        &format!(r#"{{"package_path":"{}"}}"#, v2.display()),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["outcome"], "rolling");
    assert_eq!(r.json()["rollout"]["state"], "rolled_out", "{}", r.text());
    assert_eq!(
        answer(&sup),
        serde_json::json!({"version": "2.0.0", "greeting": "hello"})
    );
    let p = sup.process("g").unwrap();
    assert_eq!(p["restart_policy"], "never", "{p}");
    assert_eq!(p["limits"]["memory_limit_mb"], 300, "{p}");

    // null removes a key (RFC 7396); the same package again changes nothing else.
    let r = patch_json(
        sup.port,
        "/supervisor/agents/g?wait=true&timeout=120",
        r#"{"env_vars":{"GREETING":null}}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        answer(&sup),
        serde_json::json!({"version": "2.0.0", "greeting": null})
    );
    let r = patch_json(sup.port, "/supervisor/agents/g", r#"{"replicas":1}"#);
    assert_eq!(
        (r.status, r.json()["outcome"].clone()),
        (200, "unchanged".into()),
        "{}",
        r.text()
    );

    // Refusals name what is wrong; nothing changes.
    let r = patch_json(sup.port, "/supervisor/agents/g", r#"{"colour":"red"}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("colour"), "{}", r.text());
    let r = patch_json(sup.port, "/supervisor/agents/g", "[1]");
    assert_eq!(r.status, 422, "{}", r.text());
    let r = patch_json(
        sup.port,
        "/supervisor/agents/g",
        r#"{"package_path":"/etc"}"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("package root"), "{}", r.text());
    let r = patch_json(sup.port, "/supervisor/agents/nobody", r#"{"replicas":2}"#);
    assert_eq!(r.status, 404, "{}", r.text());
    let r = http(
        sup.port,
        "PATCH",
        "/supervisor/agents/g",
        &[("Authorization", ""), ("Content-Type", "application/json")],
        br#"{"replicas":2}"#,
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(answer(&sup)["version"], "2.0.0");
}

/// The package folders extracted under `home/packages`.
fn extracted(home: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home.join("packages"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 64)
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn packages_no_worker_uses_are_swept_from_the_cache() {
    let sup = Supervisor::start_with("sweep", "", "", &[("PAR_PACKAGE_KEEP_UNUSED", "2s")]);
    let home = sup.dir.path().join("home");
    let v1 = agent_dir(sup.dir.path(), "ver", "1.0.0");
    let v2 = agent_dir(sup.dir.path(), "ver", "2.0.0");
    let r = sup.spawn_wait(&spec("ver", &v1));
    assert_eq!(r.status, 201, "{}", r.text());
    let first = extracted(&home);
    assert_eq!(first.len(), 1, "{first:?}");
    let r = put_json(
        sup.port,
        "/supervisor/agents/ver?wait=true&timeout=120",
        &spec("ver", &v2),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(version_of(sup.port, "ver").as_deref(), Some("2.0.0"));
    // v1's folder goes once no worker has used it for 2 s; v2's stays, its
    // worker renewing the lease, however long it runs.
    let after = wait_until(Duration::from_secs(30), "v1's folder swept", || {
        let now = extracted(&home);
        (now.len() == 1 && now != first).then_some(now)
    });
    // A package folder made now, used by nobody: once a sweep has taken it,
    // v2's folder (older) has been through a sweep that found it unused for
    // longer than 2 s but for its lease.
    let decoy = "d".repeat(64);
    std::fs::create_dir(home.join("packages").join(&decoy)).unwrap();
    wait_until(Duration::from_secs(30), "an unused folder swept", || {
        (!home.join("packages").join(&decoy).exists()).then_some(())
    });
    assert_eq!(extracted(&home), after);
    assert_eq!(version_of(sup.port, "ver").as_deref(), Some("2.0.0"));
    let log = sup.log_text();
    assert!(log.contains("package cache swept"), "{log}");
    assert!(log.contains(&first[0]), "the swept folder is named: {log}");
}

#[test]
fn an_upgrade_to_a_broken_package_leaves_the_old_version_serving() {
    let sup = Supervisor::start_with("rollbad", "", "", &[]);
    let v1 = agent_dir(sup.dir.path(), "keep", "1.0.0");
    let r = sup.spawn_wait(&spec("keep", &v1));
    assert_eq!(r.status, 201, "{}", r.text());
    let before = sup.process("keep").unwrap();

    for (broken, needle) in [
        (
            broken_import_dir(sup.dir.path(), "keep"),
            "module_that_does_not_exist_par",
        ),
        (broken_manifest_dir(sup.dir.path(), "keep2"), "version"),
    ] {
        let (load, p, _) = with_load(&sup, "keep", 100, 200, || {
            let r = put_json(
                sup.port,
                "/supervisor/agents/keep?wait=true&timeout=120",
                &spec("keep", &broken),
            );
            assert_eq!(r.status, 202, "{}", r.text());
            r.json()
        });
        assert_eq!(p["rollout"]["state"], "rollout_failed", "{p}");
        let reason = p["rollout"]["reason"].as_str().unwrap();
        assert!(reason.contains(needle), "{reason}");
        assert!(reason.contains("package failure"), "{reason}");
        assert!(
            load.failed.is_empty(),
            "{} failed requests, first: {:?}",
            load.failed.len(),
            load.failed.first()
        );
        assert!(load.ok > 0);
        assert!(load.versions.iter().flatten().all(|v| v == "1.0.0"));
        let now = sup.process("keep").unwrap();
        assert_eq!(now["state"], "ready");
        assert_eq!(now["pid"], before["pid"]);
        assert_eq!(now["restarts"], 0);
        assert_eq!(now["current_package"]["package_id"], "keep@1.0.0");
        assert_eq!(now["rollout"]["state"], "rollout_failed");
        eprintln!(
            "broken rollout figures: {} requests served during it, {} failed; reason: {reason}",
            load.ok,
            load.failed.len()
        );
    }
    assert_eq!(version_of(sup.port, "keep").as_deref(), Some("1.0.0"));
    // The status page carries it too.
    let st = get(sup.port, "/supervisor/status").unwrap().json();
    let procs = st["processes"].as_array().unwrap();
    assert_eq!(procs[0]["rollout"]["state"], "rollout_failed");
}

fn index(entries: &[(&str, &std::path::Path)]) -> Vec<u8> {
    let list: Vec<Value> = entries
        .iter()
        .map(|(id, p)| serde_json::json!({"agent_id": id, "package": p.display().to_string()}))
        .collect();
    serde_json::to_vec(&list).unwrap()
}

#[test]
fn a_registry_index_change_is_applied_within_a_poll() {
    let files = FileServer::start();
    let scratch = TempDir::new("regpkgs");
    let v1 = agent_dir(scratch.path(), "reg", "1.0.0");
    let v2 = agent_dir(scratch.path(), "reg", "2.0.0");
    let other = agent_dir(scratch.path(), "other", "1.0.0");
    files.body("/index.json", index(&[("reg", &v1)]));
    let url = files.url("/index.json");
    // The index names local folders: they must be in a package root.
    let roots = scratch.path().to_string_lossy().into_owned();
    let sup = Supervisor::start_with(
        "registry",
        "",
        "",
        &[
            ("PAR_REGISTRY_URL", url.as_str()),
            ("PAR_REGISTRY_POLL", "500ms"),
            ("PAR_PACKAGE_ROOTS", roots.as_str()),
        ],
    );
    sup.wait_ready("reg", LONG);
    assert_eq!(version_of(sup.port, "reg").as_deref(), Some("1.0.0"));
    let p = sup.process("reg").unwrap();
    assert_eq!(p["origin"], "declared");
    // An API agent next to it is left alone by reconcile.
    let r = sup.spawn_wait(&spec("byapi", &other));
    assert_eq!(r.status, 201, "{}", r.text());

    // v2 in the index: picked up by the next poll.
    let polls_before = registry(&sup)["polls"].as_u64().unwrap();
    files.body("/index.json", index(&[("reg", &v2)]));
    let t0 = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "a reconcile that rolls reg",
        || {
            sup.process("reg")
                .filter(|p| p["rollout"]["to_package"].as_str() == Some(&v2.display().to_string()))
        },
    );
    let noticed = t0.elapsed();
    let p = wait_rollout(&sup, "reg", LONG);
    assert_eq!(p["rollout"]["state"], "rolled_out", "{p}");
    let applied = t0.elapsed();
    assert_eq!(version_of(sup.port, "reg").as_deref(), Some("2.0.0"));
    assert!(registry(&sup)["polls"].as_u64().unwrap() > polls_before);
    eprintln!(
        "registry figures: change noticed after {} ms (poll 500 ms), rolled out after {} ms",
        noticed.as_millis(),
        applied.as_millis()
    );
    // Noticed by a poll (every 500 ms), not by chance: far below any other
    // way it could have been noticed, with room for a loaded machine.
    assert!(noticed < Duration::from_secs(20), "{noticed:?}");

    // Unreachable or invalid index: nothing changes, status says why.
    files.set(
        "/index.json",
        vec![Reply::Body(Arc::new(b"{not json".to_vec()))],
    );
    wait_until(
        Duration::from_secs(10),
        "the registry error in status",
        || {
            registry(&sup)["last_error"]
                .as_str()
                .filter(|e| e.contains("not valid JSON"))
                .map(str::to_owned)
        },
    );
    files.set("/index.json", vec![Reply::Status(503)]);
    wait_until(Duration::from_secs(10), "the HTTP error in status", || {
        registry(&sup)["last_error"]
            .as_str()
            .filter(|e| e.contains("503"))
            .map(str::to_owned)
    });
    assert!(registry(&sup)["last_poll_at"].is_string());
    assert_eq!(sup.process("reg").unwrap()["state"], "ready");
    assert_eq!(version_of(sup.port, "reg").as_deref(), Some("2.0.0"));

    // Removed from the index: drained, stopped and forgotten; the API agent stays.
    files.body("/index.json", index(&[]));
    wait_until(Duration::from_secs(30), "reg to be removed", || {
        sup.process("reg").is_none().then_some(())
    });
    assert_eq!(sup.process("byapi").unwrap()["state"], "ready");
    assert_eq!(sup.process("byapi").unwrap()["origin"], "api");
    assert_eq!(get(sup.port, "/agents/reg/health").unwrap().status, 404);
}

fn registry(sup: &Supervisor) -> Value {
    get(sup.port, "/supervisor/status").unwrap().json()["desired"]["registry"].clone()
}

#[test]
fn sighup_and_reload_apply_a_changed_config_file() {
    let scratch = TempDir::new("hup");
    let v1 = agent_dir(scratch.path(), "hup", "1.0.0");
    let v2 = agent_dir(scratch.path(), "hup", "2.0.0");
    let extra = agent_dir(scratch.path(), "extra", "1.0.0");
    let agent = |id: &str, p: &std::path::Path| {
        format!("[[agents]]\nid = \"{id}\"\npackage = \"{}\"\n", p.display())
    };
    let sup = Supervisor::start_with("hup", "", &agent("hup", &v1), &[]);
    sup.wait_ready("hup", LONG);
    assert_eq!(version_of(sup.port, "hup").as_deref(), Some("1.0.0"));
    assert_eq!(sup.process("hup").unwrap()["origin"], "declared");

    // Changed file + SIGHUP: hup rolls to v2, extra starts.
    rewrite_agents(
        &sup,
        &format!("{}{}", agent("hup", &v2), agent("extra", &extra)),
    );
    sup.signal(1);
    let p = wait_until(LONG, "hup rolled to v2", || {
        sup.process("hup")
            .filter(|p| p["rollout"]["state"] == "rolled_out")
    });
    assert_eq!(p["current_package"]["package_id"], "hup@2.0.0");
    sup.wait_ready("extra", LONG);
    assert_eq!(version_of(sup.port, "hup").as_deref(), Some("2.0.0"));
    assert!(sup.child.id() > 0);
    let st = get(sup.port, "/supervisor/status").unwrap().json();
    assert_eq!(st["desired"]["last_reconcile"]["trigger"], "SIGHUP", "{st}");

    // POST /supervisor/reload answers what changed.
    rewrite_agents(&sup, &agent("hup", &v2));
    let r = http(sup.port, "POST", "/supervisor/reload", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["stopped"], serde_json::json!(["extra"]), "{j}");
    assert_eq!(j["unchanged"], serde_json::json!(["hup"]), "{j}");
    wait_until(Duration::from_secs(30), "extra to be removed", || {
        sup.process("extra").is_none().then_some(())
    });
    // A config that does not validate changes nothing and says why.
    rewrite_agents(
        &sup,
        "[[agents]]\nid = \"hup\"\npackage = \"/does/not/exist\"\n",
    );
    let r = http(sup.port, "POST", "/supervisor/reload", &[], b"").unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("/does/not/exist"), "{}", r.text());
    assert_eq!(version_of(sup.port, "hup").as_deref(), Some("2.0.0"));
}
