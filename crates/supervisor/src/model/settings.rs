//! An agent's settings as the read routes show them: every field of its spec
//! that PUT/PATCH, `[[agents]]`, `PAR_AGENTS` and the registry index take,
//! under the same name and in the same form (durations as `30s`, `15m`),
//! with the spec's defaults filled in. `null` is what an unset optional
//! field means (no limit, a fair share, autoscale off, never idle), so the
//! block given back as a PATCH changes nothing.
//!
//! Not here, and why: `agent_id`, `package_path`, `package_id` and `sha256`
//! are shown beside it already; `env_vars` is not shown (its values are the
//! agent's secrets).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::spec::{AgentSpec, RestartPolicy, SessionMode};

/// The spec fields shown elsewhere than in [`AgentSettings`] (or not at
/// all), with the key that shows them: `None` for one no read route shows.
pub const NOT_SETTINGS: [(&str, Option<&str>); 5] = [
    ("id", Some("agent_id")),
    ("package", Some("package_path")),
    ("package_id", Some("package_id")),
    ("sha256", Some("sha256")),
    ("env_vars", None),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSettings {
    pub replicas: u32,
    pub min_replicas: Option<u32>,
    pub max_replicas: Option<u32>,
    pub target_concurrency: Option<f64>,
    #[serde(with = "humantime_serde")]
    pub scale_down_window: Duration,
    pub max_concurrency: Option<u32>,
    pub max_queue: u32,
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    pub sessions: SessionMode,
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub session_max_lifetime: Duration,
    #[serde(with = "humantime_serde")]
    pub session_drain_timeout: Duration,
    pub max_sessions: u32,
    pub memory_limit_mb: Option<u64>,
    pub disk_limit_mb: Option<u64>,
    pub cpu_limit: Option<f64>,
    pub restart_policy: RestartPolicy,
    pub max_restarts: Option<u32>,
    pub restart_delay_seconds: f64,
    pub backoff_multiplier: f64,
    pub max_restart_delay_seconds: f64,
    pub stable_period_seconds: f64,
    pub task_role: bool,
}

impl AgentSettings {
    /// The settings of `spec`. Every field of the spec is named here, so a
    /// new one does not compile until it is shown or listed in
    /// [`NOT_SETTINGS`].
    pub fn of(spec: &AgentSpec) -> AgentSettings {
        let AgentSpec {
            id: _,
            package: _,
            package_id: _,
            sha256: _,
            env_vars: _,
            task_role,
            memory_limit_mb,
            disk_limit_mb,
            cpu_limit,
            restart_policy,
            max_restarts,
            restart_delay_seconds,
            backoff_multiplier,
            max_restart_delay_seconds,
            stable_period_seconds,
            replicas,
            min_replicas,
            max_replicas,
            target_concurrency,
            scale_down_window,
            max_concurrency,
            max_queue,
            queue_timeout,
            idle_timeout,
            sessions,
            session_idle_timeout,
            session_max_lifetime,
            session_drain_timeout,
            max_sessions,
        } = *spec;
        AgentSettings {
            replicas,
            min_replicas,
            max_replicas,
            target_concurrency,
            scale_down_window,
            max_concurrency,
            max_queue,
            queue_timeout,
            idle_timeout,
            sessions,
            session_idle_timeout,
            session_max_lifetime,
            session_drain_timeout,
            max_sessions,
            memory_limit_mb,
            disk_limit_mb,
            cpu_limit,
            restart_policy,
            max_restarts,
            restart_delay_seconds,
            backoff_multiplier,
            max_restart_delay_seconds,
            stable_period_seconds,
            task_role,
        }
    }
}

/// The names a spec takes, as its parser (the one PUT and PATCH use) lists
/// them when it meets one it does not know; other names of a field
/// (`agent_id`, `package_path`, `env`) included.
pub fn spec_field_names() -> Vec<String> {
    let unknown = serde_json::json!({ "\u{1}": 0 });
    let Err(e) = serde_json::from_value::<AgentSpec>(unknown) else {
        return Vec::new();
    };
    let msg = e.to_string();
    let Some((_, list)) = msg.split_once("expected one of ") else {
        return Vec::new();
    };
    list.split(", ")
        .filter_map(|s| s.trim().strip_prefix('`')?.strip_suffix('`'))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::spec::merge_patch;

    fn keys(v: &serde_json::Value) -> Vec<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    /// A spec with every setting away from its default.
    fn all_set() -> AgentSpec {
        let mut s = AgentSpec::new("a", "/pkgs/a");
        s.task_role = true;
        s.memory_limit_mb = Some(300);
        s.disk_limit_mb = Some(2048);
        s.cpu_limit = Some(0.5);
        s.restart_policy = RestartPolicy::Always;
        s.max_restarts = Some(7);
        s.restart_delay_seconds = 0.5;
        s.backoff_multiplier = 3.0;
        s.max_restart_delay_seconds = 12.0;
        s.stable_period_seconds = 5.0;
        s.min_replicas = Some(2);
        s.max_replicas = Some(4);
        s.target_concurrency = Some(2.5);
        s.scale_down_window = Duration::from_secs(90);
        s.max_concurrency = Some(3);
        s.max_queue = 5;
        s.queue_timeout = Duration::from_millis(1500);
        s.idle_timeout = Some(Duration::from_secs(3600));
        s.sessions = SessionMode::Off;
        s.session_idle_timeout = Duration::from_secs(20 * 60);
        s.session_max_lifetime = Duration::from_secs(2 * 3600);
        s.session_drain_timeout = Duration::from_secs(5 * 60);
        s.max_sessions = 42;
        s
    }

    #[test]
    fn every_name_the_spec_parser_takes_is_a_setting_or_shown_beside_them() {
        let names = spec_field_names();
        assert!(
            names.iter().any(|n| n == "max_queue") && names.len() > 20,
            "{names:?}"
        );
        let shown = keys(&serde_json::to_value(AgentSettings::of(&all_set())).unwrap());
        let aliases = ["agent_id", "package_path", "env"];
        for n in &names {
            let elsewhere = NOT_SETTINGS.iter().any(|(f, _)| f == n);
            assert!(
                shown.contains(n) || elsewhere || aliases.contains(&n.as_str()),
                "the spec takes {n:?}, which the settings do not show"
            );
        }
        // ... and nothing the parser would refuse.
        for k in &shown {
            assert!(names.contains(k), "{k:?} is not a spec field");
        }
    }

    #[test]
    fn defaults_are_filled_in_and_durations_read_as_a_spec_writes_them() {
        let v = serde_json::to_value(AgentSettings::of(&AgentSpec::new("a", "/p"))).unwrap();
        assert_eq!(v["max_queue"], 1000);
        assert_eq!(v["queue_timeout"], "30s");
        assert_eq!(v["scale_down_window"], "30s");
        assert_eq!(v["sessions"], "auto");
        assert_eq!(v["session_idle_timeout"], "15m");
        assert_eq!(v["session_max_lifetime"], "8h");
        assert_eq!(v["session_drain_timeout"], "15m");
        assert_eq!(v["max_sessions"], 10_000);
        assert_eq!(v["restart_policy"], "on-failure");
        assert_eq!(v["restart_delay_seconds"], 0.2);
        assert_eq!(v["replicas"], 1);
        for unset in [
            "idle_timeout",
            "max_concurrency",
            "max_restarts",
            "memory_limit_mb",
            "max_replicas",
        ] {
            assert!(v[unset].is_null(), "{unset}: {v}");
        }
        let set = serde_json::to_value(AgentSettings::of(&all_set())).unwrap();
        assert_eq!(set["queue_timeout"], "1s 500ms");
        assert_eq!(set["idle_timeout"], "1h");
        assert_eq!(set["scale_down_window"], "1m 30s");
    }

    /// The block given back as a PATCH changes nothing, and read back as
    /// settings is the same: what is shown is in the form PATCH takes.
    #[test]
    fn the_settings_as_a_patch_change_nothing() {
        for spec in [AgentSpec::new("a", "/pkgs/a"), all_set()] {
            let settings = AgentSettings::of(&spec);
            let serde_json::Value::Object(patch) = serde_json::to_value(&settings).unwrap() else {
                panic!("an object")
            };
            let merged = merge_patch(serde_json::to_value(&spec).unwrap(), patch);
            let again: AgentSpec = serde_json::from_value(merged).unwrap();
            assert_eq!(again, spec);
            let read: AgentSettings =
                serde_json::from_value(serde_json::to_value(&settings).unwrap()).unwrap();
            assert_eq!(read, settings);
        }
    }
}
