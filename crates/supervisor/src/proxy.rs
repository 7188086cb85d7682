//! The hot path: `/agents/{id}/...` and gRPC calls forwarded to the agent's
//! ready worker over pooled keep-alive connections, bodies streamed both ways.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::ApiError;
use crate::routes::{Route, RouteTable, Upstream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_AGENT_ID: HeaderName = HeaderName::from_static("x-agent-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// Proxy settings.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Longest wait for the worker's response head (→ 504).
    pub header_timeout: Duration,
    /// Longest silence inside a response body (streams may otherwise stay open forever).
    pub idle_timeout: Duration,
    /// One log line per proxied request (off by default: it costs CPU).
    pub access_log: bool,
}

pub struct Proxy {
    routes: Arc<RouteTable>,
    http1: Client<HttpConnector, Incoming>,
    http2: Client<HttpConnector, Incoming>,
    opts: ProxyOptions,
    /// Requests for agents that do not exist (shared by every proxy thread).
    unknown: Arc<AtomicU64>,
}

impl Proxy {
    pub fn new(routes: Arc<RouteTable>, opts: ProxyOptions, unknown: Arc<AtomicU64>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Proxy {
            routes,
            http1,
            http2,
            opts,
            unknown,
        }
    }

    /// `/agents/{id}{rest}` → `{rest}` on the agent's worker (`/` when `rest` is empty).
    pub async fn forward(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        const PREFIX: &str = "/agents/";
        let path = req.uri().path();
        let after = path.get(PREFIX.len()..).unwrap_or("");
        let id_len = after.find('/').unwrap_or(after.len());
        let agent_id = &after[..id_len];
        let upstream = match self.route(agent_id) {
            Ok(u) => u,
            Err(e) => return with_request_id(e.into_response_body(), req.headers()),
        };
        let rest = &after[id_len..];
        let rest = if rest.is_empty() { "/" } else { rest };
        let path_and_query = match req.uri().query() {
            Some(q) => {
                let mut pq = String::with_capacity(rest.len() + 1 + q.len());
                pq.push_str(rest);
                pq.push('?');
                pq.push_str(q);
                pq
            }
            None => rest.to_owned(),
        };
        let prefix = HeaderValue::from_str(&path[..PREFIX.len() + id_len]).ok();
        if crate::upgrade::is_websocket(&req) {
            let opts = crate::upgrade::Options {
                connect_timeout: Duration::from_secs(5),
                header_timeout: self.opts.header_timeout,
                idle_timeout: self.opts.idle_timeout,
            };
            return crate::upgrade::proxy(req, upstream, &path_and_query, prefix, peer, opts).await;
        }
        self.send(req, upstream, path_and_query, prefix, peer, false)
            .await
    }

    /// A gRPC call (HTTP/2, `content-type: application/grpc`), agent from `x-agent-id`.
    pub async fn grpc(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let Some(agent_id) = req
            .headers()
            .get(&X_AGENT_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            return grpc_error(3, "missing x-agent-id metadata naming the agent");
        };
        let upstream = match self.route(&agent_id) {
            Ok(u) => u,
            Err(e) => {
                let code = if e.status == StatusCode::NOT_FOUND {
                    5
                } else {
                    14
                };
                return grpc_error(code, &e.message);
            }
        };
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        self.send(req, upstream, pq, None, peer, true).await
    }

    fn route(&self, agent_id: &str) -> Result<Arc<Upstream>, ApiError> {
        match self.routes.get(agent_id) {
            Some(Route::Ready(u)) => Ok(u),
            Some(Route::NotReady {
                state,
                retry_after_secs,
                reason,
            }) => {
                let mut msg = format!(
                    "agent '{agent_id}' is not ready (state: {})",
                    state.as_str()
                );
                if let Some(r) = reason {
                    msg.push_str(": ");
                    msg.push_str(&r);
                }
                Err(ApiError::unavailable(msg, retry_after_secs))
            }
            None => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
                Err(ApiError::not_found(format!("no agent '{agent_id}'")))
            }
        }
    }

    /// Whether the route stops pointing at `upstream` within a short wait.
    async fn replaced_soon(&self, upstream: &Upstream) -> bool {
        let deadline = Instant::now() + Duration::from_millis(250);
        loop {
            match self.routes.get(&upstream.agent_id) {
                Some(Route::Ready(u)) if u.worker == upstream.worker => {}
                _ => return true,
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn send(
        &self,
        req: Request<Incoming>,
        upstream: Arc<Upstream>,
        path_and_query: String,
        prefix: Option<HeaderValue>,
        peer: SocketAddr,
        grpc: bool,
    ) -> Response<Body> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        // The pooled client needs an absolute URI; the path was already
        // validated by the server's parser, so this only re-checks it.
        let pq = match PathAndQuery::try_from(path_and_query) {
            Ok(pq) => pq,
            Err(_) => {
                return ApiError::bad_request("the request target is not valid")
                    .into_response_body()
            }
        };
        let mut uri_parts = http::uri::Parts::default();
        uri_parts.scheme = Some(http::uri::Scheme::HTTP);
        uri_parts.authority = Some(upstream.authority.clone());
        uri_parts.path_and_query = Some(pq);
        let uri = match Uri::from_parts(uri_parts) {
            Ok(u) => u,
            Err(_) => {
                return ApiError::bad_request("the request target is not valid")
                    .into_response_body()
            }
        };
        let request_id = match parts.headers.get(&X_REQUEST_ID) {
            Some(v) => v.clone(),
            None => {
                let id = new_request_id();
                parts.headers.insert(X_REQUEST_ID.clone(), id.clone());
                id
            }
        };
        strip_hop_by_hop(&mut parts.headers, grpc);
        if !grpc {
            append_forwarded(&mut parts.headers, peer, prefix);
        }
        parts.uri = uri;
        if !grpc {
            // The pooled HTTP/1.1 client speaks HTTP/1.1 whatever the client spoke.
            parts.version = http::Version::HTTP_11;
        }
        let access = self
            .opts
            .access_log
            .then(|| (parts.method.clone(), parts.uri.path().to_owned()));
        let upstream_req = Request::from_parts(parts, body);

        let guard = InFlight::new(Arc::clone(&upstream));
        let client = if grpc { &self.http2 } else { &self.http1 };
        let result =
            tokio::time::timeout(self.opts.header_timeout, client.request(upstream_req)).await;
        let mut response = match result {
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers, grpc);
                if !parts.headers.contains_key(&X_REQUEST_ID) {
                    parts
                        .headers
                        .insert(X_REQUEST_ID.clone(), request_id.clone());
                }
                upstream
                    .metrics
                    .observe(parts.status.as_u16(), started.elapsed());
                let body = Tracked {
                    inner: body,
                    idle: self.opts.idle_timeout,
                    sleep: None,
                    last: Instant::now(),
                    _guard: guard,
                };
                Response::from_parts(parts, Body::new(body))
            }
            Ok(Err(e)) if self.replaced_soon(&upstream).await => {
                // The worker just died: its exit reaches the state task a moment
                // after its sockets close. That is "restarting" (503), not a 502.
                let _ = e;
                upstream
                    .metrics
                    .proxy_errors
                    .fetch_add(1, Ordering::Relaxed);
                upstream.metrics.observe(503, started.elapsed());
                let msg = format!(
                    "agent '{}' is restarting (its worker went away during the request)",
                    upstream.agent_id
                );
                if grpc {
                    grpc_error(14, &msg)
                } else {
                    ApiError::unavailable(msg, 1).into_response_body()
                }
            }
            Ok(Err(e)) => {
                upstream
                    .metrics
                    .proxy_errors
                    .fetch_add(1, Ordering::Relaxed);
                let detail = error_chain(&e);
                let msg = if e.is_connect() {
                    format!(
                        "agent '{}' worker did not accept the connection: {detail}",
                        upstream.agent_id
                    )
                } else {
                    format!(
                        "agent '{}' worker failed to answer: {detail}",
                        upstream.agent_id
                    )
                };
                upstream.metrics.observe(502, started.elapsed());
                if grpc {
                    grpc_error(14, &msg)
                } else {
                    ApiError::bad_gateway(msg).into_response_body()
                }
            }
            Err(_) => {
                upstream
                    .metrics
                    .proxy_errors
                    .fetch_add(1, Ordering::Relaxed);
                upstream.metrics.observe(504, started.elapsed());
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
        };
        if !response.headers().contains_key(&X_REQUEST_ID) {
            response
                .headers_mut()
                .insert(X_REQUEST_ID.clone(), request_id);
        }
        if let Some((method, path)) = access {
            tracing::info!(
                target: "par::access",
                agent = %upstream.agent_id,
                %method,
                %path,
                status = response.status().as_u16(),
                ms = started.elapsed().as_secs_f64() * 1000.0,
                "proxied"
            );
        }
        response
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn with_request_id(mut resp: Response<Body>, req: &HeaderMap) -> Response<Body> {
    let id = req
        .get(&X_REQUEST_ID)
        .cloned()
        .unwrap_or_else(new_request_id);
    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
    resp
}

/// 32 random hex digits (no formatting machinery: it runs per request).
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut v = fastrand::u128(..);
    let mut buf = [0u8; 32];
    for b in buf.iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1), and those the
/// `Connection` header names. gRPC keeps `te: trailers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, grpc: bool) {
    if let Some(conn) = headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        for name in conn.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Ok(name) = HeaderName::try_from(name) {
                if !(grpc && name == header::TE) {
                    headers.remove(name);
                }
            }
        }
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if !grpc {
        headers.remove(header::TE);
    }
}

