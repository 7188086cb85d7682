//! The installer: `par install-env` run as the installer uid (the first of
//! `PAR_AGENT_UIDS`), the only uid that writes the shared Python
//! environments. It reads the package from stdin (an open file: it cannot
//! read the agent's copy), so no agent can tamper with an environment
//! another agent runs.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt as _;

use super::privileges::{become_identity, Identity};
use super::{Failure, PerAgent};
use crate::logs::LogStore;

/// Who runs the installer and where it keeps its things.
pub struct Install<'a> {
    pub per: &'a PerAgent,
    pub logs: &'a Arc<LogStore>,
    pub agent: &'a str,
    pub process: &'a str,
}

/// Kills the installer's whole group when the preparation is abandoned.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = crate::runtime::unix::signal_group(pid, Signal::SIGKILL);
        }
    }
}

/// Runs the installer on `package` and answers the interpreter to use.
pub async fn run(i: Install<'_>, package: std::fs::File) -> Result<PathBuf, Failure> {
    let per = i.per;
    let mut cmd = tokio::process::Command::new(&per.program);
    let scratch = per.home.join(super::files::INSTALLER);
    cmd.arg("install-env")
        .arg("--home")
        .arg(&per.home)
        .arg("--scratch")
        .arg(scratch.join("work"))
        .stdin(Stdio::from(package))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for k in super::NOT_INHERITED {
        cmd.env_remove(k);
    }
    cmd.env("PATH", &per.path)
        .env("HOME", &scratch)
        .env("TMPDIR", &scratch)
        .env("XDG_CACHE_HOME", scratch.join("cache"))
        // Its own, whatever the supervisor was given: a cache others can
        // write is a way into every environment.
        .env("UV_CACHE_DIR", scratch.join("cache").join("uv"))
        .env("PIP_CACHE_DIR", scratch.join("cache").join("pip"))
        .env(par_contract::env::LOG_FORMAT, "json");
    become_identity(
        &mut cmd,
        Identity {
            uid: per.installer,
            nproc: per.nproc,
            nofile: per.nofile,
            umask: 0o022,
        },
        Some(&scratch),
    );
    crate::runtime::unix::isolate(&mut cmd);
    let mut child = crate::runtime::unix::spawn_tracked(|| {
        let child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        Ok((child, pid))
    })
    .map_err(|e| Failure::environment(format!("failed to start the installer: {e}")))?;
    let pid = child.id();
    let _guard = GroupGuard(pid);
    let err = child.stderr.take().map(|p| {
        tokio::spawn(crate::logs::capture(
            Arc::clone(i.logs),
            i.agent.to_string(),
            i.process.to_string(),
            "stderr",
            p,
        ))
    });
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out).await;
    }
    let status = child.wait().await;
    if let Some(pid) = pid {
        crate::runtime::unix::untrack(pid);
    }
    if let Some(t) = err {
        let _ = t.await;
    }
    let status =
        status.map_err(|e| Failure::environment(format!("waiting for the installer: {e}")))?;
    let answer = out.lines().rev().find(|l| l.trim_start().starts_with('{'));
    match (status.code(), answer) {
        (Some(0), Some(line)) => {
            #[derive(serde::Deserialize)]
            struct Installed {
                python: PathBuf,
            }
            serde_json::from_str::<Installed>(line)
                .map(|a| a.python)
                .map_err(|e| Failure::environment(format!("the installer's answer {line:?}: {e}")))
        }
        (Some(par_contract::exit::PACKAGE_FAILURE), _) => Err(Failure::package(
            "the package's Python environment cannot be built (see the lines above)".into(),
        )),
        _ => Err(Failure::environment(format!(
            "the installer failed ({status}; see the lines above)"
        ))),
    }
}
