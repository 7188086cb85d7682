//! Agents under uids of their own: no agent can read another's files or
//! environment, or signal another's processes or the supervisor's.
//!
//! Decided once at start ([`Isolation::decide`]): on when `PAR_AGENT_UIDS`
//! is not `off` and the supervisor can switch uids (root, or CAP_SETUID and
//! CAP_SETGID); otherwise every agent runs as the supervisor does, which is
//! said once at start and in `/supervisor/status` (`isolation`).
//!
//! Before each worker starts ([`PerAgent::prepare`]): its agent's uid
//! ([`uids`]), its private folder and a private copy of its package
//! ([`files`]), and its Python environment, built by the installer uid
//! ([`installer`]). The worker then becomes that uid between fork and exec
//! ([`privileges`]).

pub mod environment;
pub mod files;
pub mod installer;
pub mod leftovers;
pub mod privileges;
pub mod program;
pub mod uids;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::Settings;
use crate::logs::LogStore;
use crate::model::Launch;

pub use privileges::Identity;

/// How agents are kept apart, as `/supervisor/status` names it.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// Every agent has a uid of its own.
    PerAgentUid(Arc<PerAgent>),
    /// Every agent runs as the supervisor, for the reason given.
    SharedUid { reason: String },
}

/// Everything agents under their own uids need.
#[derive(Debug)]
pub struct PerAgent {
    pub home: PathBuf,
    /// The `par` binary: the worker, and `install-env` / `disk-usage` as
    /// the installer's or an agent's uid ([`program`]).
    pub program: program::Program,
    pub installer: u32,
    pub nproc: u64,
    pub nofile: u64,
    /// `$PATH` without what agents cannot search.
    pub path: String,
    uids: Mutex<uids::Uids>,
    /// Interpreters of packages already prepared, by package sha256.
    pythons: Mutex<HashMap<String, PathBuf>>,
}

/// A worker ready to start under its agent's uid.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub uid: u32,
    /// `agents/<id>/`: the worker's `PAR_HOME`; `home/` and `tmp/` inside.
    pub dir: PathBuf,
    /// The package copy only this uid can read.
    pub package: PathBuf,
    pub python: PathBuf,
}

/// Why a worker could not be prepared: `package` faults are permanent
/// (exit 78: the agent fails), the others are retried like a crash.
#[derive(Debug, Clone)]
pub struct Failure {
    pub package: bool,
    pub message: String,
}

impl Failure {
    pub fn package(message: String) -> Self {
        Failure {
            package: true,
            message,
        }
    }
    pub fn environment(message: String) -> Self {
        Failure {
            package: false,
            message,
        }
    }
}

impl Isolation {
    /// Decides, once at start, whether agents get uids of their own, and
    /// lays out `$PAR_HOME` for it. `supervisor_uid` is the uid the
    /// supervisor runs as from now on (after its drop, if any).
    pub fn decide(settings: &Settings, supervisor_uid: u32) -> anyhow::Result<Isolation> {
        let Some(range) = settings.agent_uids else {
            return Ok(Isolation::SharedUid {
                reason: "PAR_AGENT_UIDS=off".into(),
            });
        };
        if !privileges::can_switch_uids() {
            return Ok(Isolation::SharedUid {
                reason: format!(
                    "the supervisor runs as uid {} without CAP_SETUID/CAP_SETGID",
                    nix::unistd::geteuid()
                ),
            });
        }
        let path = settings
            .worker_command
            .first()
            .map(PathBuf::from)
            .ok_or_else(|| anyhow::anyhow!("no worker program"))?;
        // Opened before the supervisor drops root (see [`program`]).
        let program = program::Program::open(&path).map_err(|e| {
            anyhow::anyhow!("failed to open the worker program {}: {e}", path.display())
        })?;
        std::fs::create_dir_all(&settings.home).map_err(|e| {
            anyhow::anyhow!("failed to create PAR_HOME {}: {e}", settings.home.display())
        })?;
        // Agents must reach their own folders under PAR_HOME by path.
        if let Some((blocker, mode)) = unreachable(&settings.home, false) {
            anyhow::bail!(
                "PAR_HOME {} is out of the agents' reach: {} is mode {mode:04o} (agents run \
                 as uids {range}, each in its own folder under PAR_HOME; set PAR_HOME to a \
                 folder others can search, e.g. the default /tmp/pixell-runtime, make {} \
                 searchable by others, or set PAR_AGENT_UIDS=off)",
                settings.home.display(),
                blocker.display(),
                blocker.display()
            );
        }
        if program.by_descriptor() {
            // Run through its descriptor: only the file's own bits matter.
            let mode = program.mode().map_err(|e| {
                anyhow::anyhow!("failed to read the worker program {}: {e}", path.display())
            })?;
            if mode & 0o001 == 0 {
                anyhow::bail!(
                    "the worker program {} is mode {mode:04o}: agents run as uids {range} \
                     and must be able to execute it (chmod o+x it, or set PAR_AGENT_UIDS=off)",
                    path.display()
                );
            }
        } else if let Some((blocker, mode)) = unreachable(&path, true) {
            anyhow::bail!(
                "the worker program {} is out of the agents' reach: {} is mode {mode:04o} \
                 (agents run as uids {range}; a program that is not an ELF binary, such \
                 as a script, is run by its path: make it searchable by others, or set \
                 PAR_AGENT_UIDS=off)",
                path.display(),
                blocker.display()
            );
        }
        files::prepare_home(&settings.home, supervisor_uid, range.start).map_err(|e| {
            anyhow::anyhow!(
                "failed to lay out PAR_HOME {} for agent uids: {e}",
                settings.home.display()
            )
        })?;
        let uids = uids::Uids::load(range, &settings.home.join(files::AGENTS));
        let path = files::agents_path(&std::env::var("PATH").unwrap_or_default());
        Ok(Isolation::PerAgentUid(Arc::new(PerAgent {
            home: settings.home.clone(),
            program,
            installer: range.start,
            nproc: settings.agent_nproc,
            nofile: settings.agent_nofile,
            path,
            uids: Mutex::new(uids),
            pythons: Mutex::new(HashMap::new()),
        })))
    }

