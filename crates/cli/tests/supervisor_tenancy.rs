//! One agent's tenancy ends where the next one's begins, end to end with
//! real processes, real uids and hostile Python agents (the uid tests need
//! root, as the supervisor in the image starts as; they say so and pass
//! without running elsewhere):
//! - the supervisor's own environment (cloud keys, database URLs, the task
//!   role's credentials) reaches no agent; the task role only the agent
//!   whose spec asks for it;
//! - a process an agent detaches with `setsid` ends with the agent (stop,
//!   DELETE, a rollout away from it), and an agent created again with the
//!   same id (the same uid) starts with no older process of its uid.
//!
//! (Agent ids that look like process ids: `supervisor_agent_ids.rs`.)

mod supervisor_support;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use supervisor_support::*;

const READY: Duration = Duration::from_secs(120);
// Each test's uids are its own (supervisor_support::uid_ranges): a reap here
// kills every process of an agent's uid.
/// How long a detached process may outlive its agent's stop or DELETE.
const GONE: Duration = Duration::from_secs(2);

/// The `data` of an invoke answered 200.
fn invoke(port: u16, agent: &str, body: &str) -> Value {
    let r = supervisor_support::invoke(port, agent, body);
    assert_eq!(r.status, 200, "invoke {agent}: {}", r.text());
    r.json()["data"].clone()
}

/// The real uid of a process, None once it has ended (a zombie has ended).
fn uid_of(pid: u64) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |n: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(n))
            .map(|v| v.trim().to_string())
    };
    if field("State:")?.starts_with('Z') {
        return None;
    }
    field("Uid:")?.split_whitespace().next()?.parse().ok()
}

/// Every live process whose real uid is `uid`.
fn processes_of(uid: u32) -> BTreeSet<u64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| uid_of(*pid) == Some(uid))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. The supervisor's environment.

/// Answers its own environment.
const ENV_DUMP: &str = "import os\n\
def handler(c):\n\
\x20   return {'env': dict(os.environ)}\n";

/// The variable names of a process's environment (read as root).
fn environ_names(pid: u64) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| {
            String::from_utf8_lossy(v)
                .split('=')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// What the supervisor is started with, as a Fargate task would be.
const SECRETS: &[(&str, &str)] = &[
    ("AWS_SECRET_ACCESS_KEY", "sk-supervisor-secret-1"),
    ("AWS_ACCESS_KEY_ID", "AKIASUPERVISOR"),
    ("DATABASE_URL", "postgres://admin:pw@db/prod"),
    ("PYTHONPATH", "/supervisor/only"),
];
const ROLE: &[(&str, &str)] = &[
    (
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "/v2/credentials/task-role-1",
    ),
    ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "role-token-1"),
    (
        "ECS_CONTAINER_METADATA_URI_V4",
        "http://169.254.170.2/v4/meta-1",
    ),
    ("AWS_REGION", "eu-west-1"),
];

/// Whether a variable an agent sees is one PAR allows: the base list, PAR's
/// and Python's own settings, the trace settings (README, Traces: its
/// `OTEL_SERVICE_NAME` is its id), and what the agent's spec and `.env` set.
fn allowed(name: &str, own: &[&str]) -> bool {
    [
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "LANGUAGE",
        "TZ",
        "PYTHONUNBUFFERED",
    ]
    .contains(&name)
        || name.starts_with("LC_")
        || name.starts_with("PAR_")
        || name.starts_with("OTEL_")
        || own.contains(&name)
}

