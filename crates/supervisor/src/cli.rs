//! Command-line entry point of the supervisor: `par supervisor`, its flags,
//! their environment variables, and the configuration precedence
//! CLI > environment > file > default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{self, PortRange, Settings, UidRange, ValidationErrors};
use crate::runtime::isolation::Isolation;

/// `par supervisor [--config FILE]` (also `PAR_MODE=supervisor par`).
#[derive(Debug, Clone, clap::Args)]
pub struct SupervisorArgs {
    /// TOML configuration file (`[supervisor]` and `[[agents]]`).
    #[arg(long, env = "PAR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Port to listen on (80 in the container image, 8000 by default).
    #[arg(long, env = "SUPERVISOR_PORT")]
    pub port: Option<u16>,
    /// Address to listen on. Default 0.0.0.0: the supervisor is the container's entry point.
    #[arg(long, env = "PAR_SUPERVISOR_HOST")]
    pub host: Option<String>,
    /// Worker port range, e.g. `8001-8100`; ports in use are skipped.
    #[arg(long, env = "PAR_WORKER_PORTS")]
    pub worker_ports: Option<String>,
    /// Bearer token for mutating routes and logs (at least 8 characters);
    /// without one, a token is made at each start in
    /// `$PAR_HOME/run/supervisor-<port>.token`. Being on loopback grants nothing.
    #[arg(long, env = "PAR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The dashboard's own port, an origin no agent is served from (8900;
    /// `0`: a free port; `off`: no dashboard). The main port keeps the API.
    #[arg(long, env = "PAR_ADMIN_PORT")]
    pub admin_port: Option<String>,
    /// Address of the admin port (default 127.0.0.1: reached through a port forward).
    #[arg(long, env = "PAR_ADMIN_HOST")]
    pub admin_host: Option<String>,
    /// Agents as a JSON array (same fields as `[[agents]]`); same ids replace the file's.
    #[arg(long, env = "PAR_AGENTS")]
    pub agents: Option<String>,
    /// Cache root (packages, Python environments), passed on to workers.
    #[arg(long, env = "PAR_HOME")]
    pub home: Option<PathBuf>,
    /// Worker program, run as `<bin> worker` (default: this binary).
    #[arg(long, env = "PAR_WORKER_BIN")]
    pub worker_bin: Option<PathBuf>,
    /// Shutdown grace: drain in-flight requests, then stop workers (e.g. `25s`).
    #[arg(long, env = "PAR_SUPERVISOR_GRACE", value_parser = humantime::parse_duration)]
    pub grace: Option<Duration>,
    /// Log one line per proxied request (costs CPU; off by default).
    #[arg(long, env = "PAR_ACCESS_LOG")]
    pub access_log: Option<bool>,
    /// Registry index: a JSON list of agent specs at an https:// URL (http://
    /// on loopback), reconciled on every poll.
    #[arg(long, env = "PAR_REGISTRY_URL")]
    pub registry_url: Option<String>,
    /// Registry poll interval (e.g. `30s`).
    #[arg(long, env = "PAR_REGISTRY_POLL", value_parser = humantime::parse_duration)]
    pub registry_poll: Option<Duration>,
    /// Folders (`:`-separated) local packages named through the API or the
    /// registry must be in (default: the config file's folder, else the
    /// working directory).
    #[arg(long, env = "PAR_PACKAGE_ROOTS")]
    pub package_roots: Option<String>,
    /// Uids agents run under, one per agent (`20000-29999` by default; the
    /// first is the installer's). `off`: every agent runs as the supervisor.
    /// Takes effect when the supervisor is root (or holds CAP_SETUID/SETGID).
    #[arg(long, env = "PAR_AGENT_UIDS")]
    pub agent_uids: Option<String>,
    /// The uid a root supervisor drops to once its port is bound, keeping
    /// only CAP_SETUID, CAP_SETGID, CAP_KILL and CAP_CHOWN.
    #[arg(long, env = "PAR_SUPERVISOR_UID")]
    pub supervisor_uid: Option<u32>,
    /// Processes and threads each agent uid may have (RLIMIT_NPROC, default 1024).
    #[arg(long, env = "PAR_AGENT_NPROC")]
    pub agent_nproc: Option<u64>,
    /// Open files each agent process may have (RLIMIT_NOFILE, default 16384).
    #[arg(long, env = "PAR_AGENT_NOFILE")]
    pub agent_nofile: Option<u64>,
    /// Validate the configuration, print OK or every problem, and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// Merges file, environment and flags into the effective settings.
pub fn settings(args: &SupervisorArgs) -> anyhow::Result<Settings> {
    let mut s = Settings::default();
    let mut errors = ValidationErrors::default();
    if let Some(path) = &args.config {
        let file = config::load_file(path)?;
        s.apply_file(&file.supervisor, &mut errors);
        s.merge_agents(file.agents);
        // Reloads re-read it, whatever the working directory is by then.
        s.config_path = Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()));
    }
    if let Some(json) = args.agents.as_deref().filter(|j| !j.trim().is_empty()) {
        s.merge_agents(config::parse_env_agents(json)?);
        s.env_agents = Some(json.to_string());
    }
    if let Some(u) = args.registry_url.as_deref().map(str::trim) {
        s.registry_url = (!u.is_empty()).then(|| u.to_string());
    }
    if let Some(p) = args.registry_poll {
        s.registry_poll = p;
    }
    if let Some(p) = args.port {
        s.port = p;
    }
    if let Some(h) = &args.host {
        s.host = h.clone();
    }
    if let Some(r) = &args.worker_ports {
        match PortRange::parse(r) {
            Ok(r) => s.worker_ports = r,
            Err(e) => errors.push("PAR_WORKER_PORTS", e),
        }
    }
    if let Some(t) = &args.admin_token {
        s.admin_token = Some(t.clone());
    }
    if let Some(p) = &args.admin_port {
        match config::AdminPort::parse(p) {
            Ok(p) => s.admin_port = p,
            Err(e) => errors.push("PAR_ADMIN_PORT", e),
        }
    }
    if let Some(h) = &args.admin_host {
        s.admin_host = h.trim().to_string();
    }
    if s.admin_token.as_deref().is_some_and(str::is_empty) {
        s.admin_token = None;
    }
    if let Some(h) = &args.home {
        s.home = h.clone();
    }
    if let Some(g) = args.grace {
        s.shutdown_grace = g;
    }
    if let Some(a) = args.access_log {
        s.access_log = a;
    }
    if let Some(r) = args
        .package_roots
        .as_deref()
        .filter(|r| !r.trim().is_empty())
    {
        s.package_roots = std::env::split_paths(r).collect();
    }
    if let Some(v) = &args.agent_uids {
        match UidRange::parse_setting(v) {
            Ok(r) => s.agent_uids = r,
            Err(e) => errors.push("PAR_AGENT_UIDS", e),
        }
    }
    if let Some(u) = args.supervisor_uid {
        s.supervisor_uid = Some(u);
    }
    if let Some(n) = args.agent_nproc {
        s.agent_nproc = n;
    }
    if let Some(n) = args.agent_nofile {
        s.agent_nofile = n;
    }
    if s.package_roots.is_empty() {
        let base = s
            .config_path
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .or_else(|| std::env::current_dir().ok());
        s.package_roots.extend(base);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    for r in &mut s.package_roots {
        if r.is_relative() {
            *r = cwd.join(&*r);
        }
    }
    if s.worker_command.is_empty() {
        let bin = match &args.worker_bin {
            Some(b) => b.clone(),
            None => {
                std::env::current_exe().context("failed to find the par binary to run workers")?
            }
        };
        s.worker_command = vec![bin.to_string_lossy().into_owned(), "worker".into()];
    }
    if let Err(e) = s.validate() {
        errors.0.extend(e.0);
    }
    if !errors.is_empty() {
        return Err(config::ConfigError::Invalid(errors).into());
    }
    Ok(s)
}

