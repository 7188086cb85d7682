//! The runtime: carries out the state machine's effects — worker processes,
//! probes, signals, timers, package fetches, drains — and turns what happens
//! to them into inputs. Also the resource sampler and the desired-state task.

pub mod desired;
pub mod downloads;
pub mod drain;
pub mod fetch;
pub mod isolation;
pub mod ports;
pub mod probe;
pub mod process;
pub mod resources;
pub mod unix;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal as NixSignal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::control::Control;
use crate::logs::LogStore;
use crate::model::{
    AgentId, FetchId, Input, Launch, Signal, SpawnFailure, Timer, WorkerEvent, WorkerId,
};
use drain::InFlight;
use isolation::{Isolation, Prepared};
use ports::Ports;
use probe::{ProbeClient, ProbeOptions};
use process::{Starter, WorkerCommand};

/// A worker as the runtime holds it, from its port's allocation to its release.
struct Running {
    process: Process,
    port: u16,
    probe: Option<JoinHandle<()>>,
    launch: Launch,
}

enum Process {
    /// Its uid, files and environment are being prepared.
    Preparing(JoinHandle<()>),
    /// Stopped while being prepared: reported as killed, never started.
    Abandoned,
    Started {
        pid: u32,
        exited: Arc<AtomicBool>,
    },
}

/// What became of a `Spawn`: the port is known at once; the process is
/// started now (`event`) or once it is prepared (`None`).
pub struct SpawnOutcome {
    pub port: Option<u16>,
    pub event: Option<WorkerEvent>,
}

pub struct Runtime {
    control: Control,
    logs: Arc<LogStore>,
    starter: Starter,
    probe: ProbeOptions,
    client: ProbeClient,
    ports: Ports,
    home: std::path::PathBuf,
    isolation: Isolation,
    workers: HashMap<WorkerId, Running>,
    /// Workers whose preparation is done, told by their preparing tasks.
    prepared: mpsc::UnboundedReceiver<(WorkerId, Prepared)>,
    prepared_tx: mpsc::UnboundedSender<(WorkerId, Prepared)>,
}

impl Runtime {
    pub fn new(
        control: Control,
        logs: Arc<LogStore>,
        command: WorkerCommand,
        probe: ProbeOptions,
        ports: Ports,
        isolation: Isolation,
    ) -> Self {
        let home = command.home.clone();
        let starter = Starter {
            command,
            control: control.clone(),
            logs: Arc::clone(&logs),
        };
        let (prepared_tx, prepared) = mpsc::unbounded_channel();
        Runtime {
            control,
            logs,
            starter,
            probe,
            client: probe::client(),
            ports,
            home,
            isolation,
            workers: HashMap::new(),
            prepared,
            prepared_tx,
        }
    }

    /// Starts a worker on a free port: at once, or — when agents have uids
    /// of their own — once its files and environment are prepared (the
    /// startup timeout counts from now either way).
    pub fn spawn(&mut self, launch: &Launch) -> SpawnOutcome {
        let Some(port) = self.ports.allocate() else {
            let r = self.ports.range();
            let event = WorkerEvent::SpawnFailed {
                reason: format!("no free port in the worker range {}-{}", r.start, r.end),
                kind: SpawnFailure::NoPort,
            };
            return SpawnOutcome {
                port: None,
                event: Some(event),
            };
        };
        let event = match self.isolation.per_agent() {
            Some(per) => {
                self.prepare_then_start(Arc::clone(per), launch, port);
                None
            }
            None => Some(self.start_now(launch, port)),
        };
        SpawnOutcome {
            port: Some(port),
            event,
        }
    }

    /// Under its agent's uid: its uid, files and environment are prepared
    /// on a task of their own; [`Runtime::start_prepared`] starts it.
    fn prepare_then_start(&mut self, per: Arc<isolation::PerAgent>, launch: &Launch, port: u16) {
        let task = tokio::spawn(prepare(
            per,
            launch.clone(),
            self.prepared_tx.clone(),
            self.control.clone(),
            Arc::clone(&self.logs),
        ));
        let running = Running {
            process: Process::Preparing(task),
            port,
            probe: Some(self.start_probe(launch, port)),
            launch: launch.clone(),
        };
        self.workers.insert(launch.worker, running);
    }

