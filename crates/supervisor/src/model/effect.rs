//! What the state machine asks the runtime to do, and the answers it gives callers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::event::Timer;
use super::id::{AgentId, FetchId, WaiterId, WorkerId};
use super::lifecycle::State;
use super::report::ReconcileReport;
use super::spec::AgentSpec;
use super::view::ProcessView;

#[derive(Debug, Clone)]
pub enum Effect {
    /// Start a worker process on a free port; the runtime answers with
    /// `WorkerEvent::Spawned` or `WorkerEvent::SpawnFailed`.
    Spawn(Launch),
    /// A signal to the worker's whole process group.
    Signal { worker: WorkerId, signal: Signal },
    /// The worker is gone (or abandoned): free its port, stop probing it,
    /// and kill whatever is left of its process group.
    Release { worker: WorkerId },
    /// No more liveness probes for this worker (it is being retired).
    StopProbe { worker: WorkerId },
    /// Tell `Input::Drained` once the worker has no request in flight, after
    /// at least `settle` (a request that read the old route just before it
    /// changed is counted a moment later) and at most `limit`.
    Drain {
        worker: WorkerId,
        settle: Duration,
        limit: Duration,
        /// Then, at most this long, until no session is bound to it (zero:
        /// sessions are not waited for).
        sessions: Duration,
    },
    /// Fetch a remote package; answered by `Input::Fetched`.
    Fetch {
        agent: AgentId,
        fetch: FetchId,
        package: String,
        sha256: Option<String>,
    },
    /// Send `timer` back as an input at `at`.
    Timer { at: Instant, timer: Timer },
    /// An event of the agent's life, for its log and the supervisor's.
    Log(LogRecord),
    /// The answer to a command.
    Reply { waiter: WaiterId, reply: Reply },
    /// The agent is gone: drop its metrics, usage and log ring.
    Forget { agent: AgentId },
    /// A counter of a decision, for metrics.
    Metric(MetricEvent),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricEvent {
    Autoscaled { agent: AgentId, from: u32, to: u32 },
    Woken { agent: AgentId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

/// What the runtime needs to start one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub worker: WorkerId,
    pub agent: AgentId,
    pub replica: u32,
    /// The local package (a folder, an `.apkg`, or a download).
    pub package: String,
    pub sha256: Option<String>,
    pub env_vars: BTreeMap<String, String>,
    /// The task role's credentials reach the worker (`task_role` of its spec).
    pub task_role: bool,
}

/// The level of a log line, of the state machine's records (`Info`,
/// `Warn`, `Error`) and of what workers and agents print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// The one spelling of a level in logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" | "notice" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" | "err" | "critical" | "fatal" | "exception" => Level::Error,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub agent: AgentId,
    pub level: Level,
    pub message: String,
    /// Set for a lifecycle transition.
    pub transition: Option<(State, State)>,
}

/// What a `PUT` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Rolling,
    /// Only the size or the routing settings changed: applied to the
    /// running processes (replicas added or drained), no rollout.
    Scaled,
    Unchanged,
    /// A later spec replaced the rollout before it ended.
    Superseded,
}

impl PutOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PutOutcome::Created => "created",
            PutOutcome::Rolling => "rolling",
            PutOutcome::Scaled => "scaled",
            PutOutcome::Unchanged => "unchanged",
            PutOutcome::Superseded => "superseded",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Answer {
    /// The agent's first process, as `/supervisor/processes` shows it.
    Agent(Box<ProcessView>),
    Put(Box<ProcessView>, PutOutcome),
    Spec(Box<AgentSpec>),
    Reconciled(ReconcileReport),
    Done,
}

pub type Reply = Result<Answer, CommandError>;

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Conflict,
    ShuttingDown,
}

impl CommandError {
    pub fn not_found(agent: &str) -> Self {
        CommandError {
            kind: ErrorKind::NotFound,
            message: format!("no agent '{agent}'"),
        }
    }
    pub fn conflict(message: String) -> Self {
        CommandError {
            kind: ErrorKind::Conflict,
            message,
        }
    }
    pub fn shutting_down() -> Self {
        CommandError {
            kind: ErrorKind::ShuttingDown,
            message: "the supervisor is shutting down".into(),
        }
    }
}
