//! Command-line entry points of the worker: `par worker` and `par run`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::host::liveness::Liveness;
use crate::worker::Settings;

/// `par worker --port P --agent-id ID --package PATH` (spawned by the supervisor).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    #[arg(long, env = "PAR_PORT")]
    pub port: u16,
    #[arg(long, env = "PAR_HOST", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "PAR_AGENT_ID")]
    pub agent_id: Option<String>,
    #[arg(long, env = "PAR_PACKAGE_PATH")]
    pub package: PathBuf,
    #[arg(long, env = "PAR_PACKAGE_SHA256")]
    pub sha256: Option<String>,
    /// The supervisor's pid: the worker dies with it and refuses to start when
    /// its parent is another process (the supervisor already died).
    #[arg(long = "parent-pid", env = "PAR_PARENT_PID")]
    pub parent_pid: Option<i32>,
    /// The interpreter to run the agent with, prepared by the supervisor
    /// (skips building the environment here).
    #[arg(long, env = "PAR_PYTHON")]
    pub python: Option<PathBuf>,
    /// The listening socket for `--port`, inherited from the supervisor (which
    /// holds the worker port range): served on instead of binding the port.
    #[arg(long = "listen-fd", env = "PAR_LISTEN_FD")]
    pub listen_fd: Option<i32>,
    #[command(flatten)]
    pub tuning: Tuning,
}

/// `par run PACKAGE`: one agent in the foreground, no supervisor.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    pub package: PathBuf,
    #[arg(long, env = "REST_PORT", default_value_t = 8080)]
    pub port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long)]
    pub sha256: Option<String>,
    #[arg(long, env = "PAR_AGENT_ID")]
    pub agent_id: Option<String>,
    #[command(flatten)]
    pub tuning: Tuning,
}

/// `par install-env --home H --scratch S [--plan | --into DIR] < PACKAGE`:
/// builds the package's Python environment under `H/envs` and prints
/// `{"python": ..., "env_dir": ...}` (run by the supervisor as its build uid
/// when agents have uids of their own: `--plan`, then `--into` the folder it
/// made for the build).
#[derive(Debug, Clone, clap::Args)]
pub struct InstallEnvArgs {
    /// Where the shared environments live (`<home>/envs`).
    #[arg(long)]
    pub home: PathBuf,
    /// Where the package is unpacked while its environment is built.
    #[arg(long)]
    pub scratch: PathBuf,
    /// Only print where the environment is (`env_dir`); build nothing.
    #[arg(long, conflicts_with = "into")]
    pub plan: bool,
    /// Build into this folder (the planned one, existing and empty); no
    /// lock, no ready marker: whoever made the folder seals it.
    #[arg(long)]
    pub into: Option<PathBuf>,
}

/// `par disk-usage DIR`: what a folder holds on disk (allocated blocks,
/// links not followed), as `{"bytes": ..., "entries": ..., "complete": ...}`.
/// Run by the supervisor's disk watchdog as the agent's uid (the agent's
/// folder is private to it); at most `--max-entries` entries are counted.
#[derive(Debug, Clone, clap::Args)]
pub struct DiskUsageArgs {
    pub dir: PathBuf,
    #[arg(long, default_value_t = 200_000)]
    pub max_entries: u64,
}

/// Settings shared by `par worker` and `par run`.
#[derive(Debug, Clone, clap::Args)]
pub struct Tuning {
    /// Longest wait for an invoke/export result or an agent response head (e.g. `300`, `30s`, `5m`).
    #[arg(long = "timeout", env = "PAR_INVOKE_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Time given to in-flight requests on SIGTERM.
    #[arg(long = "grace", env = "PAR_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Threads of the agent host's pool for sync handlers.
    #[arg(long = "host-threads", env = "PAR_HOST_THREADS", default_value_t = 64)]
    pub threads: usize,
    /// Cache root (packages, Python environments).
    #[arg(long = "home", env = "PAR_HOME", default_value = "/tmp/pixell-runtime")]
    pub home: PathBuf,
    /// Time between liveness pings answered by the agent's event loop (`off`: none).
    #[arg(long = "liveness-interval", env = "PAR_LIVENESS_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub liveness_interval: Interval,
    /// How long one liveness ping may wait for its answer.
    #[arg(long = "liveness-timeout", env = "PAR_LIVENESS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub liveness_timeout: Duration,
    /// Missed liveness pings in a row after which the agent is restarted.
    #[arg(long = "liveness-failures", env = "PAR_LIVENESS_FAILURES", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    pub liveness_failures: u32,
}

impl Tuning {
    fn liveness(&self) -> Liveness {
        Liveness {
            interval: self.liveness_interval.0,
            timeout: self.liveness_timeout,
            failures: self.liveness_failures,
        }
    }
}

/// A duration, or `None` for `off`.
#[derive(Debug, Clone, Copy)]
pub struct Interval(pub Option<Duration>);

