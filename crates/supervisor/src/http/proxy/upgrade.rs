//! WebSocket upgrades through the proxy: the client's handshake goes to the
//! agent's worker on a connection of its own; when the worker switches
//! protocols both sides are upgraded and frames are relayed as they come
//! (`relay`), both directions in one task, until one side closes, the socket
//! idles too long, or the worker goes away — then the client gets close code
//! 1012 (service restart) so that it reconnects instead of hanging.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::policy::{ip_text, Forwarded, RequestRules, ResponseRules, X_REQUEST_ID};
use super::span;
use crate::http::error::ApiError;
use crate::http::leftover::Guarded;
use crate::http::route_table::{Pool, Upstream};

mod relay;

/// Close code for a worker that went away mid-socket (RFC 6455 registry).
pub const SERVICE_RESTART: u16 = 1012;
/// Close code for an idle socket and for the supervisor shutting down.
pub const GOING_AWAY: u16 = 1001;
/// Close code for a message or frame over the limit (RFC 6455 §7.4.1).
pub const TOO_BIG: u16 = 1009;
/// Close code for a frame the protocol does not allow.
pub const PROTOCOL_ERROR: u16 = 1002;
/// Limits of one proxied WebSocket.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Longest wait to connect to the worker.
    pub connect_timeout: Duration,
    /// Longest wait for the worker's answer to the handshake (→ 504).
    pub header_timeout: Duration,
    /// A socket with no message either way for this long is closed (1001).
    pub idle_timeout: Duration,
}

/// Whether the request is a WebSocket handshake: an HTTP/1.1 GET with
/// `Upgrade: websocket` (RFC 6455 §4.1). Another method with that header
/// is an ordinary request, its `Upgrade` dropped as any hop-by-hop header.
pub fn is_websocket<B>(req: &Request<B>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.method() == Method::GET
        && req
            .headers()
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Process-wide, as the proxy threads are: the relays open now, and the
/// signal that closes them when the supervisor shuts down.
struct Relays {
    closing: watch::Sender<bool>,
    open: watch::Sender<usize>,
    /// `websocket_max_message` and `websocket_max_frame`.
    max_message: AtomicUsize,
    max_frame: AtomicUsize,
}

fn relays() -> &'static Relays {
    static RELAYS: OnceLock<Relays> = OnceLock::new();
    RELAYS.get_or_init(|| Relays {
        closing: watch::Sender::new(false),
        open: watch::Sender::new(0),
        max_message: AtomicUsize::new(16 << 20),
        max_frame: AtomicUsize::new(16 << 20),
    })
}

/// The largest message and frame either side may send through the relay
/// (`websocket_max_message`, `websocket_max_frame`); past them the sender
/// gets close 1009 and the other side 1001.
pub fn set_limits(max_message: usize, max_frame: usize) {
    relays().max_message.store(max_message, Ordering::Relaxed);
    // No frame can be larger than the message it belongs to.
    relays()
        .max_frame
        .store(max_frame.min(max_message), Ordering::Relaxed);
}

fn closing() -> &'static watch::Sender<bool> {
    &relays().closing
}

/// Closes every proxied WebSocket (1001 to both ends), refuses new ones, and
/// waits (at most `within`) until their closing handshakes are done: the
/// relays run on the proxy threads, which must not end under them.
pub async fn close_all(within: Duration) {
    closing().send_replace(true);
    let mut open = relays().open.subscribe();
    let _ = tokio::time::timeout(within, open.wait_for(|n| *n == 0)).await;
}

