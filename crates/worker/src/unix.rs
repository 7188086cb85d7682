//! Unix-only process plumbing for the agent host: inherited channel fd and parent-death signal.
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
