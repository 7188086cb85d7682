//! Processes an agent's uid leaves behind. A process started with `setsid`
//! leaves its worker's process group, so a group kill misses it; found by
//! its uid instead, it ends with its agent and never waits for the next
//! agent of that id (same uid) to read its secrets.
//!
//! When no worker of the agent is meant to run (stopped, deleted, idle,
//! crashed), every process of the uid is killed; while one still runs (a
//! rollout, one replica of several stopping) only those that descend from
//! none of its running workers. Before a uid is handed to the first worker
//! of an agent, none may be left. Kills go through a pidfd, so a pid reused
//! meanwhile is never hit; they are repeated until a scan finds none.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::libc;

use crate::model::{AgentId, SpawnFailure, WorkerEvent, WorkerId};
use crate::runtime::Process;

/// How long a reap may take at most (it runs on the dispatcher's thread).
const REAP_LIMIT: Duration = Duration::from_millis(500);

/// One process as `/proc/<pid>/status` shows it.
#[derive(Debug, Clone, Copy)]
struct Proc {
    ppid: u32,
    /// Its real, effective or saved uid is the one asked about.
    owned: bool,
}

/// The live processes (zombies excluded: they have ended) of the system,
/// each marked whether it belongs to `uid`.
fn scan(uid: u32) -> HashMap<u32, Proc> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(p) = status(pid, uid) {
            out.insert(pid, p);
        }
    }
    out
}

fn status(pid: u32, uid: u32) -> Option<Proc> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
    };
    let state = field("State:");
    if state.starts_with('Z') || state.starts_with('X') {
        return None;
    }
    let ppid = field("PPid:").parse().unwrap_or(0);
    // Real, effective, saved, filesystem: an agent cannot change them
    // (no_new_privs, no capabilities), so any of the first three is its.
    let owned = field("Uid:")
        .split_whitespace()
        .take(3)
        .any(|u| u.parse::<u32>() == Ok(uid));
    Some(Proc { ppid, owned })
}

/// Whether `pid` has one of `roots` among itself and its ancestors.
fn descends(procs: &HashMap<u32, Proc>, mut pid: u32, roots: &[u32]) -> bool {
    for _ in 0..4096 {
        if roots.contains(&pid) {
            return true;
        }
        match procs.get(&pid) {
            Some(p) if p.ppid > 1 && p.ppid != pid => pid = p.ppid,
            _ => return false,
        }
    }
    false
}

/// The processes of `uid` that descend from none of `keep` (running workers).
fn strays(uid: u32, keep: &[u32]) -> Vec<u32> {
    let procs = scan(uid);
    let me = std::process::id();
    let mut pids: Vec<u32> = procs
        .iter()
        .filter(|(pid, p)| p.owned && **pid != me && !descends(&procs, **pid, keep))
        .map(|(pid, _)| *pid)
        .collect();
    pids.sort_unstable();
    pids
}

/// SIGKILL to `pid` if it is still a process of `uid`; the pidfd to wait
/// on, when the kernel has them.
fn kill(pid: u32, uid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; the descriptor is owned from here on.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        // No pidfds (before Linux 5.3): check and kill by pid.
        if status(pid, uid).is_some_and(|p| p.owned) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        return None;
    }
    // SAFETY: `fd` was just returned by pidfd_open and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // Checked after the pidfd pins the process: if the pid was reused before
    // it, this reads the new process; if after, the signal below fails.
    if !status(pid, uid).is_some_and(|p| p.owned) {
        return None;
    }
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
    Some(fd)
}

/// Waits until every pidfd is readable (its process has ended) or `until`.
fn wait_all(fds: &[OwnedFd], until: Instant) {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !polls.is_empty() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let ms = left.as_millis().clamp(1, 100) as libc::c_int;
        // SAFETY: `polls` is a valid array of its length for the call.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, ms) };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
        polls.retain(|p| p.revents == 0);
        for p in &mut polls {
            p.revents = 0;
        }
    }
}