pub fn run(args: SupervisorArgs) -> anyhow::Result<()> {
    if args.check_config {
        return match settings(&args) {
            Ok(s) => {
                let admin = match s.admin_port.resolve(s.port) {
                    Some(p) => format!("admin port {p} on {}", s.admin_host),
                    None => "no admin port".to_string(),
                };
                println!(
                    "OK: {} agent(s), port {}, worker ports {}-{}, {admin}",
                    s.agents.len(),
                    s.port,
                    s.worker_ports.start,
                    s.worker_ports.end
                );
                Ok(())
            }
            Err(e) => Err(e),
        };
    }
    par_telemetry::logging::init("supervisor");
    let s = settings(&args)?;
    // The port first (it may be below 1024), then the uids: both while the
    // process may still be root and has a single thread.
    let addr = format!("{}:{}", s.host, s.port);
    let listener = std::net::TcpListener::bind(&addr)
        .with_context(|| format!("failed to listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    let admin = match s.admin_port.resolve(s.port) {
        Some(port) => {
            let addr = format!("{}:{port}", s.admin_host);
            Some(std::net::TcpListener::bind(&addr).with_context(|| {
                format!("failed to listen on {addr}, the admin port (PAR_ADMIN_PORT: another port, 0 for a free one, or off)")
            })?)
        }
        None => None,
    };
    // Before root is dropped: the worker range may hold ports below 1024.
    let ports = crate::runtime::ports::Ports::bind(s.worker_ports);
    let isolation = privileges(&s)?;
    // Traces (when an OTLP endpoint is set): the exporter's thread starts
    // here, after the uid drop (which needs a single thread).
    par_telemetry::trace::init("par-supervisor", false);
    // Two threads are plenty for a proxy that forwards bytes; they keep RSS low.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .thread_name("par-supervisor")
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        crate::supervisor::serve(s, listener, admin, ports, isolation, signals()).await
    })?;
    // The spans still queued, at most a second.
    par_telemetry::trace::shutdown(Duration::from_secs(1));
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// Decides how agents are kept apart and, with `PAR_SUPERVISOR_UID`, drops
/// the supervisor from root to that uid (keeping only what it needs to run
/// agents as their own uids). Must run before any other thread exists.
fn privileges(s: &Settings) -> anyhow::Result<Isolation> {
    let supervisor_uid = s
        .supervisor_uid
        .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    if s.supervisor_uid.is_some() && nix::unistd::geteuid().is_root() {
        // Its own files stay its own after the drop.
        std::fs::create_dir_all(&s.home)
            .with_context(|| format!("failed to create PAR_HOME {}", s.home.display()))?;
        let id = nix::unistd::Uid::from_raw(supervisor_uid);
        let gid = nix::unistd::Gid::from_raw(supervisor_uid);
        nix::unistd::chown(&s.home, Some(id), Some(gid)).with_context(|| {
            format!(
                "failed to hand PAR_HOME {} to uid {supervisor_uid}",
                s.home.display()
            )
        })?;
    }
    let isolation = Isolation::decide(s, supervisor_uid)?;
    if let Some(uid) = s.supervisor_uid {
        crate::runtime::isolation::privileges::drop_supervisor(uid)?;
        tracing::info!(
            uid,
            kept = "CAP_SETUID,CAP_SETGID,CAP_KILL,CAP_CHOWN",
            "the supervisor dropped root"
        );
    }
    Ok(isolation)
}

/// Completes on the first SIGTERM or SIGINT.
async fn signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("failed to install signal handlers; only SIGKILL will stop the supervisor");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
