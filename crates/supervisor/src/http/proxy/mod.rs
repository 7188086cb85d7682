//! The hot path: `/agents/{id}/...` and gRPC calls forwarded to one of the
//! agent's ready workers (`admit`) over pooled keep-alive connections, bodies
//! streamed both ways (`body`), headers passed on, removed and added by the
//! forwarding rules (`policy`) on each of the two paths: the direct one
//! (`direct`, bytes in and out) and hyper's (here), and on the WebSocket
//! handshake (`upgrade`). A request that never reached a worker (connection
//! refused, a pooled connection found closed) goes to another one.

mod admit;
mod body;
mod conns;
mod direct;
pub mod framing;
mod gone;
pub mod headers;
mod hint;
mod idle;
pub mod policy;
mod span;
pub mod target;
mod try_failed;
pub mod upgrade;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::error::ApiError;
use super::leftover::Guarded;
use super::route_table::RouteTable;
use crate::control::Control;
use crate::model::WorkerId;
use body::{Replayable, RequestGuard, Silence, Tracked, Unsent};
use conns::Lease;
use futures_util::FutureExt as _;
use futures_util::TryFutureExt as _;
use headers::{grpc_error, with_request_id, X_AGENT_ID};
use hint::header_hint;
use hyper::body::Incoming;
use policy::{Forwarded, RequestRules, ResponseRules, X_PAR_PROCESS, X_REQUEST_ID};
use try_failed::TryFailed;

pub use direct::Served;
pub use gone::ClientSocket;

/// Tries of one request on different workers, when it never reached one.
const TRIES: usize = 3;
/// Longest wait for a worker to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle upstream connections are closed after this.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Proxy settings.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Longest wait for the worker's response head (→ 504).
    pub header_timeout: Duration,
    /// Longest silence inside a response body (streams may otherwise stay open forever).
    pub idle_timeout: Duration,
    /// One log line per proxied request (off by default: it costs CPU).
    pub access_log: bool,
    /// `Authorization` carrying this is never passed on: the admin token
    /// must not reach agent code, whoever sends it along.
    pub admin: Option<crate::http::api::auth::AdminCredential>,
}

pub struct Proxy {
    routes: Arc<RouteTable>,
    /// This proxy thread's HTTP/1.1 connections to workers (general path).
    conns: Arc<conns::Conns<Replayable>>,
    /// This proxy thread's sockets to workers (direct path).
    sockets: direct::Sockets,
    /// gRPC calls, multiplexed on HTTP/2 connections.
    http2: Client<HttpConnector, Replayable>,
    opts: ProxyOptions,
    /// Requests for agents that do not exist (shared by every proxy thread).
    unknown: Arc<AtomicU64>,
    /// To wake agents scaled to zero.
    control: Control,
}

impl Proxy {
    pub fn new(
        routes: Arc<RouteTable>,
        opts: ProxyOptions,
        unknown: Arc<AtomicU64>,
        control: Control,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let http2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Proxy {
            routes,
            conns: conns::Conns::new(POOL_IDLE_TIMEOUT, CONNECT_TIMEOUT),
            sockets: direct::Sockets::new(POOL_IDLE_TIMEOUT, CONNECT_TIMEOUT),
            http2,
            opts,
            unknown,
            control,
        }
    }

    /// `/agents/{id}{rest}` → `{rest}` on the agent's worker (`/` when `rest` is empty).
    /// `client` is the HTTP/1 connection's socket, watched while the request
    /// waits in the agent's queue.
    pub async fn forward(
        &self,
        req: Request<Guarded>,
        peer: SocketAddr,
        client: Option<&ClientSocket>,
    ) -> Response<Body> {
        let Some(target::Target {
            agent_id,
            path_and_query,
            prefix,
        }) = target::split(req.uri().path(), req.uri().query())
        else {
            return ApiError::not_found("not an agent path").into_response_body();
        };
        if upgrade::is_websocket(&req) {
            // A socket holds no slot of the agent's concurrency limit.
            return self
                .websocket(req, &agent_id, &path_and_query, &prefix, peer)
                .await;
        }
        let prefix = Some(prefix.as_str());
        self.send(req, &agent_id, path_and_query, prefix, peer, false, client)
            .await
    }

