//! One agent's spec as declared in the config file, in `PAR_AGENTS`, in the
//! registry index or in an API request. Field names are those of the original
//! Multi-PAR API; checking a spec against the machine is `config::validate`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use par_contract::backoff::Backoff;

/// Other names a field is accepted under, and the name it has in a spec.
const ALIASES: [(&str, &str); 3] = [
    ("agent_id", "id"),
    ("package_path", "package"),
    ("env", "env_vars"),
];

/// A JSON merge patch (RFC 7396) applied to a spec as JSON: objects merge
/// key by key, `null` removes (the field returns to its default), anything
/// else replaces. A field's other names count as the field. A new package
/// without a `sha256` or `package_id` of its own drops the old one's,
/// which described the old package.
pub fn merge_patch(
    mut spec: serde_json::Value,
    patch: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let patch: serde_json::Map<String, serde_json::Value> = patch
        .into_iter()
        .map(|(k, v)| {
            let name = ALIASES
                .iter()
                .find(|(a, _)| *a == k)
                .map_or(k, |(_, n)| n.to_string());
            (name, v)
        })
        .collect();
    if let serde_json::Value::Object(m) = &mut spec {
        if patch
            .get("package")
            .is_some_and(|p| m.get("package") != Some(p))
        {
            for derived in ["sha256", "package_id"] {
                if !patch.contains_key(derived) {
                    m.remove(derived);
                }
            }
        }
    }
    merge(&mut spec, serde_json::Value::Object(patch));
    spec
}

fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    let serde_json::Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(serde_json::Map::new());
    }
    let serde_json::Value::Object(t) = target else {
        return;
    };
    for (k, v) in patch {
        if v.is_null() {
            t.remove(&k);
        } else {
            merge(t.entry(k).or_insert(serde_json::Value::Null), v);
        }
    }
}

/// An agent's disk budget when its spec sets none (`disk_limit_mb`): 1 GiB.
pub const DEFAULT_DISK_LIMIT_MB: u64 = 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    #[serde(alias = "agent_id", default)]
    pub id: String,
    /// Folder, `.apkg` file (relative to the config file's folder), `https://` or `s3://`.
    #[serde(alias = "package_path", default)]
    pub package: String,
    /// Informational, as the original API accepted it (`name@version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(alias = "env", default)]
    pub env_vars: BTreeMap<String, String>,
    /// The ECS task role's credentials (`AWS_CONTAINER_CREDENTIALS_*`, ...)
    /// reach the agent; no other agent sees them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub task_role: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mb: Option<u64>,
    /// What the agent's private folder (HOME, TMPDIR, its package) may hold
    /// under per-agent uids; default [`DEFAULT_DISK_LIMIT_MB`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_limit_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<f64>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Consecutive transient failures tolerated; `None` = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    #[serde(default = "default_delay")]
    pub restart_delay_seconds: f64,
    #[serde(default = "default_multiplier")]
    pub backoff_multiplier: f64,
    #[serde(default = "default_max_delay")]
    pub max_restart_delay_seconds: f64,
    /// A run at least this long resets the failure count.
    #[serde(default = "default_stable")]
    pub stable_period_seconds: f64,
    /// Worker processes of the agent (fixed; see `max_replicas` for autoscale).
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Autoscale within the task between these bounds, keeping the requests
    /// in flight per replica near `target_concurrency`. Off unless
    /// `max_replicas` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_concurrency: Option<f64>,
    /// How long the load must stay low before the autoscaler removes a replica.
    #[serde(
        default = "default_scale_down_window",
        with = "humantime_serde",
        skip_serializing_if = "is_default_scale_down_window"
    )]
    pub scale_down_window: Duration,
    /// Requests in flight one replica accepts; more wait in the agent's queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Bound of the agent's queue, and the longest wait in it; beyond either
    /// a request is answered 503 with `Retry-After` at once.
    #[serde(default = "default_max_queue")]
    pub max_queue: u32,
    #[serde(
        default = "default_queue_timeout",
        with = "humantime_serde",
        skip_serializing_if = "is_default_queue_timeout"
    )]
    pub queue_timeout: Duration,
    /// No request for this long: stop every replica (scale to zero); the next
    /// request starts one and waits until it is ready.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<Duration>,
    /// Conversations pinned to the process that holds them (`auto`: for an
    /// agent serving HTTP of its own or running more than one replica).
    #[serde(default, skip_serializing_if = "SessionMode::is_auto")]
    pub sessions: SessionMode,
    /// A session's binding ends after this long without a request.
    #[serde(
        default = "default_session_idle_timeout",
        with = "humantime_serde",
        skip_serializing_if = "is_default_session_idle_timeout"
    )]
    pub session_idle_timeout: Duration,
    /// ... and this long after it began, whatever its use.
    #[serde(
        default = "default_session_max_lifetime",
        with = "humantime_serde",
        skip_serializing_if = "is_default_session_max_lifetime"
    )]
    pub session_max_lifetime: Duration,
    /// Longest a process kept only for its sessions (an old version after a
    /// rollout, a replica scaled away) waits for them to end.
    #[serde(
        default = "default_session_drain_timeout",
        with = "humantime_serde",
        skip_serializing_if = "is_default_session_drain_timeout"
    )]
    pub session_drain_timeout: Duration,
    /// Bindings kept per agent; beyond it the least recently used goes.
    #[serde(
        default = "default_max_sessions",
        skip_serializing_if = "is_default_max_sessions"
    )]
    pub max_sessions: u32,
}