    /// As the supervisor's uid: started at once.
    fn start_now(&mut self, launch: &Launch, port: u16) -> WorkerEvent {
        let listener = self.ports.lease(port);
        match self.starter.spawn(launch, port, listener, None) {
            Ok(started) => {
                let running = Running {
                    process: Process::Started {
                        pid: started.pid,
                        exited: started.exited,
                    },
                    port,
                    probe: Some(self.start_probe(launch, port)),
                    launch: launch.clone(),
                };
                self.workers.insert(launch.worker, running);
                WorkerEvent::Spawned {
                    pid: started.pid,
                    port,
                }
            }
            Err(e) => {
                self.ports.release(port);
                self.spawn_failed(e)
            }
        }
    }

    /// The worker's health probe, from now until it is stopped or released.
    fn start_probe(&self, launch: &Launch, port: u16) -> JoinHandle<()> {
        tokio::spawn(probe::run(
            self.control.clone(),
            launch.worker,
            Arc::from(launch.agent.as_str()),
            port,
            self.client.clone(),
            self.probe,
        ))
    }

    fn spawn_failed(&self, e: std::io::Error) -> WorkerEvent {
        WorkerEvent::SpawnFailed {
            reason: format!(
                "failed to start the worker ({}): {e}",
                self.starter.command.argv.join(" ")
            ),
            kind: SpawnFailure::Exec,
        }
    }

    /// The next worker whose preparation is done: the dispatcher has
    /// [`Runtime::start_prepared`] start it.
    pub async fn prepared(&mut self) -> Option<(WorkerId, Prepared)> {
        self.prepared.recv().await
    }

    /// A worker whose preparation is done, if one is waiting.
    pub fn try_prepared(&mut self) -> Option<(WorkerId, Prepared)> {
        self.prepared.try_recv().ok()
    }

    /// Starts the process of a prepared worker, unless it was stopped in the
    /// meantime. Runs on the dispatcher's task, which owns the worker table
    /// the decision is made against (see [`prepare`]).
    pub fn start_prepared(&mut self, worker: WorkerId, prepared: Prepared) -> Option<WorkerEvent> {
        if let Some(refused) = self.refuse_leftovers(worker, prepared.uid) {
            return Some(refused);
        }
        let Some(w) = self.workers.get_mut(&worker) else {
            let _ = std::fs::remove_file(&prepared.package);
            return None;
        };
        if !matches!(w.process, Process::Preparing(_)) {
            let _ = std::fs::remove_file(&prepared.package);
            return None;
        }
        let spawned = self.starter.spawn(
            &w.launch,
            w.port,
            self.ports.lease(w.port),
            Some((&prepared, self.isolation.per_agent()?)),
        );
        match spawned {
            Ok(started) => {
                w.process = Process::Started {
                    pid: started.pid,
                    exited: started.exited,
                };
                Some(WorkerEvent::Spawned {
                    pid: started.pid,
                    port: w.port,
                })
            }
            Err(e) => Some(self.spawn_failed(e)),
        }
    }

