//! What the API shows of the agents: one view per process (replica), built
//! by the state machine and published as a snapshot.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::{ExitInfo, Origin};
use super::failure::FailureClass;
use super::lifecycle::State;
use super::spec::RestartPolicy;

pub fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

pub fn ser_opt_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}

/// One process as status and `/supervisor/processes` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessView {
    pub process_id: String,
    pub agent_id: String,
    pub replica: u32,
    pub state: State,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    /// The worker instance (to find its in-flight count in the routing table).
    #[serde(skip)]
    pub worker: Option<u64>,
    pub url: String,
    pub package_path: String,
    pub package_id: Option<String>,
    pub sha256: Option<String>,
    pub restart_policy: RestartPolicy,
    pub max_restarts: Option<u32>,
    /// Restarts over the process's life.
    pub restarts: u32,
    /// Transient failures in a row (reset after a stable run).
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// What kind of failure `last_error` is, in words that quote no agent
    /// output (`package_failure`, `exited 3`, `killed by signal SIGKILL`, ...).
    pub last_error_class: Option<FailureClass>,
    pub last_exit: Option<ExitInfo>,
    #[serde(serialize_with = "ser_time")]
    pub state_since: SystemTime,
    #[serde(serialize_with = "ser_opt_time")]
    pub started_at: Option<SystemTime>,
    #[serde(serialize_with = "ser_opt_time")]
    pub ready_at: Option<SystemTime>,
    /// Seconds until the next start (state `backoff`), counted down when
    /// the view is shown (from `restart_at`).
    pub next_restart_in_seconds: Option<f64>,
    #[serde(skip)]
    pub restart_at: Option<SystemTime>,
    /// When the running worker's run counts as stable (its failure count
    /// then shows 0, as the next exit's decision will count it).
    #[serde(skip)]
    pub stable_at: Option<SystemTime>,
    pub limits: Limits,
    pub meta: Option<Value>,
    /// Requests in flight on this process (filled in from the routing table).
    #[serde(skip)]
    pub in_flight: usize,
    /// Sessions bound to this process (filled in from the routing table).
    pub sessions: usize,
    pub origin: Origin,
    /// The local file the worker loads (a download for remote packages).
    pub package_file: Option<String>,
    pub current_package: Option<PackageRecord>,
    pub previous_package: Option<PackageRecord>,
    pub rollout: Option<RolloutView>,
    /// Old workers of a rollout finishing their requests.
    pub draining: Vec<DrainingView>,
}

/// One agent as a whole: its replicas and its load.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub agent_id: String,
    /// `ready` when any replica serves, `idle` when scaled to zero, else
    /// the first replica's state.
    pub state: State,
    pub desired_replicas: u32,
    pub ready_replicas: u32,
    /// Requests in flight on its replicas, and waiting in its queue
    /// (filled in from the routing table).
    pub in_flight: usize,
    pub queued: usize,
    /// Whether its conversations are pinned to their process, and how many
    /// are live (filled in from the routing table).
    pub sessions_tracked: bool,
    pub sessions: usize,
    pub autoscale: Option<AutoscaleView>,
    #[serde(serialize_with = "ser_opt_duration")]
    pub idle_timeout: Option<std::time::Duration>,
    pub max_concurrency: Option<u32>,
    pub processes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AutoscaleView {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub target_concurrency: f64,
}

fn ser_opt_duration<S: serde::Serializer>(
    d: &Option<std::time::Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.collect_str(&humantime::format_duration(*d)),
        None => s.serialize_none(),
    }
}

/// A package an agent runs or ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageRecord {
    /// The location (query strings redacted).
    pub package: String,
    pub package_id: Option<String>,
    pub sha256: Option<String>,
    #[serde(serialize_with = "ser_time")]
    pub since: SystemTime,
}

/// How far a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    Rolling,
    RolledOut,
    RolloutFailed,
}

/// Where a rollout in progress is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutPhase {
    Fetching,
    Starting,
}

/// How a rollout replaces the running version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutStrategy {
    /// New workers next to the serving ones; the route switches once they are ready.
    BlueGreen,
    /// Nothing was serving: the spec was replaced in place.
    InPlace,
}

/// Where a limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitSource {
    /// The spec's own.
    Explicit,
    /// A share of the supervisor's budget.
    FairShare,
}

/// A rollout as status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutView {
    pub state: RolloutStatus,
    /// While rolling: `fetching` or `starting`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<RolloutPhase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What kind of failure `reason` is, quoting no agent output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_class: Option<FailureClass>,
    pub strategy: RolloutStrategy,
    pub to_package: String,
    pub to_sha256: Option<String>,
    #[serde(serialize_with = "ser_time")]
    pub started_at: SystemTime,
    #[serde(serialize_with = "ser_opt_time")]
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
    /// Sessions still bound to it: it stops when they end.
    pub sessions: usize,
    pub term_sent: bool,
    #[serde(skip)]
    pub worker: u64,
}

/// How a limit is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// The supervisor samples RSS and restarts a worker that stays over.
    Watchdog,
    /// Used for sharing decisions and shown, not enforced.
    Advisory,
}

/// A worker's resource limits and how each is enforced.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub memory_limit_mb: Option<u64>,
    pub memory_limit_source: LimitSource,
    pub memory_enforcement: Enforcement,
    /// The agent's private folder's budget (the disk watchdog's, under
    /// per-agent uids).
    pub disk_limit_mb: Option<u64>,
    pub cpu_limit: Option<f64>,
    pub cpu_limit_source: LimitSource,
    pub cpu_enforcement: Enforcement,
}