    /// A gRPC call (HTTP/2, `content-type: application/grpc`), agent from `x-agent-id`.
    pub async fn grpc(&self, req: Request<Guarded>, peer: SocketAddr) -> Response<Body> {
        let Some(agent_id) = req
            .headers()
            .get(&X_AGENT_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            return grpc_error(3, "missing x-agent-id metadata naming the agent");
        };
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        self.send(req, &agent_id, pq, None, peer, true, None).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        req: Request<Guarded>,
        agent_id: &str,
        path_and_query: String,
        prefix: Option<&str>,
        peer: SocketAddr,
        grpc: bool,
        client: Option<&ClientSocket>,
    ) -> Response<Body> {
        let started = Instant::now();
        let (mut parts, mut body) = req.into_parts();
        let hint = self.session_hint(agent_id, &parts, &mut body).await;
        // Whether the client may be sent an interim response (see `gone`).
        let http11 = parts.version == http::Version::HTTP_11;
        let mut ip = [0u8; 45];
        let forwarded = Forwarded {
            peer_ip: policy::ip_text(peer.ip(), &mut ip),
            prefix: prefix.map(str::as_bytes),
        };
        // The request's span (tracing on): it continues the client's trace
        // context, and the worker continues it (the rules write its context).
        let mut span = span::of_request(&parts.headers, || span::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            client: String::from_utf8_lossy(forwarded.peer_ip)
                .into_owned()
                .into(),
            agent_id,
            grpc,
            session: hint.key(),
        });
        let request_id = RequestRules {
            trace: span.as_ref().map(|s| s.context()),
            ..self.request_rules(grpc)
        }
        .apply(&mut parts.headers, Some(&forwarded));
        // For the access log (the span itself may end with the body).
        let trace_ids = span.as_ref().map(|s| s.ids());
        // The path was already validated by the server's parser; this only re-checks it.
        let Ok(pq) = PathAndQuery::try_from(path_and_query) else {
            return ApiError::bad_request("the request target is not valid").into_response_body();
        };
        if !grpc {
            // The pooled HTTP/1.1 client speaks HTTP/1.1 whatever the client spoke.
            parts.version = http::Version::HTTP_11;
            // A body without a length goes on chunked whatever the method:
            // left to itself, hyper's client sends a GET's as none.
            if !parts.headers.contains_key(http::header::CONTENT_LENGTH)
                && !http_body::Body::is_end_stream(&body)
            {
                parts.headers.insert(
                    http::header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
            }
        }
        let body = Unsent::new(body);
        let mut avoid: Vec<WorkerId> = Vec::new();
        let mut response = loop {
            let gone = async {
                match client {
                    Some(c) => c.closed(http11).await,
                    None => std::future::pending().await,
                }
            };
            // Nobody reads the reply made when the client left.
            let admitted = self
                .admit_unless_gone(agent_id, &avoid, &hint, gone)
                .await
                .unwrap_or_else(|| {
                    Err(ApiError::unavailable(
                        "the client went away while its request waited",
                        1,
                    ))
                });
            let admitted = match admitted {
                Ok(a) => a,
                Err(e) if grpc => break grpc_status_of(&e),
                Err(e) => break with_request_id(e.into_response_body(), &parts.headers),
            };
            if let Some(s) = span.as_mut() {
                span::admitted(s, started, &admitted);
            }
            let upstream = Arc::clone(&admitted.upstream);
            let watch = direct::watch(
                &admitted,
                !matches!(parts.method, Method::GET | Method::HEAD),
            );
            let (session, rebound) = (admitted.session, admitted.rebound);
            let mut req = Request::new(body.body());
            *req.method_mut() = parts.method.clone();
            *req.version_mut() = parts.version;
            *req.headers_mut() = parts.headers.clone();
            let guard = RequestGuard::new(Arc::clone(&upstream), admitted.pool, admitted.slot);
            let sent = if grpc {
                self.try_h2(&upstream, &pq, req)
                    .map_err(|e| e.into())
                    .left_future()
            } else {
                self.try_h1(&upstream, &pq, req).right_future()
            };
            let gone = async {
                match client {
                    Some(c) => c.closed(http11).await,
                    None => std::future::pending().await,
                }
            };
            // The worker's time only: not the queue's, not a slow upload's.
            let sent = tokio::select! {
                r = sent => Ok(r),
                s = body.silence(self.opts.header_timeout) => Err(Some(s)),
                // The worker's socket closes: the agent sees the request cancelled.
                () = gone => Err(None),
            };
            match sent {
                Ok(Ok((resp, lease))) => {
                    let (mut rp, rb) = resp.into_parts();
                    ResponseRules {
                        grpc,
                        request_id: &request_id,
                        process: &upstream.process_id,
                        session: session.as_deref(),
                        rebound,
                    }
                    .apply(&mut rp.headers);
                    upstream
                        .metrics
                        .observe(rp.status.as_u16(), started.elapsed());
                    if let Some(s) = span.as_mut() {
                        span::answered(s, rp.status.as_u16(), &upstream, started, avoid.len());
                    }
                    let rb = Tracked::new(rb, self.opts.idle_timeout, lease, guard)
                        .watched(watch)
                        .traced(span.take());
                    break Response::from_parts(rp, Body::new(rb));
                }
                Ok(Err(_)) if body.client_failed() => {
                    drop(guard);
                    break ApiError::bad_request(
                        "the request body could not be read (malformed or cut short)",
                    )
                    .into_response_body();
                }
                Ok(Err(f)) if avoid.len() + 1 < TRIES && f.retriable(&body, &parts.method) => {
                    // It never reached the worker: another one may take it.
                    drop(guard);
                    if let Some(s) = span.as_mut() {
                        span::retry(s, &upstream);
                    }
                    avoid.push(upstream.worker);
                }
                Ok(Err(f)) => {
                    drop(guard);
                    if let Some(s) = span.as_mut() {
                        span::worker_failed(s, &upstream);
                    }
                    break self.upstream_failed(&f, &upstream, started, grpc).await;
                }
                Err(Some(Silence::Worker)) => {
                    break self.header_timed_out(&upstream, started, grpc)
                }
                Err(Some(Silence::Client)) => {
                    drop(guard);
                    break client_body_timed_out(&parts.headers);
                }
                Err(None) => {
                    drop(guard);
                    if let Some(s) = span.as_mut() {
                        span::client_gone(s);
                    }
                    break ApiError::unavailable("the client went away during its request", 1)
                        .into_response_body();
                }
            }
        };
        if !response.headers().contains_key(&X_REQUEST_ID) {
            response
                .headers_mut()
                .insert(X_REQUEST_ID.clone(), request_id);
        }
        // A reply made here (no worker's body to carry the span to its end).
        if let Some(s) = span {
            span::made_here(s, response.status().as_u16());
        }
        if self.opts.access_log {
            log_access(
                agent_id,
                parts.method.as_str(),
                pq.path(),
                response.status().as_u16(),
                started,
                trace_ids,
            );
        }
        response
    }

