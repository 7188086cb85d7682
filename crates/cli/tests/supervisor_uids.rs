//! Agents under uids of their own, end to end with real processes, real
//! uids and real Python (the tests need root, as the supervisor in the
//! image starts as; they say so and pass without running elsewhere):
//! a hostile agent's handler tries to read another agent's environment and
//! files, signal its processes and the supervisor's, and write where it
//! should not — and fails at each; the agents still reach each other
//! through `/agents/{id}/…`. Then the supervisor dropping root, with
//! restarts, rollouts, logs, the memory watchdog and an environment built by
//! the installer working as they do without uids.

mod supervisor_support;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use supervisor_support::*;

const READY: Duration = Duration::from_secs(120);

/// `Uid:` (real) and `CapEff:`/`CapBnd:`/`NoNewPrivs:` of a process.
fn proc_status(pid: u64, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string()
}

fn uid_of(pid: u64) -> u32 {
    proc_status(pid, "Uid").parse().unwrap()
}

/// A child of `pid` (a worker's agent host), forked by any of its threads.
fn child_of(pid: u64) -> u64 {
    wait_until(Duration::from_secs(20), "the agent host", || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .find_map(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
    })
}

fn find_file(root: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(root).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if e.file_type().ok()?.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        }
    }
    None
}

