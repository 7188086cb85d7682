//! One agent as the state machine holds it: its spec, its replicas (each a
//! lifecycle state that carries its own data), a rollout in progress, old
//! workers draining, and who waits for what.

use std::time::{Instant, SystemTime};

use serde_json::Value;

use crate::model::{
    AgentId, AgentSpec, FailureClass, FetchId, Origin, PackageRecord, Resolved, State, WaiterId,
    WorkerId,
};

/// What the operator wants of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Run,
    Stop,
    Remove,
}

/// Where the package of a spec is.
#[derive(Debug, Clone, PartialEq)]
pub enum Package {
    /// A folder or an `.apkg` on local disk.
    Local,
    /// A remote package not fetched (yet, or since the spec changed).
    Unresolved,
    Fetching(FetchId),
    Resolved(Resolved),
}

impl Package {
    pub fn for_spec(spec: &AgentSpec) -> Package {
        if spec.is_remote() {
            Package::Unresolved
        } else {
            Package::Local
        }
    }

    pub fn resolved(&self) -> Option<&Resolved> {
        match self {
            Package::Resolved(r) => Some(r),
            _ => None,
        }
    }
}

/// Why an agent or a rollout failed: a class that may be shown to anyone, and
/// the full message (which may quote the agent's own output).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: FailureClass,
    pub message: String,
}

impl Failure {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Failure {
            class,
            message: message.into(),
        }
    }
}

/// One worker process.
#[derive(Debug, Clone)]
pub struct Worker {
    pub id: WorkerId,
    /// Known once the runtime has started it.
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub started: Instant,
    pub started_at: SystemTime,
    pub ready_at: Option<SystemTime>,
    /// Set when the supervisor killed it (liveness, memory, startup timeout):
    /// its exit is a failure whatever its code.
    pub kill_reason: Option<Failure>,
    pub health_error: Option<String>,
    pub package_id: Option<String>,
    pub meta: Option<Value>,
    pub term_sent: bool,
}

impl Worker {
    pub fn new(id: WorkerId, now: Instant, wall: SystemTime) -> Self {
        Worker {
            id,
            pid: None,
            port: None,
            started: now,
            started_at: wall,
            ready_at: None,
            kill_reason: None,
            health_error: None,
            package_id: None,
            meta: None,
            term_sent: false,
        }
    }

    /// `pid 123 on port 8001`.
    pub fn describe(&self) -> String {
        match (self.pid, self.port) {
            (Some(pid), Some(port)) => format!("pid {pid} on port {port}"),
            _ => format!("worker {}", self.id),
        }
    }
}

/// What happens when a stopping worker has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// Stay stopped.
    Rest,
    /// Start again; `count`: it is a restart (the API's), not a spec replaced in place.
    Start { count: bool },
    /// The supervisor killed it: decide as for any exit (restart policy).
    Decide,
    /// The replica is no longer wanted (scaled down): forget it.
    Drop,
    /// The agent scaled to zero: `idle`.
    Idle,
}

/// A replica's lifecycle state with the data that belongs to it. A worker
/// exists exactly in the states that have a process.
#[derive(Debug, Clone)]
pub enum Life {
    Pending,
    /// Waiting for the agent's package to be fetched.
    Fetching,
    Starting(Worker),
    Ready(Worker),
    Unhealthy(Worker),
    Stopping(Worker, AfterStop),
    Stopped,
    Crashed,
    Backoff {
        until: Instant,
    },
    Failed,
    Idle,
}

impl Life {
    pub fn state(&self) -> State {
        match self {
            Life::Pending => State::Pending,
            Life::Fetching => State::Fetching,
            Life::Starting(_) => State::Starting,
            Life::Ready(_) => State::Ready,
            Life::Unhealthy(_) => State::Unhealthy,
            Life::Stopping(..) => State::Stopping,
            Life::Stopped => State::Stopped,
            Life::Crashed => State::Crashed,
            Life::Backoff { .. } => State::Backoff,
            Life::Failed => State::Failed,
            Life::Idle => State::Idle,
        }
    }

    pub fn worker(&self) -> Option<&Worker> {
        match self {
            Life::Starting(w) | Life::Ready(w) | Life::Unhealthy(w) | Life::Stopping(w, _) => {
                Some(w)
            }
            _ => None,
        }
    }

    pub fn worker_mut(&mut self) -> Option<&mut Worker> {
        match self {
            Life::Starting(w) | Life::Ready(w) | Life::Unhealthy(w) | Life::Stopping(w, _) => {
                Some(w)
            }
            _ => None,
        }
    }

    /// Serving requests (ready or, still routable, unhealthy).
    pub fn serving(&self) -> bool {
        matches!(self, Life::Ready(_) | Life::Unhealthy(_))
    }
}

pub use super::lifecycle::Replica;

