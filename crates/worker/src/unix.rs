//! Unix-only process plumbing: the worker's own parent-death signal, and the agent
//! host's inherited channel fd and parent-death signal.
#![allow(unsafe_code)]

use std::os::fd::RawFd;

/// Makes the spawned agent host inherit `channel_fd` (it is close-on-exec in the
/// worker) and die with the worker (parent-death signal), staying in the
/// worker's process group so that stopping the group stops it too.
pub fn prepare_host(cmd: &mut tokio::process::Command, channel_fd: RawFd) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (fcntl, prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            use nix::fcntl::{fcntl, FcntlArg, FdFlag};
            let fd = std::os::fd::BorrowedFd::borrow_raw(channel_fd);
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(std::io::Error::from)?;
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            // The worker may have died between fork and prctl.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other(
                    "worker exited while starting the agent host",
                ));
            }
            Ok(())
        });
    }
}

/// Why a supervised worker must not run.
#[derive(Debug, thiserror::Error)]
pub enum ParentError {
    #[error("failed to set the parent-death signal: {0}")]
    Prctl(#[from] nix::Error),
    #[error("the parent process {expected} is gone (the parent is now {now}); exiting")]
    Gone { expected: i32, now: i32 },
}

/// Asks the kernel to SIGKILL this worker when its parent (the supervisor) dies,
/// then checks that the parent is still `expected` (`PAR_PARENT_PID`), or still
/// the one seen before the call when none is given.
///
/// The supervisor sets the same signal between fork and exec, but exec of a
/// binary that gains capabilities (the container's `par` carries
/// `cap_net_bind_service`) clears it; setting it again here, after exec, holds.
/// Call it before starting threads: the signal follows the parent's death
/// whichever thread of this process set it.
pub fn die_with_parent(expected: Option<i32>) -> Result<(), ParentError> {
    let before = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    let now = nix::unistd::getppid();
    let expected = expected.map(nix::unistd::Pid::from_raw).unwrap_or(before);
    if now != expected {
        return Err(ParentError::Gone {
            expected: expected.as_raw(),
            now: now.as_raw(),
        });
    }
    Ok(())
}
