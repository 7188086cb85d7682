//! The worker port range belongs to the supervisor, end to end as root with
//! agents under uids of their own and a supervisor that dropped root: a
//! hostile agent binds every port of the range it can (127.0.0.1, 0.0.0.0,
//! with SO_REUSEADDR and SO_REUSEPORT, IPv6 dual-stack) and gets none of the
//! ports the supervisor holds, nor a copy of its own worker's socket; another
//! agent's restart after `kill -9`, a wake from zero and a rollout still
//! start their workers.

mod supervisor_support;

use std::time::Duration;

use serde_json::Value;
use supervisor_support::*;

const READY: Duration = Duration::from_secs(120);

/// Told the range, binds every port of it every way it knows, again and
/// again from a thread of its own (a port freed for a moment is taken), and
/// keeps what it got listening; answers the ports it took so far and how.
const SNIPER: &str = r#"
import ctypes, errno, os, socket, threading, time

HELD = []
TAKEN = {}

def grab(port):
    for family, host, reuseport in [
        (socket.AF_INET, "127.0.0.1", False),
        (socket.AF_INET, "0.0.0.0", False),
        (socket.AF_INET, "127.0.0.1", True),
        (socket.AF_INET, "0.0.0.0", True),
        (socket.AF_INET6, "::", False),
        (socket.AF_INET6, "::", True),
    ]:
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, port))
            s.listen(16)
            HELD.append(s)
            TAKEN.setdefault(str(port), []).append(host + (" reuseport" if reuseport else ""))
        except OSError:
            s.close()

def snipe(lo, hi):
    while True:
        for port in range(lo, hi + 1):
            grab(port)
        time.sleep(0.005)

def steal(lo, hi):
    """Copies its worker's descriptors (pidfd_getfd, as its own uid may on a
    dumpable process) looking for a listening socket of the range."""
    libc = ctypes.CDLL(None, use_errno=True)
    got, errors = [], set()
    pidfd = os.pidfd_open(os.getppid())
    for fd in range(3, 128):
        n = libc.syscall(438, pidfd, fd, 0)
        if n < 0:
            errors.add(errno.errorcode.get(ctypes.get_errno(), "?"))
            continue
        try:
            s = socket.socket(fileno=n)
        except OSError:
            os.close(n)
            continue
        listening = s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        port = s.getsockname()[1] if s.family == socket.AF_INET else 0
        if listening and lo <= port <= hi:
            got.append(port)
            HELD.append(s)
        else:
            s.close()
    return got, sorted(errors)

def handler(c):
    if "steal" in c:
        got, errors = steal(c["steal"][0], c["steal"][1])
        return {"stolen": got, "errors": errors}
    if "lo" in c:
        for port in range(c["lo"], c["hi"] + 1):
            grab(port)
        threading.Thread(target=snipe, args=(c["lo"], c["hi"]), daemon=True).start()
    return {"taken": TAKEN, "held": len(HELD)}
"#;