    /// SIGTERM to the worker itself (it stops its agent host in order: a
    /// SIGTERM to the whole group could reach the host first and look like
    /// the agent failing), SIGKILL to its whole group.
    ///
    /// A worker still being prepared is abandoned (its installer killed) and
    /// reported as killed: there is nothing to drain.
    pub fn signal(&mut self, worker: WorkerId, signal: Signal) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        match (&w.process, signal) {
            (Process::Started { pid, exited }, Signal::Term) => {
                if !exited.load(Ordering::Acquire) {
                    let pid = nix::unistd::Pid::from_raw(*pid as i32);
                    let _ = nix::sys::signal::kill(pid, NixSignal::SIGTERM);
                }
            }
            (Process::Started { pid, .. }, Signal::Kill) => {
                let _ = unix::signal_group(*pid, NixSignal::SIGKILL);
            }
            (Process::Preparing(task), _) => {
                task.abort();
                w.process = Process::Abandoned;
                self.control.send(Input::Worker {
                    worker,
                    event: WorkerEvent::Exited {
                        exit: crate::model::ExitInfo {
                            code: None,
                            signal: Some(NixSignal::SIGKILL as i32),
                            at: std::time::SystemTime::now(),
                            ran_seconds: 0.0,
                        },
                        errors: Vec::new(),
                    },
                });
            }
            (Process::Abandoned, _) => {}
        }
    }

    /// The worker is gone: leftovers of its group (e.g. the agent host) die
    /// with it, its probe stops, its port is free again.
    pub fn release(&mut self, worker: WorkerId) {
        if let Some(mut w) = self.workers.remove(&worker) {
            if let Some(p) = w.probe.take() {
                p.abort();
            }
            match w.process {
                Process::Started { pid, .. } => {
                    let _ = unix::signal_group(pid, NixSignal::SIGKILL);
                }
                Process::Preparing(task) => task.abort(),
                Process::Abandoned => {}
            }
            if let Some(per) = self.isolation.per_agent() {
                let _ = std::fs::remove_file(per.staged_path(&w.launch));
            }
            self.reap_leftovers(&w.launch.agent, worker);
            self.ports.release(w.port);
        }
    }

    pub fn stop_probe(&mut self, worker: WorkerId) {
        if let Some(p) = self.workers.get_mut(&worker).and_then(|w| w.probe.take()) {
            p.abort();
        }
    }

    pub fn timer(&self, at: Instant, timer: Timer) {
        let control = self.control.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            control.send(Input::Timer(timer));
        });
    }

    pub fn fetch(&self, agent: AgentId, fetch: FetchId, package: String, sha256: Option<String>) {
        let (control, home) = (self.control.clone(), self.home.clone());
        tokio::spawn(async move {
            let result = fetch::fetch(&package, sha256.as_deref(), &home).await;
            control.send(Input::Fetched {
                agent,
                fetch,
                result,
            });
        });
    }

    /// Tells `Drained` once `in_flight` is empty (after `settle`, within `limit`).
    pub fn drain(
        &self,
        worker: WorkerId,
        in_flight: Option<Arc<InFlight>>,
        settle: Duration,
        limit: Duration,
        sessions: Option<(Arc<InFlight>, Duration)>,
    ) {
        let control = self.control.clone();
        tokio::spawn(async move {
            tokio::time::sleep(settle).await;
            let mut left = match &in_flight {
                Some(f) => f.drained(limit.saturating_sub(settle)).await,
                None => 0,
            };
            // Kept for its sessions: until the last ends (the requests they
            // send meanwhile are counted in flight), or the time is up.
            if let Some((bound, keep)) = sessions {
                if bound.drained(keep).await > 0 {
                    bound.abandon();
                }
                if let Some(f) = &in_flight {
                    left = f.drained(limit).await;
                }
            }
            control.send(Input::Drained {
                worker,
                in_flight: left,
            });
        });
    }
}

/// Prepares a worker to start under its agent's uid, then hands it back to
/// the runtime (`done`); a failure is reported as the worker's exit (78 when
/// the package is at fault), its reason in the agent's logs.
///
/// The process is not started here but by [`Runtime::start_prepared`] on
/// the dispatcher's task: whether it may start at all (not stopped or
/// released meanwhile, no leftovers of its uid while no other worker of its
/// agent runs) is decided against the runtime's table of workers and its
/// ports, which only that task holds, in the same order as the effects
/// that stop or release the worker.
async fn prepare(
    per: Arc<isolation::PerAgent>,
    launch: Launch,
    done: mpsc::UnboundedSender<(WorkerId, Prepared)>,
    control: Control,
    logs: Arc<LogStore>,
) {
    let started = Instant::now();
    let worker = launch.worker;
    let process = launch.agent.process_id(launch.replica);
    let agent = launch.agent.as_str().to_string();
    match per.prepare(launch, Arc::clone(&logs)).await {
        Ok(prepared) => {
            let _ = done.send((worker, prepared));
        }
        Err(f) => {
            let at = std::time::SystemTime::now();
            logs.push(&agent, &process, "stderr", &f.message);
            let code = if f.package {
                par_contract::exit::PACKAGE_FAILURE
            } else {
                1
            };
            let exit = crate::model::ExitInfo {
                code: Some(code),
                signal: None,
                at,
                ran_seconds: started.elapsed().as_secs_f64(),
            };
            control.send(Input::Worker {
                worker,
                event: WorkerEvent::Exited {
                    exit,
                    errors: vec![f.message],
                },
            });
        }
    }
}
