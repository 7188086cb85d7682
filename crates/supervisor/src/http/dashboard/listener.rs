//! The admin listener: the dashboard and the management API on a port of
//! their own (`PAR_ADMIN_PORT`), an origin no agent is ever served from:
//! nothing here reaches the proxy, so no `/agents/{id}/...` page can share
//! the dashboard's storage or frame it. The main port keeps the API for
//! `par ctl` and scripts and says where the dashboard went.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt as _;

use super::{assets, guard, notice};

/// Open connections at most: a dashboard tab uses two or three (one per log
/// stream it follows); agents on the same machine can reach this port too,
/// and must not exhaust the supervisor's files through it.
const MAX_CONNECTIONS: usize = 64;

/// A connection that sends no request head for this long is closed (also an
/// idle keep-alive connection).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections (followed log streams) get at shutdown.
const DRAIN: Duration = Duration::from_secs(1);

/// What the admin port serves: the management API and the dashboard, each
/// response hardened, other origins refused.
pub fn admin_router(api: Router) -> Router {
    api.merge(assets::router())
        .layer(axum::middleware::from_fn(guard::admin_origin))
}

/// What the main port serves besides the proxy: the management API, with
/// browsers kept off its mutating routes, and the notice at `/supervisor/ui`.
pub fn main_router(api: Router, admin: Option<SocketAddr>) -> Router {
    api.merge(notice::router(admin))
        .layer(axum::middleware::from_fn(guard::main_port_api))
}

/// The running admin listener.
pub struct AdminListener {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    done: Vec<tokio::task::JoinHandle<()>>,
}

impl AdminListener {
    /// Serves `router` on `listener` (already bound, before privileges were
    /// dropped) on the current runtime. On 127.0.0.1 it also holds the same
    /// port on `[::1]`, so that `http://localhost:PORT`, which a browser may
    /// try over IPv6 first, cannot reach another program there (an agent
    /// serving a look-alike page that asks for the token).
    pub fn start(listener: std::net::TcpListener, router: Router) -> anyhow::Result<AdminListener> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut listeners = vec![TcpListener::from_std(listener)?];
        if addr.ip() == std::net::Ipv4Addr::LOCALHOST {
            let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()));
            match std::net::TcpListener::bind(v6).and_then(|l| {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            }) {
                Ok(l) => listeners.push(l),
                // No IPv6 here: nothing can listen on [::1] either.
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {}
                Err(e) => tracing::warn!(
                    "the admin port could not also be held on [::1]:{} ({e}): http://localhost:{} may reach another program; use http://{addr}/supervisor/ui/",
                    addr.port(),
                    addr.port()
                ),
            }
        }
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let (stop, stopped) = watch::channel(false);
        let done = listeners
            .into_iter()
            .map(|l| {
                tokio::spawn(accept_loop(
                    l,
                    router.clone(),
                    Arc::clone(&slots),
                    stopped.clone(),
                ))
            })
            .collect();
        Ok(AdminListener { addr, stop, done })
    }

    /// Stops accepting; open connections get `DRAIN` to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let all = futures_util::future::join_all(self.done);
        let _ = tokio::time::timeout(DRAIN + Duration::from_millis(200), all).await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    // HTTP/1.1 only: browsers speak nothing else to a plain-http origin, and
    // an idle HTTP/2 connection would have no header timeout to end it.
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(HEADER_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            (stream, peer) = crate::http::server::accept(&listener, "admin port: ") => {
                // Over the limit: closed at once, nothing is held for it.
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    continue;
                };
                let app = router.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
                });
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _slot = slot;
                    let _ = conn.await;
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}
