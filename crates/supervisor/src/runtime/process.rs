//! One worker process: spawning it (own process group, parent-death signal,
//! its environment), capturing its output, and telling the state machine when
//! it exits, with the error lines it printed.

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use par_contract::env;

use super::isolation::environment::Inherit;
use super::isolation::{privileges, PerAgent, Prepared};
use crate::control::Control;
use crate::logs::LogStore;
use crate::model::{ExitInfo, Input, Launch, WorkerEvent, WorkerId};

/// Error lines of a worker passed on with its exit (the reason of a failure).
const EXIT_ERROR_LINES: usize = 5;

/// What every worker is started with.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The exact argv (`par worker` by default).
    pub argv: Vec<String>,
    pub home: PathBuf,
    pub supervisor_url: String,
}

/// A started worker.
pub struct Started {
    pub pid: u32,
    pub exited: Arc<AtomicBool>,
}

/// What every worker is started with, and where what becomes of it goes:
/// its command, the state machine (its exit), the log store (its output).
pub struct Starter {
    pub command: WorkerCommand,
    pub control: Control,
    pub logs: Arc<LogStore>,
}

impl Starter {
    /// Spawns the worker for `launch` on `port` (serving on `listener`, the
    /// port's socket the supervisor holds, when given) and the tasks that
    /// watch it (under its agent's uid when `isolated`). Must run on a
    /// long-lived runtime thread (see [`super::unix::isolate`]).
    pub fn spawn(
        &self,
        launch: &Launch,
        port: u16,
        listener: Option<super::ports::Lease>,
        isolated: Option<(&Prepared, &Arc<PerAgent>)>,
    ) -> std::io::Result<Started> {
        let mut cmd = self.command_for(launch, port, listener.as_ref(), isolated)?;
        let child = super::unix::spawn_tracked(|| {
            let child = cmd.spawn()?;
            let pid = child.id().unwrap_or(0);
            Ok((child, pid))
        })?;
        Ok(self.watch(child, launch, listener))
    }

    /// The worker's command: its program, a clean environment, its
    /// identity when isolated, the port's socket, its own process group.
    fn command_for(
        &self,
        launch: &Launch,
        port: u16,
        listener: Option<&super::ports::Lease>,
        isolated: Option<(&Prepared, &Arc<PerAgent>)>,
    ) -> std::io::Result<tokio::process::Command> {
        let command = &self.command;
        let (program, args) = command.argv.split_first().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty worker command")
        })?;
        // Under agent uids through the binary opened at start: its folders need
        // not be theirs to walk (see `isolation::program`).
        let mut cmd = match isolated {
            Some((_, per)) if per.program.path.as_os_str() == program.as_str() => {
                per.program.command()
            }
            _ => tokio::process::Command::new(program),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        worker_env(&mut cmd, command, launch, port, isolated);
        if let Some(lease) = listener {
            cmd.env(env::LISTEN_FD, lease.fd().to_string());
            super::ports::inherit(&mut cmd, lease.fd());
        }
        super::unix::isolate(&mut cmd);
        Ok(cmd)
    }

    /// Captures the worker's output, and tells the state machine when it
    /// exits, with the error lines it printed.
    fn watch(
        &self,
        mut child: tokio::process::Child,
        launch: &Launch,
        listener: Option<super::ports::Lease>,
    ) -> Started {
        let pid = child.id().unwrap_or(0);
        let (started, started_at) = (Instant::now(), SystemTime::now());
        let process = launch.agent.process_id(launch.replica);
        let output = self.capture(&mut child, launch.agent.as_str(), &process);
        let exited = Arc::new(AtomicBool::new(false));
        let watched = Watched {
            worker: launch.worker,
            pid,
            process,
            started,
            started_at,
            output,
            listener,
            exited: Arc::clone(&exited),
            control: self.control.clone(),
            logs: Arc::clone(&self.logs),
        };
        tokio::spawn(watched.until_exit(child));
        Started { pid, exited }
    }

    /// The tasks copying the worker's stdout and stderr to the log store.
    fn capture(
        &self,
        child: &mut tokio::process::Child,
        agent: &str,
        process: &str,
    ) -> [Option<tokio::task::JoinHandle<()>>; 2] {
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        [
            stdout.map(|p| self.copy_to_logs(agent, process, "stdout", p)),
            stderr.map(|p| self.copy_to_logs(agent, process, "stderr", p)),
        ]
    }

    /// A task copying one of the worker's pipes (`stream`) to the log store.
    fn copy_to_logs(
        &self,
        agent: &str,
        process: &str,
        stream: &'static str,
        pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let (logs, agent, process) = (Arc::clone(&self.logs), agent.to_owned(), process.to_owned());
        tokio::spawn(crate::logs::capture(logs, agent, process, stream, pipe))
    }
}

