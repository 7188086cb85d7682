//! Supervisor configuration: the TOML file, `PAR_AGENTS`, agent specs and their validation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::restart::{Backoff, RestartPolicy};

/// Environment variables the supervisor sets for a worker; an agent's
/// `env_vars` may not override them.
pub const RESERVED_ENV: &[&str] = &[
    "PAR_PORT",
    "PAR_HOST",
    "PAR_AGENT_ID",
    "PAR_PACKAGE_PATH",
    "PAR_PACKAGE_SHA256",
    "PAR_SUPERVISOR_URL",
    "PAR_MODE",
    "PAR_ADMIN_TOKEN",
];

/// The whole file: `[supervisor]` and `[[agents]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub supervisor: SupervisorSection,
    #[serde(default)]
    pub agents: Vec<AgentSpec>,
}

/// `[supervisor]`: every key optional; CLI flags and environment win over it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSection {
    pub port: Option<u16>,
    pub host: Option<String>,
    pub worker_ports: Option<String>,
    pub admin_token: Option<String>,
    pub home: Option<PathBuf>,
    /// The exact argv of a worker (default: this binary with `worker`).
    pub worker_command: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
    /// Time a stopped worker gets between SIGTERM and SIGKILL.
    #[serde(default, with = "humantime_serde")]
    pub stop_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub upstream_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub stream_idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub startup_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub probe_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub probe_timeout: Option<Duration>,
    pub probe_failures: Option<u32>,
    pub access_log: Option<bool>,
    pub log_lines_per_process: Option<usize>,
    /// A registry index: a JSON list of agent specs at an `https://` URL
    /// (`http://` on loopback), polled every `registry_poll` (`PAR_REGISTRY_URL`).
    pub registry_url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub registry_poll: Option<Duration>,
    /// Longest wait, after a rollout switched the route, for the old worker's
    /// in-flight requests and open streams before it is stopped.
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
}

/// One agent as declared in the file, in `PAR_AGENTS` or in a spawn request.
/// Field names are those of the original Multi-PAR API.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mb: Option<u64>,
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
            memory_limit_mb: None,
            cpu_limit: None,
            restart_policy: RestartPolicy::default(),
            max_restarts: None,
            restart_delay_seconds: default_delay(),
            backoff_multiplier: default_multiplier(),
            max_restart_delay_seconds: default_max_delay(),
            stable_period_seconds: default_stable(),
        }
    }

    pub fn process_id(&self) -> String {
        process_id(&self.id)
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
        self.package.starts_with("https://")
            || self.package.starts_with("http://")
            || self.package.starts_with("s3://")
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

    /// Every problem of this spec, fields prefixed with `prefix` (e.g. `agents[0].`).
    pub fn validate(&self, prefix: &str, errors: &mut ValidationErrors) {
        let f = |name: &str| format!("{prefix}{name}");
        if let Err(msg) = validate_agent_id(&self.id) {
            errors.push(f("agent_id"), msg);
        }
        if self.package.trim().is_empty() {
            errors.push(
                f("package_path"),
                "is required (a folder, an .apkg file, https:// or s3://)",
            );
        } else if self.is_remote() {
            if let Err(msg) = validate_url(&self.package) {
                errors.push(f("package_path"), msg);
            }
        } else {
            let p = Path::new(&self.package);
            if !p.exists() {
                errors.push(
                    f("package_path"),
                    format!("{} does not exist", self.package),
                );
            } else if p.is_file() && p.extension().and_then(|e| e.to_str()) != Some("apkg") {
                errors.push(
                    f("package_path"),
                    format!("{} is neither a folder nor an .apkg file", self.package),
                );
            }
        }
        if let Some(sha) = &self.sha256 {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                errors.push(f("sha256"), "must be 64 hexadecimal characters");
            }
        }
        for (k, v) in &self.env_vars {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                errors.push(f(&format!("env_vars.{k}")), "is not a valid variable name");
            } else if RESERVED_ENV.contains(&k.as_str()) {
                errors.push(
                    f(&format!("env_vars.{k}")),
                    "is set by the supervisor and cannot be overridden",
                );
            }
            if v.contains('\0') {
                errors.push(f(&format!("env_vars.{k}")), "contains a NUL byte");
            }
        }
        if let Some(m) = self.memory_limit_mb {
            if !(16..=1_048_576).contains(&m) {
                errors.push(f("memory_limit_mb"), "must be between 16 and 1048576");
            }
        }
        if let Some(c) = self.cpu_limit {
            if !c.is_finite() || c <= 0.0 || c > 1024.0 {
                errors.push(
                    f("cpu_limit"),
                    "must be a number of CPUs above 0 (e.g. 0.5)",
                );
            }
        }
        let secs = |v: f64| v.is_finite() && (0.0..=86_400.0).contains(&v);
        if !secs(self.restart_delay_seconds) {
            errors.push(f("restart_delay_seconds"), "must be between 0 and 86400");
        }
        if !self.backoff_multiplier.is_finite() || !(1.0..=100.0).contains(&self.backoff_multiplier)
        {
            errors.push(f("backoff_multiplier"), "must be between 1 and 100");
        }
        if !secs(self.max_restart_delay_seconds) {
            errors.push(
                f("max_restart_delay_seconds"),
                "must be between 0 and 86400",
            );
        } else if self.max_restart_delay_seconds < self.restart_delay_seconds {
            errors.push(
                f("max_restart_delay_seconds"),
                "must not be below restart_delay_seconds",
            );
        }
        if !secs(self.stable_period_seconds) {
            errors.push(f("stable_period_seconds"), "must be between 0 and 86400");
        }
    }
}

