//! The direct path: a client's HTTP/1.1 connection served start to end by
//! one task, its requests for agents passed to a worker's keep-alive socket
//! with their heads rewritten in one pass and their bodies copied as they
//! come (a chunked reply, an SSE stream, is passed through frame for frame,
//! its framing untouched). No request or response objects, no channel to a
//! connection task: the work nginx does, and little more.
//!
//! It serves what is common and plain: HTTP/1.1 requests under `/agents/`
//! with no body or a `Content-Length` one up to 64 KiB (read whole first, so
//! a try that failed can be sent again). Anything else (the management
//! API, WebSockets, chunked or large uploads, `Expect`, HTTP/1.0, h2c, a
//! malformed head) hands the connection, with the bytes read so far, to the
//! general path (hyper) for the rest of its life.
//!
//! With tracing on, each request gets the same span as on the general path
//! (`proxy::span`), started once its head is read, ended when its reply has
//! been passed on; the worker's head carries the span's trace context.

mod reply;
mod upstream;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::Response;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;

use reply::refuse;
pub(super) use upstream::Sockets;

use super::admit::SessionHint;
use super::body::RequestGuard;
use super::gone::{client_left, Input};
use super::policy::{ResponseRules, X_REQUEST_ID};
use super::{span, Proxy, TryFailed, TRIES};
use crate::http::connections::Conn;
use crate::http::route_table::{Route, RouteCache, Upstream};
use crate::http::sessions::key;
use crate::http::sessions::Watch;
use wire::{Chunks, Framing, Method, Parsed, ParsedResponse, Reply};

/// Longest wait for the body of a request held whole (at most 64 KiB) once
/// its head is in.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// How a connection left the direct path.
pub enum Served {
    /// It is closed (or the client went away).
    Done,
    /// For the general path, with what was read of it.
    General(TcpStream, Vec<u8>),
}

/// Buffers of one client connection, reused by each of its requests.
struct Buffers {
    /// From the client: the request being read, then any that follow it.
    client: Vec<u8>,
    /// To the worker: the rewritten head and the body.
    request: Vec<u8>,
    /// From the worker.
    response: Vec<u8>,
    /// To the client: the rewritten head and the first body bytes.
    reply: Vec<u8>,
    agent: String,
    /// The route of the connection's last request (most ask one agent).
    route: RouteCache,
    /// What the request says of its session.
    session: SessionHint,
    /// Interaction ids in the reply of a request with a session: remembered
    /// as asked in it.
    watch: Option<Box<Watch>>,
    /// The last request's, kept to watch the next one's reply in (built
    /// once a connection, not moved into place per request).
    spare_watch: Option<Box<Watch>>,
    /// Whether the client's input ended during this request.
    input: Input,
    /// The request's span (tracing on).
    trace: Spans,
}

/// The spans of one connection's requests (tracing on): what
/// `wire::parse_request` starts them with.
struct Spans {
    tracer: Option<&'static par_telemetry::trace::Tracer>,
    /// The client's address, shared by its requests' spans.
    client: std::sync::Arc<str>,
    /// The current request's.
    span: Option<par_telemetry::trace::Span>,
    /// Reply body bytes passed on.
    bytes: u64,
}

impl wire::Trace for Spans {
    fn on(&self) -> bool {
        self.tracer.is_some()
    }

    fn start(
        &mut self,
        method: &str,
        path: &str,
        agent_id: &str,
        incoming: par_telemetry::trace::Incoming,
    ) -> Option<&par_telemetry::trace::SpanContext> {
        let t = self.tracer?;
        let mut s = span::start(t, method, agent_id, incoming);
        span::describe(
            &mut s,
            span::Request {
                method,
                path,
                client: std::sync::Arc::clone(&self.client).into(),
                agent_id,
                grpc: false,
                session: None,
            },
        );
        self.bytes = 0;
        Some(self.span.insert(s).context())
    }
}

/// The end of one exchange: whether the client's connection can go on.
#[derive(PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