/// A duration as [`parse_duration`] reads it, or `off`.
fn parse_interval(s: &str) -> Result<Interval, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(Interval(None));
    }
    parse_duration(s).map(|d| Interval(Some(d)))
}

/// Seconds (`300`, `0.5`) or a humantime duration (`30s`, `5m`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        if secs.is_finite() && secs > 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("{s:?} must be a positive number of seconds"));
    }
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration: {e}"))
}

pub fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    // Spawned by a supervisor: die with it, even through an exec that cleared
    // the parent-death signal it set.
    if args.parent_pid.is_some() || std::env::var_os("PAR_SUPERVISOR_URL").is_some() {
        crate::unix::die_with_parent(args.parent_pid)?;
    }
    // Named for this process only: the agent host does not inherit the socket.
    // (Single-threaded still: no other thread reads the environment.)
    std::env::remove_var(par_contract::env::LISTEN_FD);
    let agent_id = args
        .agent_id
        .clone()
        .unwrap_or_else(|| default_agent_id(&args.package));
    let liveness = args.tuning.liveness();
    run(Settings {
        liveness,
        host: args.host,
        port: args.port,
        agent_id,
        package: args.package,
        sha256: args.sha256,
        home: args.tuning.home,
        python: args.python,
        listen_fd: args.listen_fd,
        timeout: args.tuning.timeout,
        grace: args.tuning.grace,
        threads: args.tuning.threads,
    })
}

/// Exit 0 with the JSON answer, 78 when the package is at fault, 1 else.
pub fn run_install_env(args: InstallEnvArgs) -> anyhow::Result<()> {
    par_telemetry::logging::init("worker");
    let mut stdin = std::io::stdin().lock();
    let step = match (&args.into, args.plan) {
        (Some(dir), _) => crate::loader::InstallStep::Into(dir),
        (None, true) => crate::loader::InstallStep::Plan,
        (None, false) => crate::loader::InstallStep::Ensure,
    };
    match crate::loader::install_env(&mut stdin, &args.home, &args.scratch, step) {
        Ok(installed) => {
            println!("{}", serde_json::to_string(&installed)?);
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "the environment could not be prepared");
            let code = if e.is_package_fault() {
                par_contract::exit::PACKAGE_FAILURE
            } else {
                1
            };
            std::process::exit(code)
        }
    }
}

pub fn run_disk_usage(args: DiskUsageArgs) -> anyhow::Result<()> {
    // Run as the agent's uid: its processes may not trace or read this one.
    nix::sys::prctl::set_dumpable(false)?;
    let (bytes, entries, complete) = disk_usage(&args.dir, args.max_entries);
    println!(
        "{}",
        serde_json::json!({"bytes": bytes, "entries": entries, "complete": complete})
    );
    Ok(())
}

/// Bytes allocated under `dir`, entries seen, and whether all were seen.
/// A folder of ours its mode keeps us out of is opened up first: an agent
/// does not hide what it writes by `chmod 000`.
fn disk_usage(dir: &Path, max_entries: u64) -> (u64, u64, bool) {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let me = nix::unistd::geteuid().as_raw();
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        entries += 1;
        bytes += meta.blocks() * 512;
        if entries >= max_entries {
            return (bytes, entries, false);
        }
        if !meta.is_dir() {
            continue;
        }
        let listing = match std::fs::read_dir(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && meta.uid() == me => {
                let open = std::fs::Permissions::from_mode(meta.mode() & 0o7777 | 0o700);
                let _ = std::fs::set_permissions(&p, open);
                std::fs::read_dir(&p)
            }
            other => other,
        };
        if let Ok(listing) = listing {
            stack.extend(listing.flatten().map(|e| e.path()));
        }
    }
    (bytes, entries, true)
}

pub fn run_single(args: RunArgs) -> anyhow::Result<()> {
    let agent_id = args
        .agent_id
        .clone()
        .unwrap_or_else(|| default_agent_id(&args.package));
    let liveness = args.tuning.liveness();
    run(Settings {
        liveness,
        host: args.host,
        port: args.port,
        agent_id,
        package: args.package,
        sha256: args.sha256,
        home: args.tuning.home,
        python: None,
        listen_fd: None,
        timeout: args.tuning.timeout,
        grace: args.tuning.grace,
        threads: args.tuning.threads,
    })
}

fn default_agent_id(package: &Path) -> String {
    let stem = package
        .file_stem()
        .or_else(|| package.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "agent".into());
    stem.to_ascii_lowercase()
}

/// Runs the worker and exits with its code (78 for a package that cannot load).
fn run(settings: Settings) -> anyhow::Result<()> {
    par_telemetry::logging::init("worker");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let code = runtime.block_on(crate::worker::run(settings))?;
    runtime.shutdown_timeout(Duration::from_millis(200));
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
