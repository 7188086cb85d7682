//! The state task: owns every agent and receives every event (API commands,
//! worker exits, probe results, timers, signals) in one order; publishes the
//! routing table and the status snapshot after each change.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::config::{AgentSpec, Settings, ValidationErrors};
use crate::error::ApiError;
use crate::lifecycle::State;
use crate::logs::{Level, LogStore};
use crate::metrics::AgentMetrics;
use crate::process::{
    self, ExitInfo, ProbeClient, ProbeOptions, WorkerEvent, EXIT_PACKAGE_FAILURE,
};
use crate::resources::{Enforcement, TaskResources, Usage};
use crate::restart::RestartPolicy;
use crate::routes::{Route, RouteTable, Table, Upstream};

/// Everything the state task receives.
#[derive(Debug)]
pub enum Msg {
    Spawn {
        spec: AgentSpec,
        reply: oneshot::Sender<Result<ProcessView, ApiError>>,
    },
    Stop {
        agent_id: String,
        reply: oneshot::Sender<Result<ProcessView, ApiError>>,
    },
    Restart {
        agent_id: String,
        reply: oneshot::Sender<Result<ProcessView, ApiError>>,
    },
    Remove {
        agent_id: String,
        reply: oneshot::Sender<Result<ProcessView, ApiError>>,
    },
    /// Stop every worker (after the HTTP side drained); answered when all are gone.
    Shutdown {
        grace: Duration,
        reply: oneshot::Sender<()>,
    },
    Worker {
        agent_id: String,
        worker: u64,
        event: WorkerEvent,
    },
    BackoffElapsed {
        agent_id: String,
        epoch: u64,
    },
    Drained {
        agent_id: String,
        worker: u64,
    },
    OverMemory {
        agent_id: String,
        worker_pid: u32,
        rss_mb: u64,
        limit_mb: u64,
    },
}

/// The supervisor as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Running = 1,
    Draining = 2,
    Stopped = 3,
}

/// State shared with the HTTP side (read-only there, except through `tx`).
pub struct Shared {
    pub settings: Settings,
    pub routes: Arc<RouteTable>,
    pub logs: Arc<LogStore>,
    pub snapshot: RwLock<Arc<Vec<ProcessView>>>,
    pub usage: RwLock<HashMap<String, Usage>>,
    pub metrics: RwLock<HashMap<String, Arc<AgentMetrics>>>,
    pub resources: TaskResources,
    pub started: Instant,
    pub started_at: SystemTime,
    pub phase: AtomicU8,
    pub tx: mpsc::UnboundedSender<Msg>,
    /// The port the supervisor listens on (known after binding).
    pub port: u16,
}

impl Shared {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Running,
            2 => Phase::Draining,
            _ => Phase::Stopped,
        }
    }
    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
    }
    pub fn processes(&self) -> Arc<Vec<ProcessView>> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(|e| e.into_inner()))
    }
    pub fn agent_metrics(&self, agent_id: &str) -> Option<Arc<AgentMetrics>> {
        self.metrics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(agent_id)
            .cloned()
    }

    /// Sends a command to the state task and waits for its answer.
    pub async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<ProcessView, ApiError>>) -> Msg,
    ) -> Result<ProcessView, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| ApiError::shutting_down())?;
        rx.await.map_err(|_| ApiError::shutting_down())?
    }
}

/// One process as status and `/supervisor/processes` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessView {
    pub process_id: String,
    pub agent_id: String,
    pub state: State,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub url: String,
    pub package_path: String,
    pub package_id: Option<String>,
    pub sha256: Option<String>,
    pub restart_policy: RestartPolicy,
    pub max_restarts: Option<u32>,
    /// Restarts over the agent's life.
    pub restarts: u32,
    /// Transient failures in a row (reset after a stable run).
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_exit: Option<ExitInfo>,
    #[serde(serialize_with = "crate::api::ser_time")]
    pub state_since: SystemTime,
    #[serde(serialize_with = "crate::api::ser_opt_time")]
    pub started_at: Option<SystemTime>,
    #[serde(serialize_with = "crate::api::ser_opt_time")]
    pub ready_at: Option<SystemTime>,
    /// Seconds until the next start (state `backoff`).
    pub next_restart_in_seconds: Option<f64>,
    pub limits: Limits,
    pub meta: Option<Value>,
    #[serde(skip)]
    pub in_flight: usize,
}

