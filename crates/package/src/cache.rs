//! The package cache `<home>/packages/`: the lock that keeps a sweep away from
//! running loads, the "last used" mark a load leaves, and the sweep itself.
//!
//! Every [`crate::load`] holds a shared `flock` on `<home>/packages/.lock` from
//! before it looks for its folder until it has marked it used (the folder's
//! mtime set to now), extraction included. [`sweep_packages`] takes the lock
//! exclusively (without waiting: a busy cache is swept next time), and while
//! holding it only renames its victims to `.trash-…`; it deletes them after
//! letting go. So a load either finds a folder that no sweep will take from
//! under it (it is marked used before the load returns), or does not find it
//! and extracts it again. Nothing relies on atime.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Name of the lock file inside `<home>/packages/`.
pub(crate) const LOCK_FILE: &str = ".lock";
/// Prefix of folders a sweep has taken and is deleting.
const TRASH_PREFIX: &str = ".trash-";

/// A held lock on the cache; released when dropped.
pub(crate) struct CacheLock {
    #[cfg(unix)]
    _lock: nix::fcntl::Flock<fs::File>,
}

fn open_lock_file(packages: &Path) -> io::Result<fs::File> {
    let path = packages.join(LOCK_FILE);
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        // A cache shared with another uid: reading is enough to lock.
        .or_else(|_| fs::File::open(&path))
}

impl CacheLock {
    /// Waits for a shared lock (what loads take). `None` when the lock file
    /// cannot be opened or locked; the load then goes ahead unlocked.
    pub(crate) fn shared(packages: &Path) -> Option<CacheLock> {
        #[cfg(unix)]
        {
            use nix::fcntl::{Flock, FlockArg};
            let file = match open_lock_file(packages) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(dir = %packages.display(), error = %e, "cannot open the package cache lock");
                    return None;
                }
            };
            match Flock::lock(file, FlockArg::LockShared) {
                Ok(lock) => Some(CacheLock { _lock: lock }),
                Err((_, e)) => {
                    tracing::warn!(dir = %packages.display(), error = %e, "cannot lock the package cache");
                    None
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = open_lock_file(packages);
            Some(CacheLock {})
        }
    }

    /// An exclusive lock if no load holds the cache now: `Ok(None)` when busy.
    fn exclusive_now(packages: &Path) -> io::Result<Option<CacheLock>> {
        let file = open_lock_file(packages)?;
        #[cfg(unix)]
        {
            use nix::fcntl::{Flock, FlockArg};
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => Ok(Some(CacheLock { _lock: lock })),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
                Err((_, e)) => Err(io::Error::from(e)),
            }
        }
        #[cfg(not(unix))]
        {
            drop(file);
            Ok(Some(CacheLock {}))
        }
    }
}

/// Marks a package folder as used now (its mtime), which keeps it from
/// [`sweep_packages`] for `older_than`. Best effort.
pub fn mark_used(root: &Path) {
    let result = fs::File::open(root).and_then(|dir| dir.set_modified(SystemTime::now()));
    if let Err(e) = result {
        tracing::debug!(root = %root.display(), error = %e, "could not mark the package folder as used");
    }
}

/// How long an extracted package no worker uses is kept (default).
const KEEP_UNUSED: Duration = Duration::from_secs(3600);
/// `PAR_PACKAGE_KEEP_UNUSED`: how long an extracted package or a download no
/// worker uses is kept ("1h", "30m"; "off" never sweeps), or why not.
pub fn keep_unused_from_env() -> Result<Option<Duration>, String> {
    match std::env::var("PAR_PACKAGE_KEEP_UNUSED") {
        Err(_) => Ok(Some(KEEP_UNUSED)),
        Ok(v) if v.trim().is_empty() => Ok(Some(KEEP_UNUSED)),
        Ok(v) if v.trim() == "off" => Ok(None),
        Ok(v) => match humantime::parse_duration(v.trim()) {
            Ok(d) if d >= Duration::from_secs(1) => Ok(Some(d)),
            Ok(_) => Err(format!("PAR_PACKAGE_KEEP_UNUSED={v:?}: at least 1s")),
            Err(e) => Err(format!(
                "PAR_PACKAGE_KEEP_UNUSED={v:?}: {e} (e.g. \"1h\", \"off\")"
            )),
        },
    }
}

