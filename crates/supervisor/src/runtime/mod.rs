//! The runtime: carries out the state machine's effects — worker processes,
//! probes, signals, timers, package fetches, drains — and turns what happens
//! to them into inputs. Also the resource sampler and the desired-state task.

pub mod desired;
pub mod drain;
pub mod fetch;
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
use tokio::task::JoinHandle;

use crate::control::Control;
use crate::logs::LogStore;
use crate::model::{
    AgentId, FetchId, Input, Launch, Signal, SpawnFailure, Timer, WorkerEvent, WorkerId,
};
use drain::InFlight;
use ports::Ports;
use probe::{ProbeClient, ProbeOptions};
use process::WorkerCommand;

/// A worker process as the runtime holds it.
struct Running {
    pid: u32,
    port: u16,
    exited: Arc<AtomicBool>,
    probe: Option<JoinHandle<()>>,
}

pub struct Runtime {
    control: Control,
    logs: Arc<LogStore>,
    command: WorkerCommand,
    probe: ProbeOptions,
    client: ProbeClient,
    ports: Ports,
    home: std::path::PathBuf,
    workers: HashMap<WorkerId, Running>,
}

impl Runtime {
    pub fn new(
        control: Control,
        logs: Arc<LogStore>,
        command: WorkerCommand,
        probe: ProbeOptions,
        ports: Ports,
    ) -> Self {
        let home = command.home.clone();
        Runtime {
            control,
            logs,
            command,
            probe,
            client: probe::client(),
            ports,
            home,
            workers: HashMap::new(),
        }
    }

    /// Starts a worker on a free port; the event says how it went.
    pub fn spawn(&mut self, launch: &Launch) -> WorkerEvent {
        let Some(port) = self.ports.allocate() else {
            let r = self.ports.range();
            return WorkerEvent::SpawnFailed {
                reason: format!("no free port in the worker range {}-{}", r.start, r.end),
                kind: SpawnFailure::NoPort,
            };
        };
        match process::spawn(launch, port, &self.command, &self.control, &self.logs) {
            Ok(started) => {
                let probe = tokio::spawn(probe::run(
                    self.control.clone(),
                    launch.worker,
                    Arc::from(launch.agent.as_str()),
                    port,
                    self.client.clone(),
                    self.probe,
                ));
                self.workers.insert(
                    launch.worker,
                    Running {
                        pid: started.pid,
                        port,
                        exited: started.exited,
                        probe: Some(probe),
                    },
                );
                WorkerEvent::Spawned {
                    pid: started.pid,
                    port,
                }
            }
            Err(e) => {
                self.ports.release(port);
                WorkerEvent::SpawnFailed {
                    reason: format!(
                        "failed to start the worker ({}): {e}",
                        self.command.argv.join(" ")
                    ),
                    kind: SpawnFailure::Exec,
                }
            }
        }
    }

    /// SIGTERM to the worker itself (it stops its agent host in order: a
    /// SIGTERM to the whole group could reach the host first and look like
    /// the agent failing), SIGKILL to its whole group.
    pub fn signal(&self, worker: WorkerId, signal: Signal) {
        if let Some(w) = self.workers.get(&worker) {
            match signal {
                Signal::Term if !w.exited.load(Ordering::Acquire) => {
                    let pid = nix::unistd::Pid::from_raw(w.pid as i32);
                    let _ = nix::sys::signal::kill(pid, NixSignal::SIGTERM);
                }
                Signal::Term => {}
                Signal::Kill => {
                    let _ = unix::signal_group(w.pid, NixSignal::SIGKILL);
                }
            }
        }
    }

    /// The worker is gone: leftovers of its group (e.g. the agent host) die
    /// with it, its probe stops, its port is free again.
    pub fn release(&mut self, worker: WorkerId) {
        if let Some(mut w) = self.workers.remove(&worker) {
            if let Some(p) = w.probe.take() {
                p.abort();
            }
            let _ = unix::signal_group(w.pid, NixSignal::SIGKILL);
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
    ) {
        let control = self.control.clone();
        tokio::spawn(async move {
            tokio::time::sleep(settle).await;
            let left = match in_flight {
                Some(f) => f.drained(limit.saturating_sub(settle)).await,
                None => 0,
            };
            control.send(Input::Drained {
                worker,
                in_flight: left,
            });
        });
    }
}