impl super::Proxy {
    /// A WebSocket handshake for `agent_id`: admitted (a session key in
    /// the header binds it like any request), forwarded to the worker with
    /// the forwarding rules applied (`policy`), traced and logged like any
    /// request up to the worker's answer; on 101 the client gets the
    /// worker's 101 and the two sockets are relayed in a task of the
    /// current runtime; any other answer is passed on.
    pub(super) async fn websocket(
        &self,
        mut req: Request<Guarded>,
        agent_id: &str,
        path_and_query: &str,
        prefix: &str,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let mut ip = [0u8; 45];
        let forwarded = Forwarded {
            peer_ip: ip_text(peer.ip(), &mut ip),
            prefix: Some(prefix.as_bytes()),
        };
        let hint = super::header_hint(req.headers());
        // The handshake's span (tracing on), as any request's: the worker
        // continues it, not the client's context.
        let mut span = span::of_request(req.headers(), || span::Request {
            method: req.method().as_str(),
            path: req.uri().path(),
            client: String::from_utf8_lossy(forwarded.peer_ip)
                .into_owned()
                .into(),
            agent_id,
            grpc: false,
            session: hint.key(),
        });
        let trace_ids = span.as_ref().map(|s| s.ids());
        let path = path_and_query.split('?').next().unwrap_or_default();
        let log = |status: u16| {
            if self.opts.access_log {
                super::log_access(agent_id, "GET", path, status, started, trace_ids);
            }
        };
        let admitted = match self.admit(agent_id, &[], &hint).await {
            Ok(a) => a,
            Err(e) => {
                let resp = super::with_request_id(e.into_response_body(), req.headers());
                log(resp.status().as_u16());
                if let Some(s) = span {
                    span::made_here(s, resp.status().as_u16());
                }
                return resp;
            }
        };
        if let Some(s) = span.as_mut() {
            span::admitted(s, started, &admitted);
        }
        let rules = RequestRules {
            trace: span.as_ref().map(|s| s.context()),
            ..self.request_rules(false)
        };
        let mut headers = req.headers().clone();
        let request_id = rules.apply(&mut headers, Some(&forwarded));
        let response_rules = ResponseRules {
            grpc: false,
            request_id: &request_id,
            process: &admitted.upstream.process_id,
            session: admitted.session.as_deref(),
            rebound: admitted.rebound,
        };
        let opts = Options {
            connect_timeout: super::CONNECT_TIMEOUT,
            header_timeout: self.opts.header_timeout,
            idle_timeout: self.opts.idle_timeout,
        };
        let upstream = Arc::clone(&admitted.upstream);
        let answer = handshake(
            &mut req,
            headers,
            (Arc::clone(&admitted.upstream), Arc::clone(&admitted.pool)),
            path_and_query,
            opts,
            started,
            &response_rules,
        )
        .await;
        let mut resp = match answer {
            Answer::Worker(resp) => {
                if let Some(mut s) = span {
                    span::answered(&mut s, resp.status().as_u16(), &upstream, started, 0);
                    s.end();
                }
                resp
            }
            Answer::MadeHere(resp) => {
                if let Some(s) = span {
                    span::made_here(s, resp.status().as_u16());
                }
                resp
            }
        };
        log(resp.status().as_u16());
        resp.headers_mut()
            .entry(X_REQUEST_ID.clone())
            .or_insert(request_id.clone());
        resp
    }
}

/// Who answered a handshake.
enum Answer {
    /// The worker: its 101, or its refusal passed on.
    Worker(Response<Body>),
    /// The supervisor: the worker could not be reached or did not answer.
    MadeHere(Response<Body>),
}