impl Proxy {
    /// Serves `client` until it closes, or until a request for the general path.
    pub async fn serve_direct(
        &self,
        mut client: TcpStream,
        peer: SocketAddr,
        conn: &Conn,
        stop: &mut watch::Receiver<bool>,
    ) -> Served {
        let mut ip = [0u8; 45];
        let peer_ip = super::policy::ip_text(peer.ip(), &mut ip);
        let tracer = par_telemetry::trace::tracer();
        // Allocated as they are needed: a connection holding a partial
        // head costs its few bytes, not a request's buffers.
        let mut b = Buffers {
            client: Vec::new(),
            request: Vec::new(),
            response: Vec::new(),
            reply: Vec::new(),
            agent: String::new(),
            route: RouteCache::default(),
            session: SessionHint::None,
            watch: None,
            spare_watch: None,
            input: Input::Open,
            trace: Spans {
                tracer,
                client: match tracer {
                    Some(_) => String::from_utf8_lossy(peer_ip).into(),
                    None => "".into(),
                },
                span: None,
                bytes: 0,
            },
        };
        loop {
            // One request head (and its body), within the keep-alive time.
            let cx = wire::Context {
                peer_ip,
                rules: self.request_rules(false),
            };
            let req = loop {
                if !b.client.is_empty() {
                    match wire::parse_request(&b.client, &cx, &mut b.trace, &mut b.request) {
                        // Due from its first byte (when not whole at once).
                        Parsed::Partial => conn.head_started(),
                        Parsed::General => return Served::General(client, b.client),
                        Parsed::Refused(r) => return refuse(client, r, &mut b.reply).await,
                        Parsed::Direct(r) => break r,
                    }
                }
                let idle = b.client.is_empty();
                if b.client.capacity() - b.client.len() < 512 {
                    b.client.reserve(if idle { 1024 } else { 4096 });
                }
                let read = tokio::select! {
                    biased;
                    r = client.read_buf(&mut b.client) => r,
                    // Its head not in time, or evicted to make room.
                    () = conn.expired() => return Served::Done,
                    // Stopping: an idle connection closes now, one mid-head when it times out.
                    _ = stop.wait_for(|s| *s), if idle => return Served::Done,
                };
                if !matches!(read, Ok(n) if n > 0) {
                    return Served::Done;
                }
            };
            // In flight from here: never evicted until its reply is passed on.
            if !conn.begin_request() {
                return Served::Done;
            }
            let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
            let whole = req.head_len + req.body_len;
            while b.client.len() < whole {
                b.client.reserve(whole - b.client.len());
                let read = tokio::time::timeout_at(deadline, client.read_buf(&mut b.client)).await;
                if !matches!(read, Ok(Ok(n)) if n > 0) {
                    return Served::Done;
                }
            }
            b.request.extend_from_slice(&b.client[req.head_len..whole]);
            b.agent.clear();
            // The target was checked as a URI, so the id is ASCII.
            b.agent
                .push_str(std::str::from_utf8(&b.client[req.agent_id.clone()]).unwrap_or_default());
            // The route, read once: whether its sessions are tracked, then
            // the request's first admission.
            let route = self.routes.get_cached(&b.agent, &mut b.route);
            let tracked = matches!(&route, Some(Route::Ready { pool, .. }) if pool.tracks());
            b.session = session_hint(&b.client, &req, whole, tracked);
            if let (Some(s), Some(k)) = (b.trace.span.as_mut(), b.session.key()) {
                span::session(s, k);
            }
            b.client.drain(..whole);
            let close = req.close || *stop.borrow();
            let next = self.exchange(&mut client, &req, close, route, &mut b).await;
            conn.end_request();
            if next == Next::Close || close {
                return Served::Done;
            }
        }
    }

