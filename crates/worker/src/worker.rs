//! The worker's life: bind the port at once (or serve on the one the
//! supervisor hands over), load the agent in the background,
//! serve, watch the agent host, and shut down gracefully on SIGTERM.

use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::host::{self, HostChannel, HostSpec};
use crate::loader::{self, Prepared};
use crate::state::{declared_surfaces, Agent, AppState, Phase, SurfaceState};

/// Exit code when the package itself cannot load: the supervisor marks the
/// agent failed and does not restart it.
pub const EXIT_PACKAGE: i32 = par_contract::exit::PACKAGE_FAILURE;

/// Everything the worker needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub agent_id: String,
    pub package: PathBuf,
    pub sha256: Option<String>,
    pub home: PathBuf,
    /// The interpreter, when the supervisor prepared the environment (agents
    /// under their own uids cannot write the shared environments).
    pub python: Option<PathBuf>,
    /// The listening socket for `port` the supervisor handed over
    /// (`PAR_LISTEN_FD`); `None`: bind `host:port` here.
    pub listen_fd: Option<std::os::fd::RawFd>,
    /// Longest wait for an invoke result or an ASGI response head.
    pub timeout: Duration,
    /// How long in-flight requests may take to finish on SIGTERM.
    pub grace: Duration,
    /// Size of the agent host's thread pool for sync handlers.
    pub threads: usize,
    /// Pings answered by the agent's event loop (`PAR_LIVENESS_*`).
    pub liveness: host::liveness::Liveness,
}

/// What the lifecycle tasks share besides the HTTP state.
#[derive(Default)]
struct Lifecycle {
    shutting_down: AtomicBool,
    host_pid: AtomicU32,
    host: Mutex<Option<Arc<HostChannel>>>,
}

/// Runs the worker until SIGTERM/SIGINT (returns 0) or a fatal error (returns the exit code).
///
/// In order: the port (bound or handed over), the HTTP server on it, the
/// agent started in the background, then a wait for a signal or a fatal
/// error, and the way out.
pub async fn run(settings: Settings) -> anyhow::Result<i32> {
    let listener = match listen(&settings).await? {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let local = listener
        .local_addr()
        .context("failed to read the bound address")?;
    tracing::info!(addr = %local, agent_id = %settings.agent_id, package = %settings.package.display(), "worker listening");
    // Traces (when an OTLP endpoint is set): this worker's service is its agent.
    par_telemetry::trace::init(&settings.agent_id, true);

    let state = Arc::new(AppState::new(
        settings.agent_id.clone(),
        local.port(),
        self_url(local),
        settings.timeout,
    ));
    let life = Arc::new(Lifecycle::default());
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel::<i32>();
    let (host_exited_tx, host_exited) = watch::channel(false);

    tokio::spawn(start_agent(AgentTask {
        state: Arc::clone(&state),
        life: Arc::clone(&life),
        settings: settings.clone(),
        exit: exit_tx,
        host_exited: host_exited_tx,
    }));

    let stop = Arc::new(Notify::new());
    let mut server = serve_http(listener, &state, &stop);

    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate()).context("failed to watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("failed to watch SIGINT")?;
    let fatal = tokio::select! {
        _ = sigterm.recv() => None,
        _ = sigint.recv() => None,
        Some(code) = exit_rx.recv() => Some(code),
        r = &mut server => {
            tracing::error!(result = ?r, "HTTP server stopped");
            Some(1)
        }
    };
    if let Some(code) = fatal {
        kill_host(&life);
        // Open WebSockets get their close frame (1012) before the process ends.
        state.sockets.close_all();
        let _ = tokio::time::timeout(Duration::from_secs(1), state.sockets.wait_closed()).await;
        flush_traces().await;
        return Ok(code);
    }
    let stopping = Stopping {
        state: &state,
        life: &life,
        stop: &stop,
        host_exited,
    };
    stopping.graceful(server, settings.grace).await;
    Ok(0)
}

/// The port's listening socket: the one the supervisor handed over, or
/// bound here; `Err(code)` when the port is taken.
async fn listen(settings: &Settings) -> anyhow::Result<Result<tokio::net::TcpListener, i32>> {
    if let Some(fd) = settings.listen_fd {
        let std = crate::listener::inherited(fd, settings.port)?;
        // The agent's code runs as this worker's uid: without this, it
        // could trace the worker and take a copy of the port's socket
        // (pidfd_getfd) that outlives the agent.
        if let Err(e) = nix::sys::prctl::set_dumpable(false) {
            tracing::warn!("failed to make the worker non-dumpable: {e}");
        }
        let listener =
            tokio::net::TcpListener::from_std(std).context("failed to serve on PAR_LISTEN_FD")?;
        return Ok(Ok(listener));
    }
    match tokio::net::TcpListener::bind((settings.host.as_str(), settings.port)).await {
        Ok(l) => Ok(Ok(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::error!(port = settings.port, "port already in use: {e}");
            Ok(Err(par_contract::exit::PORT_IN_USE))
        }
        Err(e) => {
            Err(e).with_context(|| format!("failed to bind {}:{}", settings.host, settings.port))
        }
    }
}

/// How the worker reaches itself (`127.0.0.1` for an unspecified address).
fn self_url(local: SocketAddr) -> String {
    let self_host = if local.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        local.ip().to_string()
    };
    if local.is_ipv6() {
        format!("http://[{self_host}]:{}", local.port())
    } else {
        format!("http://{self_host}:{}", local.port())
    }
}

/// The HTTP server on `listener`, until `stop` is notified (then gracefully).
fn serve_http(
    listener: tokio::net::TcpListener,
    state: &Arc<AppState>,
    stop: &Arc<Notify>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let stop_signal = Arc::clone(stop);
    let app = crate::routes::router(Arc::clone(state));
    // Small writes (a response head, then each streamed event) must leave at
    // once: with Nagle on, a write waits for the ACK of the previous one, and a
    // keep-alive peer delays that ACK by 40 ms.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("failed to set TCP_NODELAY: {e}");
        }
    });
    tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop_signal.notified().await })
        .into_future(),
    )
}

