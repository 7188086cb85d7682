//! What the state machine is told: commands from the API and the desired-state
//! task, and events from the runtime (worker processes, probes, fetches, timers).

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::Value;

use super::id::{AgentId, FetchId, WaiterId, WorkerId};
use super::spec::AgentSpec;

/// The time of an input: monotonic for decisions, wall-clock for display.
/// The state machine reads no clock of its own.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    pub wall: SystemTime,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// `self` moved on by `d` (both clocks).
    pub fn after(self, d: Duration) -> Clock {
        Clock {
            now: self.now + d,
            wall: self.wall + d,
        }
    }
}

// A command carries an agent's spec inline; each input is moved once through
// the dispatcher's channel, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Input {
    /// A command; its answer goes to `waiter` (a `Reply` effect).
    Command {
        command: Command,
        waiter: WaiterId,
    },
    Worker {
        worker: WorkerId,
        event: WorkerEvent,
    },
    /// A remote package fetch ended.
    Fetched {
        agent: AgentId,
        fetch: FetchId,
        result: Result<Resolved, FetchFailure>,
    },
    Timer(Timer),
    /// A stopping or retiring worker has no request in flight any more (or
    /// its drain time is up).
    Drained {
        worker: WorkerId,
        in_flight: usize,
    },
    /// A request arrived for an agent scaled to zero.
    Wake {
        agent: AgentId,
    },
    /// The load of an agent that autoscales or idles, sampled by the runtime.
    Load {
        agent: AgentId,
        in_flight: usize,
        queued: usize,
        /// Time since the last request ended (zero while one runs, or
        /// while a session is live).
        idle_for: Duration,
        /// Workers with sessions bound to them: scaled away last.
        with_sessions: Vec<WorkerId>,
    },
    /// The workers of an agent with sessions bound to them, as of now (told
    /// before a new spec, which may scale it down, is applied).
    Sessions {
        agent: AgentId,
        with_sessions: Vec<WorkerId>,
    },
    /// The RSS watchdog: the worker's group stayed over its memory limit.
    OverMemory {
        worker: WorkerId,
        rss_mb: u64,
        limit_mb: u64,
    },
    /// The disk watchdog: the agent's private folder holds more than its
    /// disk limit, or could not be counted (`None`: the count was stopped or
    /// failed three times in a row); every worker of the agent is
    /// restarted, its tmp cleared.
    OverDisk {
        worker: WorkerId,
        used_mb: Option<u64>,
        limit_mb: u64,
    },
}

/// Where an agent comes from: declared ones (file, `PAR_AGENTS`, registry)
/// are reconciled; those spawned through the API are left alone by reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Declared,
    Api,
}

#[derive(Debug)]
pub enum Command {
    /// Start a new agent. `wait`: answer once it has settled.
    Spawn {
        agent: AgentId,
        spec: AgentSpec,
        origin: Origin,
        wait: bool,
    },
    /// Stop every worker of the agent; answered when they are gone.
    Stop {
        agent: AgentId,
    },
    Restart {
        agent: AgentId,
        wait: bool,
    },
    /// Drain, stop and forget; answered when it is gone.
    Remove {
        agent: AgentId,
    },
    /// Roll the agent to a new spec (or create it). `wait`: answer when the
    /// rollout has ended. `base`: only if the spec the agent heads for is
    /// still this one (a patch was made on it), else a conflict.
    Put {
        agent: AgentId,
        spec: AgentSpec,
        wait: bool,
        base: Option<Box<AgentSpec>>,
    },
    /// The spec the agent heads for: a rollout's while one is on its way.
    Spec {
        agent: AgentId,
    },
    /// Make what runs match the declared agents.
    Reconcile {
        declared: Vec<(AgentId, AgentSpec)>,
        trigger: String,
    },
    /// Stop every worker within `grace`; answered when all are gone.
    Shutdown {
        grace: Duration,
    },
}

/// Events of one worker process.
#[derive(Debug)]
pub enum WorkerEvent {
    /// The process runs.
    Spawned {
        pid: u32,
        port: u16,
    },
    SpawnFailed {
        reason: String,
        kind: SpawnFailure,
    },
    Ready(Health),
    /// The worker reported an error on `/health` while starting.
    HealthError(String),
    StartupTimeout,
    /// A liveness probe result; `failures` in a row.
    Probe {
        ok: bool,
        failures: u32,
    },
    /// The process ended; `errors` are the last error lines it printed.
    Exited {
        exit: ExitInfo,
        errors: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnFailure {
    /// Every port of the range is taken right now: try again later.
    NoPort,
    /// The worker program could not be started.
    Exec,
}

/// What the worker's `/health` said when it got ready.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub package_id: Option<String>,
    /// `name`, `version`, `description`, `capabilities`, `surfaces` from `/meta`.
    pub meta: Option<Value>,
}

/// How a worker ended.
#[derive(Debug, Clone, Serialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    #[serde(serialize_with = "super::view::ser_time")]
    pub at: SystemTime,
    /// Seconds the worker ran.
    pub ran_seconds: f64,
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn is_package_failure(&self) -> bool {
        self.code == Some(par_contract::exit::PACKAGE_FAILURE)
    }

    /// `exited with code 3`, `killed by signal SIGKILL`.
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => format!("killed by signal {}", signal_name(s)),
            _ => "exited".into(),
        }
    }
}

/// `SIGKILL` for 9; the number itself when unknown.
pub fn signal_name(s: i32) -> String {
    nix::sys::signal::Signal::try_from(s)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| s.to_string())
}

/// The timers the state machine sets (an `Effect::Timer`) and receives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// A replica's backoff is over; stale when its epoch moved on.
    Restart {
        agent: AgentId,
        replica: u32,
        epoch: u64,
    },
    /// A worker sent SIGTERM has had its grace: SIGKILL if it still runs.
    Kill { worker: WorkerId },
}

/// A package on local disk, as a worker is given it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The `.apkg` file (`$PAR_HOME/downloads/<sha256>.apkg`).
    pub path: String,
    pub sha256: String,
    /// False for a cache hit.
    pub downloaded: bool,
    pub bytes: u64,
}

/// Why a fetch failed, and whether trying again later may help.
#[derive(Debug, Clone)]
pub struct FetchFailure {
    pub message: String,
    pub transient: bool,
}
