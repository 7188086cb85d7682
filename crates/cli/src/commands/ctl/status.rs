//! What `par ctl` reads of `/supervisor/status`, typed: the fields it shows,
//! with the supervisor's own enums (lifecycle state, rollout status and
//! phase, failure class). Anything else in the JSON is ignored, and a field
//! missing is `None`, so a newer or older supervisor still reads.

use serde::Deserialize;
use serde_json::Value;

use par_supervisor::model::{
    AgentSettings, PutOutcome, RolloutPhase, RolloutStatus, RolloutStrategy, State,
};

use super::client::{typed, Api, CtlError};
use super::table::{self, Out};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Status {
    pub supervisor: Supervisor,
    pub agents_ready: Option<u64>,
    pub agents_total: Option<u64>,
    /// Each agent as a whole (its replicas together).
    pub agents: Vec<AgentSeen>,
    pub processes: Vec<Process>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Supervisor {
    pub version: Option<String>,
    /// `starting`, `running`, `draining`, `stopped`.
    pub state: Option<String>,
    pub uptime_seconds: Option<f64>,
    pub rss_mb: Option<f64>,
    pub resources: TaskResources,
}

/// The task's CPU and memory, and where each figure comes from.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TaskResources {
    pub cpus: Option<Value>,
    pub cpu_source: Option<String>,
    pub memory_bytes: Option<f64>,
    pub memory_source: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Process {
    pub agent_id: String,
    pub process_id: String,
    pub state: State,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub restarts: Option<u32>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub package_id: Option<String>,
    #[serde(default)]
    pub current_package: Option<PackageSeen>,
    #[serde(default)]
    pub next_restart_in_seconds: Option<f64>,
    #[serde(default)]
    pub origin: Option<String>,
    /// A string, or a classified `{kind, message}` object.
    #[serde(default)]
    pub last_error: Option<Value>,
    #[serde(default)]
    pub limits: Option<LimitsSeen>,
    #[serde(default)]
    pub resources: Option<ResourcesSeen>,
    #[serde(default)]
    pub rollout: Option<RolloutSeen>,
}

/// One agent as a whole: its replicas, sessions and routing settings.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentSeen {
    pub agent_id: String,
    pub state: State,
    #[serde(default)]
    pub desired_replicas: Option<u32>,
    #[serde(default)]
    pub ready_replicas: Option<u32>,
    #[serde(default)]
    pub sessions_tracked: Option<bool>,
    /// Live sessions.
    #[serde(default)]
    pub sessions: Option<u64>,
    #[serde(default)]
    pub autoscale: Option<AutoscaleSeen>,
    /// As the supervisor writes a duration (`20m`).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Requests in flight on its replicas and waiting in its queue, now.
    #[serde(default)]
    pub in_flight: Option<u64>,
    #[serde(default)]
    pub queued: Option<u64>,
    /// Every setting in force, under the names `par ctl set` and PATCH
    /// take (`None` from a supervisor that does not show them).
    #[serde(default)]
    pub settings: Option<AgentSettings>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AutoscaleSeen {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub target_concurrency: f64,
}

/// The answer to `PUT`/`PATCH /supervisor/agents/{id}`: the agent's first
/// process and what the supervisor did.
#[derive(Debug, Deserialize)]
pub struct PatchAnswer {
    #[serde(flatten)]
    pub process: Process,
    #[serde(deserialize_with = "put_outcome")]
    pub outcome: PutOutcome,
}

/// A `PutOutcome` by the name the supervisor gives it (`scaled`, `rolling`...).
fn put_outcome<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PutOutcome, D::Error> {
    use PutOutcome::*;
    let name = String::deserialize(d)?;
    [Created, Rolling, Scaled, Unchanged, Superseded]
        .into_iter()
        .find(|o| o.as_str() == name)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown outcome {name:?}")))
}

#[derive(Debug, Clone, Deserialize)]
pub struct PackageSeen {
    #[serde(default)]
    pub package_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LimitsSeen {
    pub memory_limit_mb: Option<f64>,
    pub memory_enforcement: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ResourcesSeen {
    pub cpu_percent: Option<f64>,
    pub rss_mb: Option<f64>,
    pub in_flight: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RolloutSeen {
    pub state: RolloutStatus,
    #[serde(default)]
    pub phase: Option<RolloutPhase>,
    #[serde(default)]
    pub strategy: Option<RolloutStrategy>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub worker_pid: Option<u32>,
    #[serde(default)]
    pub worker_port: Option<u16>,
}

impl Process {
    pub fn running(&self) -> bool {
        self.pid.is_some()
    }

    /// The package id it runs (or last ran).
    pub fn package_id(&self) -> Option<&str> {
        self.package_id.as_deref().or_else(|| {
            self.current_package
                .as_ref()
                .and_then(|c| c.package_id.as_deref())
        })
    }
}

/// `par ctl status AGENT`: the agent as a whole, its processes, and every
/// setting in force; with `json`, the agent and its processes as the
/// supervisor wrote them.
pub async fn one(api: &Api, name: &str, json: bool) -> anyhow::Result<()> {
    let id = api.agent(name).await?.agent_id;
    let raw = api.get_json("/supervisor/status").await?;
    let mut out = Out::stdout();
    let listed = |k: &str| -> Vec<Value> {
        raw.get(k)
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter(|x| x["agent_id"] == id.as_str())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let (agents, processes) = (listed("agents"), listed("processes"));
    let Some(agent) = agents.into_iter().next() else {
        return Err(CtlError::UnknownAgent(format!("agent {id} is no longer listed")).into());
    };
    if json {
        let both = serde_json::json!({ "agent": agent, "processes": processes });
        out.line(&serde_json::to_string_pretty(&both)?)?;
        return Ok(());
    }
    let seen: AgentSeen = typed(agent, "/supervisor/status")?;
    let procs: Vec<Process> = typed(Value::Array(processes), "/supervisor/status")?;
    out.line(&table::agent_line(&seen))?;
    for l in table::agents_table(&procs, out.color()) {
        out.line(&l)?;
    }
    match &seen.settings {
        Some(s) => {
            out.line("settings (as `par ctl set` and PATCH take them; - is unset):")?;
            for l in table::settings_lines(s) {
                out.line(&format!("  {l}"))?;
            }
        }
        None => out.line("settings: not shown by this supervisor")?,
    }
    Ok(())
}

/// `-` for nothing, else the value.
pub fn cell<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The words of a serde enum (`rolled_out`, `blue-green`).
pub fn words<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reads_into_its_types() {
        let json = serde_json::json!({
            "supervisor": {"version": "1.2.3", "state": "running", "uptime_seconds": 5.5,
                           "resources": {"cpus": 2, "memory_bytes": 1048576.0}},
            "agents_ready": 1, "agents_total": 2,
            "processes": [
                {"agent_id": "a", "process_id": "par-a", "state": "ready", "pid": 7, "port": 8001,
                 "restarts": 0, "limits": {"memory_limit_mb": 256, "memory_enforcement": "watchdog",
                 "memory_limit_source": "explicit"}, "resources": {"cpu_percent": 1.5, "rss_mb": 20.0, "in_flight": 0},
                 "rollout": {"state": "rolling", "phase": "fetching", "strategy": "blue-green",
                             "started_at": "2026-01-01T00:00:00Z"}, "extra": true},
                {"agent_id": "b", "process_id": "par-b", "state": "failed",
                 "last_error": "package_failure", "current_package": {"package_id": "b@1"}}
            ]
        });
        let s: Status = serde_json::from_value(json).unwrap();
        assert_eq!(s.supervisor.version.as_deref(), Some("1.2.3"));
        assert_eq!(s.processes[0].state, State::Ready);
        let r = s.processes[0].rollout.as_ref().unwrap();
        assert_eq!(
            (r.state, r.phase, r.strategy),
            (
                RolloutStatus::Rolling,
                Some(RolloutPhase::Fetching),
                Some(RolloutStrategy::BlueGreen)
            )
        );
        assert_eq!(words(&r.state), "rolling");
        assert_eq!(s.processes[1].package_id(), Some("b@1"));
        assert!(!s.processes[1].running());
        assert!(s.agents.is_empty());
    }

    #[test]
    fn agents_and_a_patch_answer_read_into_their_types() {
        let a: AgentSeen = serde_json::from_value(serde_json::json!({
            "agent_id": "a", "state": "ready", "desired_replicas": 3, "ready_replicas": 2,
            "in_flight": 0, "queued": 0, "sessions_tracked": true, "sessions": 4,
            "autoscale": {"min_replicas": 1, "max_replicas": 4, "target_concurrency": 2.0},
            "idle_timeout": "20m", "max_concurrency": null, "processes": ["par-a"]
        }))
        .unwrap();
        assert_eq!((a.desired_replicas, a.ready_replicas), (Some(3), Some(2)));
        assert_eq!(a.autoscale.map(|s| s.max_replicas), Some(4));
        assert_eq!(a.idle_timeout.as_deref(), Some("20m"));
        for o in [
            PutOutcome::Created,
            PutOutcome::Rolling,
            PutOutcome::Scaled,
            PutOutcome::Unchanged,
            PutOutcome::Superseded,
        ] {
            let p: PatchAnswer = serde_json::from_value(serde_json::json!({
                "agent_id": "a", "process_id": "par-a", "state": "ready", "outcome": o.as_str()
            }))
            .unwrap();
            assert_eq!((p.outcome, p.process.agent_id.as_str()), (o, "a"));
        }
        assert!(serde_json::from_value::<PatchAnswer>(serde_json::json!({
            "agent_id": "a", "process_id": "par-a", "state": "ready", "outcome": "exploded"
        }))
        .is_err());
    }

    #[test]
    fn an_agents_settings_read_typed_and_print_one_a_line() {
        use par_supervisor::model::AgentSpec;
        let mut spec = AgentSpec::new("a", "/pkgs/a");
        spec.max_queue = 5;
        spec.queue_timeout = std::time::Duration::from_millis(1500);
        let settings = serde_json::to_value(AgentSettings::of(&spec)).unwrap();
        let a: AgentSeen = serde_json::from_value(serde_json::json!({
            "agent_id": "a", "state": "ready", "settings": settings
        }))
        .unwrap();
        let s = a.settings.unwrap();
        assert_eq!(s, AgentSettings::of(&spec));
        let lines = table::settings_lines(&s);
        assert_eq!(lines.len(), settings.as_object().unwrap().len());
        let line = |k: &str| {
            lines
                .iter()
                .find(|l| l.split_whitespace().next() == Some(k))
                .cloned()
                .unwrap()
        };
        assert!(line("max_queue").ends_with("  5"), "{lines:?}");
        assert!(line("queue_timeout").ends_with("  1s 500ms"), "{lines:?}");
        assert!(line("memory_limit_mb").ends_with("  -"), "{lines:?}");
        assert!(line("sessions").ends_with("  auto"), "{lines:?}");
        // An older supervisor's agent, without settings, still reads.
        let old: AgentSeen =
            serde_json::from_value(serde_json::json!({"agent_id": "a", "state": "ready"})).unwrap();
        assert!(old.settings.is_none());
    }
}