/// Checks a remote location: `s3://bucket/key`, `https://host/...`, or
/// `http://` to a loopback host only (plain HTTP elsewhere is refused).
pub fn validate_url(url: &str) -> Result<(), String> {
    if url.starts_with("s3://") {
        return par_fetch::Source::parse(url)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| "must start with https://, http:// (loopback only) or s3://".to_string())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if url.starts_with("http://") {
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err("http:// is accepted for loopback hosts only; use https://".into());
        }
    }
    par_fetch::Source::parse(url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The fields that make a deployment: two specs equal here run the same
/// thing (`package_id` is informational and ignored).
pub fn same_deployment(a: &AgentSpec, b: &AgentSpec) -> bool {
    let strip = |s: &AgentSpec| AgentSpec {
        package_id: None,
        ..s.clone()
    };
    strip(a) == strip(b)
}

/// `par-{agent_id}`.
pub fn process_id(agent_id: &str) -> String {
    format!("par-{agent_id}")
}

/// Agent ids: `^[a-z0-9][a-z0-9._-]{0,62}$`.
pub fn validate_agent_id(id: &str) -> Result<(), String> {
    let b = id.as_bytes();
    if b.is_empty() {
        return Err("is required".into());
    }
    let ok_first = b[0].is_ascii_lowercase() || b[0].is_ascii_digit();
    let ok_rest = b[1..]
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'));
    if b.len() > 63 || !ok_first || !ok_rest {
        return Err(format!(
            "{id:?} is not a valid agent id (^[a-z0-9][a-z0-9._-]{{0,62}}$)"
        ));
    }
    Ok(())
}

/// One problem, naming the field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every problem found at once.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Errors of loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid PAR_AGENTS (a JSON array of agents): {0}")]
    EnvAgents(String),
    #[error("invalid configuration:\n{0}")]
    Invalid(ValidationErrors),
}

