//! Command-line entry point of the supervisor: `par supervisor`, its flags,
//! their environment variables, and the configuration precedence
//! CLI > environment > file > default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{self, PortRange, Settings, ValidationErrors};

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
    /// Bearer token for mutating routes and logs; without one they are loopback-only.
    #[arg(long, env = "PAR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
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
                println!(
                    "OK: {} agent(s), port {}, worker ports {}-{}",
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
    par_telemetry::logging::init();
    let s = settings(&args)?;
    // Two threads are plenty for a proxy that forwards bytes; they keep RSS low.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .thread_name("par-supervisor")
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", s.host, s.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("failed to listen on {addr}"))?;
        crate::supervisor::serve(s, listener, signals()).await
    })?;
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(())
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
