//! Becoming someone else: the identity a worker (or the installer) takes
//! between fork and exec, and the supervisor's own drop from root to a uid
//! that keeps only the capabilities it needs.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

/// What a child process becomes before it runs anything.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub uid: u32,
    /// Processes and threads of this uid (RLIMIT_NPROC).
    pub nproc: u64,
    /// Open files of each process (RLIMIT_NOFILE); capped at the hard limit.
    pub nofile: u64,
    /// 0o077 for agents (their files are theirs), 0o022 for the installer
    /// (the environments it builds are for every agent to read).
    pub umask: u32,
}

/// The capabilities the supervisor keeps after dropping root: become the
/// agents' uids, signal them, and hand them their files.
const KEPT: [caps::Capability; 4] = [
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_KILL,
    caps::Capability::CAP_CHOWN,
];

/// Whether this process can switch uids: root, or the capabilities for it.
pub fn can_switch_uids() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let has = |c| caps::has_cap(None, caps::CapSet::Effective, c).unwrap_or(false);
    KEPT.iter().all(|c| has(*c))
}

/// Makes `cmd`'s child take `id` between fork and exec: no supplementary
/// groups, gid = uid, its limits and umask, and `no_new_privs` (a setuid or
/// file-capability binary gives it nothing), then enters `cwd` (as the new
/// uid: the folder is private to it). Must be added before the parent-death
/// signal is armed: changing uid clears it.
pub fn become_identity(cmd: &mut tokio::process::Command, id: Identity, cwd: Option<&Path>) {
    let (uid, gid) = (Uid::from_raw(id.uid), Gid::from_raw(id.uid));
    let hard = getrlimit(Resource::RLIMIT_NOFILE).map_or(id.nofile, |(_, h)| h);
    let nofile = id.nofile.min(hard);
    let umask = Mode::from_bits_truncate(id.umask);
    let cwd = cwd.and_then(|p| CString::new(p.as_os_str().as_bytes()).ok());
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (setgroups, setresgid, setresuid,
    // setrlimit, umask, prctl, chdir); it allocates nothing (the folder's
    // C string is made before the fork).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&[])?;
            nix::unistd::setresgid(gid, gid, gid)?;
            setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile)?;
            nix::unistd::setresuid(uid, uid, uid)?;
            // After the uid change: the count is of the new uid's tasks.
            setrlimit(Resource::RLIMIT_NPROC, id.nproc, id.nproc)?;
            nix::sys::stat::umask(umask);
            nix::sys::prctl::set_no_new_privs()?;
            if let Some(dir) = &cwd {
                nix::unistd::chdir(dir.as_c_str())?;
            }
            Ok(())
        });
    }
}

/// Drops the supervisor from root to `uid` (gid = uid), keeping exactly
/// [`KEPT`] (permitted and effective; nothing inheritable or ambient) and
/// removing every other capability from the bounding set. Must run before
/// any other thread exists: capabilities are per thread.
pub fn drop_supervisor(uid: u32) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use caps::{CapSet, CapsHashSet};
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "PAR_SUPERVISOR_UID={uid} needs the supervisor to start as root (it runs as uid {})",
        nix::unistd::geteuid()
    );
    let keep: CapsHashSet = KEPT.into_iter().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            // Fails only for capabilities this kernel does not know.
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    nix::sys::prctl::set_keepcaps(true).context("PR_SET_KEEPCAPS")?;
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(uid));
    nix::unistd::setgroups(&[]).context("setgroups")?;
    nix::unistd::setresgid(g, g, g).context("setresgid")?;
    nix::unistd::setresuid(u, u, u).context("setresuid")?;
    nix::sys::prctl::set_keepcaps(false).context("PR_SET_KEEPCAPS")?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).context("capset inheritable")?;
    caps::set(None, CapSet::Permitted, &keep).context("capset permitted")?;
    caps::set(None, CapSet::Effective, &keep).context("capset effective")?;
    let _ = caps::clear(None, CapSet::Ambient);
    Ok(())
}
