//! Who owns what under `$PAR_HOME` when agents run as their own uids:
//!
//! | path                        | owner      | mode | holds |
//! |-----------------------------|------------|------|-------|
//! | `$PAR_HOME`                 | supervisor | 0711 | |
//! | `agents/`                   | supervisor | 0711 | |
//! | `agents/<id>/`              | agent      | 0700 | its extracted packages, `home/`, `tmp/` |
//! | `agents/.staged/<w>.apkg`   | agent      | 0400 | the package one worker starts from |
//! | `envs/`                     | supervisor | 0755 | Python environments by requirements hash |
//! | `envs/<hash>/` (sealed)     | supervisor | 0555 | an environment: nothing in it writable |
//! | `envs/<hash>/` (building)   | installer  | 0755 | the one environment being built |
//! | `installer/`                | installer  | 0700 | the build's scratch, HOME and caches, new for each build |
//! | `run/`, `downloads/`        | supervisor | 0700 | boot token, fetched packages |
//!
//! The installer uid (the build uid) owns only the environment being built
//! and its scratch: never `envs/`, `$PAR_HOME` or a sealed environment, so
//! a requirement's build step cannot alter, rename or replace them.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

pub const AGENTS: &str = "agents";
pub const STAGED: &str = ".staged";
pub const ENVS: &str = "envs";
pub const INSTALLER: &str = "installer";
/// The marker of a finished environment (par-pyenv's `READY_MARKER`): in
/// a sealed one, written by the seal.
const READY_MARKER: &str = ".par-ready";

fn chown(path: &Path, uid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))
        .map_err(|e| io::Error::new(e.kind(), format!("chown {} to {uid}: {e}", path.display())))
}

fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io::Error::new(e.kind(), format!("chmod {}: {e}", path.display())))
}

/// A folder that exists with this owner and mode.
fn owned_dir(path: &Path, uid: u32, mode: u32) -> io::Result<()> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("create {}: {e}", path.display()),
            ))
        }
    }
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is not a folder", path.display()),
        ));
    }
    if meta.uid() != uid {
        chown(path, uid)?;
    }
    if meta.mode() & 0o7777 != mode {
        chmod(path, mode)?;
    }
    Ok(())
}

/// Lays out `$PAR_HOME` for agents under their own uids (see the table
/// above). Runs once, as root, before the supervisor drops to its uid.
pub fn prepare_home(home: &Path, supervisor: u32, installer: u32) -> io::Result<()> {
    fs::create_dir_all(home)
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", home.display())))?;
    owned_dir(home, supervisor, 0o711)?;
    owned_dir(&home.join(AGENTS), supervisor, 0o711)?;
    owned_dir(&home.join(AGENTS).join(STAGED), supervisor, 0o711)?;
    for private in ["run", "downloads"] {
        owned_dir(&home.join(private), supervisor, 0o700)?;
    }
    owned_dir(&home.join(INSTALLER), installer, 0o700)?;
    // Environments in it that are not sealed (built by an earlier PAR as
    // the installer, left by a build cut short, or by a supervisor without
    // per-agent uids sharing this PAR_HOME) may hold what a build step
    // wrote: none is handed to an agent; each is removed and built again
    // when an agent needs it (not now: another supervisor may be using it).
    owned_dir(&home.join(ENVS), supervisor, 0o755)
}

/// Whether `dir` is an environment sealed by `sealer` (or root): owned by
/// it, not writable, with the ready marker its seal wrote last.
pub fn is_sealed(dir: &Path, sealer: u32) -> bool {
    let ours = |m: &fs::Metadata| m.uid() == sealer || m.uid() == 0;
    let (Ok(d), Ok(marker)) = (
        fs::symlink_metadata(dir),
        fs::symlink_metadata(dir.join(READY_MARKER)),
    ) else {
        return false;
    };
    d.is_dir()
        && ours(&d)
        && d.mode() & 0o222 == 0
        && marker.is_file()
        && ours(&marker)
        && dir.join("bin").join("python").exists()
}

