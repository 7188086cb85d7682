//! The supervisor's listener (HTTP/1.1 and h2c on one port), request dispatch
//! (proxy or management API), start-up of the declared agents, and the
//! ordered shutdown: stop accepting, drain, stop workers, exit.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tower::ServiceExt as _;

use crate::api::{self, ApiState};
use crate::config::Settings;
use crate::logs::LogStore;
use crate::proxy::{Proxy, ProxyOptions};
use crate::resources::TaskResources;
use crate::routes::RouteTable;
use crate::supervisor::{Msg, Phase, Shared, Supervisor};

/// What one proxy thread serves: its own proxy (its own upstream pools),
/// and the management API, which runs on the main runtime.
struct App {
    proxy: Proxy,
    api: axum::Router,
    main: tokio::runtime::Handle,
}

impl App {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if is_grpc(&req) {
            return self.proxy.grpc(req, peer).await;
        }
        if let Some(rest) = req.uri().path().strip_prefix("/agents/") {
            if !rest.is_empty() {
                return self.proxy.forward(req, peer).await;
            }
        }
        // Management work (status JSON, /proc reads, log scans) stays off the
        // proxy threads, so it never stalls a proxied request.
        let mut req = req.map(Body::new);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let api = self.api.clone();
        match self.main.spawn(api.oneshot(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => match e {},
            Err(_) => crate::error::ApiError::shutting_down().into_response_body(),
        }
    }
}

fn is_grpc(req: &Request<Incoming>) -> bool {
    req.version() == http::Version::HTTP_2
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Proxy threads: `PAR_PROXY_THREADS`, default 1. Each runs a single-threaded
/// runtime that accepts on the shared listener and serves its connections
/// start to end (the nginx worker model): a proxied request then costs no
/// cross-thread wake-ups, which on a small task are most of its CPU.
fn proxy_threads() -> usize {
    std::env::var("PAR_PROXY_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(1)
}

/// One proxy thread's accept loop; on `stop`, stops accepting and drains its
/// connections for at most `drain`.
async fn accept_loop(
    listener: std::net::TcpListener,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    drain: watch::Receiver<Duration>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("proxy thread cannot use the listener: {e}");
            return;
        }
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .writev(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = Arc::clone(&app);
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let app = Arc::clone(&app);
                    async move { Ok::<_, Infallible>(app.handle(req, peer).await) }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    drop(listener);
    let budget = *drain.borrow();
    if tokio::time::timeout(budget, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {} s; closing them",
            budget.as_secs_f64()
        );
    }
}

/// Runs the supervisor on `listener` until `shutdown` completes, then drains
/// and stops every worker within `settings.shutdown_grace`.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    worker_command: Vec<String>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let port = listener.local_addr()?.port();
    let resources = TaskResources::detect().await;
    tracing::info!(
        cpus = resources.cpus,
        cpu_source = %resources.cpu_source,
        memory_mb = resources.memory_bytes / (1024 * 1024),
        memory_source = %resources.memory_source,
        "task resources"
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let routes = Arc::new(RouteTable::default());
    let logs = LogStore::new(settings.log_lines_per_process, true);
    let agents = settings.agents.clone();
    let grace = settings.shutdown_grace;
    let proxy_opts = ProxyOptions {
        header_timeout: settings.upstream_timeout,
        idle_timeout: settings.stream_idle_timeout,
        access_log: settings.access_log,
    };
    let shared = Arc::new(Shared {
        settings,
        routes: Arc::clone(&routes),
        logs,
        snapshot: RwLock::new(Arc::new(Vec::new())),
        usage: RwLock::new(Default::default()),
        metrics: RwLock::new(Default::default()),
        resources,
        started: Instant::now(),
        started_at: SystemTime::now(),
        phase: AtomicU8::new(Phase::Starting as u8),
        tx,
        port,
        desired: Default::default(),
    });
    let state_task = tokio::spawn(Supervisor::new(Arc::clone(&shared), rx, worker_command).run());
    for spec in agents {
        let id = spec.id.clone();
        if let Err(e) = shared.ask(|reply| Msg::Spawn { spec, reply }).await {
            tracing::error!(agent = %id, "failed to start a declared agent: {}", e.message);
        }
    }
    let sampler = tokio::spawn(crate::resources::sampler(
        Arc::clone(&shared),
        Duration::from_secs(2),
    ));
    let reaper = tokio::spawn(async {
        let Ok(mut sig) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        else {
            return;
        };
        while sig.recv().await.is_some() {
            crate::unix::reap_orphans();
        }
    });
    // SIGHUP must not kill the supervisor (its default action); reload comes with desired state.
    let hup = tokio::spawn(async {
        let Ok(mut sig) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while sig.recv().await.is_some() {
            tracing::debug!("SIGHUP received (the desired-state task reloads)");
        }
    });
    shared.set_phase(Phase::Running);

    let unknown = Arc::new(AtomicU64::new(0));
    let api_state = Arc::new(ApiState {
        shared: Arc::clone(&shared),
        unknown_agents: {
            let c = Arc::clone(&unknown);
            Arc::new(move || c.load(Ordering::Relaxed))
        },
    });
    let api = api::router(api_state);
    let main = tokio::runtime::Handle::current();
    let listener = listener.into_std()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(Duration::ZERO);
    let threads = proxy_threads();
    let mut done = Vec::with_capacity(threads);
    for i in 0..threads {
        let l = listener
            .try_clone()
            .map_err(|e| anyhow::anyhow!("failed to share the listener: {e}"))?;
        let app = Arc::new(App {
            proxy: Proxy::new(
                Arc::clone(&routes),
                proxy_opts.clone(),
                Arc::clone(&unknown),
            ),
            api: api.clone(),
            main: main.clone(),
        });
        let (stop, drain) = (stop_rx.clone(), drain_rx.clone());
        let (done_tx, done_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("par-proxy-{i}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(accept_loop(l, app, stop, drain)),
                    Err(e) => tracing::error!("failed to start a proxy thread: {e}"),
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| anyhow::anyhow!("failed to start a proxy thread: {e}"))?;
        done.push(done_rx);
    }
    drop(listener);
    tracing::info!(port, proxy_threads = threads, "supervisor listening");
    shutdown.await;

    // Shutdown: stop accepting, let in-flight requests finish, then stop workers.
    let started = Instant::now();
    shared.set_phase(Phase::Draining);
    let stop_budget = (grace / 3)
        .min(Duration::from_secs(10))
        .max(Duration::from_millis(500));
    let drain_budget = grace.saturating_sub(stop_budget);
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "shutting down: draining connections"
    );
    let _ = drain_tx.send(drain_budget);
    crate::upgrade::close_all(drain_budget.min(Duration::from_secs(3))).await;
    let _ = stop_tx.send(true);
    let all_done = futures_util::future::join_all(done);
    let _ = tokio::time::timeout(drain_budget + Duration::from_millis(500), all_done).await;
    let remaining = grace
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(500));
    let (reply, done) = oneshot::channel();
    if shared
        .tx
        .send(Msg::Shutdown {
            grace: remaining.saturating_sub(Duration::from_millis(200)),
            reply,
        })
        .is_ok()
    {
        let _ = tokio::time::timeout(remaining + Duration::from_secs(1), done).await;
    }
    shared.set_phase(Phase::Stopped);
    sampler.abort();
    reaper.abort();
    hup.abort();
    let _ = tokio::time::timeout(Duration::from_secs(1), state_task).await;
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        "supervisor stopped"
    );
    Ok(())
}