/// Parses a config file; relative agent packages resolve against its folder.
pub fn load_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let mut file = parse_str(&text).map_err(|message| ConfigError::Parse {
        path: path.into(),
        message,
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    for a in &mut file.agents {
        a.resolve_paths(&base);
    }
    Ok(file)
}

/// Parses TOML text (no path resolution).
pub fn parse_str(text: &str) -> Result<ConfigFile, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// Parses `PAR_AGENTS`; relative packages resolve against the working directory.
pub fn parse_env_agents(json: &str) -> Result<Vec<AgentSpec>, ConfigError> {
    let mut agents: Vec<AgentSpec> =
        serde_json::from_str(json).map_err(|e| ConfigError::EnvAgents(e.to_string()))?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    for a in &mut agents {
        a.resolve_paths(&cwd);
    }
    Ok(agents)
}

/// The effective settings after CLI > environment > file > default.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub worker_ports: PortRange,
    pub admin_token: Option<String>,
    pub home: PathBuf,
    pub worker_command: Vec<String>,
    pub shutdown_grace: Duration,
    pub stop_timeout: Duration,
    pub upstream_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub startup_timeout: Duration,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub probe_failures: u32,
    pub access_log: bool,
    pub log_lines_per_process: usize,
    pub agents: Vec<AgentSpec>,
    /// The config file, re-read on reload (`POST /supervisor/reload`, SIGHUP).
    pub config_path: Option<PathBuf>,
    /// `PAR_AGENTS` as given (applied on every reload, over the file's agents).
    pub env_agents: Option<String>,
    /// The registry index URL (`PAR_REGISTRY_URL` or `registry_url`).
    pub registry_url: Option<String>,
    /// How often the registry index is polled (`PAR_REGISTRY_POLL`).
    pub registry_poll: Duration,
    /// Drain of an old worker after a rollout switched the route.
    pub drain_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            host: "0.0.0.0".into(),
            port: 8000,
            worker_ports: PortRange {
                start: 8001,
                end: 8100,
            },
            admin_token: None,
            home: PathBuf::from("/tmp/pixell-runtime"),
            worker_command: Vec::new(),
            shutdown_grace: Duration::from_secs(25),
            stop_timeout: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(300),
            stream_idle_timeout: Duration::from_secs(600),
            startup_timeout: Duration::from_secs(600),
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(2),
            probe_failures: 3,
            access_log: false,
            log_lines_per_process: 2000,
            agents: Vec::new(),
            config_path: None,
            env_agents: None,
            registry_url: None,
            registry_poll: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl Settings {
    /// Applies the file's `[supervisor]` section over the defaults.
    pub fn apply_file(&mut self, s: &SupervisorSection, errors: &mut ValidationErrors) {
        if let Some(v) = s.port {
            self.port = v;
        }
        if let Some(v) = &s.host {
            self.host = v.clone();
        }
        if let Some(v) = &s.worker_ports {
            match PortRange::parse(v) {
                Ok(r) => self.worker_ports = r,
                Err(e) => errors.push("supervisor.worker_ports", e),
            }
        }
        if let Some(v) = &s.admin_token {
            self.admin_token = Some(v.clone());
        }
        if let Some(v) = &s.home {
            self.home = v.clone();
        }
        if let Some(v) = &s.worker_command {
            if v.is_empty() {
                errors.push("supervisor.worker_command", "must name a program");
            }
            self.worker_command = v.clone();
        }
        macro_rules! take {
            ($($f:ident),*) => { $( if let Some(v) = s.$f { self.$f = v; } )* };
        }
        take!(
            shutdown_grace,
            stop_timeout,
            upstream_timeout,
            stream_idle_timeout,
            startup_timeout,
            probe_interval,
            probe_timeout
        );
        take!(probe_failures, access_log, log_lines_per_process);
        take!(registry_poll, drain_timeout);
        if let Some(v) = s.registry_url.as_ref().filter(|v| !v.trim().is_empty()) {
            self.registry_url = Some(v.trim().to_string());
        }
    }

    /// Adds agents; a later one with the same id replaces an earlier one.
    pub fn merge_agents(&mut self, agents: Vec<AgentSpec>) {
        for a in agents {
            if let Some(slot) = self.agents.iter_mut().find(|x| x.id == a.id) {
                *slot = a;
            } else {
                self.agents.push(a);
            }
        }
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 8) {
            errors.push(
                "supervisor.admin_token",
                "must be at least 8 characters (or empty for loopback-only)",
            );
        }
        if self.worker_ports.contains(self.port) {
            errors.push(
                "supervisor.worker_ports",
                format!("contains the supervisor's own port {}", self.port),
            );
        }
        if self.probe_failures == 0 {
            errors.push("supervisor.probe_failures", "must be at least 1");
        }
        for (name, d) in [
            ("supervisor.probe_interval", self.probe_interval),
            ("supervisor.probe_timeout", self.probe_timeout),
            ("supervisor.upstream_timeout", self.upstream_timeout),
            ("supervisor.stream_idle_timeout", self.stream_idle_timeout),
            ("supervisor.startup_timeout", self.startup_timeout),
        ] {
            if d.is_zero() {
                errors.push(name, "must be above zero");
            }
        }
        if self.log_lines_per_process == 0 {
            errors.push("supervisor.log_lines_per_process", "must be at least 1");
        }
        if let Some(url) = &self.registry_url {
            if let Err(msg) = validate_url(url) {
                errors.push("supervisor.registry_url", msg);
            }
            if self.registry_poll < Duration::from_millis(100) {
                errors.push("supervisor.registry_poll", "must be at least 100ms");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            a.validate(&format!("agents[{i}]."), &mut errors);
            if !seen.insert(a.id.as_str()) {
                errors.push(
                    format!("agents[{i}].id"),
                    format!("{:?} is declared twice", a.id),
                );
            }
        }
        errors.into_result()
    }
}

/// An inclusive range of TCP ports, `"8001-8100"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn parse(s: &str) -> Result<PortRange, String> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let p = |x: &str| {
            x.trim()
                .parse::<u16>()
                .map_err(|_| format!("{s:?} is not a port range like 8001-8100"))
        };
        let (start, end) = (p(a)?, p(b)?);
        if start == 0 || end < start {
            return Err(format!("{s:?} is not a port range like 8001-8100"));
        }
        Ok(PortRange { start, end })
    }
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids() {
        for ok in ["a", "pk-full-0.1.0", "agent_a", "0", &"a".repeat(63)] {
            assert!(validate_agent_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "A", "-a", ".a", "a b", &"a".repeat(64), "ä"] {
            assert!(validate_agent_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_every_field() {
        let mut a = AgentSpec::new("a/b", "/does/not/exist");
        a.cpu_limit = Some(-1.0);
        a.backoff_multiplier = 0.5;
        a.env_vars.insert("PAR_PORT".into(), "1".into());
        let mut e = ValidationErrors::default();
        a.validate("", &mut e);
        let fields: Vec<_> = e.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "agent_id",
                "package_path",
                "env_vars.PAR_PORT",
                "cpu_limit",
                "backoff_multiplier"
            ]
        );
    }

    #[test]
    fn remote_locations() {
        for ok in [
            "https://example.com/a.apkg",
            "s3://bucket/dir/a.apkg",
            "http://127.0.0.1:9000/a.apkg",
            "http://localhost/a.apkg",
            "http://[::1]:8/a",
        ] {
            assert!(validate_url(ok).is_ok(), "{ok}");
        }
        for (bad, needle) in [
            ("http://example.com/a.apkg", "loopback"),
            ("s3://bucket-only", "s3://bucket/key"),
            ("https:///a", "no host"),
            ("ftp://x/a", "must start with"),
        ] {
            let e = validate_url(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let mut e = ValidationErrors::default();
        AgentSpec::new("a", "http://10.0.0.1/a.apkg").validate("", &mut e);
        assert_eq!(e.0[0].field, "package_path");
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
    fn unknown_fields_are_refused() {
        let err = parse_str("[supervisor]\nprot = 1\n").unwrap_err();
        assert!(err.contains("prot"), "{err}");
        let err = parse_str("[[agents]]\nid = \"a\"\npackage = \"x\"\nrestart = \"always\"\n")
            .unwrap_err();
        assert!(err.contains("restart"), "{err}");
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

    #[test]
    fn port_ranges() {
        assert_eq!(
            PortRange::parse("8001-8100").unwrap(),
            PortRange {
                start: 8001,
                end: 8100
            }
        );
        assert_eq!(
            PortRange::parse("9000").unwrap(),
            PortRange {
                start: 9000,
                end: 9000
            }
        );
        assert!(PortRange::parse("8100-8001").is_err());
        assert!(PortRange::parse("x").is_err());
    }

    /// The shipped example config parses and validates (so it cannot rot).
    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/multipar.toml");
        let file = load_file(&path).expect("examples/multipar.toml parses");
        let mut s = Settings::default();
        let mut e = ValidationErrors::default();
        s.apply_file(&file.supervisor, &mut e);
        assert!(e.is_empty(), "{e}");
        s.merge_agents(file.agents);
        let ids: Vec<_> = s.agents.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        // Packages may not exist yet in a fresh checkout; check everything else.
        for a in &s.agents {
            let mut e = ValidationErrors::default();
            a.validate("", &mut e);
            e.0.retain(|x| x.field != "package_path");
            assert!(e.is_empty(), "{e}");
            assert!(Path::new(&a.package).is_absolute());
        }
    }
}
