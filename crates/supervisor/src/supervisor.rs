//! The state task: owns every agent and receives every event (API commands,
//! worker exits, probe results, fetches, reconciles, timers, signals) in one
//! order; publishes the routing table and the status snapshot after each change.
//!
//! Rollouts (blue/green per agent): the new worker starts on its own port next
//! to the serving one; once it is ready (identity checked) the route switches
//! in one publish, the old worker drains its in-flight requests and streams
//! (up to `drain_timeout`) and its group is stopped. A new worker that never
//! gets ready leaves the old one serving and the rollout `rollout_failed`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::config::{same_deployment, AgentSpec, Settings, ValidationErrors};
use crate::desired::{self, DesiredStatus, ReconcileFailure, ReconcileReport};
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
use crate::source::{FetchFailure, Resolved};

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
    /// `PUT /supervisor/agents/{id}`: roll an agent to a new spec (or create it).
    Put {
        spec: AgentSpec,
        reply: oneshot::Sender<Result<(ProcessView, PutOutcome), ApiError>>,
    },
    /// `POST /supervisor/reload`: handed on to the desired-state task.
    Reload {
        reply: oneshot::Sender<Result<ReconcileReport, ApiError>>,
    },
    /// The declared agents, to reconcile with what runs.
    Reconcile {
        declared: Vec<AgentSpec>,
        trigger: &'static str,
        reply: oneshot::Sender<ReconcileReport>,
    },
    /// A remote package fetch ended (for the agent or for its rollout).
    Fetched {
        agent_id: String,
        fetch_id: u64,
        result: Result<Resolved, FetchFailure>,
    },
    /// An old worker of a rollout has drained (or its drain time is up): stop it.
    Retire {
        agent_id: String,
        worker: u64,
    },
}

/// What a `PUT` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Rolling,
    Unchanged,
}

/// Where an agent comes from: declared ones (file, `PAR_AGENTS`, registry)
/// are reconciled; those spawned through the API are left alone by reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Declared,
    Api,
}

/// A package an agent runs or ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageRecord {
    /// The location (query strings redacted).
    pub package: String,
    pub package_id: Option<String>,
    pub sha256: Option<String>,
    #[serde(serialize_with = "crate::api::ser_time")]
    pub since: SystemTime,
}

/// A rollout as status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutView {
    /// `rolling`, `rolled_out` or `rollout_failed`.
    pub state: &'static str,
    /// While rolling: `fetching` or `starting`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `blue-green` (next to a serving worker) or `in-place` (nothing was serving).
    pub strategy: &'static str,
    pub to_package: String,
    pub to_sha256: Option<String>,
    #[serde(serialize_with = "crate::api::ser_time")]
    pub started_at: SystemTime,
    #[serde(serialize_with = "crate::api::ser_opt_time")]
    pub finished_at: Option<SystemTime>,
    pub duration_ms: Option<u64>,
    /// The new worker while it starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_port: Option<u16>,
}

/// An old worker draining after a rollout.
#[derive(Debug, Clone, Serialize)]
pub struct DrainingView {
    pub pid: u32,
    pub port: u16,
    pub in_flight: usize,
    pub term_sent: bool,
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
    /// Declarations, registry and last reconcile, for status.
    pub desired: DesiredStatus,
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
    pub origin: Origin,
    /// The local file the worker loads (a download for remote packages).
    pub package_file: Option<String>,
    pub current_package: Option<PackageRecord>,
    pub previous_package: Option<PackageRecord>,
    pub rollout: Option<RolloutView>,
    /// Old workers of a rollout finishing their requests.
    pub draining: Vec<DrainingView>,
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
    /// The spec was replaced while nothing served: start the new one at exit.
    Replace,
}

#[derive(Debug, Clone, PartialEq)]
enum RolloutState {
    Fetching,
    Starting,
    RolledOut,
    /// `retryable`: a reconcile with the same spec tries again (transient causes).
    Failed {
        reason: String,
        retryable: bool,
    },
}

