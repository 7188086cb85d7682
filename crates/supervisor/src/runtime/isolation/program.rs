//! The `par` binary as the processes of agents' uids start it (workers, `par
//! install-env`, `par disk-usage`), wherever it lives.
//!
//! An ELF binary is opened once at start, before the supervisor drops root,
//! and each child runs it through that descriptor: `/proc/self/fd/N`,
//! inherited across fork and closed by the exec itself. The kernel follows
//! that link to the open file without walking its folders, so a checkout in
//! a 0700 folder (root's home, `mktemp -d`) works: the agents' uids only need
//! to execute the file. It also pins the binary the supervisor started with
//! (a rebuild on disk reaches workers at the supervisor's next start).
//!
//! A script (the tests' stand-in worker) cannot run that way: its
//! interpreter would open `/proc/self/fd/N` after the exec closed it. It runs
//! by its path, which the agents' uids must be able to walk to.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// A program the supervisor starts as agents' uids.
#[derive(Debug)]
pub struct Program {
    /// As configured; what children see as `argv[0]`.
    pub path: PathBuf,
    /// The open ELF binary (close-on-exec), when it is run through it.
    file: Option<File>,
}

impl Program {
    /// Opens `path` when it is an ELF binary and `/proc` is there to run it
    /// through; otherwise it will be run by its path.
    pub fn open(path: &Path) -> std::io::Result<Program> {
        let file = File::open(path)?;
        let mut magic = [0u8; 4];
        let elf = file.read_exact_at(&mut magic, 0).is_ok() && magic == *b"\x7fELF";
        let proc_fd = Path::new("/proc/self/fd").is_dir();
        Ok(Program {
            path: path.to_path_buf(),
            file: (elf && proc_fd).then_some(file),
        })
    }

    /// Whether children run it through the descriptor (its folders need not
    /// be reachable).
    pub fn by_descriptor(&self) -> bool {
        self.file.is_some()
    }

    /// The file's permission bits (of the open file when there is one).
    pub fn mode(&self) -> std::io::Result<u32> {
        let meta = match &self.file {
            Some(f) => f.metadata()?,
            None => std::fs::metadata(&self.path)?,
        };
        Ok(meta.permissions().mode() & 0o7777)
    }

    /// A command that runs the program, `argv[0]` its configured path.
    pub fn command(&self) -> tokio::process::Command {
        match &self.file {
            Some(f) => {
                let mut cmd =
                    tokio::process::Command::new(format!("/proc/self/fd/{}", f.as_raw_fd()));
                cmd.arg0(&self.path);
                cmd
            }
            None => tokio::process::Command::new(&self.path),
        }
    }
}