    /// `per-agent-uid` or `shared-uid`.
    pub fn name(&self) -> &'static str {
        match self {
            Isolation::PerAgentUid(_) => "per-agent-uid",
            Isolation::SharedUid { .. } => "shared-uid",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Isolation::PerAgentUid(_) => None,
            Isolation::SharedUid { reason } => Some(reason),
        }
    }

    pub fn per_agent(&self) -> Option<&Arc<PerAgent>> {
        match self {
            Isolation::PerAgentUid(p) => Some(p),
            Isolation::SharedUid { .. } => None,
        }
    }
}

fn unreachable(path: &Path, read: bool) -> Option<(PathBuf, u32)> {
    files::unreachable_part(path, read)
}

impl PerAgent {
    pub fn identity(&self, uid: u32) -> Identity {
        Identity {
            uid,
            nproc: self.nproc,
            nofile: self.nofile,
            umask: 0o077,
        }
    }

    /// The uid `agent` runs as (assigned on first use).
    pub fn uid_for(&self, agent: &str) -> Result<u32, String> {
        self.uids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .uid_for(agent)
    }

    /// The staged copy of a worker's package, removed when it is let go of.
    pub fn staged_path(&self, launch: &Launch) -> PathBuf {
        self.home
            .join(files::AGENTS)
            .join(files::STAGED)
            .join(format!("{}.apkg", launch.worker.0))
    }

    /// Everything the worker of `launch` needs before it starts as its
    /// agent's uid: the uid, its folder, its package, its interpreter.
    pub async fn prepare(
        self: Arc<Self>,
        launch: Launch,
        logs: Arc<LogStore>,
    ) -> Result<Prepared, Failure> {
        let agent = launch.agent.as_str().to_string();
        let uid = self.uid_for(&agent).map_err(Failure::environment)?;
        let name = launch.worker.0.to_string();
        let source = PathBuf::from(&launch.package);
        let per = Arc::clone(&self);
        let agent_for_files = agent.clone();
        let (dir, staged) = tokio::task::spawn_blocking(move || {
            let dir = files::agent_dir(&per.home, &agent_for_files, uid)
                .map_err(|e| Failure::environment(format!("the agent's folder: {e}")))?;
            let staged = files::stage(&per.home, &source, &name, uid).map_err(|e| match e {
                files::StageError::Package(m) => Failure::package(m),
                files::StageError::Io(m) => {
                    Failure::environment(format!("staging the package: {m}"))
                }
            })?;
            Ok::<_, Failure>((dir, staged))
        })
        .await
        .map_err(|e| Failure::environment(format!("staging the package panicked: {e}")))??;
        let known = self
            .pythons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&staged.sha256)
            .filter(|p| p.exists())
            .cloned();
        let python = match known {
            Some(p) => p,
            None => {
                let process = launch.agent.process_id(launch.replica);
                let install = installer::Install {
                    per: &self,
                    logs: &logs,
                    agent: &agent,
                    process: &process,
                };
                let p = installer::run(install, staged.file).await?;
                self.pythons
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(staged.sha256.clone(), p.clone());
                p
            }
        };
        Ok(Prepared {
            uid,
            dir,
            package: staged.path,
            python,
        })
    }
}