struct Rollout {
    spec: AgentSpec,
    resolved: Option<Resolved>,
    state: RolloutState,
    /// A second worker next to a serving one; else the spec was replaced in place.
    blue_green: bool,
    worker: Option<u64>,
    fetch_id: u64,
    started: Instant,
    started_at: SystemTime,
    finished_at: Option<SystemTime>,
}

impl Rollout {
    fn in_progress(&self) -> bool {
        matches!(self.state, RolloutState::Fetching | RolloutState::Starting)
    }
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
    origin: Origin,
    /// The local package file of a remote spec, once fetched.
    resolved: Option<Resolved>,
    /// The fetch whose result is awaited (older results are ignored).
    fetch_id: u64,
    rollout: Option<Rollout>,
    /// Old workers of rollouts, draining then stopping.
    retiring: Vec<Worker>,
    current_package: Option<PackageRecord>,
    previous_package: Option<PackageRecord>,
}

impl Agent {
    fn has_workers(&self) -> bool {
        self.current.is_some() || self.next.is_some() || !self.retiring.is_empty()
    }
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
    next_fetch: u64,
    /// The declared specs of the last reconcile (start-up: the settings' agents).
    declared: HashMap<String, AgentSpec>,
    desired: Option<mpsc::UnboundedSender<desired::Request>>,
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
        let declared = shared
            .settings
            .agents
            .iter()
            .map(|a| (a.id.clone(), a.clone()))
            .collect();
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
            next_fetch: 0,
            declared,
            desired: None,
        }
    }

    /// Runs until a shutdown has stopped every worker.
    pub async fn run(mut self) {
        self.desired = Some(desired::spawn(Arc::clone(&self.shared)));
        self.publish();
        while let Some(msg) = self.rx.recv().await {
            self.handle(msg);
            self.settle_rollouts();
            self.publish();
            if self.shutdown.is_some() && self.agents.values().all(|a| !a.has_workers()) {
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
                // The start-up agents come through here too: they are declared.
                let origin = if self.declared.get(&spec.id) == Some(&spec) {
                    Origin::Declared
                } else {
                    Origin::Api
                };
                let _ = reply.send(self.spawn(spec, origin));
            }
            Msg::Put { spec, reply } => {
                let _ = reply.send(self.put(spec));
            }
            Msg::Reload { reply } => match &self.desired {
                Some(d) => {
                    if let Err(e) = d.send(desired::Request::Reload {
                        trigger: "api",
                        reply,
                    }) {
                        let desired::Request::Reload { reply, .. } = e.0;
                        let _ = reply.send(Err(ApiError::shutting_down()));
                    }
                }
                None => {
                    let _ = reply.send(Err(ApiError::shutting_down()));
                }
            },
            Msg::Reconcile {
                declared,
                trigger,
                reply,
            } => {
                let _ = reply.send(self.reconcile(declared, trigger));
            }
            Msg::Fetched {
                agent_id,
                fetch_id,
                result,
            } => self.with_agent(&agent_id, |s, a| s.fetched(a, fetch_id, result)),
            Msg::Retire { agent_id, worker } => self.with_agent(&agent_id, |s, a| {
                if let Some(w) = a.retiring.iter_mut().find(|w| w.id == worker) {
                    let msg = format!(
                        "old worker pid {} on port {} drained ({} in flight); stopping it",
                        w.pid,
                        w.port,
                        w.upstream.in_flight()
                    );
                    s.sigterm_then_kill(w);
                    s.event(a, Level::Info, msg);
                }
            }),
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
                        s.cancel_rollout(a, "the supervisor is shutting down");
                        s.stop_retiring(a);
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

    fn spawn(&mut self, spec: AgentSpec, origin: Origin) -> Result<ProcessView, ApiError> {
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
            origin,
            resolved: None,
            fetch_id: 0,
            rollout: None,
            retiring: Vec::new(),
            current_package: None,
            previous_package: None,
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
        self.cancel_rollout(&mut a, "the agent was stopped");
        self.stop_retiring(&mut a);
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
        self.cancel_rollout(&mut a, "the agent was removed");
        self.stop_retiring(&mut a);
        a.intent = Intent::Remove;
        a.epoch += 1;
        if a.current.is_some() {
            if a.state != State::Stopping {
                self.begin_stop(&mut a);
            }
            a.waiters.push(reply);
            self.agents.insert(id.to_string(), a);
        } else if !a.retiring.is_empty() {
            a.waiters.push(reply);
            self.agents.insert(id.to_string(), a);
        } else {
            let view = self.view(&a);
            self.forget(a);
            let _ = reply.send(Ok(view));
        }
    }

    fn forget(&mut self, mut a: Agent) {
        if let Some(w) = a.next.take() {
            self.cleanup(w);
        }
        for w in std::mem::take(&mut a.retiring) {
            self.cleanup(w);
        }
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

    /// Starts a new worker for the agent (state `starting`), fetches its
    /// remote package first (state `fetching`), or `failed`.
    fn start(&mut self, a: &mut Agent) {
        a.restart_at = None;
        a.probe_failures = 0;
        if a.spec.is_remote() && a.resolved.is_none() {
            self.next_fetch += 1;
            a.fetch_id = self.next_fetch;
            let why = format!("fetching {}", crate::source::redacted(&a.spec.package));
            self.set_state(a, State::Fetching, why);
            self.spawn_fetch(&a.spec, a.fetch_id);
            return;
        }
        let spec = a.spec.clone();
        match self.launch(&spec, a.resolved.as_ref(), &a.metrics) {
            Ok(w) => {
                let msg = format!("worker pid {} on port {}", w.pid, w.port);
                a.current = Some(w);
                self.set_state(a, State::Starting, msg);
            }
            Err(msg) => {
                a.last_error = Some(msg.clone());
                self.set_state(a, State::Failed, msg);
            }
        }
    }

    /// Spawns one worker for `spec` on a free port.
    fn launch(
        &mut self,
        spec: &AgentSpec,
        resolved: Option<&Resolved>,
        metrics: &Arc<AgentMetrics>,
    ) -> Result<Worker, String> {
        let Some(port) = self.ports.allocate() else {
            let r = self.shared.settings.worker_ports;
            return Err(format!(
                "no free port in the worker range {}-{}",
                r.start, r.end
            ));
        };
        self.next_worker += 1;
        let worker = self.next_worker;
        let (package, sha256) = match resolved {
            Some(r) => (r.path.as_str(), Some(r.sha256.as_str())),
            None => (spec.package.as_str(), spec.sha256.as_deref()),
        };
        let launch = process::Launch {
            agent_id: &spec.id,
            worker,
            port,
            package,
            sha256,
            env_vars: &spec.env_vars,
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
            Ok(run) => Ok(Worker {
                id: worker,
                pid: run.pid,
                port,
                started: Instant::now(),
                started_at: SystemTime::now(),
                ready_at: None,
                upstream: Arc::new(Upstream::new(&spec.id, port, worker, Arc::clone(metrics))),
                run,
                kill_reason: None,
                health_error: None,
                package_id: None,
                meta: None,
                term_sent: false,
            }),
            Err(e) => {
                self.ports.release(port);
                Err(format!(
                    "failed to start the worker ({}): {e}",
                    self.command.join(" ")
                ))
            }
        }
    }

    fn spawn_fetch(&self, spec: &AgentSpec, fetch_id: u64) {
        let (tx, home) = (self.shared.tx.clone(), self.shared.settings.home.clone());
        let (agent_id, package, sha) = (spec.id.clone(), spec.package.clone(), spec.sha256.clone());
        tokio::spawn(async move {
            let result = crate::source::fetch(&package, sha.as_deref(), &home).await;
            let _ = tx.send(Msg::Fetched {
                agent_id,
                fetch_id,
                result,
            });
        });
    }

    /// A fetch ended: start the worker, retry later, or fail.
    fn fetched(&mut self, a: &mut Agent, fetch_id: u64, result: Result<Resolved, FetchFailure>) {
        if a.fetch_id == fetch_id && a.state == State::Fetching && a.intent == Intent::Run {
            match result {
                Ok(r) => {
                    let msg = fetched_message(&a.spec.package, &r);
                    self.event(a, Level::Info, msg);
                    a.resolved = Some(r);
                    self.start(a);
                }
                Err(f) if f.transient => {
                    let delay = a.spec.backoff().next_delay(a.failures);
                    a.failures += 1;
                    a.epoch += 1;
                    a.restart_at = Some(Instant::now() + delay);
                    a.last_error = Some(format!("fetch failed: {}", f.message));
                    self.set_state(
                        a,
                        State::Backoff,
                        format!(
                            "fetch failed (will retry in {} ms): {}",
                            delay.as_millis(),
                            f.message
                        ),
                    );
                    let (tx, agent_id, epoch) =
                        (self.shared.tx.clone(), a.spec.id.clone(), a.epoch);
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(Msg::BackoffElapsed { agent_id, epoch });
                    });
                }
                Err(f) => {
                    let msg = format!("fetch failed: {}", f.message);
                    a.last_error = Some(msg.clone());
                    self.set_state(a, State::Failed, msg);
                }
            }
            return;
        }
        let Some(r) = a
            .rollout
            .as_mut()
            .filter(|r| r.fetch_id == fetch_id && r.state == RolloutState::Fetching)
        else {
            return;
        };
        match result {
            Ok(res) => {
                let msg = format!("rollout: {}", fetched_message(&r.spec.package, &res));
                r.resolved = Some(res);
                self.event(a, Level::Info, msg);
                self.start_next(a);
            }
            Err(f) => {
                let reason = format!("fetch failed: {}", f.message);
                self.rollout_failed(a, reason, f.transient);
            }
        }
    }

    /// Rolls `a` to `spec`: blue/green when a worker serves, else in place.
    fn roll(&mut self, a: &mut Agent, spec: AgentSpec) -> PutOutcome {
        let target = a
            .rollout
            .as_ref()
            .filter(|r| r.in_progress())
            .map_or(&a.spec, |r| &r.spec);
        if same_deployment(target, &spec) && a.intent != Intent::Remove {
            return PutOutcome::Unchanged;
        }
        self.cancel_rollout(a, "superseded by a newer spec");
        let serving = a.current.is_some()
            && matches!(a.state, State::Ready | State::Unhealthy)
            && a.intent == Intent::Run;
        if serving && same_deployment(&a.spec, &spec) {
            // Set back to what serves while a rollout was on its way: nothing to start.
            return PutOutcome::Rolling;
        }
        self.next_fetch += 1;
        let mut rollout = Rollout {
            spec: spec.clone(),
            resolved: None,
            state: RolloutState::Starting,
            blue_green: serving,
            worker: None,
            fetch_id: self.next_fetch,
            started: Instant::now(),
            started_at: SystemTime::now(),
            finished_at: None,
        };
        self.event(
            a,
            Level::Info,
            format!(
                "rollout to {}{} ({})",
                crate::source::redacted(&spec.package),
                spec.sha256
                    .as_deref()
                    .map(|s| format!(" sha256 {}", &s[..12.min(s.len())]))
                    .unwrap_or_default(),
                if serving {
                    "blue/green"
                } else {
                    "in place: nothing serves"
                }
            ),
        );
        if serving {
            if spec.is_remote() {
                rollout.state = RolloutState::Fetching;
                self.spawn_fetch(&spec, rollout.fetch_id);
                a.rollout = Some(rollout);
            } else {
                a.rollout = Some(rollout);
                self.start_next(a);
            }
            return PutOutcome::Rolling;
        }
        a.rollout = Some(rollout);
        a.spec = spec;
        a.resolved = None;
        a.failures = 0;
        a.epoch += 1;
        a.restart_at = None;
        if a.current.is_some() {
            a.intent = Intent::Replace;
            if a.state != State::Stopping {
                self.begin_stop(a);
            }
        } else {
            a.intent = Intent::Run;
            if matches!(a.state, State::Backoff | State::Crashed) {
                self.set_state(a, State::Stopped, "spec replaced");
            }
            self.start(a);
        }
        PutOutcome::Rolling
    }

    /// Starts the rollout's new worker next to the serving one.
    fn start_next(&mut self, a: &mut Agent) {
        let Some(r) = a.rollout.as_ref() else { return };
        let (spec, resolved) = (r.spec.clone(), r.resolved.clone());
        match self.launch(&spec, resolved.as_ref(), &a.metrics) {
            Ok(w) => {
                let msg = format!("rollout: new worker pid {} on port {}", w.pid, w.port);
                if let Some(r) = a.rollout.as_mut() {
                    r.worker = Some(w.id);
                    r.state = RolloutState::Starting;
                }
                a.next = Some(w);
                self.event(a, Level::Info, msg);
            }
            Err(msg) => self.rollout_failed(a, msg, true),
        }
    }

    fn rollout_failed(&mut self, a: &mut Agent, reason: String, retryable: bool) {
        let Some(r) = a.rollout.as_mut() else { return };
        r.state = RolloutState::Failed {
            reason: reason.clone(),
            retryable,
        };
        r.finished_at = Some(SystemTime::now());
        let msg = if r.blue_green && a.current.is_some() {
            format!("rollout failed, the old worker keeps serving: {reason}")
        } else {
            format!("rollout failed: {reason}")
        };
        tracing::error!(agent = %a.spec.id, "{msg}");
        self.event(a, Level::Error, msg);
    }

    /// Stops a rollout in progress (its new worker, if any, is killed).
    fn cancel_rollout(&mut self, a: &mut Agent, why: &str) {
        if let Some(w) = a.next.take() {
            self.cleanup(w);
        }
        if a.rollout.as_ref().is_some_and(Rollout::in_progress) {
            self.rollout_failed(a, format!("cancelled: {why}"), false);
        }
    }

    /// SIGTERM to every old worker still draining.
    fn stop_retiring(&mut self, a: &mut Agent) {
        let mut retiring = std::mem::take(&mut a.retiring);
        for w in &mut retiring {
            self.sigterm_then_kill(w);
        }
        a.retiring = retiring;
    }

    /// The new worker is ready: switch the route to it in one publish, then
    /// drain and stop the old one.
    fn switch(&mut self, a: &mut Agent, h: process::Health) {
        let (Some(mut new), Some(r)) = (a.next.take(), a.rollout.as_mut()) else {
            return;
        };
        new.ready_at = Some(SystemTime::now());
        new.package_id = h.package_id;
        new.meta = h.meta;
        new.health_error = None;
        let (new_pid, new_port) = (new.pid, new.port);
        a.spec = r.spec.clone();
        a.resolved = r.resolved.clone();
        r.state = RolloutState::RolledOut;
        r.finished_at = Some(SystemTime::now());
        let took = r.started.elapsed();
        let old = a.current.replace(new);
        a.probe_failures = 0;
        a.failures = 0;
        a.last_error = None;
        self.record_package(a);
        let from = old
            .as_ref()
            .map(|w| format!(" from pid {} on port {}", w.pid, w.port))
            .unwrap_or_default();
        let msg = format!(
            "rolled out to pid {new_pid} on port {new_port}{from} in {} ms",
            took.as_millis()
        );
        if a.state == State::Unhealthy {
            self.set_state(a, State::Ready, msg);
        } else {
            tracing::info!(agent = %a.spec.id, "{msg}");
            self.event(a, Level::Info, msg);
        }
        if let Some(old) = old {
            self.retire(a, old);
        }
    }

    /// Drains an old worker: no new requests reach it (the route moved); once
    /// its in-flight requests and streams are done, or `drain_timeout` is up, it stops.
    fn retire(&mut self, a: &mut Agent, old: Worker) {
        old.run.probe.abort();
        let (tx, agent_id, worker) = (self.shared.tx.clone(), a.spec.id.clone(), old.id);
        let (upstream, drain) = (
            Arc::clone(&old.upstream),
            self.shared.settings.drain_timeout,
        );
        a.retiring.push(old);
        tokio::spawn(async move {
            // A request that read the old route just before the switch is
            // counted a moment later: give it that moment.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let deadline = Instant::now() + drain;
            while upstream.in_flight() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = tx.send(Msg::Retire { agent_id, worker });
        });
    }

    /// Keeps `current_package` / `previous_package` up to date with the serving worker.
    fn record_package(&self, a: &mut Agent) {
        let Some(w) = a.current.as_ref() else { return };
        let rec = PackageRecord {
            package: crate::source::redacted(&a.spec.package),
            package_id: w.package_id.clone(),
            sha256: a
                .resolved
                .as_ref()
                .map(|r| r.sha256.clone())
                .or_else(|| a.spec.sha256.clone()),
            since: w.ready_at.unwrap_or_else(SystemTime::now),
        };
        let same = a.current_package.as_ref().is_some_and(|c| {
            c.package == rec.package && c.package_id == rec.package_id && c.sha256 == rec.sha256
        });
        if !same {
            a.previous_package = a.current_package.replace(rec);
        }
    }

    /// In-place rollouts end with the agent: ready, or failed.
    fn settle_rollouts(&mut self) {
        for a in self.agents.values_mut() {
            let Some(r) = a
                .rollout
                .as_mut()
                .filter(|r| !r.blue_green && r.in_progress())
            else {
                continue;
            };
            match a.state {
                State::Ready => {
                    r.state = RolloutState::RolledOut;
                    r.finished_at = Some(SystemTime::now());
                }
                State::Failed => {
                    r.state = RolloutState::Failed {
                        reason: a
                            .last_error
                            .clone()
                            .unwrap_or_else(|| "the agent failed".into()),
                        retryable: false,
                    };
                    r.finished_at = Some(SystemTime::now());
                }
                _ => {}
            }
        }
    }

    /// `PUT /supervisor/agents/{id}`.
    fn put(&mut self, spec: AgentSpec) -> Result<(ProcessView, PutOutcome), ApiError> {
        if self.shutdown.is_some() {
            return Err(ApiError::shutting_down());
        }
        let mut errors = ValidationErrors::default();
        spec.validate("", &mut errors);
        if !errors.is_empty() {
            return Err(ApiError::invalid(&errors));
        }
        let Some(mut a) = self.agents.remove(&spec.id) else {
            return self
                .spawn(spec, Origin::Api)
                .map(|v| (v, PutOutcome::Created));
        };
        let id = spec.id.clone();
        let outcome = self.roll(&mut a, spec);
        let view = self.view(&a);
        self.agents.insert(id, a);
        Ok((view, outcome))
    }

    /// Makes what runs match the declared agents. API-spawned agents are left
    /// alone; a declared id that matches one adopts it.
    fn reconcile(&mut self, declared: Vec<AgentSpec>, trigger: &str) -> ReconcileReport {
        let mut report = ReconcileReport::new(trigger);
        if self.shutdown.is_some() {
            return report;
        }
        let ids: HashSet<String> = declared.iter().map(|a| a.id.clone()).collect();
        for spec in declared {
            let id = spec.id.clone();
            self.declared.insert(id.clone(), spec.clone());
            let Some(mut a) = self.agents.remove(&id) else {
                match self.spawn(spec, Origin::Declared) {
                    Ok(_) => report.started.push(id),
                    Err(e) => report.failed.push(ReconcileFailure {
                        agent_id: id,
                        error: e.message,
                    }),
                }
                continue;
            };
            a.origin = Origin::Declared;
            // A rollout of this very spec failed for a lasting reason: the same
            // spec would fail the same way; a new spec (or a PUT) tries again.
            let failed_before = a.rollout.as_ref().is_some_and(|r| {
                matches!(
                    r.state,
                    RolloutState::Failed {
                        retryable: false,
                        ..
                    }
                ) && same_deployment(&r.spec, &spec)
            });
            if failed_before {
                report.unchanged.push(id.clone());
            } else {
                match self.roll(&mut a, spec) {
                    PutOutcome::Unchanged => report.unchanged.push(id.clone()),
                    _ => report.rolled.push(id.clone()),
                }
            }
            self.agents.insert(id, a);
        }
        let gone: Vec<String> = self
            .agents
            .iter()
            .filter(|(id, a)| {
                a.origin == Origin::Declared && !ids.contains(*id) && a.intent != Intent::Remove
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            let (reply, _) = oneshot::channel();
            self.remove(&id, reply);
            report.stopped.push(id);
        }
        self.declared.retain(|id, _| ids.contains(id));
        report
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
        let Some(mut w) = a.current.take() else {
            return;
        };
        self.sigterm_then_kill(&mut w);
        a.current = Some(w);
    }

    /// SIGTERM to a worker's group now, SIGKILL after the stop grace.
    fn sigterm_then_kill(&self, w: &mut Worker) {
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
            if a.next.as_ref().is_some_and(|w| w.id == worker) {
                self.next_event(&mut a, event);
            } else if let WorkerEvent::Exited(info) = event {
                // An old worker of a rollout, done; or a stale event.
                if let Some(i) = a.retiring.iter().position(|w| w.id == worker) {
                    let w = a.retiring.remove(i);
                    let msg = format!(
                        "old worker pid {} on port {} {} after the rollout",
                        w.pid,
                        w.port,
                        info.describe()
                    );
                    self.cleanup(w);
                    self.event(&a, Level::Info, msg);
                }
            }
            if a.intent == Intent::Remove && !a.has_workers() {
                self.forget(a);
            } else {
                self.agents.insert(id.to_string(), a);
            }
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
                    // A rollout's worker promoted when the old one died is now ready.
                    if let Some(r) = a
                        .rollout
                        .as_mut()
                        .filter(|r| r.worker == Some(worker) && r.in_progress())
                    {
                        r.state = RolloutState::RolledOut;
                        r.finished_at = Some(SystemTime::now());
                    }
                    self.record_package(&mut a);
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
        if a.intent == Intent::Remove && !a.has_workers() {
            self.forget(a);
        } else {
            self.agents.insert(id.to_string(), a);
        }
    }

    /// Events of a rollout's new worker (not yet serving).
    fn next_event(&mut self, a: &mut Agent, event: WorkerEvent) {
        match event {
            WorkerEvent::Ready(h) => self.switch(a, h),
            WorkerEvent::HealthError(msg) => {
                if let Some(w) = a.next.as_mut() {
                    w.health_error = Some(msg.clone());
                }
                self.event(a, Level::Warn, format!("rollout: new worker health: {msg}"));
            }
            WorkerEvent::StartupTimeout => {
                if let Some(w) = a.next.as_mut() {
                    w.kill_reason = Some(format!(
                        "the new worker was not ready within {} s",
                        self.shared.settings.startup_timeout.as_secs_f64()
                    ));
                    let _ = crate::unix::signal_group(w.pid, Signal::SIGKILL);
                }
            }
            WorkerEvent::Probe { .. } => {}
            WorkerEvent::Exited(info) => {
                let Some(w) = a.next.take() else { return };
                let lines = self
                    .shared
                    .logs
                    .last_errors_since(&a.spec.id, 5, w.started_at);
                let package_failure = info.code == Some(EXIT_PACKAGE_FAILURE);
                let retryable = !package_failure && w.kill_reason.is_none();
                let mut reason = match (&w.kill_reason, package_failure) {
                    (Some(k), _) => k.clone(),
                    (None, true) => format!("package failure (exit {EXIT_PACKAGE_FAILURE})"),
                    (None, false) => {
                        format!("the new worker {} before it was ready", info.describe())
                    }
                };
                let mut detail: Vec<String> = w.health_error.clone().into_iter().collect();
                detail.extend(lines);
                if !detail.is_empty() {
                    reason = format!("{reason}: {}", detail.join(" | "));
                }
                self.cleanup(w);
                self.rollout_failed(a, reason, retryable);
            }
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
            Intent::Replace => {
                a.intent = Intent::Run;
                self.start(a);
                return;
            }
            Intent::Run => {}
        }
        if a.next.is_some() && self.shutdown.is_none() {
            // The old worker went away during a rollout: the new one, already
            // starting, takes over instead of a restart of the old spec.
            if a.state.can_become(State::Crashed) {
                self.set_state(a, State::Crashed, format!("worker {what} during a rollout"));
            } else {
                a.state = State::Crashed;
            }
            if let Some(r) = a.rollout.as_ref() {
                a.spec = r.spec.clone();
                a.resolved = r.resolved.clone();
            }
            a.current = a.next.take();
            let msg = a
                .current
                .as_ref()
                .map(|w| {
                    format!(
                        "the rollout's worker pid {} on port {} takes over",
                        w.pid, w.port
                    )
                })
                .unwrap_or_default();
            self.set_state(a, State::Starting, msg);
            return;
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
            package_path: crate::source::redacted(&a.spec.package),
            package_id: w
                .and_then(|w| w.package_id.clone())
                .or_else(|| a.spec.package_id.clone()),
            sha256: a
                .resolved
                .as_ref()
                .map(|r| r.sha256.clone())
                .or_else(|| a.spec.sha256.clone()),
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
            origin: a.origin,
            package_file: a
                .resolved
                .as_ref()
                .map(|r| r.path.clone())
                .or_else(|| (!a.spec.is_remote()).then(|| a.spec.package.clone())),
            current_package: a.current_package.clone(),
            previous_package: a.previous_package.clone(),
            rollout: a.rollout.as_ref().map(|r| rollout_view(r, a.next.as_ref())),
            draining: a
                .retiring
                .iter()
                .map(|w| DrainingView {
                    pid: w.pid,
                    port: w.port,
                    in_flight: w.upstream.in_flight(),
                    term_sent: w.term_sent,
                })
                .collect(),
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

fn fetched_message(package: &str, r: &Resolved) -> String {
    format!(
        "package {} {} ({} bytes, sha256 {})",
        crate::source::redacted(package),
        if r.downloaded {
            "downloaded"
        } else {
            "found in the cache"
        },
        r.bytes,
        r.sha256
    )
}

fn rollout_view(r: &Rollout, next: Option<&Worker>) -> RolloutView {
    let (state, phase, reason) = match &r.state {
        RolloutState::Fetching => ("rolling", Some("fetching"), None),
        RolloutState::Starting => ("rolling", Some("starting"), None),
        RolloutState::RolledOut => ("rolled_out", None, None),
        RolloutState::Failed { reason, .. } => ("rollout_failed", None, Some(reason.clone())),
    };
    let next = next.filter(|w| Some(w.id) == r.worker);
    RolloutView {
        state,
        phase,
        reason,
        strategy: if r.blue_green {
            "blue-green"
        } else {
            "in-place"
        },
        to_package: crate::source::redacted(&r.spec.package),
        to_sha256: r
            .resolved
            .as_ref()
            .map(|x| x.sha256.clone())
            .or_else(|| r.spec.sha256.clone()),
        started_at: r.started_at,
        finished_at: r.finished_at,
        duration_ms: r
            .finished_at
            .and_then(|f| f.duration_since(r.started_at).ok())
            .map(|d| d.as_millis() as u64),
        worker_pid: next.map(|w| w.pid),
        worker_port: next.map(|w| w.port),
    }
}
