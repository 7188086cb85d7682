//! Supervisor configuration: the TOML file, `PAR_AGENTS`, the effective
//! settings (`settings`), and the checks of agent specs (`validate`).

mod admin;
mod settings;
mod size;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::model::spec::{same_deployment, AgentSpec};
pub use admin::{AdminPort, AdminPortValue, DEFAULT_ADMIN_HOST, DEFAULT_ADMIN_PORT};
pub use settings::{PortRange, Settings, UidRange};
pub use size::Size;
pub use validate::{validate_spec, validate_url, FieldError, ValidationErrors};

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
    /// The dashboard's own port (`PAR_ADMIN_PORT`): a number or `"off"`.
    pub admin_port: Option<admin::AdminPortValue>,
    /// The address the admin port is bound to (`PAR_ADMIN_HOST`).
    pub admin_host: Option<String>,
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
    /// Bytes of log entries kept per process and for all processes together.
    pub log_bytes_per_process: Option<Size>,
    pub log_bytes_total: Option<Size>,
    /// Longest log line kept (the rest is cut, with a marker).
    pub log_line_max: Option<Size>,
    /// Fields kept per JSON log line, and the largest one (as JSON text).
    pub log_fields_max: Option<usize>,
    pub log_field_max: Option<Size>,
    /// Largest WebSocket message and frame relayed (then close 1009).
    pub websocket_max_message: Option<Size>,
    pub websocket_max_frame: Option<Size>,
    /// A registry index: a JSON list of agent specs at an `https://` URL
    /// (`http://` on loopback), polled every `registry_poll` (`PAR_REGISTRY_URL`).
    pub registry_url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub registry_poll: Option<Duration>,
    /// Longest wait, after a rollout switched the route, for the old worker's
    /// in-flight requests and open streams before it is stopped.
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
    /// A request head not complete this long after the connection opened
    /// (a later one: after its first byte) closes the connection.
    #[serde(default, with = "humantime_serde")]
    pub client_header_timeout: Option<Duration>,
    /// An idle keep-alive connection (or a request head that does not
    /// arrive) is closed after this long; above the ALB's idle timeout (60 s).
    #[serde(default, with = "humantime_serde")]
    pub keepalive_timeout: Option<Duration>,
    /// Open client connections at most (default: the open-files limit less
    /// a reserve of 1024).
    pub max_connections: Option<usize>,
    /// Folders local packages named through the API or the registry must be
    /// in (`PAR_PACKAGE_ROOTS`, `:`-separated; default: this file's folder).
    pub package_roots: Option<Vec<PathBuf>>,
    /// Uids for agents (`"20000-29999"`, `"off"`); see `PAR_AGENT_UIDS`.
    pub agent_uids: Option<String>,
    /// The uid a root supervisor drops to (`PAR_SUPERVISOR_UID`).
    pub supervisor_uid: Option<u32>,
    /// Processes and threads per agent uid (`RLIMIT_NPROC`).
    pub agent_nproc: Option<u64>,
    /// Open files per agent process (`RLIMIT_NOFILE`).
    pub agent_nofile: Option<u64>,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused() {
        let err = parse_str("[supervisor]\nprot = 1\n").unwrap_err();
        assert!(err.contains("prot"), "{err}");
        let err = parse_str("[[agents]]\nid = \"a\"\npackage = \"x\"\nrestart = \"always\"\n")
            .unwrap_err();
        assert!(err.contains("restart"), "{err}");
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
            validate_spec(a, "", &mut e);
            e.0.retain(|x| x.field != "package_path");
            assert!(e.is_empty(), "{e}");
            assert!(Path::new(&a.package).is_absolute());
        }
    }
}