/// A worker's resource limits and how each is enforced.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub memory_limit_mb: Option<u64>,
    /// `explicit` (the spec's) or `fair-share`.
    pub memory_limit_source: &'static str,
    pub memory_enforcement: Enforcement,
    pub cpu_limit: Option<f64>,
    pub cpu_limit_source: &'static str,
    pub cpu_enforcement: Enforcement,
}

/// Why a stopping worker is stopping: what happens at its exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Run,
    Stop,
    Restart,
    Remove,
}

struct Worker {
    id: u64,
    pid: u32,
    port: u16,
    started: Instant,
    started_at: SystemTime,
    ready_at: Option<SystemTime>,
    upstream: Arc<Upstream>,
    run: process::Running,
    /// Set when the supervisor killed it (liveness, memory, startup timeout):
    /// its exit is a failure whatever its code.
    kill_reason: Option<String>,
    health_error: Option<String>,
    package_id: Option<String>,
    meta: Option<Value>,
    term_sent: bool,
}

struct Agent {
    spec: AgentSpec,
    state: State,
    state_since: SystemTime,
    /// The worker that serves (or will serve) the agent.
    current: Option<Worker>,
    /// A worker being rolled in next to `current` (blue/green); used by rollouts.
    next: Option<Worker>,
    intent: Intent,
    restarts: u32,
    failures: u32,
    last_error: Option<String>,
    last_exit: Option<ExitInfo>,
    /// Bumped to invalidate pending timers.
    epoch: u64,
    restart_at: Option<Instant>,
    probe_failures: u32,
    waiters: Vec<oneshot::Sender<Result<ProcessView, ApiError>>>,
    metrics: Arc<AgentMetrics>,
}

/// The state task.
pub struct Supervisor {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Msg>,
    agents: BTreeMap<String, Agent>,
    ports: crate::ports::Ports,
    next_worker: u64,
    client: ProbeClient,
    command: Vec<String>,
    supervisor_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    stop_grace: Duration,
}

impl Supervisor {
    pub fn new(
        shared: Arc<Shared>,
        rx: mpsc::UnboundedReceiver<Msg>,
        command: Vec<String>,
    ) -> Self {
        let ports = crate::ports::Ports::new(shared.settings.worker_ports);
        let supervisor_url = format!("http://127.0.0.1:{}", shared.port);
        let stop_grace = shared.settings.stop_timeout;
        Supervisor {
            shared,
            rx,
            agents: BTreeMap::new(),
            ports,
            next_worker: 0,
            client: process::probe_client(),
            command,
            supervisor_url,
            shutdown: None,
            stop_grace,
        }
    }

