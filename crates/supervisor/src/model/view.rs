//! What the state machine shows of the agents: one view per process
//! (replica) and one per agent, built from its state alone and published as
//! a snapshot. Live counters (requests in flight, queued, sessions) and
//! usage are not the state machine's: the API adds them when it shows a
//! view (`http::api::view`).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::{ExitInfo, Origin};
use super::failure::FailureClass;
use super::id::WorkerId;
use super::lifecycle::State;
use super::settings::AgentSettings;
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

/// One process as the state machine knows it.
#[derive(Debug, Clone)]
pub struct ProcessView {
    pub process_id: String,
    pub agent_id: String,
    pub replica: u32,
    pub state: State,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    /// The worker instance (its live counters are found by it).
    pub worker: Option<WorkerId>,
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
    pub state_since: SystemTime,
    pub started_at: Option<SystemTime>,
    pub ready_at: Option<SystemTime>,
    /// When the next start is due (state `backoff`): the seconds left are
    /// counted when the view is shown.
    pub restart_at: Option<SystemTime>,
    /// When the running worker's run counts as stable (its failure count
    /// then shows 0, as the next exit's decision will count it).
    pub stable_at: Option<SystemTime>,
    pub limits: Limits,
    pub meta: Option<Value>,
    pub origin: Origin,
    /// The local file the worker loads (a download for remote packages).
    pub package_file: Option<String>,
    pub current_package: Option<PackageRecord>,
    pub previous_package: Option<PackageRecord>,
    pub rollout: Option<RolloutView>,
    /// Old workers of a rollout finishing their requests.
    pub draining: Vec<DrainingView>,
    /// Its agent's settings in force.
    pub settings: AgentSettings,
}

/// One agent as a whole: its replicas (its load is the API's to add).
#[derive(Debug, Clone)]
pub struct AgentView {
    pub agent_id: String,
    /// `ready` when any replica serves, `idle` when scaled to zero, else
    /// the first replica's state.
    pub state: State,
    pub desired_replicas: u32,
    pub ready_replicas: u32,
    /// Whether its conversations are pinned to their process.
    pub sessions_tracked: bool,
    pub autoscale: Option<AutoscaleView>,
    pub idle_timeout: Option<std::time::Duration>,
    pub max_concurrency: Option<u32>,
    pub processes: Vec<String>,
    /// Its settings in force.
    pub settings: AgentSettings,
}

#[derive(Debug, Clone, Serialize)]
pub struct AutoscaleView {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub target_concurrency: f64,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// An old worker draining after a rollout (its requests in flight and
/// sessions still bound to it are live counters, found by `worker`).
#[derive(Debug, Clone)]
pub struct DrainingView {
    pub pid: u32,
    pub port: u16,
    pub term_sent: bool,
    pub worker: WorkerId,
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
