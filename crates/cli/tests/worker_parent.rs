//! End-to-end: a supervised worker dies with its parent, even when the exec that
//! started it cleared the parent-death signal the parent set (a `par` with file
//! capabilities, as in the container image); its agent host dies with it.

mod worker_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use worker_support::*;

fn echo_agent(dir: &Path) -> std::path::PathBuf {
    write_agent(
        dir,
        &[
            (
                "agent.yaml",
                "name: orphan\nversion: '1.0'\nentrypoint: main:handler\n",
            ),
            ("main.py", "def handler(c):\n    return c\n"),
        ],
    )
}

/// A process is gone once /proc no longer has it or it is a zombie (nobody reaps
/// orphans in a container without an init).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, r)| r.chars().next())
                .unwrap_or('?');
            state != 'Z' && state != 'X'
        }
        Err(_) => false,
    }
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn cap_eff(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| v.trim().to_string())
        .expect("CapEff")
}

fn wait_health(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = request(port, "GET", "/health", &[], None) {
            if r.json()["status"] == "ready" {
                return;
            }
        }
        assert!(Instant::now() < deadline, "worker not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads the worker's pid (first line of the parent's stdout).
fn worker_pid(parent: &mut Child) -> u32 {
    let mut line = String::new();
    BufReader::new(parent.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("worker pid");
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a pid: {line:?}"))
}

/// Kills the parent with SIGKILL and waits for the worker and its host to die.
fn kill_parent_and_watch(mut parent: Child, worker: u32) {
    wait_for_host(worker);
    let hosts = children(worker);
    assert!(!hosts.is_empty(), "the worker has an agent host");
    parent.kill().expect("SIGKILL the parent");
    parent.wait().expect("reap the parent");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(worker) || hosts.iter().any(|&h| alive(h)) {
        if Instant::now() > deadline {
            for p in std::iter::once(worker).chain(hosts.iter().copied()) {
                let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
            }
            panic!("the worker {worker} or its host {hosts:?} outlived its parent");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_host(worker: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while children(worker).is_empty() {
        assert!(Instant::now() < deadline, "no agent host");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn worker_and_host_die_when_the_parent_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = echo_agent(dir.path());
    let port = free_port();
    // A shell parent that sets no parent-death signal: the worker's own must act.
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg("PAR_PARENT_PID=$$ \"$0\" worker & echo $!; wait")
        .arg(env!("CARGO_BIN_EXE_par"))
        .env("PAR_PORT", port.to_string())
        .env("PAR_AGENT_ID", "orphan")
        .env("PAR_PACKAGE_PATH", &pkg)
        .env("PAR_HOME", par_home())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the parent");
    let worker = worker_pid(&mut parent);
    wait_health(port);
    kill_parent_and_watch(parent, worker);
}

/// The parent drops its capabilities, sets the parent-death signal between fork
/// and exec (as the supervisor does) and execs a copy of `par` carrying
/// `cap_net_bind_service`: the exec gains capabilities, so the kernel clears the
/// signal. Only `PAR_SUPERVISOR_URL` is set: the worker compares with its
/// parent at start.
const CAP_PARENT: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
if os.geteuid() == 0:
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:
        sys.exit(f"capset failed: errno {ctypes.get_errno()}")
me = os.getpid()
pid = os.fork()
if pid == 0:
    libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    if os.getppid() != me:
        os._exit(1)
    os.execv(sys.argv[1], [sys.argv[1], "worker"])
print(pid, flush=True)
os.waitpid(pid, 0)
"#;

#[test]
fn parent_death_survives_an_exec_that_gains_capabilities() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = echo_agent(&dir.path().join("agent"));
    let par = dir.path().join("par");
    std::fs::copy(env!("CARGO_BIN_EXE_par"), &par).expect("copy par");
    let setcap = Command::new("setcap")
        .arg("cap_net_bind_service+ep")
        .arg(&par)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let port = free_port();
    let mut parent = Command::new("python3")
        .arg("-c")
        .arg(CAP_PARENT)
        .arg(&par)
        .env("PAR_PORT", port.to_string())
        .env("PAR_AGENT_ID", "orphan")
        .env("PAR_PACKAGE_PATH", &pkg)
        .env("PAR_HOME", par_home())
        .env("PAR_SUPERVISOR_URL", "http://127.0.0.1:9")
        .env_remove("PAR_PARENT_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the parent");
    let worker = worker_pid(&mut parent);
    wait_health(port);
    let (parent_caps, worker_caps) = (cap_eff(parent.id()), cap_eff(worker));
    eprintln!("setcap: {setcap}; CapEff parent {parent_caps}, worker {worker_caps}");
    if parent_caps == worker_caps {
        // Without root or setcap the exec gains nothing: the case cannot be made here.
        eprintln!("skipped: the exec did not gain capabilities (needs root or setcap)");
        let _ = parent.kill();
        let _ = Command::new("kill")
            .arg("-9")
            .arg(worker.to_string())
            .status();
        return;
    }
    kill_parent_and_watch(parent, worker);
}

#[test]
fn a_worker_whose_parent_is_not_par_parent_pid_exits_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = echo_agent(dir.path());
    let mut other = Command::new("sleep").arg("30").spawn().expect("sleep");
    let mut w = Worker::start(
        &pkg,
        "orphan",
        &[("PAR_PARENT_PID", &other.id().to_string())],
    );
    let status = w.wait_exit(Duration::from_secs(10));
    let _ = other.kill();
    let _ = other.wait();
    let status = status.expect("the worker exits at once");
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(
        request(w.port, "GET", "/health", &[], None).is_err(),
        "never listened"
    );
}
