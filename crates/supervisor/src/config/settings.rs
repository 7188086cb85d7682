//! The effective settings after CLI > environment > file > default.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::validate::{validate_spec, validate_url, ValidationErrors};
use super::SupervisorSection;
use crate::model::AgentSpec;

/// The effective settings after CLI > environment > file > default.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub worker_ports: PortRange,
    pub admin_token: Option<String>,
    /// The dashboard's port, an origin no agent is served from.
    pub admin_port: super::AdminPort,
    pub admin_host: String,
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
    pub log_bytes_per_process: usize,
    pub log_bytes_total: usize,
    pub log_line_max: usize,
    pub log_fields_max: usize,
    pub log_field_max: usize,
    /// Largest WebSocket message and frame relayed (then close 1009).
    pub websocket_max_message: usize,
    pub websocket_max_frame: usize,
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
    pub client_header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections: Option<usize>,
    /// Where local packages from the API or the registry may come from.
    pub package_roots: Vec<PathBuf>,
    /// Uids agents run under (`PAR_AGENT_UIDS`; `None`: off). The first is
    /// the installer's, which builds the shared Python environments.
    pub agent_uids: Option<UidRange>,
    /// The uid a root supervisor drops to after binding its port.
    pub supervisor_uid: Option<u32>,
    /// `RLIMIT_NPROC` of each agent uid (processes and threads).
    pub agent_nproc: u64,
    /// `RLIMIT_NOFILE` of each agent process.
    pub agent_nofile: u64,
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
            admin_port: super::AdminPort::Default,
            admin_host: super::DEFAULT_ADMIN_HOST.into(),
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
            log_bytes_per_process: 4 << 20,
            log_bytes_total: 32 << 20,
            log_line_max: 16 << 10,
            log_fields_max: 64,
            log_field_max: 4 << 10,
            websocket_max_message: 16 << 20,
            websocket_max_frame: 16 << 20,
            agents: Vec::new(),
            config_path: None,
            env_agents: None,
            registry_url: None,
            registry_poll: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            client_header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            max_connections: None,
            package_roots: Vec::new(),
            agent_uids: Some(UidRange::DEFAULT),
            supervisor_uid: None,
            agent_nproc: 1024,
            agent_nofile: 16384,
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
        if let Some(v) = &s.admin_port {
            match v.parse() {
                Ok(p) => self.admin_port = p,
                Err(e) => errors.push("supervisor.admin_port", e),
            }
        }
        if let Some(v) = &s.admin_host {
            self.admin_host = v.trim().to_string();
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
        take!(log_fields_max);
        macro_rules! size {
            ($($f:ident),*) => { $( if let Some(v) = s.$f { self.$f = v.0; } )* };
        }
        size!(log_bytes_per_process, log_bytes_total);
        size!(log_line_max, log_field_max);
        size!(websocket_max_message, websocket_max_frame);
        take!(registry_poll, drain_timeout);
        take!(client_header_timeout, keepalive_timeout);
        if let Some(n) = s.max_connections {
            self.max_connections = Some(n);
        }
        if let Some(r) = &s.package_roots {
            self.package_roots = r.clone();
        }
        if let Some(v) = &s.agent_uids {
            match UidRange::parse_setting(v) {
                Ok(r) => self.agent_uids = r,
                Err(e) => errors.push("supervisor.agent_uids", e),
            }
        }
        if let Some(v) = s.supervisor_uid {
            self.supervisor_uid = Some(v);
        }
        take!(agent_nproc, agent_nofile);
        if let Some(v) = s.registry_url.as_ref().filter(|v| !v.trim().is_empty()) {
            self.registry_url = Some(v.trim().to_string());
        }
    }

    /// Whether a local package named by an API caller (or the registry) lies
    /// under a package root. Checked on the path itself (made absolute and
    /// free of `..`, symlinks resolved where they exist) before anything
    /// about it is looked up, so the answer reveals nothing of what exists
    /// outside the roots.
    pub fn package_allowed(&self, package: &str) -> bool {
        let path = Path::new(package);
        if !path.is_absolute() {
            return false;
        }
        let real = real_path(path);
        self.package_roots
            .iter()
            .any(|root| real.starts_with(real_path(root)))
    }

    /// The package roots, for messages: "/a, /b".
    pub fn package_roots_shown(&self) -> String {
        let list: Vec<String> = self
            .package_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        list.join(", ")
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
                "must be at least 8 characters (or empty: a token is made at each start, \
                 in $PAR_HOME/run/supervisor-<port>.token)",
            );
        }
        if self.worker_ports.contains(self.port) {
            errors.push(
                "supervisor.worker_ports",
                format!("contains the supervisor's own port {}", self.port),
            );
        }
        super::admin::validate(self, &mut errors);
        if self.probe_failures == 0 {
            errors.push("supervisor.probe_failures", "must be at least 1");
        }
        for (name, d) in [
            ("supervisor.probe_interval", self.probe_interval),
            ("supervisor.probe_timeout", self.probe_timeout),
            ("supervisor.upstream_timeout", self.upstream_timeout),
            ("supervisor.stream_idle_timeout", self.stream_idle_timeout),
            ("supervisor.startup_timeout", self.startup_timeout),
            (
                "supervisor.client_header_timeout",
                self.client_header_timeout,
            ),
            ("supervisor.keepalive_timeout", self.keepalive_timeout),
        ] {
            if d.is_zero() {
                errors.push(name, "must be above zero");
            }
        }
        if self.max_connections == Some(0) {
            errors.push("supervisor.max_connections", "must be at least 1");
        }
        if self.log_lines_per_process == 0 {
            errors.push("supervisor.log_lines_per_process", "must be at least 1");
        }
        self.validate_budgets(&mut errors);
        if let Some(url) = &self.registry_url {
            if let Err(msg) = validate_url(url) {
                errors.push("supervisor.registry_url", msg);
            }
            if self.registry_poll < Duration::from_millis(100) {
                errors.push("supervisor.registry_poll", "must be at least 100ms");
            }
        }
        if let (Some(r), Some(u)) = (self.agent_uids, self.supervisor_uid) {
            if r.contains(u) {
                errors.push(
                    "PAR_SUPERVISOR_UID",
                    format!("{u} is inside the agents' uid range {r}"),
                );
            }
        }
        if self.supervisor_uid == Some(0) {
            errors.push("PAR_SUPERVISOR_UID", "must not be 0 (root)");
        }
        if self.agent_nproc < 16 {
            errors.push("supervisor.agent_nproc", "must be at least 16");
        }
        if self.agent_nofile < 64 {
            errors.push("supervisor.agent_nofile", "must be at least 64");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            validate_spec(a, &format!("agents[{i}]."), &mut errors);
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

impl Settings {
    /// The log rings' bounds.
    pub fn log_limits(&self) -> crate::logs::Limits {
        crate::logs::Limits {
            lines_per_process: self.log_lines_per_process,
            bytes_per_process: self.log_bytes_per_process,
            bytes_total: self.log_bytes_total,
            line_bytes: self.log_line_max,
            fields: crate::logs::FieldLimits {
                count: self.log_fields_max,
                bytes: self.log_field_max,
            },
        }
    }

    /// The byte budgets: logs and WebSockets.
    fn validate_budgets(&self, errors: &mut ValidationErrors) {
        const MIN_LINE: usize = 256;
        if self.log_line_max < MIN_LINE {
            errors.push("supervisor.log_line_max", "must be at least 256 bytes");
        }
        if self.log_bytes_per_process < 4 * self.log_line_max.max(MIN_LINE) {
            errors.push(
                "supervisor.log_bytes_per_process",
                format!(
                    "must hold at least 4 lines of log_line_max ({} bytes)",
                    4 * self.log_line_max.max(MIN_LINE)
                ),
            );
        }
        if self.log_bytes_total < self.log_bytes_per_process {
            errors.push(
                "supervisor.log_bytes_total",
                "must be at least log_bytes_per_process",
            );
        }
        if self.log_field_max < 64 {
            errors.push("supervisor.log_field_max", "must be at least 64 bytes");
        }
        if self.websocket_max_frame < 126 {
            errors.push(
                "supervisor.websocket_max_frame",
                "must be at least 126 bytes",
            );
        }
        if self.websocket_max_message < 126 {
            errors.push(
                "supervisor.websocket_max_message",
                "must be at least 126 bytes",
            );
        }
    }
}

/// `path` without `.`/`..`, with the symlinks of its longest existing
/// prefix resolved (what it would really open).
fn real_path(path: &Path) -> PathBuf {
    let mut clean = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    let mut head = clean.clone();
    let mut tail = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&head) {
            return tail.into_iter().rev().fold(real, |p, c| p.join(c));
        }
        match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                head = parent.to_path_buf();
            }
            _ => return clean,
        }
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