#[test]
fn the_supervisors_secrets_reach_no_agent_and_the_task_role_only_the_one_that_asks() {
    needs_root!();
    let dir = TempDir::new("tenancy-env");
    let pkg = versioned_agent(
        dir.path(),
        "envdump",
        "1.0",
        ENV_DUMP,
        &[(".env", "DOTENV_OWN=from-dotenv\n")],
    );
    let agents = format!(
        "[[agents]]\nid = \"plain\"\npackage = \"{0}\"\nenv_vars = {{ SPEC_OWN = \"from-spec\" }}\n\
         [[agents]]\nid = \"role\"\npackage = \"{0}\"\ntask_role = true\n",
        pkg.display()
    );
    let mut env: Vec<(&str, &str)> = vec![(
        "PAR_AGENT_UIDS",
        supervisor_support::uid_ranges::TENANCY_ENV,
    )];
    env.extend_from_slice(SECRETS);
    env.extend_from_slice(ROLE);
    let sup = Supervisor::start_with("tenancy-env", "", &agents, &env);
    sup.wait_ready("plain", READY);
    sup.wait_ready("role", READY);

    // The plain agent: its own variables, none of the supervisor's secrets,
    // nothing outside the allow-list (the test's own environment, which the
    // supervisor inherited, is full of other names).
    let plain = invoke(sup.port, "plain", "{}");
    let penv = plain["env"].as_object().unwrap();
    assert_eq!(penv["SPEC_OWN"], "from-spec");
    assert_eq!(penv["DOTENV_OWN"], "from-dotenv");
    let own = ["SPEC_OWN", "DOTENV_OWN"];
    let stray: Vec<_> = penv.keys().filter(|k| !allowed(k, &own)).collect();
    assert!(stray.is_empty(), "the agent sees {stray:?}: {plain}");
    for (k, v) in SECRETS.iter().chain(ROLE) {
        assert!(!penv.contains_key(*k), "{k} reached the agent");
        assert!(
            !penv
                .values()
                .any(|x| x.as_str().is_some_and(|x| x.contains(v))),
            "the value of {k} reached the agent"
        );
    }
    // Nor its worker.
    let worker = sup.process("plain").unwrap()["pid"].as_u64().unwrap();
    let names = environ_names(worker);
    assert!(names.iter().any(|k| k == "SPEC_OWN"), "{names:?}");
    let stray: Vec<_> = names.iter().filter(|k| !allowed(k, &own)).collect();
    assert!(stray.is_empty(), "the worker has {stray:?}");

    // The agent with `task_role = true`: exactly the role's variables more.
    let role = invoke(sup.port, "role", "{}");
    let renv = role["env"].as_object().unwrap();
    for (k, v) in ROLE {
        assert_eq!(
            renv.get(*k).and_then(Value::as_str),
            Some(*v),
            "{k}: {role}"
        );
    }
    for (k, _) in SECRETS {
        assert!(!renv.contains_key(*k), "{k} reached the task-role agent");
    }
    let role_names: Vec<&str> = ROLE.iter().map(|(k, _)| *k).collect();
    let stray: Vec<_> = renv
        .keys()
        .filter(|k| !allowed(k, &["DOTENV_OWN"]) && !role_names.contains(&k.as_str()))
        .collect();
    assert!(stray.is_empty(), "the task-role agent sees {stray:?}");
}

// ---------------------------------------------------------------------------
// 2. Processes that outlive their agent.

/// `{"action": "detach"}` starts `sleep` in a session of its own (out of
/// the worker's process group) and answers its pid; `{"action": "uid"}`
/// answers the pids of its uid it can see (zombies, which have ended, aside).
const LINGER: &str = "import os, subprocess\n\
def handler(c):\n\
\x20   if c.get('action') == 'detach':\n\
\x20       p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n\
\x20       return {'pid': p.pid, 'uid': os.getuid()}\n\
\x20   mine = []\n\
\x20   for e in os.listdir('/proc'):\n\
\x20       if e.isdigit():\n\
\x20           try:\n\
\x20               state = open('/proc/%s/stat' % e).read().rsplit(')', 1)[1].split()[0]\n\
\x20               if os.stat('/proc/' + e).st_uid == os.getuid() and state != 'Z':\n\
\x20                   mine.append(int(e))\n\
\x20           except OSError:\n\
\x20               pass\n\
\x20   return {'pids': mine, 'me': os.getpid(), 'parent': os.getppid(), 'uid': os.getuid()}\n";