/// What a graceful stop (SIGTERM) stops.
struct Stopping<'a> {
    state: &'a Arc<AppState>,
    life: &'a Lifecycle,
    stop: &'a Notify,
    host_exited: watch::Receiver<bool>,
}

impl Stopping<'_> {
    /// Lets in-flight requests finish within `grace`, then stops the agent
    /// host (killed if it does not stop within 5 s).
    async fn graceful(
        mut self,
        mut server: tokio::task::JoinHandle<std::io::Result<()>>,
        grace: Duration,
    ) {
        tracing::info!(grace = ?grace, "shutting down: finishing in-flight requests");
        self.life.shutting_down.store(true, Ordering::SeqCst);
        self.stop.notify_one();
        // Upgraded connections are not the HTTP server's any more: close them (1012).
        self.state.sockets.close_all();
        let drained = async {
            let _ = (&mut server).await;
            self.state.sockets.wait_closed().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("in-flight requests did not finish within the grace period");
            server.abort();
        }
        let chan = self
            .life
            .host
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(chan) = chan {
            chan.shutdown();
            let exited =
                tokio::time::timeout(Duration::from_secs(5), self.host_exited.wait_for(|e| *e))
                    .await;
            if exited.is_err() {
                tracing::warn!("agent host did not stop within 5 s; killing it");
            }
        }
        kill_host(self.life);
        flush_traces().await;
        tracing::info!("worker stopped");
    }
}

/// Sends the spans still queued, waiting at most a second.
async fn flush_traces() {
    if par_telemetry::trace::tracer().is_some() {
        let _ =
            tokio::task::spawn_blocking(|| par_telemetry::trace::shutdown(Duration::from_secs(1)))
                .await;
    }
}

