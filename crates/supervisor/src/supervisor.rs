//! The supervisor assembled: the state machine and its dispatcher, the
//! runtime, the desired-state task, the resource sampler and the HTTP side;
//! start-up of the declared agents, and the ordered shutdown — stop
//! accepting, drain, stop workers, exit.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::control::{Control, Phase};
use crate::dispatcher::{Dispatcher, Outputs};
use crate::http::api::{self, ApiState};
use crate::http::connections::Connections;
use crate::http::dashboard::AdminListener;
use crate::http::metrics::Registry;
use crate::http::proxy::ProxyOptions;
use crate::http::route_table::RouteTable;
use crate::http::server::Listening;
use crate::logs::LogStore;
use crate::model::{AgentId, Command, Origin};
use crate::runtime::desired::{self, DesiredStatus};
use crate::runtime::isolation::Isolation;
use crate::runtime::ports::Ports;
use crate::runtime::probe::ProbeOptions;
use crate::runtime::process::WorkerCommand;
use crate::runtime::resources::{self, TaskResources, UsageTable};
use crate::runtime::Runtime;
use crate::state::{Budget, Config, Supervisor};

/// Runs the supervisor on `listener` (the dashboard on `admin_listener`, its
/// workers on the sockets of `ports`) until `shutdown` completes, then drains
/// and stops every worker within `settings.shutdown_grace`.
///
/// In order: say how agents are isolated and what the task may use, start
/// the state machine and its dispatcher, start the declared agents and the
/// background tasks, serve, and on `shutdown` stop in order.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    admin_listener: Option<std::net::TcpListener>,
    ports: Ports,
    isolation: Isolation,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let port = listener.local_addr()?.port();
    log_isolation(&isolation);
    let resources = task_resources().await;
    let settings = Arc::new(settings);
    let core = start_core(&settings, port, ports, &isolation, &resources);
    start_declared(&core.control, &settings).await;
    let tasks = start_tasks(&core.control, &settings, &isolation);
    let _ = core.phase.send(Phase::Running);
    let listeners = start_listeners(
        Serving {
            settings: &settings,
            core: &core,
            tasks: &tasks,
            resources,
            isolation,
            port,
        },
        listener,
        admin_listener,
    )?;
    shutdown.await;
    stop(&settings, core, tasks, listeners).await;
    Ok(())
}

/// The state machine at work: its dispatcher's task, the handle to it, and
/// the tables and logs the dispatcher writes for the HTTP side.
struct Core {
    control: Control,
    phase: watch::Sender<Phase>,
    dispatcher: JoinHandle<()>,
    routes: Arc<RouteTable>,
    logs: Arc<LogStore>,
    metrics: Arc<Registry>,
}

/// The tasks beside the dispatcher.
struct Tasks {
    desired: Arc<DesiredStatus>,
    reload: mpsc::UnboundedSender<desired::Request>,
    usage: Arc<UsageTable>,
    sampler: JoinHandle<()>,
    signals: JoinHandle<()>,
}

/// What the listeners are built from.
struct Serving<'a> {
    settings: &'a Arc<Settings>,
    core: &'a Core,
    tasks: &'a Tasks,
    resources: TaskResources,
    isolation: Isolation,
    port: u16,
}

/// The main port's proxy threads and the dashboard's listener.
struct Listeners {
    main: Listening,
    admin: Option<AdminListener>,
}

/// Says how agents are kept apart (loudly when they are not).
fn log_isolation(isolation: &Isolation) {
    match isolation {
        Isolation::PerAgentUid(per) => tracing::info!(
            isolation = isolation.name(),
            supervisor_uid = nix::unistd::geteuid().as_raw(),
            installer_uid = per.installer,
            agent_nproc = per.nproc,
            agent_nofile = per.nofile,
            "each agent runs under a uid of its own"
        ),
        Isolation::SharedUid { reason } => tracing::warn!(
            isolation = isolation.name(),
            reason = %reason,
            "AGENTS ARE NOT ISOLATED FROM EACH OTHER: every agent runs as the supervisor's uid \
             and can read the others' environment and files and signal their processes \
             (and the supervisor's); start the supervisor as root to give each agent a uid of its own"
        ),
    }
}

/// The CPUs and memory the task may use (the agents' budget).
async fn task_resources() -> TaskResources {
    let resources = TaskResources::detect().await;
    tracing::info!(
        cpus = resources.cpus,
        cpu_source = %resources.cpu_source,
        memory_mb = resources.memory_bytes / (1024 * 1024),
        memory_source = %resources.memory_source,
        "task resources"
    );
    resources
}

