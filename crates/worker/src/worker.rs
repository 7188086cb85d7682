//! The worker's life: bind the port at once (or serve on the one the
//! supervisor hands over), load the agent in the background,
//! serve, watch the agent host, and shut down gracefully on SIGTERM.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch, Notify};

use crate::host::{self, HostChannel};
use crate::state::AppState;
use agent::{start_agent, AgentTask};

mod agent;

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