/// Removes `path` whoever owns what is in it (a build uid may leave
/// folders it made unreadable): each folder is made ours before its
/// entries go. Nothing is followed through a symbolic link.
pub fn discard(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        chown(path, nix::unistd::geteuid().as_raw())?;
        chmod(path, 0o700)?;
        for entry in fs::read_dir(path)? {
            discard(&entry?.path())?;
        }
        fs::remove_dir(path)
            .map_err(|e| io::Error::new(e.kind(), format!("remove {}: {e}", path.display())))
    } else {
        fs::remove_file(path)
            .map_err(|e| io::Error::new(e.kind(), format!("remove {}: {e}", path.display())))
    }
}

/// A new empty folder at `path` (whatever was there is discarded), made by
/// us and handed to `uid` with `mode`.
pub fn fresh_dir(path: &Path, uid: u32, mode: u32) -> io::Result<()> {
    discard(path)?;
    owned_dir(path, nix::unistd::geteuid().as_raw(), mode)?;
    chown(path, uid)
}

/// Seals a built environment: everything in it becomes ours (the
/// supervisor's uid, which no agent or build has), readable by all,
/// writable by none; the ready marker is written last, then the folder
/// itself closed. The build uid must have no process left. A symbolic link
/// must lead inside the environment or to a file only root (or we) can
/// change; a fifo, socket or device is refused. On error the caller
/// discards the folder. Answers how many entries it sealed.
pub fn seal(dir: &Path) -> io::Result<u64> {
    let root = fs::canonicalize(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    let mut entries = 0;
    seal_entry(&root, &root, me, &mut entries)?;
    chmod(&root, 0o755)?;
    let marker = root.join(READY_MARKER);
    fs::write(&marker, "sealed\n")
        .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", marker.display())))?;
    chmod(&marker, 0o444)?;
    chmod(&root, 0o555)?;
    Ok(entries)
}

fn seal_entry(path: &Path, root: &Path, me: u32, entries: &mut u64) -> io::Result<()> {
    *entries += 1;
    let meta = fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    chown(path, me)?;
    if kind.is_dir() {
        chmod(path, 0o700)?;
        for entry in fs::read_dir(path)? {
            seal_entry(&entry?.path(), root, me, entries)?;
        }
        chmod(path, 0o555)
    } else if kind.is_file() {
        let exec = meta.mode() & 0o111 != 0;
        chmod(path, if exec { 0o555 } else { 0o444 })
    } else if kind.is_symlink() {
        let refused = |why: &str| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{}: a symbolic link {why}", path.display()),
            )
        };
        let target = fs::canonicalize(path).map_err(|_| refused("that leads nowhere"))?;
        if target.starts_with(root) || fixed(&target, me) {
            Ok(())
        } else {
            Err(refused(&format!(
                "to {}, which others can change",
                target.display()
            )))
        }
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: neither a file, a folder nor a link", path.display()),
        ))
    }
}

/// Whether `path` and every folder above it belong to root (or `me`) and
/// are writable by no one else (a sticky folder such as `/tmp` may be: its
/// entries are then checked as well).
fn fixed(path: &Path, me: u32) -> bool {
    path.ancestors().all(|p| {
        fs::symlink_metadata(p).is_ok_and(|m| {
            let sticky = m.is_dir() && m.mode() & 0o1000 != 0;
            (m.uid() == 0 || m.uid() == me) && (m.mode() & 0o022 == 0 || sticky)
        })
    })
}

/// Gives `path` and everything under it to `uid`. A folder is made ours
/// for the walk (CAP_CHOWN, not CAP_DAC_READ_SEARCH, is what a dropped
/// supervisor keeps), its mode restored after.
fn hand_over(path: &Path, uid: u32) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let me = nix::unistd::geteuid().as_raw();
        let mode = meta.mode() & 0o7777;
        chown(path, me)?;
        chmod(path, mode | 0o700)?;
        for entry in fs::read_dir(path)? {
            hand_over(&entry?.path(), uid)?;
        }
        chmod(path, mode)?;
    }
    chown(path, uid)
}