/// The state machine, the runtime that carries out its effects, and the
/// dispatcher between them, started.
fn start_core(
    settings: &Arc<Settings>,
    port: u16,
    ports: Ports,
    isolation: &Isolation,
    resources: &TaskResources,
) -> Core {
    let (control, channels) = Control::new();
    let logs = LogStore::new(settings.log_limits(), true);
    crate::http::proxy::upgrade::set_limits(
        settings.websocket_max_message,
        settings.websocket_max_frame,
    );
    let routes = Arc::new(RouteTable::default());
    let metrics = Arc::new(Registry::default());
    let core = Supervisor::new(state_config(settings, resources), fastrand::u64(..));
    let runtime = Runtime::new(
        control.clone(),
        Arc::clone(&logs),
        WorkerCommand {
            argv: settings.worker_command.clone(),
            home: settings.home.clone(),
            supervisor_url: format!("http://127.0.0.1:{port}"),
        },
        ProbeOptions {
            interval: settings.probe_interval,
            timeout: settings.probe_timeout,
            startup_timeout: settings.startup_timeout,
        },
        ports,
        isolation.clone(),
    );
    let out = Outputs {
        snapshot: channels.snapshot,
        agents: channels.agents,
        routes: Arc::clone(&routes),
        logs: Arc::clone(&logs),
        metrics: Arc::clone(&metrics),
    };
    let dispatcher = tokio::spawn(Dispatcher::new(core, runtime, channels.rx, out).run());
    Core {
        control,
        phase: channels.phase,
        dispatcher,
        routes,
        logs,
        metrics,
    }
}

/// The state machine's timeouts, and the budget its agents share.
fn state_config(settings: &Settings, resources: &TaskResources) -> Config {
    Config {
        stop_grace: settings.stop_timeout,
        drain_timeout: settings.drain_timeout,
        startup_timeout: settings.startup_timeout,
        probe_failures: settings.probe_failures,
        budget: Budget {
            cpus: resources.cpus,
            memory_mb: resources.memory_bytes / (1024 * 1024),
        },
    }
}

/// The desired-state task, the resource and disk samplers, the downloads'
/// sweeper and the signal watcher.
fn start_tasks(control: &Control, settings: &Arc<Settings>, isolation: &Isolation) -> Tasks {
    let desired = Arc::new(DesiredStatus::default());
    let reload = desired::spawn(control.clone(), Arc::clone(settings), Arc::clone(&desired));
    let usage = Arc::new(UsageTable::default());
    let sampler = tokio::spawn(resources::sampler(
        control.clone(),
        Arc::clone(&usage),
        Duration::from_secs(2),
    ));
    if let Some(per) = isolation.per_agent() {
        tokio::spawn(resources::disk_watch(
            control.clone(),
            Arc::clone(per),
            resources::DISK_SAMPLE,
        ));
    }
    match par_package::keep_unused_from_env() {
        Ok(Some(keep)) => {
            crate::runtime::downloads::spawn(control.clone(), settings.home.join("downloads"), keep)
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("{e}; downloads are not swept"),
    }
    let signals = tokio::spawn(process_signals());
    Tasks {
        desired,
        reload,
        usage,
        sampler,
        signals,
    }
}

/// The dashboard on its own origin (when it has a listener) and the main
/// port: the API, and the proxy on its threads.
fn start_listeners(
    s: Serving<'_>,
    listener: TcpListener,
    admin_listener: Option<std::net::TcpListener>,
) -> anyhow::Result<Listeners> {
    let (settings, port) = (s.settings, s.port);
    let unknown = Arc::new(AtomicU64::new(0));
    let admin = admin_access(settings, port);
    let admin_credential = crate::http::api::auth::AdminCredential::new(&admin.token);
    let api_state = Arc::new(api_state(s, admin, Arc::clone(&unknown)));
    let admin_listener = match admin_listener {
        Some(l) => Some(AdminListener::start(
            l,
            crate::http::dashboard::admin_router(api::router(Arc::clone(&api_state))),
        )?),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().map(|a| a.addr);
    let control = api_state.control.clone();
    let routes = Arc::clone(&api_state.routes);
    let api = crate::http::dashboard::main_router(api::router(api_state), admin_addr);
    let proxy = ProxyOptions {
        header_timeout: settings.upstream_timeout,
        idle_timeout: settings.stream_idle_timeout,
        access_log: settings.access_log,
        admin: Some(admin_credential),
    };
    let listening = crate::http::server::start(
        listener.into_std()?,
        routes,
        api,
        proxy,
        unknown,
        control,
        connections(settings),
    )?;
    tracing::info!(
        port,
        proxy_threads = listening.threads,
        admin_port = admin_addr.map(|a| a.port()),
        dashboard = admin_addr.map(|a| format!("http://{a}/supervisor/ui/")),
        "supervisor listening"
    );
    Ok(Listeners {
        main: listening,
        admin: admin_listener,
    })
}

/// What the management API reads.
fn api_state(s: Serving<'_>, admin: api::Admin, unknown: Arc<AtomicU64>) -> ApiState {
    ApiState {
        control: s.core.control.clone(),
        admin,
        routes: Arc::clone(&s.core.routes),
        settings: Arc::clone(s.settings),
        logs: Arc::clone(&s.core.logs),
        metrics: Arc::clone(&s.core.metrics),
        usage: Arc::clone(&s.tasks.usage),
        resources: s.resources,
        desired: Arc::clone(&s.tasks.desired),
        reload: s.tasks.reload.clone(),
        unknown_agents: unknown,
        started: Instant::now(),
        started_at: SystemTime::now(),
        port: s.port,
        isolation: s.isolation,
    }
}

/// The main port's connection limits (the open-files limit raised first).
fn connections(settings: &Settings) -> Arc<Connections> {
    let open_files = crate::http::connections::raise_open_files();
    Connections::new(crate::http::connections::Limits {
        max_connections: settings
            .max_connections
            .unwrap_or_else(|| crate::http::connections::default_max_connections(open_files)),
        client_header_timeout: settings.client_header_timeout,
        keepalive_timeout: settings.keepalive_timeout,
    })
}

/// Stop accepting, let in-flight requests finish, then stop workers — all
/// within `settings.shutdown_grace`.
async fn stop(settings: &Settings, core: Core, tasks: Tasks, listeners: Listeners) {
    let started = Instant::now();
    let grace = settings.shutdown_grace;
    let _ = core.phase.send(Phase::Draining);
    let stop_budget = (grace / 3)
        .min(Duration::from_secs(10))
        .max(Duration::from_millis(500));
    let drain_budget = grace.saturating_sub(stop_budget);
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "shutting down: draining connections"
    );
    if let Some(a) = listeners.admin {
        a.shutdown().await;
    }
    listeners.main.shutdown(drain_budget).await;
    let remaining = grace
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(500));
    let stop = core.control.ask(Command::Shutdown {
        grace: remaining.saturating_sub(Duration::from_millis(200)),
    });
    let _ = tokio::time::timeout(remaining + Duration::from_secs(1), stop).await;
    let _ = core.phase.send(Phase::Stopped);
    tasks.sampler.abort();
    tasks.signals.abort();
    let _ = tokio::time::timeout(Duration::from_secs(1), core.dispatcher).await;
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        "supervisor stopped"
    );
}