/// Whether an agent's conversations are pinned to their process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionMode {
    #[default]
    Auto,
    Off,
}

impl SessionMode {
    fn is_auto(&self) -> bool {
        *self == SessionMode::Auto
    }
}

/// How an agent's sessions are kept, when they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub drain_timeout: Duration,
    pub max_sessions: usize,
}

fn default_session_idle_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}
fn is_default_session_idle_timeout(d: &Duration) -> bool {
    *d == default_session_idle_timeout()
}
fn default_session_max_lifetime() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn is_default_session_max_lifetime(d: &Duration) -> bool {
    *d == default_session_max_lifetime()
}
fn default_session_drain_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}
fn is_default_session_drain_timeout(d: &Duration) -> bool {
    *d == default_session_drain_timeout()
}
fn default_max_sessions() -> u32 {
    10_000
}
fn is_default_max_sessions(n: &u32) -> bool {
    *n == default_max_sessions()
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn default_replicas() -> u32 {
    1
}
fn default_max_queue() -> u32 {
    1000
}
fn default_queue_timeout() -> Duration {
    Duration::from_secs(30)
}
fn is_default_queue_timeout(d: &Duration) -> bool {
    *d == default_queue_timeout()
}
fn default_scale_down_window() -> Duration {
    Duration::from_secs(30)
}
fn is_default_scale_down_window(d: &Duration) -> bool {
    *d == default_scale_down_window()
}

fn default_delay() -> f64 {
    0.2
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_max_delay() -> f64 {
    30.0
}
fn default_stable() -> f64 {
    30.0
}

impl AgentSpec {
    pub fn new(id: impl Into<String>, package: impl Into<String>) -> Self {
        AgentSpec {
            id: id.into(),
            package: package.into(),
            package_id: None,
            sha256: None,
            env_vars: BTreeMap::new(),
            task_role: false,
            memory_limit_mb: None,
            disk_limit_mb: None,
            cpu_limit: None,
            restart_policy: RestartPolicy::default(),
            max_restarts: None,
            restart_delay_seconds: default_delay(),
            backoff_multiplier: default_multiplier(),
            max_restart_delay_seconds: default_max_delay(),
            stable_period_seconds: default_stable(),
            replicas: default_replicas(),
            min_replicas: None,
            max_replicas: None,
            target_concurrency: None,
            scale_down_window: default_scale_down_window(),
            max_concurrency: None,
            max_queue: default_max_queue(),
            queue_timeout: default_queue_timeout(),
            idle_timeout: None,
            sessions: SessionMode::Auto,
            session_idle_timeout: default_session_idle_timeout(),
            session_max_lifetime: default_session_max_lifetime(),
            session_drain_timeout: default_session_drain_timeout(),
            max_sessions: default_max_sessions(),
        }
    }

    /// How its sessions are kept, whether or not they are tracked.
    pub fn session_settings(&self) -> SessionSettings {
        SessionSettings {
            idle_timeout: self.session_idle_timeout,
            max_lifetime: self.session_max_lifetime,
            drain_timeout: self.session_drain_timeout,
            max_sessions: self.max_sessions as usize,
        }
    }

    /// Whether the autoscaler chooses the number of replicas.
    pub fn autoscaled(&self) -> bool {
        self.max_replicas.is_some()
    }

    /// The fewest replicas the agent runs while it is not idle.
    pub fn floor(&self) -> u32 {
        if self.autoscaled() {
            self.min_replicas.unwrap_or(1).max(1)
        } else {
            self.replicas.max(1)
        }
    }

    /// The most replicas it may run.
    pub fn ceiling(&self) -> u32 {
        self.max_replicas.unwrap_or(self.replicas).max(self.floor())
    }

    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: Duration::from_secs_f64(self.restart_delay_seconds.max(0.0)),
            multiplier: self.backoff_multiplier,
            max: Duration::from_secs_f64(self.max_restart_delay_seconds.max(0.0)),
            jitter: 0.2,
        }
    }

    pub fn stable_period(&self) -> Duration {
        Duration::from_secs_f64(self.stable_period_seconds.max(0.0))
    }

    /// Whether `package` names a remote source rather than a local path.
    pub fn is_remote(&self) -> bool {
        is_remote(&self.package)
    }

    /// Makes a relative local `package` absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        if !self.is_remote() && !self.package.is_empty() {
            let p = Path::new(&self.package);
            if p.is_relative() {
                self.package = base.join(p).to_string_lossy().into_owned();
            }
        }
    }
}