    /// Runs until a shutdown has stopped every worker.
    pub async fn run(mut self) {
        self.publish();
        while let Some(msg) = self.rx.recv().await {
            self.handle(msg);
            self.publish();
            if self.shutdown.is_some()
                && self
                    .agents
                    .values()
                    .all(|a| a.current.is_none() && a.next.is_none())
            {
                if let Some(reply) = self.shutdown.take() {
                    let _ = reply.send(());
                }
                break;
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Spawn { spec, reply } => {
                let _ = reply.send(self.spawn(spec));
            }
            Msg::Stop { agent_id, reply } => self.stop(&agent_id, reply),
            Msg::Restart { agent_id, reply } => {
                let _ = reply.send(self.restart(&agent_id));
            }
            Msg::Remove { agent_id, reply } => self.remove(&agent_id, reply),
            Msg::Shutdown { grace, reply } => {
                self.shutdown = Some(reply);
                self.stop_grace = grace;
                let ids: Vec<String> = self.agents.keys().cloned().collect();
                for id in ids {
                    self.with_agent(&id, |s, a| {
                        a.intent = Intent::Stop;
                        a.epoch += 1;
                        if a.current.is_some() {
                            s.terminate(a);
                        } else if !a.state.is_settled() {
                            s.set_state(a, State::Stopped, "supervisor shutting down");
                        }
                    });
                }
            }
            Msg::Worker { agent_id, worker, event } => self.worker_event(&agent_id, worker, event),
            Msg::BackoffElapsed { agent_id, epoch } => self.with_agent(&agent_id, |s, a| {
                if a.epoch == epoch && a.state == State::Backoff && a.intent == Intent::Run {
                    s.start(a);
                }
            }),
            Msg::Drained { agent_id, worker } => self.with_agent(&agent_id, |s, a| {
                if a.current.as_ref().is_some_and(|w| w.id == worker) && a.state == State::Stopping {
                    s.terminate(a);
                }
            }),
            Msg::OverMemory { agent_id, worker_pid, rss_mb, limit_mb } => self.with_agent(&agent_id, |s, a| {
                if let Some(w) = a.current.as_mut().filter(|w| w.pid == worker_pid) {
                    let reason = format!("memory {rss_mb} MB stayed over the limit of {limit_mb} MB; restarted by the watchdog");
                    w.kill_reason = Some(reason.clone());
                    let _ = crate::unix::signal_group(w.pid, Signal::SIGKILL);
                    s.event(a, Level::Warn, reason);
                }
            }),
        }
    }

    /// Runs `f` on an agent with `self` available (the agent is taken out and put back).
    fn with_agent(&mut self, id: &str, f: impl FnOnce(&mut Self, &mut Agent)) {
        if let Some(mut a) = self.agents.remove(id) {
            f(self, &mut a);
            self.agents.insert(id.to_string(), a);
        }
    }

    fn spawn(&mut self, spec: AgentSpec) -> Result<ProcessView, ApiError> {
        if self.shutdown.is_some() {
            return Err(ApiError::shutting_down());
        }
        let mut errors = ValidationErrors::default();
        spec.validate("", &mut errors);
        if !errors.is_empty() {
            return Err(ApiError::invalid(&errors));
        }
        if let Some(a) = self.agents.get(&spec.id) {
            return Err(ApiError::conflict(format!(
                "agent '{}' already exists (state: {}); restart it, or DELETE /supervisor/agents/{} first",
                spec.id,
                a.state.as_str(),
                spec.id
            )));
        }
        if spec.is_remote() {
            return Err(ApiError::invalid_field(
                "package_path",
                "remote package sources (https://, s3://) are not supported by this supervisor yet; use a local folder or .apkg",
            ));
        }
        let metrics = {
            let mut m = self
                .shared
                .metrics
                .write()
                .unwrap_or_else(|e| e.into_inner());
            Arc::clone(m.entry(spec.id.clone()).or_default())
        };
        let id = spec.id.clone();
        let mut agent = Agent {
            spec,
            state: State::Pending,
            state_since: SystemTime::now(),
            current: None,
            next: None,
            intent: Intent::Run,
            restarts: 0,
            failures: 0,
            last_error: None,
            last_exit: None,
            epoch: 0,
            restart_at: None,
            probe_failures: 0,
            waiters: Vec::new(),
            metrics,
        };
        self.start(&mut agent);
        let view = self.view(&agent);
        self.agents.insert(id, agent);
        Ok(view)
    }

    fn stop(&mut self, id: &str, reply: oneshot::Sender<Result<ProcessView, ApiError>>) {
        let Some(mut a) = self.agents.remove(id) else {
            let _ = reply.send(Err(ApiError::not_found(format!("no agent '{id}'"))));
            return;
        };
        a.intent = Intent::Stop;
        a.epoch += 1;
        a.restart_at = None;
        if a.current.is_some() {
            self.begin_stop(&mut a);
            a.waiters.push(reply);
        } else {
            if a.state != State::Stopped {
                self.set_state(&mut a, State::Stopped, "stopped on request");
            }
            let _ = reply.send(Ok(self.view(&a)));
        }
        self.agents.insert(id.to_string(), a);
    }

    fn restart(&mut self, id: &str) -> Result<ProcessView, ApiError> {
        if self.shutdown.is_some() {
            return Err(ApiError::shutting_down());
        }
        let mut a = self
            .agents
            .remove(id)
            .ok_or_else(|| ApiError::not_found(format!("no agent '{id}'")))?;
        a.failures = 0;
        a.epoch += 1;
        a.restart_at = None;
        if a.current.is_some() {
            a.intent = Intent::Restart;
            if a.state != State::Stopping {
                self.begin_stop(&mut a);
            }
        } else {
            a.intent = Intent::Run;
            if a.state == State::Backoff || a.state == State::Crashed {
                // Through `stopped` so the transition table holds.
                self.set_state(&mut a, State::Stopped, "restart requested");
            }
            self.start(&mut a);
        }
        let view = self.view(&a);
        self.agents.insert(id.to_string(), a);
        Ok(view)
    }

    fn remove(&mut self, id: &str, reply: oneshot::Sender<Result<ProcessView, ApiError>>) {
        let Some(mut a) = self.agents.remove(id) else {
            let _ = reply.send(Err(ApiError::not_found(format!("no agent '{id}'"))));
            return;
        };
        a.intent = Intent::Remove;
        a.epoch += 1;
        if a.current.is_some() {
            if a.state != State::Stopping {
                self.begin_stop(&mut a);
            }
            a.waiters.push(reply);
            self.agents.insert(id.to_string(), a);
        } else {
            let view = self.view(&a);
            self.forget(a);
            let _ = reply.send(Ok(view));
        }
    }

    fn forget(&mut self, mut a: Agent) {
        self.shared
            .metrics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&a.spec.id);
        self.shared
            .usage
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&a.spec.id);
        self.shared.logs.forget(&a.spec.process_id());
        let view = self.view(&a);
        for w in a.waiters.drain(..) {
            let _ = w.send(Ok(view.clone()));
        }
        tracing::info!(agent = %a.spec.id, "agent removed");
    }

    /// Starts a new worker for the agent (state `starting`), or `failed`.
    fn start(&mut self, a: &mut Agent) {
        a.restart_at = None;
        a.probe_failures = 0;
        let Some(port) = self.ports.allocate() else {
            let r = self.shared.settings.worker_ports;
            let msg = format!("no free port in the worker range {}-{}", r.start, r.end);
            a.last_error = Some(msg.clone());
            self.set_state(a, State::Failed, msg);
            return;
        };
        self.next_worker += 1;
        let worker = self.next_worker;
        let launch = process::Launch {
            agent_id: &a.spec.id,
            worker,
            port,
            package: &a.spec.package,
            sha256: a.spec.sha256.as_deref(),
            env_vars: &a.spec.env_vars,
            command: &self.command,
            home: &self.shared.settings.home,
            supervisor_url: &self.supervisor_url,
        };
        let probe = ProbeOptions {
            interval: self.shared.settings.probe_interval,
            timeout: self.shared.settings.probe_timeout,
            startup_timeout: self.shared.settings.startup_timeout,
        };
        match process::spawn(
            &launch,
            &self.shared.tx,
            &self.shared.logs,
            &self.client,
            probe,
        ) {
            Ok(run) => {
                let upstream = Arc::new(Upstream::new(
                    &a.spec.id,
                    port,
                    worker,
                    Arc::clone(&a.metrics),
                ));
                let pid = run.pid;
                a.current = Some(Worker {
                    id: worker,
                    pid,
                    port,
                    started: Instant::now(),
                    started_at: SystemTime::now(),
                    ready_at: None,
                    upstream,
                    run,
                    kill_reason: None,
                    health_error: None,
                    package_id: None,
                    meta: None,
                    term_sent: false,
                });
                self.set_state(
                    a,
                    State::Starting,
                    format!("worker pid {pid} on port {port}"),
                );
            }
            Err(e) => {
                self.ports.release(port);
                let msg = format!(
                    "failed to start the worker ({}): {e}",
                    self.command.join(" ")
                );
                a.last_error = Some(msg.clone());
                self.set_state(a, State::Failed, msg);
            }
        }
    }

    /// Graceful stop: stop routing, let in-flight requests finish, then SIGTERM.
    fn begin_stop(&mut self, a: &mut Agent) {
        let Some((upstream, worker)) = a.current.as_ref().map(|w| (Arc::clone(&w.upstream), w.id))
        else {
            return;
        };
        self.set_state(a, State::Stopping, "stopping");
        let (tx, agent_id, grace) = (self.shared.tx.clone(), a.spec.id.clone(), self.stop_grace);
        tokio::spawn(async move {
            let deadline = Instant::now() + grace / 2;
            while upstream.in_flight() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = tx.send(Msg::Drained { agent_id, worker });
        });
    }

    /// SIGTERM to the worker's group now, SIGKILL after the grace.
    fn terminate(&mut self, a: &mut Agent) {
        if a.state != State::Stopping && a.state.can_become(State::Stopping) {
            self.set_state(a, State::Stopping, "stopping");
        }
        let Some(w) = a.current.as_mut() else { return };
        if w.term_sent {
            return;
        }
        w.term_sent = true;
        let _ = crate::unix::signal_group(w.pid, Signal::SIGTERM);
        let (pid, exited, grace) = (w.pid, Arc::clone(&w.run.exited), self.stop_grace);
        tokio::spawn(async move {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if exited.load(Ordering::Acquire) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !exited.load(Ordering::Acquire) {
                let _ = crate::unix::signal_group(pid, Signal::SIGKILL);
            }
        });
    }

    fn worker_event(&mut self, id: &str, worker: u64, event: WorkerEvent) {
        let Some(mut a) = self.agents.remove(id) else {
            return;
        };
        if a.current.as_ref().map(|w| w.id) != Some(worker) {
            // A `next` worker of a rollout, or a stale event of a worker already gone.
            if let WorkerEvent::Exited(_) = event {
                if let Some(w) = a.next.take_if(|w| w.id == worker) {
                    self.cleanup(w);
                }
            }
            self.agents.insert(id.to_string(), a);
            return;
        }
        match event {
            WorkerEvent::Ready(h) => {
                if a.state == State::Starting {
                    if let Some(w) = a.current.as_mut() {
                        w.ready_at = Some(SystemTime::now());
                        w.package_id = h.package_id;
                        w.meta = h.meta;
                        w.health_error = None;
                    }
                    let ms = a
                        .current
                        .as_ref()
                        .map_or(0, |w| w.started.elapsed().as_millis());
                    self.set_state(&mut a, State::Ready, format!("ready after {ms} ms"));
                }
            }
            WorkerEvent::HealthError(msg) => {
                if let Some(w) = a.current.as_mut() {
                    w.health_error = Some(msg.clone());
                }
                a.last_error = Some(msg.clone());
                self.event(&a, Level::Warn, format!("worker health: {msg}"));
            }
            WorkerEvent::StartupTimeout => {
                if let Some(w) = a.current.as_mut() {
                    let reason = format!(
                        "not ready within {} s",
                        self.shared.settings.startup_timeout.as_secs()
                    );
                    w.kill_reason = Some(reason);
                    let _ = crate::unix::signal_group(w.pid, Signal::SIGKILL);
                }
            }
            WorkerEvent::Probe { ok, failures } => {
                a.probe_failures = failures;
                if ok && a.state == State::Unhealthy {
                    self.set_state(&mut a, State::Ready, "liveness probe passed");
                } else if !ok {
                    if a.state == State::Ready {
                        self.set_state(
                            &mut a,
                            State::Unhealthy,
                            format!("liveness probe failed ({failures} in a row)"),
                        );
                    }
                    if failures >= self.shared.settings.probe_failures
                        && a.state == State::Unhealthy
                    {
                        if let Some(w) = a.current.as_mut() {
                            w.kill_reason =
                                Some(format!("{failures} liveness probes failed in a row"));
                        }
                        self.terminate(&mut a);
                    }
                }
            }
            WorkerEvent::Exited(info) => self.exited(&mut a, info),
        }
        if a.intent == Intent::Remove && a.current.is_none() {
            self.forget(a);
        } else {
            self.agents.insert(id.to_string(), a);
        }
    }

    fn cleanup(&mut self, w: Worker) {
        w.run.probe.abort();
        // Leftovers of the group (e.g. the agent host) die with their worker.
        let _ = crate::unix::signal_group(w.pid, Signal::SIGKILL);
        self.ports.release(w.port);
    }

    fn exited(&mut self, a: &mut Agent, info: ExitInfo) {
        let Some(w) = a.current.take() else { return };
        let ran = w.started.elapsed();
        let kill_reason = w.kill_reason.clone();
        let health_error = w.health_error.clone();
        self.cleanup(w);
        let what = info.describe();
        a.last_exit = Some(info.clone());
        match a.intent {
            Intent::Remove => {
                self.set_state(a, State::Stopped, format!("worker {what}"));
                return;
            }
            Intent::Stop => {
                self.set_state(a, State::Stopped, format!("worker {what}"));
                let view = self.view(a);
                for w in a.waiters.drain(..) {
                    let _ = w.send(Ok(view.clone()));
                }
                return;
            }
            Intent::Restart => {
                a.intent = Intent::Run;
                a.failures = 0;
                a.restarts += 1;
                self.start(a);
                return;
            }
            Intent::Run => {}
        }
        if info.code == Some(EXIT_PACKAGE_FAILURE) {
            let mut reason = health_error.unwrap_or_default();
            let lines = self.shared.logs.last_errors(&a.spec.id, 5);
            if !lines.is_empty() {
                if !reason.is_empty() {
                    reason.push_str(" | ");
                }
                reason.push_str(&lines.join(" | "));
            }
            if reason.is_empty() {
                reason = "the package could not be loaded".into();
            }
            let msg = format!("package failure (exit {EXIT_PACKAGE_FAILURE}): {reason}");
            a.last_error = Some(msg.clone());
            // Through `crashed` unless the worker never got past starting.
            if a.state != State::Starting && a.state.can_become(State::Crashed) {
                self.set_state(a, State::Crashed, what.clone());
            }
            self.set_state(a, State::Failed, msg);
            return;
        }
        let failed = !info.success() || kill_reason.is_some();
        let mut msg = kill_reason.unwrap_or_else(|| format!("worker {what}"));
        if failed {
            let lines = self.shared.logs.last_errors(&a.spec.id, 3);
            if !lines.is_empty() {
                msg = format!("{msg}: {}", lines.join(" | "));
            }
            a.last_error = Some(msg.clone());
        }
        if a.state.can_become(State::Crashed) {
            self.set_state(a, State::Crashed, msg.clone());
        } else {
            a.state = State::Crashed;
        }
        if ran >= a.spec.stable_period() {
            a.failures = 0;
        }
        if !a.spec.restart_policy.restarts_after(!failed) || self.shutdown.is_some() {
            if !failed {
                self.set_state(
                    a,
                    State::Stopped,
                    "exited cleanly; restart policy does not restart it",
                );
            }
            return;
        }
        if let Some(max) = a.spec.max_restarts {
            if a.failures >= max {
                let msg = format!(
                    "gave up after {} restarts in a row; last: {msg}",
                    a.failures
                );
                a.last_error = Some(msg.clone());
                self.set_state(a, State::Failed, msg);
                return;
            }
        }
        let delay = a.spec.backoff().next_delay(a.failures);
        a.failures += 1;
        a.restarts += 1;
        a.epoch += 1;
        a.restart_at = Some(Instant::now() + delay);
        self.set_state(
            a,
            State::Backoff,
            format!("restart #{} in {} ms", a.restarts, delay.as_millis()),
        );
        let (tx, agent_id, epoch) = (self.shared.tx.clone(), a.spec.id.clone(), a.epoch);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::BackoffElapsed { agent_id, epoch });
        });
    }

    fn set_state(&self, a: &mut Agent, to: State, why: impl Into<String>) {
        let from = a.state;
        let why = why.into();
        if from != to && !from.can_become(to) {
            tracing::error!(agent = %a.spec.id, from = from.as_str(), to = to.as_str(), "transition outside the table");
            debug_assert!(false, "transition {from:?} -> {to:?} is not in the table");
        }
        a.state = to;
        a.state_since = SystemTime::now();
        let level = match to {
            State::Failed | State::Crashed => Level::Error,
            State::Unhealthy | State::Backoff => Level::Warn,
            _ => Level::Info,
        };
        let mut fields = serde_json::Map::new();
        fields.insert("from".into(), from.as_str().into());
        fields.insert("to".into(), to.as_str().into());
        self.shared.logs.record(
            &a.spec.id,
            "supervisor",
            level,
            format!("{} -> {}: {why}", from.as_str(), to.as_str()),
            Some(fields),
        );
        match level {
            Level::Error => {
                tracing::error!(agent = %a.spec.id, from = from.as_str(), to = to.as_str(), "{why}")
            }
            Level::Warn => {
                tracing::warn!(agent = %a.spec.id, from = from.as_str(), to = to.as_str(), "{why}")
            }
            _ => {
                tracing::info!(agent = %a.spec.id, from = from.as_str(), to = to.as_str(), "{why}")
            }
        }
    }

    fn event(&self, a: &Agent, level: Level, msg: String) {
        self.shared
            .logs
            .record(&a.spec.id, "supervisor", level, msg, None);
    }

    fn view(&self, a: &Agent) -> ProcessView {
        let w = a.current.as_ref();
        ProcessView {
            process_id: a.spec.process_id(),
            agent_id: a.spec.id.clone(),
            state: a.state,
            port: w.map(|w| w.port),
            pid: w.map(|w| w.pid),
            url: format!("/agents/{}", a.spec.id),
            package_path: a.spec.package.clone(),
            package_id: w
                .and_then(|w| w.package_id.clone())
                .or_else(|| a.spec.package_id.clone()),
            sha256: a.spec.sha256.clone(),
            restart_policy: a.spec.restart_policy,
            max_restarts: a.spec.max_restarts,
            restarts: a.restarts,
            consecutive_failures: a.failures,
            last_error: a.last_error.clone(),
            last_exit: a.last_exit.clone(),
            state_since: a.state_since,
            started_at: w.map(|w| w.started_at),
            ready_at: w.and_then(|w| w.ready_at),
            next_restart_in_seconds: a
                .restart_at
                .map(|t| t.saturating_duration_since(Instant::now()).as_secs_f64()),
            limits: self.limits(a),
            meta: w.and_then(|w| w.meta.clone()),
            in_flight: w.map_or(0, |w| w.upstream.in_flight()),
        }
    }

    /// Explicit limits, else a fair share of what the explicit ones leave.
    fn limits(&self, a: &Agent) -> Limits {
        let res = &self.shared.resources;
        let active = self
            .agents
            .values()
            .chain(std::iter::once(a))
            .filter(|x| !matches!(x.state, State::Stopped | State::Failed));
        let (mut mem_explicit, mut cpu_explicit, mut mem_shared, mut cpu_shared) =
            (0u64, 0f64, 0u32, 0u32);
        let mut seen = std::collections::HashSet::new();
        for x in active {
            if !seen.insert(x.spec.id.as_str()) {
                continue;
            }
            match x.spec.memory_limit_mb {
                Some(m) => mem_explicit += m,
                None => mem_shared += 1,
            }
            match x.spec.cpu_limit {
                Some(c) => cpu_explicit += c,
                None => cpu_shared += 1,
            }
        }
        let task_mem_mb = res.memory_bytes / (1024 * 1024);
        let reserve = 64; // the supervisor itself
        let (memory_limit_mb, memory_limit_source) = match a.spec.memory_limit_mb {
            Some(m) => (Some(m), "explicit"),
            None => (
                Some(
                    (task_mem_mb
                        .saturating_sub(reserve)
                        .saturating_sub(mem_explicit)
                        / u64::from(mem_shared.max(1)))
                    .max(16),
                ),
                "fair-share",
            ),
        };
        let (cpu_limit, cpu_limit_source) = match a.spec.cpu_limit {
            Some(c) => (Some(c), "explicit"),
            None => (
                Some(
                    ((res.cpus - cpu_explicit).max(0.05) / f64::from(cpu_shared.max(1))).max(0.05),
                ),
                "fair-share",
            ),
        };
        let (memory_enforcement, cpu_enforcement) =
            res.enforcement(a.spec.memory_limit_mb.is_some());
        Limits {
            memory_limit_mb,
            memory_limit_source,
            memory_enforcement,
            cpu_limit,
            cpu_limit_source,
            cpu_enforcement,
        }
    }

    /// Publishes the routing table and the status snapshot.
    fn publish(&self) {
        let mut table = Table::with_capacity(self.agents.len());
        let mut views = Vec::with_capacity(self.agents.len());
        for a in self.agents.values() {
            let route = match (&a.current, a.state) {
                (Some(w), State::Ready) => Route::Ready(Arc::clone(&w.upstream)),
                _ => Route::NotReady {
                    state: a.state,
                    retry_after_secs: match (a.state, a.restart_at) {
                        (State::Backoff, Some(t)) => {
                            t.saturating_duration_since(Instant::now()).as_secs().max(1) as u32
                        }
                        (State::Failed | State::Stopped | State::Crashed, _) => 30,
                        _ => 1,
                    },
                    reason: a
                        .last_error
                        .as_deref()
                        .filter(|_| a.state == State::Failed)
                        .map(Arc::from),
                },
            };
            table.insert(Arc::from(a.spec.id.as_str()), route);
            views.push(self.view(a));
        }
        self.shared.routes.publish(table);
        *self
            .shared
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(views);
    }
}