#[test]
fn a_hostile_agent_cannot_reach_another_agents_secrets_processes_or_files() {
    needs_root!();
    let dir = TempDir::new("uids-hostile");
    let victim = agent(
        dir.path(),
        "victim",
        "import os\ndef handler(c):\n    return {'victim': True, 'uid': os.getuid()}\n",
        &[(".env", "DOTENV_SECRET=dotenv-secret-456\n")],
    );
    // The hostile agent of the container check: told pids and paths, it tries
    // to read, signal and write them and answers what each attempt got.
    let hostile = repo_root().join("deploy/checks/agents/hostile");
    let agents = format!(
        "[[agents]]\nid = \"victim\"\npackage = \"{}\"\nenv_vars = {{ VICTIM_TOKEN = \"sk-victim-123\" }}\n\
         [[agents]]\nid = \"hostile\"\npackage = \"{}\"\nenv_vars = {{ HOSTILE_OWN = \"1\" }}\n",
        victim.display(),
        hostile.display()
    );
    let sup = Supervisor::start_with(
        "uids-hostile",
        "",
        &agents,
        &[(
            "PAR_AGENT_UIDS",
            supervisor_support::uid_ranges::UIDS_OWN_AGENT,
        )],
    );
    let v = sup.wait_ready("victim", READY);
    let h = sup.wait_ready("hostile", READY);
    let status = get(sup.port, "/supervisor/status").unwrap().json();
    assert_eq!(
        status["supervisor"]["isolation"], "per-agent-uid",
        "{status}"
    );

    let home = sup.dir.path().join("home");
    let (victim_pid, hostile_pid) = (v["pid"].as_u64().unwrap(), h["pid"].as_u64().unwrap());
    let victim_host = child_of(victim_pid);
    let sup_pid = u64::from(sup.child.id());
    let (victim_uid, hostile_uid) = (uid_of(victim_pid), uid_of(hostile_pid));
    assert!(
        (21001..=21999).contains(&victim_uid),
        "victim uid {victim_uid}"
    );
    assert!(
        (21001..=21999).contains(&hostile_uid),
        "hostile uid {hostile_uid}"
    );
    assert_ne!(victim_uid, hostile_uid);
    assert_eq!(
        uid_of(victim_host),
        victim_uid,
        "the agent host runs as its worker"
    );
    // The secrets are really there, for a reader allowed to see them.
    let environ = std::fs::read(format!("/proc/{victim_pid}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&environ).contains("VICTIM_TOKEN=sk-victim-123"));
    let agent_dir = home.join("agents/victim");
    let dotenv = find_file(&agent_dir, ".env").expect("the victim's extracted .env");
    assert!(std::fs::read_to_string(&dotenv)
        .unwrap()
        .contains("dotenv-secret-456"));
    let meta = std::fs::metadata(&agent_dir).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (victim_uid, 0o700));
    let staged = std::fs::read_dir(home.join("agents/.staged"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.uid() == victim_uid))
        .expect("the victim's staged package");

    let target = serde_json::json!({
        "pids": {
            "victim worker": victim_pid,
            "victim host": victim_host,
            "supervisor": sup_pid,
        },
        "read": {
            "victim .env": dotenv,
            "victim package": staged,
            "victim agent.yaml": find_file(&agent_dir, "agent.yaml").unwrap(),
            "supervisor token": home.join(format!("run/supervisor-{}.token", sup.port)),
        },
        "write": {
            "victim tmp": agent_dir.join("tmp/planted"),
            "victim home": agent_dir.join("home/.bashrc"),
            "shared envs": home.join("envs/planted"),
            "staging": home.join("agents/.staged/planted.apkg"),
            "agents folder": home.join("agents/planted"),
        },
        "call": "victim",
    });
    let r = invoke(sup.port, "hostile", &target.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let data = &r.json()["data"];
    let attempts = data["attempts"].as_object().unwrap();
    assert_eq!(attempts.len(), 3 * 3 + 4 + 5, "{data}");
    let allowed: Vec<_> = attempts.iter().filter(|(_, v)| *v != "denied").collect();
    assert!(
        allowed.is_empty(),
        "a hostile agent got through: {allowed:?}"
    );
    // Its own environment it can read: the refusals are about whose it is.
    let own = &data["own"];
    assert_eq!(own["environ"], "allowed: True", "{own}");
    assert_eq!(own["uid"], hostile_uid);
    assert_eq!(
        own["groups"],
        serde_json::json!([]),
        "no supplementary groups"
    );
    assert_eq!(own["NoNewPrivs"], "1");
    assert_eq!(own["CapEff"], "0000000000000000");
    assert_eq!(own["CapPrm"], "0000000000000000");
    // And the victim is reached the intended way, unharmed.
    assert_eq!(data["via_supervisor"]["data"]["victim"], true, "{data}");
    assert_eq!(data["via_supervisor"]["data"]["uid"], victim_uid);
    let v = sup.process("victim").unwrap();
    assert_eq!(
        (v["state"].clone(), v["restarts"].clone()),
        ("ready".into(), 0.into())
    );
    assert!(!agent_dir.join("tmp/planted").exists());
    assert!(!home.join("envs/planted").exists());
}

/// A fork bomb in one agent ends at its uid's process limit; the other
/// agent and the supervisor keep serving.
#[test]
fn a_fork_bomb_stops_at_its_agents_process_limit() {
    needs_root!();
    let dir = TempDir::new("uids-fork");
    let bomb = agent(
        dir.path(),
        "bomb",
        "import os, time\n\
         def handler(c):\n\
         \x20   made, refused = 0, ''\n\
         \x20   kids = []\n\
         \x20   for _ in range(400):\n\
         \x20       try:\n\
         \x20           pid = os.fork()\n\
         \x20       except OSError as e:\n\
         \x20           refused = repr(e)\n\
         \x20           break\n\
         \x20       if pid == 0:\n\
         \x20           time.sleep(30)\n\
         \x20           os._exit(0)\n\
         \x20       kids.append(pid)\n\
         \x20   for k in kids:\n\
         \x20       os.kill(k, 9)\n\
         \x20       os.waitpid(k, 0)\n\
         \x20   return {'forked': len(kids), 'refused': refused}\n",
        &[],
    );
    let calm = agent(
        dir.path(),
        "calm",
        "def handler(c):\n    return {'calm': True}\n",
        &[],
    );
    let agents = format!(
        "[[agents]]\nid = \"bomb\"\npackage = \"{}\"\n[[agents]]\nid = \"calm\"\npackage = \"{}\"\n",
        bomb.display(),
        calm.display()
    );
    let sup = Supervisor::start_with(
        "uids-fork",
        "",
        &agents,
        &[
            (
                "PAR_AGENT_UIDS",
                supervisor_support::uid_ranges::UIDS_HOSTILE,
            ),
            ("PAR_AGENT_NPROC", "100"),
        ],
    );
    sup.wait_ready("bomb", READY);
    sup.wait_ready("calm", READY);
    let r = invoke(sup.port, "bomb", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let d = &r.json()["data"];
    let forked = d["forked"].as_u64().unwrap();
    assert!(
        forked < 100,
        "forked {forked} processes past a limit of 100: {d}"
    );
    assert!(
        d["refused"]
            .as_str()
            .unwrap()
            .contains("Resource temporarily unavailable"),
        "{d}"
    );
    assert_eq!(invoke(sup.port, "calm", "{}").status, 200);
    assert_eq!(get(sup.port, "/supervisor/status").unwrap().status, 200);
}

#[test]
fn a_supervisor_that_dropped_root_restarts_rolls_out_logs_and_watches_memory() {
    needs_root!();
    let dir = TempDir::new("uids-drop");
    let a = agent(
        dir.path(),
        "alpha",
        "import os, sys\nprint('alpha says hello', flush=True)\n\
         def handler(c):\n    return {'v': 1, 'uid': os.getuid()}\n",
        &[],
    );
    let a2 = agent(
        dir.path(),
        "alpha2",
        "import os\ndef handler(c):\n    return {'v': 2, 'uid': os.getuid()}\n",
        &[],
    );
    let deps = agent(
        dir.path(),
        "deps",
        "import sys, tinydep\ndef handler(c):\n    return {'value': tinydep.VALUE, 'python': sys.executable}\n",
        &[("requirements.txt", "./wheels/tinydep-0.1-py3-none-any.whl\n")],
    );
    tiny_wheel(&deps.join("wheels/tinydep-0.1-py3-none-any.whl"));
    let fat = agent(
        dir.path(),
        "fat",
        "blob = bytearray(96 * 1024 * 1024)\nfor i in range(0, len(blob), 4096):\n    blob[i] = 1\n\
         def handler(c):\n    return {}\n",
        &[],
    );
    let agents = format!(
        "[[agents]]\nid = \"alpha\"\npackage = \"{}\"\n\
         [[agents]]\nid = \"deps\"\npackage = \"{}\"\n\
         [[agents]]\nid = \"fat\"\npackage = \"{}\"\nmemory_limit_mb = 48\n",
        a.display(),
        deps.display(),
        fat.display()
    );
    let sup = Supervisor::start_with(
        "uids-drop",
        "",
        &agents,
        &[
            (
                "PAR_AGENT_UIDS",
                supervisor_support::uid_ranges::UIDS_INSTALLER,
            ),
            ("PAR_SUPERVISOR_UID", "10777"),
            ("PAR_PACKAGE_ROOTS", dir.path().to_str().unwrap()),
        ],
    );
    let home = sup.dir.path().join("home");
    let sup_pid = u64::from(sup.child.id());
    // The supervisor: uid 10777, with SETUID, SETGID, KILL and CHOWN only.
    assert_eq!(uid_of(sup_pid), 10777);
    assert_eq!(proc_status(sup_pid, "CapEff"), "00000000000000e1");
    assert_eq!(proc_status(sup_pid, "CapBnd"), "00000000000000e1");
    let status = get(sup.port, "/supervisor/status").unwrap().json();
    assert_eq!(status["supervisor"]["uid"], 10777);
    assert_eq!(status["supervisor"]["isolation"], "per-agent-uid");

    let p = sup.wait_ready("alpha", READY);
    let first_pid = p["pid"].as_u64().unwrap();
    let alpha_uid = uid_of(first_pid);
    assert!((23001..=23999).contains(&alpha_uid));
    let r = invoke(sup.port, "alpha", "{}");
    assert_eq!(
        r.json()["data"],
        serde_json::json!({"v": 1, "uid": alpha_uid})
    );

    // Logs: the agent's own lines are gathered as before.
    wait_until(Duration::from_secs(10), "alpha's line in the logs", || {
        let r = get(sup.port, "/supervisor/logs?process_id=par-alpha&limit=500").ok()?;
        r.text().contains("alpha says hello").then_some(())
    });

    // The environment was built by the installer and sealed: the
    // supervisor's, which the agent runs and cannot change.
    let d = sup.wait_ready("deps", READY);
    let r = invoke(sup.port, "deps", "{}");
    assert_eq!(r.json()["data"]["value"], 42, "{}", r.text());
    let python = PathBuf::from(r.json()["data"]["python"].as_str().unwrap().to_string());
    assert!(
        python.starts_with(home.join("envs")),
        "{}",
        python.display()
    );
    let env_dir = python.parent().unwrap().parent().unwrap();
    assert_eq!(
        std::fs::metadata(env_dir).unwrap().uid(),
        10777,
        "sealed: the supervisor's"
    );
    assert_eq!(
        std::fs::metadata(env_dir).unwrap().mode() & 0o222,
        0,
        "not writable by agents"
    );
    assert!(uid_of(d["pid"].as_u64().unwrap()) != 23000);
    assert!(
        find_file(&home.join("installer"), "tinydep-0.1-py3-none-any.whl").is_none(),
        "the installer's copy of the package is gone"
    );

    // A crash: restarted, same uid.
    kill_group(first_pid as u32);
    let p = wait_until(READY, "alpha restarted", || {
        sup.process("alpha")
            .filter(|p| p["state"] == "ready" && p["pid"].as_u64() != Some(first_pid))
    });
    assert_eq!(uid_of(p["pid"].as_u64().unwrap()), alpha_uid);

    // A rollout to another package of the same agent: same uid, new answers.
    let body = format!(
        r#"{{"agent_id":"alpha","package_path":"{}"}}"#,
        a2.display()
    );
    let r = http(
        sup.port,
        "PUT",
        "/supervisor/agents/alpha?wait=true&timeout=120",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap();
    assert!(r.status < 300, "{} {}", r.status, r.text());
    let answer = wait_until(READY, "v2 answering", || {
        let r = invoke(sup.port, "alpha", "{}");
        (r.json()["data"]["v"] == 2).then(|| r.json())
    });
    assert_eq!(answer["data"]["uid"], alpha_uid);

    // The memory watchdog still reads and stops another uid's processes.
    let p = wait_until(READY, "a watchdog restart of fat", || {
        sup.process("fat")
            .filter(|p| p["restarts"].as_u64() >= Some(1))
    });
    assert!(
        p["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("over the limit of 48 MB"),
        "{p}"
    );
    let staged: Vec<_> = std::fs::read_dir(home.join("agents/.staged"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        staged.len() <= 6,
        "staged packages are removed with their workers: {staged:?}"
    );
    let _: Value = status;
}