/// `true` for the name of a package folder: 64 lowercase hex digits.
fn is_package_name(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Time since `path` was last modified (zero when unknown or in the future).
fn age(meta: &fs::Metadata) -> Duration {
    meta.modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or(Duration::ZERO)
}

/// What [`sweep_packages`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// sha256 of each package folder removed.
    pub removed: Vec<String>,
    /// Bytes of the files removed (package folders, leftovers of crashed
    /// loads and sweeps).
    pub freed_bytes: u64,
    /// Package folders kept because they are in `keep`.
    pub kept: usize,
    /// Package folders kept because they were used within `older_than`.
    pub recent: usize,
    /// Leftovers of crashed loads or sweeps removed (`.tmp-…`, `.trash-…`).
    pub leftovers_removed: usize,
    /// A load held the cache: nothing was removed; sweep again later.
    pub busy: bool,
    /// What could not be read or removed.
    pub errors: Vec<String>,
}

/// Removes the package folders `<home>/packages/<sha256>/` that are not in
/// `keep` and were not used (loaded) within `older_than`, and what crashed
/// loads or sweeps left behind. Never waits: when a load is running, the
/// report says `busy` and nothing is removed. Never removes a folder a
/// running load has found or is extracting. A folder in use by a running
/// worker must be in `keep` once `older_than` has passed since its load.
pub fn sweep_packages(home: &Path, keep: &HashSet<String>, older_than: Duration) -> SweepReport {
    let mut report = SweepReport::default();
    let packages = home.join("packages");
    if !packages.is_dir() {
        return report;
    }
    let lock = match CacheLock::exclusive_now(&packages) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            report.busy = true;
            return report;
        }
        Err(e) => {
            report.errors.push(format!(
                "cannot lock {}: {e}",
                packages.join(LOCK_FILE).display()
            ));
            return report;
        }
    };
    let keep: HashSet<String> = keep.iter().map(|s| s.trim().to_ascii_lowercase()).collect();
    let entries = match fs::read_dir(&packages) {
        Ok(e) => e,
        Err(e) => {
            report
                .errors
                .push(format!("cannot read {}: {e}", packages.display()));
            return report;
        }
    };
    static SEQ: AtomicU64 = AtomicU64::new(0);
    // (path, package sha256 or None for a leftover)
    let mut doomed: Vec<(PathBuf, Option<String>)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if name.starts_with(TRASH_PREFIX) {
            doomed.push((path, None));
        } else if name.starts_with(crate::extract::TMP_PREFIX) {
            // No load holds the lock, so nobody is writing this any more.
            if age(&meta) >= older_than {
                doomed.push((path, None));
            }
        } else if meta.is_dir() && is_package_name(&name) {
            if keep.contains(&name) {
                report.kept += 1;
            } else if age(&meta) < older_than {
                report.recent += 1;
            } else {
                let trash = packages.join(format!(
                    "{TRASH_PREFIX}{name}-{}-{}",
                    std::process::id(),
                    SEQ.fetch_add(1, Ordering::Relaxed)
                ));
                match fs::rename(&path, &trash) {
                    Ok(()) => doomed.push((trash, Some(name))),
                    Err(e) => report
                        .errors
                        .push(format!("cannot remove {}: {e}", path.display())),
                }
            }
        }
    }
    drop(lock);
    for (path, sha) in doomed {
        let size = disk_bytes(&path);
        let removed = if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {
                report.freed_bytes += size;
                match sha {
                    Some(sha) => report.removed.push(sha),
                    None => report.leftovers_removed += 1,
                }
            }
            Err(e) => report
                .errors
                .push(format!("cannot remove {}: {e}", path.display())),
        }
    }
    report.removed.sort();
    if !report.removed.is_empty() || report.leftovers_removed > 0 {
        tracing::info!(
            removed = report.removed.len(),
            leftovers = report.leftovers_removed,
            freed_bytes = report.freed_bytes,
            kept = report.kept,
            recent = report.recent,
            "package cache swept"
        );
    }
    report
}

/// Bytes of the files under `path` (symlinks not followed).
fn disk_bytes(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| disk_bytes(&e.path())).sum())
        .unwrap_or(0)
}