/// Starts a detached sleeper in `agent` and answers its pid, checked to run
/// as the agent's uid in a session of its own.
fn detach(sup: &Supervisor, agent: &str) -> (u64, u32) {
    let d = invoke(sup.port, agent, r#"{"action":"detach"}"#);
    let (pid, uid) = (
        d["pid"].as_u64().unwrap(),
        d["uid"].as_u64().unwrap() as u32,
    );
    assert_eq!(uid_of(pid), Some(uid), "the sleeper runs as the agent");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let session: u64 = after.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(session, pid, "the sleeper leads a session of its own");
    (pid, uid)
}

fn wait_gone(pid: u64, what: &str) {
    wait_until(
        GONE,
        &format!("the detached process {pid} to end after {what}"),
        || uid_of(pid).is_none().then_some(()),
    );
}

#[test]
fn a_detached_process_ends_with_its_agent_and_never_meets_the_next() {
    needs_root!();
    let dir = TempDir::new("tenancy-linger");
    let pkg = versioned_agent(dir.path(), "linger", "1.0", LINGER, &[]);
    let roots = dir.path().display().to_string();
    let agents = format!(
        "[[agents]]\nid = \"linger\"\npackage = \"{}\"\nenv_vars = {{ SECRET = \"first-tenant\" }}\n",
        pkg.display()
    );
    let sup = Supervisor::start_with(
        "tenancy-linger",
        "",
        &agents,
        &[
            (
                "PAR_AGENT_UIDS",
                supervisor_support::uid_ranges::TENANCY_DETACHED,
            ),
            ("PAR_PACKAGE_ROOTS", &roots),
        ],
    );
    sup.wait_ready("linger", READY);

    // Stop: the sleeper ends with the worker.
    let (sleeper, uid) = detach(&sup, "linger");
    let r = admin(&sup, "POST", "/supervisor/stop/par-linger", "");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_gone(sleeper, "stop");
    wait_until(Duration::from_secs(20), "linger stopped", || {
        (sup.process("linger")?["state"] == "stopped").then_some(())
    });
    assert_eq!(
        processes_of(uid),
        BTreeSet::new(),
        "nothing of uid {uid} is left"
    );

    // Started again, then DELETE: the same.
    let r = admin(&sup, "POST", "/supervisor/restart/par-linger?wait=true", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let (sleeper, uid2) = detach(&sup, "linger");
    assert_eq!(uid2, uid, "the uid is the agent's");
    let r = admin(&sup, "DELETE", "/supervisor/agents/linger", "");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_gone(sleeper, "DELETE");
    wait_until(Duration::from_secs(20), "linger gone", || {
        sup.process("linger").is_none().then_some(())
    });

    // A process of the uid planted while no agent has it (as a leftover of
    // any kind would be) is gone before the uid is handed out again.
    let planted = Command::new("sleep")
        .arg("300")
        .uid(uid)
        .gid(uid)
        .process_group(0)
        .spawn()
        .expect("a process of the agent's uid");
    let planted_pid = u64::from(planted.id());
    assert_eq!(uid_of(planted_pid), Some(uid));
    let body = serde_json::json!({
        "agent_id": "linger",
        "package": pkg,
        "env_vars": {"SECRET": "second-tenant"},
    });
    let r = sup.spawn_wait(&body.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let mut planted = planted;
    let status = wait_until(GONE, "the planted process to be killed", || {
        planted.try_wait().unwrap()
    });
    assert!(
        !status.success(),
        "the planted process was killed: {status:?}"
    );
    // The new tenant's uid holds its worker and host only.
    let seen = invoke(sup.port, "linger", r#"{"action":"uid"}"#);
    assert_eq!(seen["uid"], uid);
    let worker = sup.process("linger").unwrap()["pid"].as_u64().unwrap();
    let theirs: BTreeSet<u64> = [worker, seen["me"].as_u64().unwrap()].into();
    assert_eq!(seen["parent"].as_u64(), Some(worker));
    let pids: BTreeSet<u64> = serde_json::from_value(seen["pids"].clone()).unwrap();
    assert_eq!(pids, theirs, "no older process of uid {uid}");
    assert_eq!(processes_of(uid), theirs);
}

/// `{"action": "swarm"}` starts, in a session of its own, a shell that
/// keeps forking detached sleepers (each reparented at once) for as long as
/// its uid's process limit lets it.
const SWARM: &str = "import os, subprocess\n\
def handler(c):\n\
\x20   p = subprocess.Popen(['sh', '-c', 'while :; do (sleep 300 &) 2>/dev/null; done'],\n\
\x20                        start_new_session=True, stderr=subprocess.DEVNULL)\n\
\x20   return {'pid': p.pid, 'uid': os.getuid()}\n";

#[test]
fn a_swarm_of_detached_processes_ends_with_its_agent() {
    needs_root!();
    let dir = TempDir::new("tenancy-swarm");
    let pkg = versioned_agent(dir.path(), "swarm", "1.0", SWARM, &[]);
    let agents = format!(
        "[[agents]]\nid = \"swarm\"\npackage = \"{}\"\n",
        pkg.display()
    );
    let sup = Supervisor::start_with(
        "tenancy-swarm",
        "",
        &agents,
        &[
            (
                "PAR_AGENT_UIDS",
                supervisor_support::uid_ranges::TENANCY_SWARM,
            ),
            ("PAR_AGENT_NPROC", "300"),
            // As in the image: the supervisor drops root, keeping CAP_KILL.
            ("PAR_SUPERVISOR_UID", "10780"),
        ],
    );
    sup.wait_ready("swarm", READY);
    assert_eq!(
        uid_of(u64::from(sup.child.id())),
        Some(10780),
        "dropped root"
    );
    let d = invoke(sup.port, "swarm", "{}");
    let uid = d["uid"].as_u64().unwrap() as u32;
    // Wait until the swarm is well under way (the sleepers it made so far).
    wait_until(Duration::from_secs(20), "a swarm of sleepers", || {
        (processes_of(uid).len() >= 50).then_some(())
    });
    let r = admin(&sup, "POST", "/supervisor/stop/par-swarm", "");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until(GONE, "every process of the swarm's uid to end", || {
        processes_of(uid).is_empty().then_some(())
    });
    // And it stays so: nothing was left to fork again.
    let r = admin(&sup, "POST", "/supervisor/restart/par-swarm?wait=true", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let worker = sup.process("swarm").unwrap()["pid"].as_u64().unwrap();
    let left = processes_of(uid);
    assert!(left.contains(&worker) && left.len() == 2, "{left:?}");
}

#[test]
fn a_rollout_leaves_nothing_of_the_version_it_rolled_away_from() {
    needs_root!();
    let dir = TempDir::new("tenancy-rollout");
    let v1 = versioned_agent(dir.path(), "linger", "1.0", LINGER, &[]);
    let v2 = versioned_agent(dir.path(), "linger", "2.0", LINGER, &[]);
    let roots = dir.path().display().to_string();
    let agents = format!(
        "[[agents]]\nid = \"roll\"\npackage = \"{}\"\nreplicas = 2\n",
        v1.display()
    );
    let sup = Supervisor::start_with(
        "tenancy-rollout",
        "",
        &agents,
        &[
            (
                "PAR_AGENT_UIDS",
                supervisor_support::uid_ranges::TENANCY_ROLLOUT,
            ),
            ("PAR_PACKAGE_ROOTS", &roots),
        ],
    );
    wait_until(READY, "both replicas of roll ready", || {
        let ready = sup
            .processes()
            .iter()
            .filter(|p| p["agent_id"] == "roll" && p["state"] == "ready")
            .count();
        (ready == 2).then_some(())
    });
    let (old, uid) = detach(&sup, "roll");
    let patch = serde_json::json!({ "package": v2 }).to_string();
    let r = admin(&sup, "PATCH", "/supervisor/agents/roll?wait=true", &patch);
    assert!(matches!(r.status, 200 | 202), "{}", r.text());
    // Rolled out and the old replicas drained and gone.
    wait_until(
        Duration::from_secs(60),
        "the old replicas of roll gone",
        || {
            let procs = sup.processes();
            let roll: Vec<_> = procs.iter().filter(|p| p["agent_id"] == "roll").collect();
            let done = roll.len() == 2
                && roll.iter().all(|p| {
                    p["state"] == "ready"
                        && p["package_id"] == "linger@2.0"
                        && p["draining"].as_array().is_some_and(Vec::is_empty)
                });
            done.then_some(())
        },
    );
    wait_gone(old, "the rollout");
    // The new version runs, and what it detaches lives while it does.
    let (new, uid2) = detach(&sup, "roll");
    assert_eq!(uid2, uid);
    let v = invoke(sup.port, "roll", r#"{"action":"uid"}"#);
    assert_eq!(v["uid"], uid);
    assert_eq!(
        uid_of(new),
        Some(uid),
        "a running version's process is kept"
    );
    let r = admin(&sup, "POST", "/supervisor/stop/par-roll", "");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_gone(new, "stop");
}
