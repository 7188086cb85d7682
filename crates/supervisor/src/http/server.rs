//! The supervisor's listener: HTTP/1.1 and h2c on one port, served by proxy
//! threads (each a single-threaded runtime with its own upstream pools), each
//! request dispatched to the proxy or to the management API.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tower::ServiceExt as _;

use super::connections::{Admitted, Conn, ConnRequest, Connections, Reading};
use super::error::ApiError;
use super::leftover::{self, Guarded};
use super::proxy::framing::HeadRules;
use super::proxy::target::for_an_agent;
use super::proxy::{ClientSocket, Proxy, ProxyOptions, Served};
use super::rewind::Rewind;
use super::route_table::RouteTable;

/// What one proxy thread serves: its own proxy (its own upstream pools),
/// and the management API, which runs on the main runtime.
struct App {
    proxy: Proxy,
    api: axum::Router,
    main: tokio::runtime::Handle,
}

impl App {
    /// Serves one request; a request body the reply left unread is read
    /// (when small) or the connection closed after the reply.
    async fn serve(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        health_only: bool,
        client: Option<&ClientSocket>,
    ) -> Response<Body> {
        // The framing rules the direct path applies, applied here too; a
        // head over the limit (the direct path hands those over) is refused.
        let refused = match HeadRules::check(req.method(), req.version(), req.headers()) {
            Err(refused) => Some(refused.into_api_error()),
            Ok(_) => head_too_large(&req),
        };
        if let Some(e) = refused {
            let mut r = e.into_response_body();
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            return r;
        }
        let (parts, body) = req.into_parts();
        let (body, left) = leftover::guard(body);
        let req = Request::from_parts(parts, body);
        let mut resp = if health_only && req.uri().path() != "/runtime/health" {
            too_many_connections()
        } else {
            self.handle(req, peer, client).await
        };
        left.settle(&mut resp).await;
        resp
    }

    async fn handle(
        &self,
        req: Request<Guarded>,
        peer: SocketAddr,
        client: Option<&ClientSocket>,
    ) -> Response<Body> {
        if is_grpc(&req) {
            return self.proxy.grpc(req, peer).await;
        }
        if for_an_agent(req.uri().path().as_bytes()) {
            // Over HTTP/2 a client that leaves resets its streams:
            // hyper drops their requests itself.
            let client = client.filter(|_| req.version() < http::Version::HTTP_2);
            return self.proxy.forward(req, peer, client).await;
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
            Err(_) => super::error::ApiError::shutting_down().into_response_body(),
        }
    }
}

/// 503 for a connection of the health reserve (or one evicted meanwhile).
fn too_many_connections() -> Response<Body> {
    let mut r =
        super::error::ApiError::unavailable("the supervisor has too many open connections", 1)
            .into_response_body();
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    r
}

/// A response body that ends its request (the connection may be evicted
/// again) when written whole or dropped.
struct Ending {
    inner: Body,
    _in_flight: ConnRequest,
}