/// The ports of the range someone else held when the supervisor started
/// (from its warning), which it could not take itself.
fn busy_at_start(sup: &Supervisor) -> Vec<u16> {
    sup.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("worker ports already in use"))
        })
        .flat_map(|v| {
            let list = v["fields"]["ports"].as_str().unwrap_or("").to_string();
            list.trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .filter_map(|p| p.trim().parse::<u16>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn worker_port(p: &Value) -> u16 {
    p["port"].as_u64().unwrap() as u16
}

#[test]
fn an_agent_binding_the_worker_range_takes_no_port_and_restarts_wakes_and_rollouts_work() {
    needs_root!();
    let dir = TempDir::new("ports-sniper");
    let sniper = agent(dir.path(), "sniper", SNIPER, &[]);
    let v1 = agent(
        dir.path(),
        "victim",
        "import os\ndef handler(c):\n    return {'v': 1, 'pid': os.getpid()}\n",
        &[],
    );
    let v2 = agent(
        dir.path(),
        "victim2",
        "import os\ndef handler(c):\n    return {'v': 2, 'pid': os.getpid()}\n",
        &[],
    );
    let sleepy = agent(
        dir.path(),
        "sleepy",
        "def handler(c):\n    return {'awake': True}\n",
        &[],
    );
    let (lo, hi) = port_block(12);
    let agents = format!(
        "[[agents]]\nid = \"sniper\"\npackage = \"{}\"\n\
         [[agents]]\nid = \"victim\"\npackage = \"{}\"\n\
         [[agents]]\nid = \"sleepy\"\npackage = \"{}\"\nidle_timeout = \"1s\"\n",
        sniper.display(),
        v1.display(),
        sleepy.display()
    );
    let range = format!("{lo}-{hi}");
    let sup = Supervisor::start_with(
        "ports-sniper",
        "",
        &agents,
        &[
            ("PAR_WORKER_PORTS", &range),
            ("PAR_AGENT_UIDS", supervisor_support::uid_ranges::PORTS),
            ("PAR_SUPERVISOR_UID", "10779"),
            ("PAR_PACKAGE_ROOTS", dir.path().to_str().unwrap()),
        ],
    );
    let busy = busy_at_start(&sup);
    sup.wait_ready("sniper", READY);
    let victim = sup.wait_ready("victim", READY);
    assert!((lo..=hi).contains(&worker_port(&victim)), "{victim}");

    wait_until(Duration::from_secs(60), "sleepy idle", || {
        (sup.agent_status("sleepy")["state"] == "idle").then_some(())
    });

    // The sniper starts taking what it can and holding it.
    let r = invoke(sup.port, "sniper", &format!(r#"{{"lo":{lo},"hi":{hi}}}"#));
    assert_eq!(r.status, 200, "{}", r.text());

    // Nor can it copy its own worker's socket (which would outlive the
    // agent and take the port's connections when it is handed on).
    let r = invoke(sup.port, "sniper", &format!(r#"{{"steal":[{lo},{hi}]}}"#));
    assert_eq!(r.status, 200, "{}", r.text());
    let stolen = &r.json()["data"];
    assert_eq!(stolen["stolen"], serde_json::json!([]), "{}", r.text());
    assert_eq!(
        stolen["errors"],
        serde_json::json!(["EPERM"]),
        "{}",
        r.text()
    );

    // kill -9 of the victim's worker: restarted on a port of the range.
    let first = victim["pid"].as_u64().unwrap();
    kill_group(first as u32);
    let p = wait_until(READY, "victim restarted", || {
        sup.process("victim")
            .filter(|p| p["state"] == "ready" && p["pid"].as_u64() != Some(first))
    });
    assert!((lo..=hi).contains(&worker_port(&p)), "{p}");
    let r = invoke(sup.port, "victim", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["v"], 1);

    // A wake from zero: the idle agent's next request starts a worker.
    let r = invoke(sup.port, "sleepy", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["awake"], true);

    // A rollout (PATCH): the new worker starts beside the old one.
    let r = http(
        sup.port,
        "PATCH",
        "/supervisor/agents/victim?wait=true&timeout=120",
        &[("Content-Type", "application/json")],
        format!(r#"{{"package_path":"{}"}}"#, v2.display()).as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["rollout"]["state"], "rolled_out", "{}", r.text());
    let r = invoke(sup.port, "victim", "{}");
    assert_eq!(r.json()["data"]["v"], 2, "{}", r.text());
    let p = sup.process("victim").unwrap();
    assert!((lo..=hi).contains(&worker_port(&p)), "{p}");

    let r = invoke(sup.port, "sniper", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    eprintln!("the sniper answered: {}", r.text());
    let taken: Vec<u16> = r.json()["data"]["taken"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    let held_by_supervisor: Vec<u16> = taken
        .iter()
        .copied()
        .filter(|p| !busy.contains(p))
        .collect();
    assert!(
        held_by_supervisor.is_empty(),
        "the sniper took ports the supervisor holds: {held_by_supervisor:?} ({})",
        r.text()
    );
    let log = sup.log_text();
    assert!(
        !log.contains("no free port in the worker range"),
        "a start found no port:\n{log}"
    );
}
