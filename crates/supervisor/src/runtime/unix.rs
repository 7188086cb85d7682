//! Unix process plumbing: worker process groups, the parent-death signal,
//! group signals, and reaping of orphans when the supervisor is PID 1.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::sync::Mutex;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Makes the child the leader of its own process group and asks the kernel
/// to SIGKILL it when the supervisor dies (even by SIGKILL).
///
/// The parent-death signal fires when the *thread* that forked exits, so
/// workers must be spawned from a long-lived runtime thread (the supervisor's
/// state task), never from a `spawn_blocking` thread.
pub fn isolate(cmd: &mut tokio::process::Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (setpgid, prctl, getppid, _exit);
    // it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The supervisor may have died before prctl took effect.
            if nix::unistd::getppid() != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the process group led by `pid`. Errors (e.g. the group
/// is already gone) are returned for the caller to ignore or log.
pub fn signal_group(pid: u32, signal: Signal) -> nix::Result<()> {
    killpg(Pid::from_raw(pid as i32), signal)
}

/// The pids tokio waits for; the orphan reaper leaves them alone.
pub static TRACKED: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// Runs `spawn` with the tracked set locked, so that the reaper never sees a
/// child between its fork and its registration.
pub fn spawn_tracked<T>(spawn: impl FnOnce() -> std::io::Result<(T, u32)>) -> std::io::Result<T> {
    let mut guard = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    let (value, pid) = spawn()?;
    guard.get_or_insert_with(HashSet::new).insert(pid);
    Ok(value)
}

pub fn untrack(pid: u32) {
    let mut guard = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(set) = guard.as_mut() {
        set.remove(&pid);
    }
}

/// When running as PID 1 (no tini), processes orphaned inside the container
/// are re-parented to us: reap the zombies among them that tokio does not
/// track. Reads our children from `/proc/self/task/*/children`.
pub fn reap_orphans() {
    if std::process::id() != 1 {
        return;
    }
    let guard = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            if guard.as_ref().is_some_and(|s| s.contains(&pid)) {
                continue;
            }
            let _ = nix::sys::wait::waitpid(
                Pid::from_raw(pid as i32),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}