#[derive(Debug, Clone, PartialEq)]
pub enum RolloutState {
    Fetching,
    Starting,
    RolledOut,
    /// `retryable`: a reconcile with the same spec tries again (transient causes).
    Failed {
        failure: Failure,
        retryable: bool,
    },
}

/// A new spec rolling in.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// Numbers the rollouts of the supervisor's life (a `PUT ?wait` waits for one).
    pub number: u64,
    pub spec: AgentSpec,
    pub package: Package,
    pub state: RolloutState,
    /// New workers next to serving ones; else the spec was replaced in place.
    pub blue_green: bool,
    /// The old generation died first and this one took over: it ends as an
    /// in-place rollout does.
    pub taken_over: bool,
    /// The new generation while it starts (blue/green only).
    pub replicas: Vec<Replica>,
    pub started: Instant,
    pub started_at: SystemTime,
    pub finished_at: Option<SystemTime>,
}

impl Rollout {
    pub fn in_progress(&self) -> bool {
        matches!(self.state, RolloutState::Fetching | RolloutState::Starting)
    }
}

/// What a waiting caller waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Every replica settled (ready, failed, stopped, crashed for good, idle).
    Settled,
    /// No worker left (a stop).
    Stopped,
    /// The agent forgotten (a remove).
    Removed,
    /// Rollout number `n` ended.
    Rollout(u64),
    /// A `PUT` created the agent: answered at once (`wait` false) or once settled.
    Created { wait: bool },
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub id: AgentId,
    /// The spec that serves (or will serve, when nothing does).
    pub spec: AgentSpec,
    pub origin: Origin,
    pub goal: Goal,
    pub package: Package,
    pub replicas: Vec<Replica>,
    pub rollout: Option<Rollout>,
    /// Old workers of rollouts, draining then stopping.
    pub retiring: Vec<Worker>,
    pub current_package: Option<PackageRecord>,
    pub previous_package: Option<PackageRecord>,
    pub waiters: Vec<(WaiterId, Wait)>,
    /// Load samples for the autoscaler.
    pub load: super::load::Load,
    /// Workers with sessions bound to them, as last sampled.
    pub with_sessions: Vec<WorkerId>,
}

impl Agent {
    /// The spec this agent heads for: a rollout's while one is on its way.
    pub fn heading_for(&self) -> &AgentSpec {
        self.rollout
            .as_ref()
            .filter(|r| r.in_progress())
            .map_or(&self.spec, |r| &r.spec)
    }

    pub fn new(id: AgentId, spec: AgentSpec, origin: Origin, wall: SystemTime) -> Self {
        let package = Package::for_spec(&spec);
        Agent {
            id,
            spec,
            origin,
            goal: Goal::Run,
            package,
            replicas: vec![Replica::new(0, wall)],
            rollout: None,
            retiring: Vec::new(),
            current_package: None,
            previous_package: None,
            waiters: Vec::new(),
            load: Default::default(),
            with_sessions: Vec::new(),
        }
    }

    /// Whether its conversations are pinned to their process: `sessions =
    /// "auto"` and it can have more than one (replicas, autoscale), or it
    /// serves HTTP of its own (an A2A server, REST routes, an ASGI app),
    /// where a rollout moves them.
    pub fn tracks_sessions(&self) -> bool {
        if self.spec.sessions == crate::model::SessionMode::Off {
            return false;
        }
        if self.spec.ceiling() > 1 {
            return true;
        }
        let serves_http = |w: &Worker| {
            w.meta
                .as_ref()
                .and_then(|m| m.get("surfaces"))
                .is_some_and(|s| {
                    let has = |name: &str| match s {
                        Value::Array(a) => a.iter().any(|x| x.as_str() == Some(name)),
                        Value::Object(o) => o.contains_key(name),
                        _ => false,
                    };
                    has("a2a") || has("rest")
                })
        };
        self.replicas
            .iter()
            .filter_map(|r| r.worker())
            .chain(self.retiring.iter())
            .any(serves_http)
    }

    /// Scaled to zero: its one replica is idle.
    pub fn is_idle(&self) -> bool {
        self.replicas.iter().all(|r| matches!(r.life(), Life::Idle))
    }

    /// Whether any worker process of the agent may still run.
    pub fn has_workers(&self) -> bool {
        self.replicas.iter().any(|r| r.worker().is_some())
            || self
                .rollout
                .as_ref()
                .is_some_and(|r| r.replicas.iter().any(|x| x.worker().is_some()))
            || !self.retiring.is_empty()
    }

    pub fn serving(&self) -> bool {
        self.goal == Goal::Run && self.replicas.iter().any(|r| r.life().serving())
    }

    /// The state the agent shows as a whole: its first replica's.
    pub fn state(&self) -> State {
        self.replicas.first().map_or(State::Stopped, Replica::state)
    }
}