/// When a worker that exited is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart after any exit.
    Always,
    /// Restart after a non-zero exit or a signal (the default).
    #[default]
    #[serde(alias = "on_failure")]
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Whether an exit (`success` = exit code 0) is followed by a restart.
    pub fn restarts_after(self, success: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        }
    }
}

/// Whether a package location is remote (`https://`, `http://`, `s3://`).
pub fn is_remote(package: &str) -> bool {
    package.starts_with("https://")
        || package.starts_with("http://")
        || package.starts_with("s3://")
}

/// The location as logs and status may show it (no query string, no user info).
pub fn redacted(package: &str) -> String {
    match par_fetch::Source::parse(package) {
        Ok(s) => s.to_string(),
        Err(_) => package.split('?').next().unwrap_or_default().to_string(),
    }
}

/// The fields that make a deployment: two specs equal here run the same
/// thing (`package_id` is informational and ignored).
/// Whether `b` differs from `a` only in how many processes run and how
/// requests reach them (replicas, autoscale, admission, idling, sessions):
/// applied to the running processes, no new generation.
pub fn only_scaling(a: &AgentSpec, b: &AgentSpec) -> bool {
    let strip = |s: &AgentSpec| AgentSpec {
        package_id: None,
        replicas: 1,
        min_replicas: None,
        max_replicas: None,
        target_concurrency: None,
        scale_down_window: Duration::ZERO,
        max_concurrency: None,
        max_queue: 0,
        queue_timeout: Duration::ZERO,
        idle_timeout: None,
        sessions: SessionMode::Auto,
        session_idle_timeout: Duration::ZERO,
        session_max_lifetime: Duration::ZERO,
        session_drain_timeout: Duration::ZERO,
        max_sessions: 0,
        ..s.clone()
    };
    strip(a) == strip(b)
}