    /// One try over HTTP/1.1: on a pooled connection of this proxy thread
    /// when one is free (a closed one gives the request back, and the next
    /// is tried), else on a new one.
    async fn try_h1(
        &self,
        upstream: &super::route_table::Upstream,
        pq: &PathAndQuery,
        mut req: Request<Replayable>,
    ) -> Result<(Response<Incoming>, Option<Lease<Replayable>>), TryFailed> {
        *req.uri_mut() = Uri::from(pq.clone());
        if !req.headers().contains_key(http::header::HOST) {
            // An HTTP/2 client's request has none (its :authority is the supervisor's).
            if let Ok(host) = HeaderValue::from_str(upstream.authority.as_str()) {
                req.headers_mut().insert(http::header::HOST, host);
            }
        }
        loop {
            let (mut sender, pooled) = match self.conns.checkout(upstream.worker) {
                Some(s) => (s, true),
                None => match self.conns.connect(upstream.port).await {
                    Ok(s) => (s, false),
                    Err(e) => return Err(TryFailed::connect(e)),
                },
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Some(self.conns.lease(upstream.worker, sender)))),
                Err(mut e) => match e.take_message() {
                    Some(back) if pooled => req = back,
                    back => return Err(TryFailed::http(e.into_error(), back.is_some())),
                },
            }
        }
    }

    /// One gRPC try over the HTTP/2 client (its connections multiplex calls).
    async fn try_h2(
        &self,
        upstream: &super::route_table::Upstream,
        pq: &PathAndQuery,
        mut req: Request<Replayable>,
    ) -> Result<(Response<Incoming>, Option<Lease<Replayable>>), hyper_util::client::legacy::Error>
    {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = Some(upstream.authority.clone());
        uri.path_and_query = Some(pq.clone());
        // Parts made of a valid path and authority always make a URI.
        if let Ok(uri) = Uri::from_parts(uri) {
            *req.uri_mut() = uri;
        }
        self.http2.request(req).await.map(|r| (r, None))
    }

    /// 504: the worker did not send its response head in time.
    fn header_timed_out(
        &self,
        upstream: &super::route_table::Upstream,
        started: Instant,
        grpc: bool,
    ) -> Response<Body> {
        upstream.metrics.observe_failed(504, started.elapsed());
        let msg = format!(
            "agent '{}' did not answer within {} s",
            upstream.agent_id,
            self.opts.header_timeout.as_secs_f64()
        );
        if grpc {
            grpc_error(4, &msg)
        } else {
            ApiError::timeout(msg).into_response_body()
        }
    }

    /// The forwarding rules for a request to a worker (`policy`).
    fn request_rules(&self, grpc: bool) -> RequestRules<'_> {
        RequestRules {
            admin: self.opts.admin.as_ref(),
            grpc,
            trace: None,
        }
    }

    /// The worker failed mid-request: "restarting" (503) if its route is
    /// replaced a moment later (its exit reaches the state machine just after
    /// its sockets close), else a 502.
    async fn upstream_failed(
        &self,
        e: &TryFailed,
        upstream: &super::route_table::Upstream,
        started: Instant,
        grpc: bool,
    ) -> Response<Body> {
        let (status, msg) = if self.replaced_soon(upstream).await {
            (
                503,
                format!(
                    "agent '{}' is restarting (its worker went away during the request)",
                    upstream.agent_id
                ),
            )
        } else {
            let detail = par_telemetry::error_chain(&*e.error);
            let what = if e.connect {
                "did not accept the connection"
            } else {
                "failed to answer"
            };
            (
                502,
                format!("agent '{}' worker {what}: {detail}", upstream.agent_id),
            )
        };
        upstream.metrics.observe_failed(status, started.elapsed());
        let mut resp = match (grpc, status) {
            (true, _) => grpc_error(14, &msg),
            (false, 503) => ApiError::unavailable(msg, 1).into_response_body(),
            _ => ApiError::bad_gateway(msg).into_response_body(),
        };
        // The process that failed it.
        resp.headers_mut()
            .insert(X_PAR_PROCESS.clone(), upstream.process_id.clone());
        resp
    }

    /// Whether the route stops pointing at `upstream` within a short wait
    /// (told by the table's publishes, not polled).
    async fn replaced_soon(&self, upstream: &super::route_table::Upstream) -> bool {
        let mut rx = self.routes.subscribe();
        let serves = |t: &Arc<super::route_table::Table>| {
            matches!(
                t.get(&*upstream.agent_id),
                Some(super::route_table::Route::Ready { upstreams, .. })
                    if upstreams.iter().any(|u| u.worker == upstream.worker)
            )
        };
        tokio::time::timeout(Duration::from_millis(250), rx.wait_for(|t| !serves(t)))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// 408: the client stopped sending its request body midway (the worker
/// had part of it; its connection is closed).
fn client_body_timed_out(headers: &http::HeaderMap) -> Response<Body> {
    let e = ApiError {
        status: StatusCode::REQUEST_TIMEOUT,
        code: "request_timeout",
        message: "the request body stopped arriving".into(),
        details: None,
        retry_after_secs: None,
    };
    let mut r = with_request_id(e.into_response_body(), headers);
    r.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A gRPC status for an admission error: NOT_FOUND for an unknown agent,
/// UNAVAILABLE otherwise.
fn grpc_status_of(e: &ApiError) -> Response<Body> {
    let code = if e.status == StatusCode::NOT_FOUND {
        5
    } else {
        14
    };
    grpc_error(code, &e.message)
}

/// The access-log line of one proxied request, the same on both paths:
/// `path` as the worker got it, without its query.
fn log_access(
    agent: &str,
    method: &str,
    path: &str,
    status: u16,
    started: Instant,
    ids: Option<(par_telemetry::trace::TraceId, par_telemetry::trace::SpanId)>,
) {
    let (trace_id, span_id) = span::log_ids(ids);
    tracing::info!(
        target: "par::access",
        agent = %agent,
        method = %method,
        path = %path,
        status,
        ms = started.elapsed().as_secs_f64() * 1000.0,
        trace_id = %trace_id,
        span_id = %span_id,
        "proxied"
    );
}