/// Kills every process of `uid` that descends from none of `keep` (the pids
/// of the agent's running workers; empty: every process of the uid), scan
/// after scan until one finds none. Answers the pids still there after
/// [`REAP_LIMIT`] (empty when all are gone).
pub fn reap(uid: u32, keep: &[u32]) -> Vec<u32> {
    // Never the supervisor's own uid (shared-uid mode, or a mistake): that
    // would be everything it runs, itself included.
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() || uid == nix::unistd::getuid().as_raw() {
        return Vec::new();
    }
    let until = Instant::now() + REAP_LIMIT;
    loop {
        let found = strays(uid, keep);
        if found.is_empty() || Instant::now() >= until {
            return found;
        }
        let fds: Vec<OwnedFd> = found.iter().filter_map(|p| kill(*p, uid)).collect();
        if fds.len() < found.len() {
            // Killed by pid (or already gone): give them a moment.
            std::thread::sleep(Duration::from_millis(2));
        }
        wait_all(&fds, until);
    }
}

impl crate::runtime::Runtime {
    /// The pids of `agent`'s workers that run (other than `except`).
    fn running_workers(&self, agent: &AgentId, except: WorkerId) -> Vec<u32> {
        self.workers
            .iter()
            .filter(|(id, w)| **id != except && w.launch.agent == *agent)
            .filter_map(|(_, w)| match &w.process {
                Process::Started { pid, exited } if !exited.load(Ordering::Acquire) => Some(*pid),
                _ => None,
            })
            .collect()
    }

    /// After `worker` of `agent` is released: every process of the agent's
    /// uid that none of its running workers started ends (all of them when
    /// none runs).
    pub(in crate::runtime) fn reap_leftovers(&self, agent: &AgentId, worker: WorkerId) {
        let Some(per) = self.isolation.per_agent() else {
            return;
        };
        let Ok(uid) = per.uid_for(agent.as_str()) else {
            return;
        };
        let keep = self.running_workers(agent, worker);
        let left = reap(uid, &keep);
        if !left.is_empty() {
            let then = if keep.is_empty() {
                "; no worker of the agent starts under that uid until they are gone"
            } else {
                ""
            };
            let msg = format!(
                "processes {left:?} of uid {uid} outlived SIGKILL for {REAP_LIMIT:?}{then}"
            );
            tracing::warn!(agent = %agent, uid, "{msg}");
            self.logs
                .push(agent.as_str(), &agent.process_id(0), "stderr", &msg);
        }
    }

    /// Before `worker`, prepared to run as `uid`, starts: when no other
    /// worker of its agent runs, no process of that uid may be left (they
    /// are killed first). The refusal, if one survives.
    pub(in crate::runtime) fn refuse_leftovers(
        &self,
        worker: WorkerId,
        uid: u32,
    ) -> Option<WorkerEvent> {
        let w = self.workers.get(&worker)?;
        if !matches!(w.process, Process::Preparing(_))
            || !self.running_workers(&w.launch.agent, worker).is_empty()
        {
            return None;
        }
        let left = reap(uid, &[]);
        if left.is_empty() {
            return None;
        }
        Some(WorkerEvent::SpawnFailed {
            reason: format!(
                "uid {uid} of agent {} still has processes {left:?} that survived SIGKILL; \
                 refusing to hand it to a new worker",
                w.launch.agent
            ),
            kind: SpawnFailure::Exec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestry() {
        let p = |ppid| Proc { ppid, owned: true };
        let procs: HashMap<u32, Proc> = [
            (10, p(1)),
            (11, p(10)),
            (12, p(11)),
            (20, p(1)),
            (21, p(20)),
        ]
        .into();
        assert!(descends(&procs, 12, &[10]));
        assert!(descends(&procs, 10, &[10]));
        assert!(!descends(&procs, 21, &[10]));
        assert!(!descends(&procs, 12, &[]));
        assert!(!descends(&procs, 99, &[10]));
    }

    /// A detached process (own session) of another uid is found by that
    /// uid, kept while it descends from a kept pid, else killed and waited
    /// for. Needs root (to start it as that uid).
    #[test]
    fn a_detached_process_is_found_and_killed() {
        use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to start a process as another uid");
            return;
        }
        let uid = 29_977;
        let mut child = std::process::Command::new("setsid")
            .args(["sleep", "60"])
            .uid(uid)
            .gid(uid)
            .spawn()
            .expect("setsid sleep");
        let pid = child.id();
        let me = std::process::id();
        assert!(strays(uid, &[]).contains(&pid), "found by its uid");
        assert!(strays(uid, &[me]).is_empty(), "it descends from us: kept");
        assert!(!strays(uid + 1, &[]).contains(&pid), "another uid's");
        let left = reap(uid, &[]);
        assert!(left.is_empty(), "{left:?}");
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