/// The admin token: `PAR_ADMIN_TOKEN`, or one made for this boot and
/// written where only the supervisor's user can read it.
fn admin_access(settings: &Settings, port: u16) -> api::Admin {
    if let Some(token) = settings.admin_token.clone().filter(|t| !t.is_empty()) {
        return api::Admin { token, file: None };
    }
    let token = boot_token();
    let file = token_file(&settings.home, port);
    match write_private(&file, &token) {
        Ok(()) => tracing::info!(
            file = %file.display(),
            "no PAR_ADMIN_TOKEN: the management API's token for this boot is in the file (par ctl reads it)"
        ),
        Err(e) => tracing::error!(
            file = %file.display(),
            "no PAR_ADMIN_TOKEN, and this boot's token could not be written ({e}): set PAR_ADMIN_TOKEN to use the management API"
        ),
    }
    api::Admin {
        token,
        file: Some(file),
    }
}

/// Where a supervisor listening on `port` keeps its boot token (several
/// supervisors may share one `PAR_HOME`).
pub fn token_file(home: &std::path::Path, port: u16) -> std::path::PathBuf {
    home.join("run").join(format!("supervisor-{port}.token"))
}

/// 32 bytes from the kernel's random source, as hex.
fn boot_token() -> String {
    use std::io::Read as _;
    let mut buf = [0u8; 32];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        // Never a predictable token: fall back to a mix no other process can see.
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (fastrand::u64(..) >> (i % 8)) as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `text` to `path` readable by this user only (folder 0700, file 0600).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let tmp = dir.join(format!(".token.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The agents of the configuration, started before the port serves.
async fn start_declared(control: &Control, settings: &Settings) {
    for spec in settings.agents.clone() {
        let Ok(agent) = AgentId::new(&spec.id) else {
            continue;
        };
        let command = Command::Spawn {
            agent: agent.clone(),
            spec,
            origin: Origin::Declared,
            wait: false,
        };
        if let Err(e) = control.ask(command).await {
            tracing::error!(agent = %agent, "failed to start a declared agent: {}", e.message);
        }
    }
}

/// SIGCHLD: reap orphans when PID 1. SIGHUP must not kill the supervisor (its
/// default action); the desired-state task reloads on it.
async fn process_signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut child), Ok(mut hup)) = (signal(SignalKind::child()), signal(SignalKind::hangup()))
    else {
        return;
    };
    loop {
        tokio::select! {
            Some(()) = child.recv() => crate::runtime::unix::reap_orphans(),
            Some(()) = hup.recv() => tracing::debug!("SIGHUP received (the desired-state task reloads)"),
            else => return,
        }
    }
}
