//! Starting the agent host process with its private channel.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;

/// The agent host program (stdlib-only Python), shipped inside the binary.
pub const HOST_PY: &str = include_str!("host.py");

/// What the agent host needs to start.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// The package environment's interpreter.
    pub python: PathBuf,
    /// Extracted package root: the cwd and first `sys.path` entry.
    pub root: PathBuf,
    /// Variables added to the worker's own environment (package `.env` + manifest).
    /// The host gets that environment and these, nothing more: under a
    /// supervisor the worker's was made from an allow-list, so the agent sees
    /// none of the supervisor's own variables.
    pub env: BTreeMap<String, String>,
    /// JSON config for `host.py` (entrypoint, http_server, rest, a2a, threads, port).
    pub config: serde_json::Value,
}

/// Spawns the agent host; returns the child and the worker's end of the channel.
/// Its stdout/stderr are the worker's (the agent's prints are log lines).
pub fn spawn(spec: &HostSpec) -> std::io::Result<(tokio::process::Child, tokio::net::UnixStream)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let mut config = spec.config.clone();
    config["fd"] = theirs.as_raw_fd().into();
    config["root"] = spec.root.to_string_lossy().into_owned().into();
    let mut cmd = tokio::process::Command::new(&spec.python);
    cmd.arg("-u")
        .arg("-c")
        .arg(HOST_PY)
        .arg(config.to_string())
        .current_dir(&spec.root)
        .envs(&spec.env)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    crate::unix::prepare_host(&mut cmd, theirs.as_raw_fd());
    let child = cmd.spawn()?;
    drop(theirs);
    ours.set_nonblocking(true)?;
    Ok((child, tokio::net::UnixStream::from_std(ours)?))
}