fn kill_host(life: &Lifecycle) {
    let pid = life.host_pid.load(Ordering::SeqCst);
    if pid != 0 {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// What starting the agent and watching its host report to.
struct AgentTask {
    state: Arc<AppState>,
    life: Arc<Lifecycle>,
    settings: Settings,
    exit: mpsc::UnboundedSender<i32>,
    host_exited: watch::Sender<bool>,
}

/// Why the agent could not start, or stopped: the message shown and the
/// worker's exit code.
struct Fatal {
    message: String,
    code: i32,
}

impl Fatal {
    fn new(message: impl Into<String>, code: i32) -> Self {
        Fatal {
            message: message.into(),
            code,
        }
    }
}

/// The agent host started: its process, its channel, and what the channel
/// tells once (its load report; that it closed).
struct Host {
    child: tokio::process::Child,
    chan: Arc<HostChannel>,
    hello: oneshot::Receiver<host::Hello>,
    closed: oneshot::Receiver<String>,
}

/// Loads the package, starts the host, waits for its load report, then
/// watches it; a failure is the agent's (and the worker exits with its code).
async fn start_agent(task: AgentTask) {
    if let Err(f) = task.start_and_watch().await {
        tracing::error!(error = %f.message, exit_code = f.code, "agent failed");
        task.state.fail(f.message);
        let _ = task.exit.send(f.code);
    }
}

impl AgentTask {
    async fn start_and_watch(&self) -> Result<(), Fatal> {
        let started = Instant::now();
        let Prepared {
            package,
            python,
            env,
        } = self.load_package().await?;
        self.keep_in_cache(&package);
        let declared = self.starting(&package);
        let mut host = self.start_host(&package, python, env)?;
        let hello = self.loaded(&mut host).await?;
        let agent = self.ready_agent(package, &host.chan, hello, &declared);
        tracing::info!(
            package_id = %agent.package.package_id(),
            python = agent.hello.python.as_deref().unwrap_or("?"),
            surfaces = ?agent.surfaces.iter().map(|(k, v)| format!("{k}={}", v.status)).collect::<Vec<_>>(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "agent ready"
        );
        self.state.set_phase(Phase::Ready(Arc::new(agent)));
        self.watch(host).await
    }

    /// Unpacks and verifies the package and finds its environment (off the
    /// runtime's threads).
    async fn load_package(&self) -> Result<Prepared, Fatal> {
        let s = &self.settings;
        let (source, sha, home, python) = (
            s.package.clone(),
            s.sha256.clone(),
            s.home.clone(),
            s.python.clone(),
        );
        let prepared = tokio::task::spawn_blocking(move || {
            loader::prepare(&source, sha.as_deref(), &home, python.as_deref())
        })
        .await;
        match prepared {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => {
                let code = if e.is_package_fault() {
                    EXIT_PACKAGE
                } else {
                    1
                };
                Err(Fatal::new(e.to_string(), code))
            }
            Err(e) => Err(Fatal::new(format!("package loading panicked: {e}"), 1)),
        }
    }

    /// Marks the package used, and sweeps the cache of those unused for
    /// long (`PAR_KEEP_UNUSED`).
    fn keep_in_cache(&self, package: &par_package::LoadedPackage) {
        match par_package::keep_unused_from_env() {
            Ok(Some(keep)) => crate::cache::keep_and_sweep(
                self.settings.home.clone(),
                package.root.clone(),
                package.sha256.clone(),
                keep,
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}; the package cache is not swept"),
        }
    }

    /// The phase `starting`, with the surfaces the manifest declares; they
    /// are returned.
    fn starting(&self, package: &par_package::LoadedPackage) -> Vec<&'static str> {
        let manifest = &package.manifest;
        let declared = declared_surfaces(manifest);
        let package_id = package.package_id();
        self.state.set_phase(Phase::Starting {
            package_id: Some(package_id.clone()),
            surfaces: declared
                .iter()
                .map(|s| (*s, SurfaceState::starting()))
                .collect(),
        });
        for w in &manifest.warnings {
            tracing::warn!(package_id = %package_id, "agent.yaml: {w}");
        }
        declared
    }

    /// Starts the agent host on the package with its environment.
    fn start_host(
        &self,
        package: &par_package::LoadedPackage,
        python: PathBuf,
        env: BTreeMap<String, String>,
    ) -> Result<Host, Fatal> {
        let spec = HostSpec {
            root: package.root.clone(),
            env: self.host_env(package, env),
            config: self.host_config(package),
            python,
        };
        let (child, stream) = host::spawn(&spec).map_err(|e| {
            Fatal::new(
                format!(
                    "failed to start the agent host with {}: {e}",
                    spec.python.display()
                ),
                1,
            )
        })?;
        self.life
            .host_pid
            .store(child.id().unwrap_or(0), Ordering::SeqCst);
        let (chan, hello, closed) = HostChannel::start(stream);
        *self.life.host.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&chan));
        Ok(Host {
            child,
            chan,
            hello,
            closed,
        })
    }

    /// What the host loads: the manifest's entries, its thread pool, the port.
    fn host_config(&self, package: &par_package::LoadedPackage) -> serde_json::Value {
        let manifest = &package.manifest;
        let entry = |e: &par_package::manifest::EntryRef| match &e.attr {
            Some(a) => format!("{}:{}", e.module, a),
            None => e.module.clone(),
        };
        let a2a = manifest.a2a.as_ref();
        serde_json::json!({
            "entrypoint": manifest.entrypoint.as_ref().map(entry),
            "http_server": manifest.http_server.as_ref().or(a2a.and_then(|a| a.http_server.as_ref())).map(entry),
            "rest": manifest.rest.as_ref().map(|r| entry(&r.entry)),
            "a2a": a2a.and_then(|a| a.entry.as_ref()).map(entry),
            "threads": self.settings.threads,
            "port": self.state.port,
            "window": host::protocol::STREAM_WINDOW,
        })
    }

    /// The package's environment, with the agent's and package's ids.
    fn host_env(
        &self,
        package: &par_package::LoadedPackage,
        mut env: BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let agent_id = &self.settings.agent_id;
        env.insert("PAR_AGENT_ID".into(), agent_id.clone());
        env.insert("PAR_PACKAGE_ID".into(), package.package_id());
        // The agent's own OpenTelemetry SDK names its service after the agent,
        // unless the package or the spec's env_vars name it.
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            env.entry("OTEL_SERVICE_NAME".into())
                .or_insert_with(|| agent_id.clone());
        }
        env
    }

    /// The host's load report, if the agent's code loaded.
    async fn loaded(&self, host: &mut Host) -> Result<host::Hello, Fatal> {
        let hello = tokio::select! {
            h = &mut host.hello => h.ok(),
            status = host.child.wait() => return Err(self.exited_while_loading(status)),
        };
        let Some(hello) = hello else {
            let status = host.child.wait().await;
            return Err(self.exited_while_loading(status));
        };
        if !hello.ok {
            let message = hello
                .error
                .clone()
                .unwrap_or_else(|| "the agent's code failed to load".into());
            let _ = tokio::time::timeout(Duration::from_secs(2), host.child.wait()).await;
            let _ = self.host_exited.send(true);
            return Err(Fatal::new(message, EXIT_PACKAGE));
        }
        Ok(hello)
    }

    /// The agent's own code ended the host while loading (an exit call, an
    /// import that raised SystemExit): a package failure, even with code 0.
    /// Only a signal may be something passing.
    fn exited_while_loading(&self, status: std::io::Result<std::process::ExitStatus>) -> Fatal {
        let _ = self.host_exited.send(true);
        let by_code = status.as_ref().ok().and_then(|s| s.code()).is_some();
        Fatal::new(
            format!(
                "agent host exited while loading the agent ({})",
                describe_exit(status)
            ),
            if by_code { EXIT_PACKAGE } else { 1 },
        )
    }

    /// The loaded agent with the state of each surface: as the host reports
    /// it, the UI's files opened here, the A2A gRPC service built on the host.
    fn ready_agent(
        &self,
        package: par_package::LoadedPackage,
        chan: &Arc<HostChannel>,
        hello: host::Hello,
        declared: &[&'static str],
    ) -> Agent {
        let mut surfaces: BTreeMap<&'static str, SurfaceState> = BTreeMap::new();
        for s in declared {
            let st = match *s {
                "ui" => continue,
                name => hello
                    .surfaces
                    .get(name)
                    .map(|r| SurfaceState::from_report(r))
                    .unwrap_or_else(|| {
                        SurfaceState::error(format!(
                            "the agent host did not load the {name} surface"
                        ))
                    }),
            };
            surfaces.insert(s, st);
        }
        let ui = open_ui(&package, &mut surfaces);
        let grpc = declared.contains(&"a2a").then(|| {
            let problem = surfaces.get("a2a").and_then(|s| s.error.clone());
            let backend = crate::a2a_backend::HostBackend {
                host: Arc::clone(chan),
                actions: hello.a2a_actions.clone(),
                problem,
                timeout: self.settings.timeout,
            };
            par_a2a::router(
                Arc::new(backend),
                grpc_metadata(&package, &self.settings.agent_id),
            )
        });
        Agent {
            package,
            host: Arc::clone(chan),
            hello,
            surfaces,
            ui,
            grpc,
        }
    }

    /// Until the host exits, its channel closes or it stops answering pings;
    /// only on the way out (SIGTERM) is that not a failure.
    async fn watch(&self, host: Host) -> Result<(), Fatal> {
        let Host {
            mut child,
            chan,
            closed,
            ..
        } = host;
        let reason = tokio::select! {
            status = child.wait() => format!("agent host exited ({})", describe_exit(status)),
            why = host::liveness::watch(chan, self.settings.liveness, &self.life.shutting_down) => {
                // Its host is killed on the way out (the fatal path).
                return Err(Fatal::new(why, par_contract::exit::UNRESPONSIVE));
            }
            r = closed => {
                let reason = r.unwrap_or_else(|_| "agent host channel closed".into());
                // Reap it so the exit status is logged.
                let status = tokio::time::timeout(Duration::from_millis(300), child.wait()).await;
                match status {
                    Ok(s) => format!("{reason}; agent host exited ({})", describe_exit(s)),
                    Err(_) => reason,
                }
            }
        };
        let _ = self.host_exited.send(true);
        if self.life.shutting_down.load(Ordering::SeqCst) {
            tracing::info!("{reason}");
            return Ok(());
        }
        Err(Fatal::new(reason, 1))
    }
}