    /// One request: admitted, sent (again to another worker when it never
    /// reached one), and its reply passed to the client. Its span (tracing
    /// on) ends with it.
    async fn exchange(
        &self,
        client: &mut TcpStream,
        req: &wire::Request,
        close: bool,
        mut route: Option<Route>,
        b: &mut Buffers,
    ) -> Next {
        let started = Instant::now();
        b.input = Input::Open;
        let idempotent = matches!(req.method, Method::Idempotent { .. });
        let head_request = req.method == Method::Idempotent { head: true };
        // For the access log (the span ends before it is written).
        let trace_ids = b.trace.span.as_ref().map(|s| s.ids());
        let mut avoid = Vec::new();
        let (next, status) = loop {
            // The first try on the route read for the request; a wait, or
            // another try, reads the table again.
            let now = route
                .take()
                .and_then(|r| Self::admit_in(Some(r), &avoid, &b.session));
            let admitted = match now {
                Some(a) => Some(Ok(a)),
                None => {
                    let gone = client_left(client, &mut b.client, &mut b.input, false);
                    self.admit_unless_gone(&b.agent, &avoid, &b.session, gone)
                        .await
                }
            };
            let admitted = match admitted {
                None => {
                    // As the general path has it: a 503 nobody reads.
                    if let Some(s) = b.trace.span.take() {
                        span::made_here(s, 503);
                    }
                    return Next::Close;
                }
                Some(Ok(a)) => a,
                Some(Err(e)) => {
                    let resp = e.into_response_body();
                    let status = resp.status().as_u16();
                    break (self.reply(client, resp, req, close, b).await, status);
                }
            };
            if let Some(s) = b.trace.span.as_mut() {
                span::admitted(s, started, &admitted);
            }
            let upstream = Arc::clone(&admitted.upstream);
            if let Some(w) = b.watch.take() {
                b.spare_watch = Some(w);
            }
            if watches(&admitted, req.method == Method::Other) {
                let pool = Arc::clone(&admitted.pool);
                let up = Arc::clone(&admitted.upstream);
                let key = admitted.session.clone();
                b.watch = Some(match b.spare_watch.take() {
                    Some(mut w) => {
                        w.reset(pool, up, key);
                        w
                    }
                    None => Box::new(Watch::new(pool, up, key)),
                });
            }
            let guard = RequestGuard::new(Arc::clone(&upstream), admitted.pool, admitted.slot);
            let reply = Reply {
                rules: ResponseRules {
                    grpc: false,
                    request_id: &req.request_id,
                    process: &upstream.process_id,
                    session: admitted.session.as_deref(),
                    rebound: admitted.rebound,
                },
                head_request,
                close,
            };
            let sent = self.send_direct(&upstream, client, idempotent, &reply, b);
            let resp = match tokio::time::timeout(self.opts.header_timeout, sent).await {
                Ok(Ok(r)) => r,
                Ok(Err(Failed::ClientGone)) => {
                    if let Some(mut s) = b.trace.span.take() {
                        span::client_gone(&mut s);
                        span::made_here(s, 503);
                    }
                    return Next::Close;
                }
                Ok(Err(Failed::Worker(f)))
                    if avoid.len() + 1 < TRIES && f.retriable_whole(idempotent) =>
                {
                    // It never reached the worker: another one may take it.
                    drop(guard);
                    if let Some(s) = b.trace.span.as_mut() {
                        span::retry(s, &upstream);
                    }
                    avoid.push(upstream.worker);
                    continue;
                }
                Ok(Err(Failed::Worker(f))) => {
                    drop(guard);
                    if let Some(s) = b.trace.span.as_mut() {
                        span::worker_failed(s, &upstream);
                    }
                    let resp = self.upstream_failed(&f, &upstream, started, false).await;
                    let status = resp.status().as_u16();
                    break (self.reply(client, resp, req, close, b).await, status);
                }
                Err(_) => {
                    drop(guard);
                    let resp = self.header_timed_out(&upstream, started, false);
                    break (self.reply(client, resp, req, close, b).await, 504);
                }
            };
            let (socket, head) = resp;
            upstream.metrics.observe(head.status, started.elapsed());
            if let Some(s) = b.trace.span.as_mut() {
                span::answered(s, head.status, &upstream, started, avoid.len());
            }
            let next = self.pass_body(client, socket, &head, &upstream, b).await;
            drop(guard);
            if let Some(w) = b.watch.take() {
                b.spare_watch = Some(w);
            }
            if let Some(s) = b.trace.span.take() {
                span::body_ended(s, b.trace.bytes);
            }
            break (next, head.status);
        };
        // A reply made here.
        if let Some(s) = b.trace.span.take() {
            span::made_here(s, status);
        }
        if self.opts.access_log {
            let mut line = b.request.split(|&c| c == b' ');
            let method = line.next().unwrap_or_default();
            let target = line.next().unwrap_or_default();
            let path = target.split(|&c| c == b'?').next().unwrap_or_default();
            // The head was checked as HTTP (its method a token, its target a URI): ASCII.
            super::log_access(
                &b.agent,
                std::str::from_utf8(method).unwrap_or_default(),
                std::str::from_utf8(path).unwrap_or_default(),
                status,
                started,
                trace_ids,
            );
        }
        next
    }