/// `None` when every folder from `/` down to `path` lets others through
/// (and `path` itself lets them read, if `read`); else the first one that
/// does not, with its mode.
pub fn unreachable_part(path: &Path, read: bool) -> Option<(PathBuf, u32)> {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut at = PathBuf::from("/");
    let mut parts: Vec<PathBuf> = Vec::new();
    for c in path.components().skip(1) {
        at.push(c);
        parts.push(at.clone());
    }
    let last = parts.len();
    let root = std::iter::once(PathBuf::from("/"));
    for (i, p) in root.chain(parts).enumerate() {
        let Ok(meta) = fs::metadata(&p) else {
            return Some((p, 0));
        };
        let mode = meta.mode();
        let need = match (meta.is_dir(), i == last && read) {
            (true, true) => 0o005,
            (true, false) => 0o001,
            (false, _) => 0o004,
        };
        if mode & need != need {
            return Some((p, mode & 0o7777));
        }
    }
    None
}

/// `$PATH` without the folders agents could not search anyway (e.g. under
/// a 0700 `/root`), so their programs resolve to what they can run.
pub fn agents_path(path: &str) -> String {
    let kept: Vec<PathBuf> = std::env::split_paths(path)
        .filter(|p| p.is_absolute() && unreachable_part(p, true).is_none())
        .collect();
    std::env::join_paths(kept)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
}

/// Agents whose `tmp/` is emptied before their next worker starts (the
/// disk watchdog's restarts).
static CLEAR_TMP: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Empties `agent`'s `tmp/` before its next worker starts.
pub fn clear_tmp_at_next_start(agent: &str) {
    CLEAR_TMP
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(agent.to_string());
}

/// The agent's private folder (`agents/<id>/`, with `home/` and `tmp/`),
/// owned by its uid, mode 0700. Created on first use; left as it is after
/// (but for `tmp/`, emptied when [`clear_tmp_at_next_start`] asked).
pub fn agent_dir(home: &Path, agent: &str, uid: u32) -> io::Result<PathBuf> {
    let dir = home.join(AGENTS).join(agent);
    let clear = CLEAR_TMP
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(agent);
    if clear && fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        // Ours for the moment (CAP_CHOWN: the folder is the agent's, 0700).
        chown(&dir, nix::unistd::geteuid().as_raw())?;
        let cleared = fresh_dir(&dir.join("tmp"), uid, 0o700);
        chown(&dir, uid)?;
        cleared?;
    }
    if let Ok(meta) = fs::symlink_metadata(&dir) {
        if meta.is_dir() && meta.uid() == uid && meta.mode() & 0o7777 == 0o700 {
            return Ok(dir);
        }
        if meta.is_dir() && meta.uid() != uid {
            // The agent's uid changed (another PAR_AGENT_UIDS): its files follow.
            hand_over(&dir, uid)?;
        }
    }
    // Built as ours, handed over last: nothing of it is ever the agent's
    // before it is complete.
    owned_dir(&dir, nix::unistd::geteuid().as_raw(), 0o700)?;
    for sub in ["home", "tmp"] {
        let p = dir.join(sub);
        owned_dir(&p, nix::unistd::geteuid().as_raw(), 0o700)?;
        chown(&p, uid)?;
    }
    chown(&dir, uid)?;
    Ok(dir)
}

/// The package a worker starts from, as a file only its agent can read.
pub struct Staged {
    pub path: PathBuf,
    /// Open for reading: the installer's stdin.
    pub file: fs::File,
    pub sha256: String,
}