pub fn append_forwarded(headers: &mut HeaderMap, peer: SocketAddr, prefix: Option<HeaderValue>) {
    let ip = peer.ip().to_string();
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if let Some(p) = prefix {
        headers.insert(X_FORWARDED_PREFIX.clone(), p);
    }
}

/// A trailers-only gRPC error response.
pub fn grpc_error(code: u8, message: &str) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    let encoded =
        percent_encoding::utf8_percent_encode(message, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    if let Ok(v) = HeaderValue::try_from(encoded) {
        h.insert("grpc-message", v);
    }
    resp
}

/// Counts a request in flight until its response body is dropped.
struct InFlight(Arc<Upstream>);

impl InFlight {
    fn new(u: Arc<Upstream>) -> Self {
        u.inflight.fetch_add(1, Ordering::AcqRel);
        InFlight(u)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The worker's response body, passed through frame by frame (nothing is
/// buffered), ended with an error after `idle` without a frame.
struct Tracked {
    inner: Incoming,
    idle: Duration,
    /// Armed only when the body first has to wait, so short bodies cost no timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    last: Instant,
    _guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.last = Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.last + this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
                loop {
                    match sleep.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) => {
                            let deadline = this.last + this.idle;
                            if Instant::now() >= deadline {
                                return Poll::Ready(Some(Err(
                                    "the agent's response stream was idle too long".into(),
                                )));
                            }
                            sleep.as_mut().reset(deadline.into());
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future as _;