    /// Sends the request in `b.request` to `upstream` and reads its response
    /// head (interim responses are passed to the client on the way). A
    /// pooled socket found closed before any answer is replaced when the
    /// request may be sent twice.
    async fn send_direct(
        &self,
        upstream: &Upstream,
        client: &mut TcpStream,
        idempotent: bool,
        reply: &Reply<'_>,
        b: &mut Buffers,
    ) -> Result<(TcpStream, wire::Response), Failed> {
        'socket: loop {
            let (mut socket, pooled) = match self.sockets.checkout(upstream.worker) {
                Some(s) => (s, true),
                None => match self.sockets.connect(upstream.port).await {
                    Ok(s) => (s, false),
                    Err(e) => return Err(Failed::Worker(TryFailed::connect(e))),
                },
            };
            if let Err(e) = socket.write_all(&b.request).await {
                if pooled {
                    continue 'socket;
                }
                return Err(Failed::Worker(TryFailed::io(e, false)));
            }
            b.response.clear();
            b.reply.clear();
            loop {
                if b.response.capacity() - b.response.len() < 2048 {
                    b.response.reserve(8192);
                }
                let read = tokio::select! {
                    biased;
                    r = socket.read_buf(&mut b.response) => r,
                    // The client closed (it gave up); its next request, sent early, is kept.
                    () = client_left(client, &mut b.client, &mut b.input, false) => return Err(Failed::ClientGone),
                };
                match read {
                    Ok(n) if n > 0 => {}
                    Ok(_) | Err(_) if pooled && b.response.is_empty() && idempotent => {
                        continue 'socket;
                    }
                    Ok(_) => {
                        let e = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                        return Err(Failed::Worker(TryFailed::io(e, b.response.is_empty())));
                    }
                    Err(e) => return Err(Failed::Worker(TryFailed::io(e, b.response.is_empty()))),
                }
                let mut head = None;
                match wire::parse_response(&b.response, reply, &mut b.reply, &mut head) {
                    ParsedResponse::Partial => {}
                    ParsedResponse::Interim(n) => {
                        if client.write_all(&b.reply).await.is_err() {
                            return Err(Failed::ClientGone);
                        }
                        b.reply.clear();
                        b.response.drain(..n);
                    }
                    ParsedResponse::Final => {
                        if let Some(head) = head {
                            return Ok((socket, head));
                        }
                    }
                    ParsedResponse::Invalid(what) => {
                        let e = std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("the worker sent {what}"),
                        );
                        return Err(Failed::Worker(TryFailed::io(e, false)));
                    }
                }
            }
        }
    }
}

/// The session a request names: its `x-par-session-id`, else its body's
/// (`sessions::key`). `buf[..whole]` is the request, head and body.
/// The body is only read when the agent tracks sessions (`tracked`) and
/// it may name one (one byte search).
#[inline]
fn session_hint(buf: &[u8], req: &wire::Request, whole: usize, tracked: bool) -> SessionHint {
    if let Some(r) = &req.session {
        if let Some(k) = key::valid(&buf[r.clone()]) {
            return SessionHint::Key(k.into());
        }
    }
    if !tracked || req.body_len == 0 || req.method != Method::Other {
        return SessionHint::None;
    }
    let body = &buf[req.head_len..whole];
    if !key::may_name_one(body) {
        return SessionHint::None;
    }
    let found = key::named(body);
    match (found.session, found.interaction) {
        (Some(k), _) => SessionHint::Key(k.into()),
        (None, Some(i)) => SessionHint::Interaction(i.into()),
        (None, None) => SessionHint::None,
    }
}

/// What of a reply to watch for sessions: a request of a session (the
/// interaction ids it names), or a request that named none but may start
/// one (`unsafe_method`: not a GET) to an agent whose sessions are tracked.
#[inline]
pub(super) fn watch(admitted: &super::admit::Admitted, unsafe_method: bool) -> Option<Watch> {
    watches(admitted, unsafe_method).then(|| {
        Watch::new(
            Arc::clone(&admitted.pool),
            Arc::clone(&admitted.upstream),
            admitted.session.clone(),
        )
    })
}

/// Whether a reply is watched (`watch`).
#[inline]
fn watches(admitted: &super::admit::Admitted, unsafe_method: bool) -> bool {
    let starts = admitted.session.is_none() && unsafe_method && admitted.pool.tracks();
    admitted.session.is_some() || starts
}

/// Why a try ended without a response.
enum Failed {
    Worker(TryFailed),
    ClientGone,
}