impl http_body::Body for Ending {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a request head is whole in a just accepted connection's buffer
/// (one non-blocking peek): its connection is then never evicted before it
/// is served. The ALB's health check sends its head with the connection.
fn whole_head_arrived(stream: &tokio::net::TcpStream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd as _;
    let mut buf = [0u8; 2048];
    match recv(
        stream.as_raw_fd(),
        &mut buf,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(n) => buf[..n].windows(4).any(|w| w == b"\r\n\r\n"),
        Err(_) => false,
    }
}

/// Whether the first request of a connection handed to hyper is for an
/// agent (a large upload, HTTP/1.0, a WebSocket), not the management API:
/// the target of its request line, as `for_an_agent` judges it.
fn first_for_an_agent(read: &[u8]) -> bool {
    let line = read.split(|&b| b == b'\n').next().unwrap_or_default();
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    for_an_agent(target)
}

fn is_grpc<B>(req: &Request<B>) -> bool {
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
    conns: Arc<Connections>,
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
    let builder = http_builder(&conns);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Held by each connection on the direct path: all gone when it closes.
    let (alive, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let stopping = stop.clone();
    loop {
        tokio::select! {
            (stream, peer) = accept(&listener, "") => {
                let _ = stream.set_nodelay(true);
                let conn = match conns.admit(whole_head_arrived(&stream)) {
                    Admitted::Full(c) | Admitted::HealthOnly(c) => Arc::new(c),
                    Admitted::Refused => continue,
                };
                let thread = ThreadParts {
                    app: Arc::clone(&app),
                    stop: stopping.clone(),
                    alive: alive.clone(),
                    builder: builder.clone(),
                    watcher: graceful.watcher(),
                };
                tokio::spawn(serve_connection(stream, peer, conn, thread));
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    drop(listener);
    drop(alive);
    let budget = *drain.borrow();
    let closed = futures_util::future::join(graceful.shutdown(), all_closed.recv());
    if tokio::time::timeout(budget, closed).await.is_err() {
        tracing::warn!(
            "connections still open after {} s; closing them",
            budget.as_secs_f64()
        );
    }
}

/// The next connection; a failed accept (EMFILE and friends) is logged
/// (after `prefix`) and tried again after a pause, instead of spinning.
pub(super) async fn accept(
    listener: &TcpListener,
    prefix: &str,
) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(x) => return x,
            Err(e) => {
                tracing::warn!("{prefix}accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How hyper serves a connection handed to it (HTTP/1.1 or h2c).
fn http_builder(conns: &Connections) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // A client that shuts its sending side after its request still gets the answer.
        .half_close(true)
        // Also bounds an idle keep-alive connection's wait for its next request.
        .header_read_timeout(conns.limits.keepalive_timeout)
        // A longer head is refused (431) and the connection closed.
        .max_buf_size(MAX_REQUEST_HEAD)
        .writev(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_REQUEST_HEAD as u32);
    builder
}

/// The longest request head a client may send (an ALB's limit too): the
/// line and headers of HTTP/1.1, the header list of HTTP/2. Past it, hyper
/// stops buffering a head still coming (431), and `head_too_large` refuses
/// one that came whole in a read.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// 431 for a head over `MAX_REQUEST_HEAD`, measured as written (the
/// request line, and `name: value` and a line end per header).
fn head_too_large<B>(req: &Request<B>) -> Option<ApiError> {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len());
    let size = req
        .headers()
        .iter()
        .fold(req.method().as_str().len() + target + 12, |n, (k, v)| {
            n + k.as_str().len() + v.len() + 4
        });
    (size > MAX_REQUEST_HEAD).then(|| {
        ApiError::headers_too_large(format!(
            "the request head is {size} bytes; at most {MAX_REQUEST_HEAD} are accepted"
        ))
    })
}

/// What a connection takes from its proxy thread.
struct ThreadParts {
    app: Arc<App>,
    stop: watch::Receiver<bool>,
    /// Held while the connection is on the direct path.
    alive: tokio::sync::mpsc::Sender<()>,
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
}

/// One accepted connection, from its first byte to its close: the direct
/// path first, then hyper from the first request that needs it.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    thread: ThreadParts,
) {
    let ThreadParts {
        app,
        mut stop,
        alive,
        builder,
        watcher,
    } = thread;
    if !first_byte(&stream, &conn).await {
        return;
    }
    let health_only = conn.health_only();
    // Requests for agents go the direct way; the connection
    // turns to hyper at the first request that needs it.
    let (stream, read) = if health_only {
        (stream, Vec::new())
    } else {
        let _alive = alive;
        match app.proxy.serve_direct(stream, peer, &conn, &mut stop).await {
            Served::Done => return,
            Served::General(stream, read) => (stream, read),
        }
    };
    let general = GeneralPath {
        client: client_socket(&stream, &read),
        app,
        conn,
        peer,
        health_only,
    };
    general.serve(stream, read, builder, watcher).await;
}

/// Whether the connection sent a byte: nothing is spent on it until then.
/// `peek` waits for one (readiness alone can be a false positive).
async fn first_byte(stream: &tokio::net::TcpStream, conn: &Conn) -> bool {
    let mut probe = [0u8; 1];
    tokio::select! {
        r = stream.peek(&mut probe) => matches!(r, Ok(n) if n > 0),
        () = conn.expired() => false,
    }
}

/// A second descriptor of the socket, to notice a client that leaves
/// while its request waits in an agent's queue: for connections that came
/// to hyper's path with a request for an agent only (`read`: what the
/// direct path read of it).
fn client_socket(stream: &tokio::net::TcpStream, read: &[u8]) -> Option<ClientSocket> {
    first_for_an_agent(read)
        .then(|| ClientSocket::of(stream))
        .flatten()
}

/// What hyper's path serves a connection's requests with.
#[derive(Clone)]
struct GeneralPath {
    app: Arc<App>,
    conn: Arc<Conn>,
    peer: SocketAddr,
    health_only: bool,
    client: Option<ClientSocket>,
}

impl GeneralPath {
    /// Serves the connection (`read`: what was read of it already) until
    /// it closes, its wait for a request passes its deadline or it is
    /// evicted (hyper's own header timeout is the keep-alive one).
    async fn serve(
        self,
        stream: tokio::net::TcpStream,
        read: Vec<u8>,
        builder: auto::Builder<TokioExecutor>,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let conn = Arc::clone(&self.conn);
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| self.request(req));
        conn.watch();
        let io = TokioIo::new(Reading::new(Rewind::new(stream, read), Arc::clone(&conn)));
        let served = builder.serve_connection_with_upgrades(io, svc);
        tokio::select! {
            _ = watcher.watch(served.into_owned()) => {}
            () = conn.expired() => {}
        }
    }

    /// One request, in flight (never evicted) from now until its response
    /// body is written or dropped.
    fn request(
        &self,
        req: Request<Incoming>,
    ) -> impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static
    {
        let in_flight = self.conn.request();
        let this = self.clone();
        async move {
            let Some(in_flight) = in_flight else {
                return Ok(too_many_connections());
            };
            let resp = this
                .app
                .serve(req, this.peer, this.health_only, this.client.as_ref())
                .await;
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                // A WebSocket: in flight until it closes (its socket,
                // which holds the connection's slot, goes with it).
                this.conn.upgraded();
            }
            Ok(resp.map(|b| {
                Body::new(Ending {
                    inner: b,
                    _in_flight: in_flight,
                })
            }))
        }
    }
}

/// The running proxy threads.
pub struct Listening {
    stop: watch::Sender<bool>,
    drain: watch::Sender<Duration>,
    done: Vec<oneshot::Receiver<()>>,
    pub threads: usize,
}

/// Serves `listener` on proxy threads: `/agents/...` and gRPC through the
/// proxy, everything else through `api` on the calling runtime.
pub fn start(
    listener: std::net::TcpListener,
    routes: Arc<RouteTable>,
    api: axum::Router,
    opts: ProxyOptions,
    unknown: Arc<AtomicU64>,
    control: crate::control::Control,
    conns: Arc<Connections>,
) -> anyhow::Result<Listening> {
    // The kernel's longest accept queue (net.core.somaxconn), not std's 128:
    // a burst of connections beyond the queue has its SYNs dropped, and a
    // health check's connection would wait a second for its retransmission.
    if let Err(e) = nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXCONN) {
        tracing::warn!("could not lengthen the accept queue: {e}");
    }
    let main = tokio::runtime::Handle::current();
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
                opts.clone(),
                Arc::clone(&unknown),
                control.clone(),
            ),
            api: api.clone(),
            main: main.clone(),
        });
        let (stop, drain, conns) = (stop_rx.clone(), drain_rx.clone(), Arc::clone(&conns));
        let (done_tx, done_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("par-proxy-{i}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        rt.spawn(timer_floor());
                        rt.block_on(accept_loop(l, app, conns, stop, drain))
                    }
                    Err(e) => tracing::error!("failed to start a proxy thread: {e}"),
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| anyhow::anyhow!("failed to start a proxy thread: {e}"))?;
        done.push(done_rx);
    }
    Ok(Listening {
        stop: stop_tx,
        drain: drain_tx,
        done,
        threads,
    })
}

/// Keeps a timer pending on a proxy thread's runtime, never more than
/// `FLOOR` away. Tokio wakes its own driver (a write to an eventfd, and an
/// extra turn of the loop) whenever a timer is set to fire before every
/// timer already pending; with this one always pending, the timers each
/// request sets (header, keep-alive and reply timeouts, seconds away) are
/// later than it, and set without that wake-up.
async fn timer_floor() {
    const FLOOR: Duration = Duration::from_millis(500);
    let mut tick = tokio::time::interval(FLOOR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

impl Listening {
    /// Stops accepting, and lets open connections finish within `budget`.
    pub async fn shutdown(self, budget: Duration) {
        let _ = self.drain.send(budget);
        super::proxy::upgrade::close_all(budget.min(Duration::from_secs(3))).await;
        let _ = self.stop.send(true);
        let all = futures_util::future::join_all(self.done);
        let _ = tokio::time::timeout(budget + Duration::from_millis(500), all).await;
    }
}