/// Copies the package (or packs the folder) into `agents/.staged/<name>.apkg`,
/// readable by `uid` alone. Blocking.
pub fn stage(home: &Path, source: &Path, name: &str, uid: u32) -> Result<Staged, StageError> {
    let dir = home.join(AGENTS).join(STAGED);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let path = dir.join(format!("{name}.apkg"));
    let _ = fs::remove_file(&tmp);
    // A package the supervisor cannot read stays so until someone changes
    // it or its folder: the agent fails, naming it, instead of retrying.
    let unreadable = |e: &io::Error| {
        StageError::Package(format!(
            "the package {} cannot be read by the supervisor (uid {}): {e}",
            source.display(),
            nix::unistd::geteuid()
        ))
    };
    let meta = fs::metadata(source).map_err(|e| unreadable(&e))?;
    let written = if meta.is_dir() {
        par_package::pack(source, &tmp)
            .map(|_| ())
            .map_err(|e| StageError::Package(par_telemetry::error_chain(&e)))
    } else {
        fs::copy(source, &tmp).map(|_| ()).map_err(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied && fs::File::open(source).is_err() {
                return unreadable(&e);
            }
            StageError::Io(format!(
                "copy {} to {}: {e}",
                source.display(),
                tmp.display()
            ))
        })
    };
    let finish = || -> Result<Staged, StageError> {
        written?;
        let io = |e: io::Error| StageError::Io(e.to_string());
        let file = fs::File::open(&tmp).map_err(io)?;
        let sha256 = par_package::sha256_file(&tmp)
            .map_err(|e| StageError::Io(par_telemetry::error_chain(&e)))?;
        chmod(&tmp, 0o400).map_err(io)?;
        chown(&tmp, uid).map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(Staged { path, file, sha256 })
    };
    let staged = finish();
    if staged.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    staged
}

/// Why a package could not be staged: the package (permanent) or the disk.
#[derive(Debug)]
pub enum StageError {
    Package(String),
    Io(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_names_the_folder_that_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        chmod(dir.path(), 0o755).unwrap();
        chmod(&open, 0o755).unwrap();
        assert_eq!(unreachable_part(&open, true), None);
        chmod(dir.path(), 0o700).unwrap();
        assert_eq!(
            unreachable_part(&open, true),
            Some((fs::canonicalize(dir.path()).unwrap(), 0o700))
        );
        chmod(dir.path(), 0o711).unwrap();
        assert_eq!(unreachable_part(&open, true), None);
        chmod(&open, 0o711).unwrap();
        assert!(unreachable_part(&open, true).is_some(), "not listable");
        assert_eq!(unreachable_part(&open, false), None, "but searchable");
    }

    #[test]
    fn a_sealed_environment_is_writable_by_no_one_and_links_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("env");
        fs::create_dir_all(env.join("bin")).unwrap();
        fs::create_dir_all(env.join("lib/site-packages/locked")).unwrap();
        fs::write(env.join("lib/site-packages/m.py"), "x = 1\n").unwrap();
        fs::write(env.join("bin/tool"), "#!/bin/sh\n").unwrap();
        chmod(&env.join("bin/tool"), 0o4777).unwrap();
        std::os::unix::fs::symlink("/usr/bin/env", env.join("bin/python")).unwrap();
        std::os::unix::fs::symlink("lib", env.join("lib64")).unwrap();
        chmod(&env.join("lib/site-packages/locked"), 0o000).unwrap();
        seal(&env).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert!(is_sealed(&env, me));
        for (p, mode) in [
            ("", 0o555),
            ("bin/tool", 0o555),
            ("lib/site-packages/m.py", 0o444),
            ("lib/site-packages/locked", 0o555),
            (".par-ready", 0o444),
        ] {
            let m = fs::symlink_metadata(env.join(p)).unwrap();
            assert_eq!((m.uid(), m.mode() & 0o7777), (me, mode), "{p}");
        }
        discard(&env).unwrap();
        assert!(!env.exists());

        // A link to what others can change is refused; so is one to nowhere.
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        chmod(&open, 0o777).unwrap();
        fs::write(open.join("x.pth"), "").unwrap();
        for target in [open.join("x.pth"), dir.path().join("missing")] {
            fs::create_dir_all(env.join("lib")).unwrap();
            std::os::unix::fs::symlink(&target, env.join("lib/x.pth")).unwrap();
            let e = seal(&env).unwrap_err().to_string();
            assert!(e.contains("symbolic link"), "{e}");
            assert!(!is_sealed(&env, me));
            discard(&env).unwrap();
        }
    }

    #[test]
    fn the_path_keeps_what_others_can_search() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o700).unwrap();
        let joined = format!("{}:/usr/bin:relative:/nonexistent", dir.path().display());
        assert_eq!(agents_path(&joined), "/usr/bin");
    }
}