/// The UI's files, when the manifest declares a UI (its surface's state
/// set either way).
fn open_ui(
    package: &par_package::LoadedPackage,
    surfaces: &mut BTreeMap<&'static str, SurfaceState>,
) -> Option<crate::ui::UiMounts> {
    let u = package.manifest.ui.as_ref()?;
    match crate::ui::UiMounts::open(&package.root, u) {
        Ok(ui) => {
            surfaces.insert("ui", SurfaceState::ready());
            Some(ui)
        }
        Err(e) => {
            tracing::warn!(error = %e, "ui surface unavailable");
            surfaces.insert("ui", SurfaceState::error(e));
            None
        }
    }
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "unknown status".into(),
        },
        Err(e) => format!("status unknown: {e}"),
    }
}

/// Manifest metadata reported by the A2A `DescribeCapabilities`.
fn grpc_metadata(package: &par_package::LoadedPackage, agent_id: &str) -> HashMap<String, String> {
    let m = &package.manifest;
    let mut md = HashMap::new();
    md.insert("agent_id".into(), agent_id.to_string());
    md.insert("package_id".into(), package.package_id());
    md.insert("name".into(), m.name.clone());
    if let Some(v) = m.metadata.version.clone().or_else(|| m.version.clone()) {
        md.insert("version".into(), v);
    }
    for (k, v) in [
        ("display_name", &m.display_name),
        ("description", &m.description),
        ("author", &m.author),
    ] {
        if let Some(v) = v {
            md.insert(k.into(), v.clone());
        }
    }
    if !m.capabilities.is_empty() {
        md.insert("capabilities".into(), m.capabilities.join(","));
    }
    md
}
