//! The supervisor's listener (HTTP/1.1 and h2c on one port), request dispatch
//! (proxy or management API), start-up of the declared agents, and the
//! ordered shutdown: stop accepting, drain, stop workers, exit.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tower::ServiceExt as _;

use crate::api::{self, ApiState};
use crate::config::Settings;
use crate::logs::LogStore;
use crate::proxy::{Proxy, ProxyOptions};
use crate::resources::TaskResources;
use crate::routes::RouteTable;
use crate::supervisor::{Msg, Phase, Shared, Supervisor};

struct App {
    proxy: Proxy,
    api: axum::Router,
}

impl App {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if is_grpc(&req) {
            return self.proxy.grpc(req, peer).await;
        }
        if let Some(rest) = req.uri().path().strip_prefix("/agents/") {
            if !rest.is_empty() {
                let (id, tail) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, ""),
                };
                let (id, tail) = (id.to_string(), tail.to_string());
                return self.proxy.forward(req, &id, &tail, peer).await;
            }
        }
        let mut req = req.map(Body::new);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        match self.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
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

    let proxy = Proxy::new(routes, proxy_opts);
    let unknown = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = Arc::new_cyclic(|weak: &std::sync::Weak<App>| {
        let weak = weak.clone();
        let counter = Arc::clone(&unknown);
        let api_state = Arc::new(ApiState {
            shared: Arc::clone(&shared),
            unknown_agents: Arc::new(move || {
                weak.upgrade().map_or(counter.load(Ordering::Relaxed), |a| {
                    a.proxy.unknown.load(Ordering::Relaxed)
                })
            }),
        });
        App {
            proxy,
            api: api::router(api_state),
        }
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tracing::info!(port, "supervisor listening");
    tokio::pin!(shutdown);
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
            () = &mut shutdown => break,
        }
    }

    // Shutdown: stop accepting, let in-flight requests finish, then stop workers.
    let started = Instant::now();
    shared.set_phase(Phase::Draining);
    drop(listener);
    let stop_budget = (grace / 3)
        .min(Duration::from_secs(10))
        .max(Duration::from_millis(500));
    let drain_budget = grace.saturating_sub(stop_budget);
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "shutting down: draining connections"
    );
    if tokio::time::timeout(drain_budget, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {} s; closing them",
            drain_budget.as_secs_f64()
        );
    }
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