/// An inclusive range of uids, `"20000-29999"`: the first is the
/// installer's, the others are handed to agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub start: u32,
    pub end: u32,
}

impl UidRange {
    pub const DEFAULT: UidRange = UidRange {
        start: 20000,
        end: 29999,
    };

    /// `"off"` (or `"none"`, `"false"`, `"0"`) turns isolation off.
    pub fn parse_setting(s: &str) -> Result<Option<UidRange>, String> {
        let t = s.trim();
        if matches!(
            t.to_ascii_lowercase().as_str(),
            "off" | "none" | "false" | "0" | "no"
        ) {
            return Ok(None);
        }
        let bad = || format!("{s:?} is not a uid range like 20000-29999 (or \"off\")");
        let (a, b) = t.split_once('-').ok_or_else(bad)?;
        let (start, end) = (
            a.trim().parse::<u32>().map_err(|_| bad())?,
            b.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if start == 0 {
            return Err(format!("{s:?}: uid 0 is root; start the range above it"));
        }
        if end <= start {
            return Err(format!(
                "{s:?}: needs at least two uids (the installer's and one agent's)"
            ));
        }
        if end >= 65534 && start <= 65534 {
            return Err(format!("{s:?} contains 65534 (nobody)"));
        }
        Ok(Some(UidRange { start, end }))
    }

    pub fn contains(&self, uid: u32) -> bool {
        (self.start..=self.end).contains(&uid)
    }
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_roots_hold_paths_inside_only() {
        let root = tempfile::tempdir().unwrap();
        let s = Settings {
            package_roots: vec![root.path().to_path_buf()],
            ..Settings::default()
        };
        let inside = root.path().join("agents/a");
        assert!(s.package_allowed(&inside.to_string_lossy()));
        assert!(s.package_allowed(&root.path().join("nope/x.apkg").to_string_lossy()));
        let up = root.path().join("agents/../../etc/passwd");
        assert!(!s.package_allowed(&up.to_string_lossy()));
        assert!(!s.package_allowed("/etc/hostname"));
        assert!(!s.package_allowed("relative/path"));
        // A symlink inside a root that points out of it does not count as inside.
        std::os::unix::fs::symlink("/etc", root.path().join("escape")).unwrap();
        assert!(!s.package_allowed(&root.path().join("escape/hostname").to_string_lossy()));
    }

    #[test]
    fn uid_ranges() {
        assert_eq!(
            UidRange::parse_setting("20000-29999").unwrap(),
            Some(UidRange::DEFAULT)
        );
        assert_eq!(UidRange::parse_setting("off").unwrap(), None);
        assert_eq!(UidRange::parse_setting(" OFF ").unwrap(), None);
        assert!(UidRange::parse_setting("0-100")
            .unwrap_err()
            .contains("root"));
        assert!(UidRange::parse_setting("5-5")
            .unwrap_err()
            .contains("two uids"));
        assert!(UidRange::parse_setting("x").is_err());
        assert!(UidRange::parse_setting("60000-70000")
            .unwrap_err()
            .contains("nobody"));
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
}