/// A started worker, watched until it exits.
struct Watched {
    worker: WorkerId,
    pid: u32,
    process: String,
    started: Instant,
    started_at: SystemTime,
    /// The tasks capturing its output.
    output: [Option<tokio::task::JoinHandle<()>>; 2],
    /// The socket of its port, held by the supervisor.
    listener: Option<super::ports::Lease>,
    exited: Arc<AtomicBool>,
    control: Control,
    logs: Arc<LogStore>,
}

impl Watched {
    /// Waits for the worker's exit and tells the state machine, with the
    /// error lines it printed.
    async fn until_exit(mut self, mut child: tokio::process::Child) {
        let status = child.wait().await;
        if let Some(lease) = &self.listener {
            lease.worker_gone();
        }
        self.exited.store(true, Ordering::Release);
        super::unix::untrack(self.pid);
        let exit = ExitInfo {
            code: status.as_ref().ok().and_then(|s| s.code()),
            signal: status.as_ref().ok().and_then(|s| s.signal()),
            at: SystemTime::now(),
            ran_seconds: self.started.elapsed().as_secs_f64(),
        };
        let errors = self.errors(&exit).await;
        self.control.send(Input::Worker {
            worker: self.worker,
            event: WorkerEvent::Exited { exit, errors },
        });
    }

    /// The last error lines it printed, when it failed: the reason of a
    /// failure is in its last lines, so they may arrive first (500 ms).
    async fn errors(&mut self, exit: &ExitInfo) -> Vec<String> {
        let output = std::mem::take(&mut self.output);
        let drain = async {
            for t in output.into_iter().flatten() {
                let _ = t.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
        if exit.success() {
            Vec::new()
        } else {
            self.logs
                .last_errors_since(&self.process, EXIT_ERROR_LINES, self.started_at)
        }
    }
}

/// A clean environment: the allow-list of the supervisor's, then the
/// spec's, then the worker's own variables (and, under its agent's uid,
/// its folders and identity).
fn worker_env(
    cmd: &mut tokio::process::Command,
    command: &WorkerCommand,
    launch: &Launch,
    port: u16,
    isolated: Option<(&Prepared, &Arc<PerAgent>)>,
) {
    let inherit = Inherit {
        task_role: launch.task_role,
        installs: isolated.is_none(),
    };
    cmd.env_clear()
        .envs(inherit.filter(std::env::vars_os()))
        .envs(&launch.env_vars)
        .env(env::MODE, "worker")
        .env(env::HOST, "127.0.0.1")
        .env(env::PORT, port.to_string())
        .env(env::AGENT_ID, launch.agent.as_str())
        .env(env::PACKAGE_PATH, &launch.package)
        .env(env::SUPERVISOR_URL, &command.supervisor_url)
        .env(env::PARENT_PID, std::process::id().to_string())
        .env(env::HOME, &command.home)
        .env(env::LOG_FORMAT, "json");
    if let Some(sha) = &launch.sha256 {
        cmd.env(env::PACKAGE_SHA256, sha);
    }
    match isolated {
        Some((prepared, per)) => {
            cmd.env(env::HOME, &prepared.dir)
                .env("HOME", prepared.dir.join("home"))
                .env("TMPDIR", prepared.dir.join("tmp"))
                .env("PATH", &per.path)
                .env(env::PACKAGE_PATH, &prepared.package)
                .env(env::PYTHON, &prepared.python)
                .env(env::ISOLATION, "per-agent-uid");
            // Before the parent-death signal: a change of uid clears it.
            let id = per.identity(prepared.uid);
            privileges::become_identity(cmd, id, Some(&prepared.dir));
        }
        None => {
            cmd.env(env::ISOLATION, "shared-uid");
        }
    }
}