async fn handshake(
    req: &mut Request<Guarded>,
    headers: http::HeaderMap,
    (upstream, pool): (Arc<Upstream>, Arc<Pool>),
    path_and_query: &str,
    opts: Options,
    started: Instant,
    rules: &ResponseRules<'_>,
) -> Answer {
    let fail = |status: u16, e: ApiError| {
        upstream.metrics.observe_failed(status, started.elapsed());
        Answer::MadeHere(e.into_response_body())
    };
    if *closing().borrow() {
        return fail(503, ApiError::shutting_down());
    }
    let client_side = hyper::upgrade::on(req);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream.port));
    let tcp = match tokio::time::timeout(opts.connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let msg = format!(
                "agent '{}' worker did not accept the connection: {e}",
                upstream.agent_id
            );
            return fail(502, ApiError::bad_gateway(msg));
        }
        Err(_) => {
            let msg = format!(
                "agent '{}' worker did not accept the connection in time",
                upstream.agent_id
            );
            return fail(504, ApiError::timeout(msg));
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
        Ok(x) => x,
        Err(e) => {
            return fail(
                502,
                ApiError::bad_gateway(format!("agent '{}' worker: {e}", upstream.agent_id)),
            )
        }
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(path_and_query)
        .version(http::Version::HTTP_11);
    if let Some(h) = builder.headers_mut() {
        *h = headers;
        h.insert(
            header::HOST,
            HeaderValue::from_str(upstream.authority.as_str())
                .unwrap_or(HeaderValue::from_static("127.0.0.1")),
        );
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        // The relay checks frames against the base protocol: no extension
        // (which would set the reserved bits) may be negotiated through it.
        h.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    }
    let Ok(upstream_req) = builder.body(http_body_util::Empty::<bytes::Bytes>::new()) else {
        return fail(
            400,
            ApiError::bad_request("the request target is not valid"),
        );
    };
    let mut resp =
        match tokio::time::timeout(opts.header_timeout, sender.send_request(upstream_req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let msg = format!(
                    "agent '{}' worker failed to answer the WebSocket handshake: {e}",
                    upstream.agent_id
                );
                return fail(502, ApiError::bad_gateway(msg));
            }
            Err(_) => {
                let msg = format!(
                    "agent '{}' did not answer the WebSocket handshake within {} s",
                    upstream.agent_id,
                    opts.header_timeout.as_secs_f64()
                );
                return fail(504, ApiError::timeout(msg));
            }
        };
    upstream
        .metrics
        .observe(resp.status().as_u16(), started.elapsed());
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused (403), no such route (404), ...: the worker's answer as it is.
        let (mut parts, body) = resp.into_parts();
        rules.apply(&mut parts.headers);
        return Answer::Worker(Response::from_parts(parts, Body::new(body)));
    }
    let worker_side = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    rules.apply(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let open = OpenSocket::new(Arc::clone(&upstream), pool);
    let idle = opts.idle_timeout;
    tokio::spawn(async move {
        let (client, worker) = match tokio::try_join!(client_side, worker_side) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                return;
            }
        };
        let limits = relay::Limits {
            max_message: relays().max_message.load(Ordering::Relaxed) as u64,
            max_frame: relays().max_frame.load(Ordering::Relaxed) as u64,
        };
        let metrics = &open.0.metrics;
        let relay = relay::Relay {
            limits,
            idle,
            messages_in: &metrics.websocket_messages_in,
            messages_out: &metrics.websocket_messages_out,
            shutdown: closing().subscribe(),
        };
        // The worker's side is the socket itself (and what hyper read past
        // the 101): no layer between the relay and its reads and writes.
        // The client's came through the server's own layers and stays in them.
        match worker.downcast::<TokioIo<tokio::net::TcpStream>>() {
            Ok(w) => {
                let ahead = w.read_buf;
                relay
                    .run(TokioIo::new(client), w.io.into_inner(), &ahead)
                    .await;
            }
            Err(worker) => {
                relay
                    .run(TokioIo::new(client), TokioIo::new(worker), &[])
                    .await;
            }
        }
    });
    Answer::Worker(Response::from_parts(parts, Body::empty()))
}

/// Counts a WebSocket as in flight (a draining worker waits for it, an
/// agent with an open socket is not idle) and open.
struct OpenSocket(Arc<Upstream>, Arc<Pool>);

impl OpenSocket {
    fn new(u: Arc<Upstream>, pool: Arc<Pool>) -> Self {
        relays().open.send_modify(|n| *n += 1);
        u.in_flight.enter();
        pool.in_flight.fetch_add(1, Ordering::AcqRel);
        pool.touch();
        u.metrics.websockets.fetch_add(1, Ordering::Relaxed);
        u.metrics.websockets_open.fetch_add(1, Ordering::Relaxed);
        OpenSocket(u, pool)
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0
            .metrics
            .websockets_open
            .fetch_sub(1, Ordering::Relaxed);
        self.0.in_flight.leave();
        self.1.touch();
        self.1.in_flight.fetch_sub(1, Ordering::AcqRel);
        relays().open.send_modify(|n| *n = n.saturating_sub(1));
    }
}