pub fn same_deployment(a: &AgentSpec, b: &AgentSpec) -> bool {
    let strip = |s: &AgentSpec| AgentSpec {
        package_id: None,
        ..s.clone()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patched(base: &AgentSpec, patch: serde_json::Value) -> AgentSpec {
        let serde_json::Value::Object(p) = patch else {
            panic!("a patch is an object")
        };
        let v = merge_patch(serde_json::to_value(base).unwrap(), p);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_patch_keeps_what_it_leaves_out() {
        let mut base = AgentSpec::new("a", "/pkgs/v1");
        base.sha256 = Some("ab".repeat(32));
        base.package_id = Some("a@1".into());
        base.env_vars.insert("KEY".into(), "secret".into());
        base.env_vars.insert("OLD".into(), "x".into());
        base.restart_policy = RestartPolicy::Never;
        base.replicas = 2;

        // A new package under its other name: env_vars and the rest kept,
        // the old package's sha256 and package_id dropped.
        let p = patched(&base, serde_json::json!({"package_path": "/pkgs/v2"}));
        assert_eq!(p.package, "/pkgs/v2");
        assert_eq!((p.sha256.as_deref(), p.package_id.as_deref()), (None, None));
        assert_eq!(p.env_vars, base.env_vars);
        assert_eq!((p.restart_policy, p.replicas), (RestartPolicy::Never, 2));

        // With its own sha256; env_vars merged key by key, null removes.
        let p = patched(
            &base,
            serde_json::json!({"package": "/pkgs/v2", "sha256": "cd".repeat(32),
                               "env": {"OLD": null, "NEW": "y"}}),
        );
        assert_eq!(p.sha256, Some("cd".repeat(32)));
        assert_eq!(p.env_vars.get("KEY").map(String::as_str), Some("secret"));
        assert_eq!(p.env_vars.get("NEW").map(String::as_str), Some("y"));
        assert!(!p.env_vars.contains_key("OLD"));

        // The same package: its sha256 stays; null returns a field to its default.
        let p = patched(
            &base,
            serde_json::json!({"package": "/pkgs/v1", "restart_policy": null}),
        );
        assert_eq!(p.sha256, base.sha256);
        assert_eq!(p.restart_policy, RestartPolicy::default());
    }

    #[test]
    fn deployment_equality_ignores_package_id() {
        let a = AgentSpec::new("a", "s3://b/k");
        let mut b = a.clone();
        b.package_id = Some("x@1".into());
        assert!(same_deployment(&a, &b));
        b.env_vars.insert("K".into(), "V".into());
        assert!(!same_deployment(&a, &b));
    }

    #[test]
    fn the_task_role_is_asked_for_by_name_and_off_by_default() {
        let a: AgentSpec = serde_json::from_str(r#"{"id":"x","package":"/p"}"#).unwrap();
        assert!(!a.task_role);
        assert!(!serde_json::to_value(&a)
            .unwrap()
            .as_object()
            .unwrap()
            .contains_key("task_role"));
        let p = patched(&a, serde_json::json!({"task_role": true}));
        assert!(p.task_role);
        assert!(
            !same_deployment(&a, &p),
            "asking for the role is a new deployment"
        );
        let t: AgentSpec =
            toml::from_str("id = \"x\"\npackage = \"/p\"\ntask_role = true\n").unwrap();
        assert!(t.task_role);
        assert!(serde_json::from_str::<AgentSpec>(r#"{"id":"x","task_role":"yes"}"#).is_err());
    }

    #[test]
    fn policies() {
        assert!(RestartPolicy::Always.restarts_after(true));
        assert!(!RestartPolicy::OnFailure.restarts_after(true));
        assert!(RestartPolicy::OnFailure.restarts_after(false));
        assert!(!RestartPolicy::Never.restarts_after(false));
    }

    #[test]
    fn original_api_field_names() {
        let a: AgentSpec = serde_json::from_str(
            r#"{"agent_id":"x","package_path":"/p","package_id":"x@1","env_vars":{"K":"V"},"memory_limit_mb":256,
                "cpu_limit":0.5,"restart_policy":"always","max_restarts":3,"restart_delay_seconds":1,
                "backoff_multiplier":3,"max_restart_delay_seconds":10}"#,
        )
        .unwrap();
        assert_eq!(a.id, "x");
        assert_eq!(a.package, "/p");
        assert_eq!(a.restart_policy, RestartPolicy::Always);
        assert_eq!(a.max_restarts, Some(3));
    }
}
