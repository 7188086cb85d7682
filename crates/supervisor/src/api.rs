//! The management API (`/supervisor/*`, `GET /agents`, `/runtime/health`,
//! `/metrics`): reads the published snapshot, never waits on routing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::config::{AgentSpec, ValidationErrors};
use crate::error::ApiError;
use crate::lifecycle::State as AgentState;
use crate::logs::{Filter, Level};
use crate::metrics::AgentGauges;
use crate::supervisor::{Msg, Phase, ProcessView, PutOutcome, Shared};

/// What the handlers share.
pub struct ApiState {
    pub shared: Arc<Shared>,
    /// Requests for unknown agents (counted by the proxy).
    pub unknown_agents: Arc<dyn Fn() -> u64 + Send + Sync>,
}

type St = State<Arc<ApiState>>;
type Peer = ConnectInfo<SocketAddr>;

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/agents", get(agents))
        .route("/agents/", get(agents))
        .route("/runtime/health", get(runtime_health))
        .route("/health", get(runtime_health))
        .route("/metrics", get(metrics))
        .route("/supervisor/status", get(status))
        .route("/supervisor/processes", get(processes))
        .route("/supervisor/health", get(health))
        .route("/supervisor/spawn", post(spawn))
        .route("/supervisor/stop/{process_id}", post(stop))
        .route("/supervisor/restart/{process_id}", post(restart))
        .route("/supervisor/logs", get(logs).delete(clear_logs))
        .route(
            "/supervisor/agents/{agent_id}",
            delete(remove).put(put_agent).get(get_agent),
        )
        .route("/supervisor/reload", post(reload))
        .merge(crate::dashboard::router())
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}

pub fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

pub fn ser_opt_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}

/// Constant-time comparison (no early exit on the first differing byte).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

fn is_loopback(peer: &SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Mutating routes and logs: `Authorization: Bearer $PAR_ADMIN_TOKEN`, or,
/// with no token configured, loopback peers only.
fn authorize(st: &ApiState, headers: &HeaderMap, peer: &SocketAddr) -> Result<(), ApiError> {
    match st
        .shared
        .settings
        .admin_token
        .as_deref()
        .filter(|t| !t.is_empty())
    {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim);
            match given {
                Some(g) if ct_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
                Some(_) => Err(ApiError::unauthorized("the bearer token is not valid")),
                None => Err(ApiError::unauthorized(
                    "this route needs Authorization: Bearer <PAR_ADMIN_TOKEN>",
                )),
            }
        }
        None if is_loopback(peer) => Ok(()),
        None => Err(ApiError::forbidden(
            "no PAR_ADMIN_TOKEN is configured, so this route is accepted from loopback only",
        )),
    }
}

fn agent_id_of(process_id: &str) -> String {
    process_id
        .strip_prefix("par-")
        .unwrap_or(process_id)
        .to_string()
}

fn json_status(status: StatusCode, v: Value) -> Response {
    (status, Json(v)).into_response()
}

async fn root(State(st): St) -> Response {
    Json(json!({
        "service": "par-supervisor",
        "version": env!("CARGO_PKG_VERSION"),
        "state": st.shared.phase(),
        "routes": ["/agents", "/agents/{id}/...", "/supervisor/status", "/supervisor/processes", "/runtime/health", "/metrics"],
    }))
    .into_response()
}

async fn runtime_health(State(st): St) -> Response {
    match st.shared.phase() {
        Phase::Draining | Phase::Stopped => json_status(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "draining"}),
        ),
        _ => json_status(StatusCode::OK, json!({"status": "ok"})),
    }
}

/// Processes with their current usage merged in.
fn processes_json(st: &ApiState) -> (Vec<Value>, Arc<Vec<ProcessView>>) {
    let procs = st.shared.processes();
    let usage = st
        .shared
        .usage
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let list = procs
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
            let u = usage.get(&p.agent_id);
            v["resources"] = json!({
                "rss_mb": u.map(|u| (u.rss_mb * 10.0).round() / 10.0),
                "cpu_percent": u.map(|u| (u.cpu_percent * 10.0).round() / 10.0),
                "threads": u.map(|u| u.threads),
                "processes": u.map(|u| u.processes),
                "in_flight": p.in_flight,
            });
            v
        })
        .collect();
    (list, procs)
}

async fn status(State(st): St) -> Response {
    let (list, procs) = processes_json(&st);
    let s = &st.shared;
    let ready = procs
        .iter()
        .filter(|p| p.state == AgentState::Ready)
        .count();
    Json(json!({
        "supervisor": {
            "state": s.phase(),
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "port": s.port,
            "started_at": humantime::format_rfc3339_millis(s.started_at).to_string(),
            "uptime_seconds": s.started.elapsed().as_secs_f64(),
            "worker_ports": format!("{}-{}", s.settings.worker_ports.start, s.settings.worker_ports.end),
            "auth": if s.settings.admin_token.as_deref().is_some_and(|t| !t.is_empty()) { "token" } else { "loopback-only" },
            "resources": s.resources,
            "rss_mb": self_rss_mb(),
            "log_lines_dropped": s.logs.dropped.load(std::sync::atomic::Ordering::Relaxed),
        },
        "agents_total": procs.len(),
        "agents_ready": ready,
        "desired": s.desired.view(),
        "processes": list,
    }))
    .into_response()
}

fn self_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some((pages * 4096) as f64 / (1024.0 * 1024.0))
}

async fn processes(State(st): St) -> Response {
    let (list, _) = processes_json(&st);
    Json(json!({ "processes": list })).into_response()
}

async fn get_agent(State(st): St, Path(id): Path<String>) -> Response {
    let (list, _) = processes_json(&st);
    match list.into_iter().find(|p| p["agent_id"] == id.as_str()) {
        Some(p) => Json(p).into_response(),
        None => ApiError::not_found(format!("no agent '{id}'")).into_response(),
    }
}

async fn health(State(st): St) -> Response {
    let procs = st.shared.processes();
    let agents: serde_json::Map<String, Value> = procs
        .iter()
        .map(|p| {
            (
                p.agent_id.clone(),
                json!({"state": p.state, "port": p.port, "last_error": p.last_error}),
            )
        })
        .collect();
    let expected: Vec<_> = procs
        .iter()
        .filter(|p| p.state != AgentState::Stopped)
        .collect();
    let ready = expected
        .iter()
        .filter(|p| p.state == AgentState::Ready)
        .count();
    let (status, code) = if ready == expected.len() {
        ("healthy", StatusCode::OK)
    } else if ready > 0 {
        ("degraded", StatusCode::SERVICE_UNAVAILABLE)
    } else {
        ("unhealthy", StatusCode::SERVICE_UNAVAILABLE)
    };
    json_status(
        code,
        json!({"status": status, "ready": ready, "total": expected.len(), "agents": agents}),
    )
}

async fn agents(State(st): St, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("http");
    let list: Vec<Value> = st
        .shared
        .processes()
        .iter()
        .map(|p| {
            let meta = p.meta.as_ref();
            let field = |k: &str| meta.and_then(|m| m.get(k)).cloned().unwrap_or(Value::Null);
            let name = meta
                .and_then(|m| m.get("display_name").or_else(|| m.get("name")))
                .cloned()
                .unwrap_or_else(|| Value::String(p.agent_id.clone()));
            json!({
                "agent_app_id": p.agent_id,
                "id": p.agent_id,
                "name": name,
                "version": field("version"),
                "description": field("description"),
                "capabilities": meta.and_then(|m| m.get("capabilities")).cloned().unwrap_or_else(|| json!([])),
                "url": format!("{proto}://{host}/agents/{}", p.agent_id),
                "status": p.state,
                "package_id": p.package_id,
            })
        })
        .collect();
    Json(json!({ "agents": list })).into_response()
}

async fn metrics(State(st): St) -> Response {
    let procs = st.shared.processes();
    let usage = st
        .shared
        .usage
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let metrics: Vec<_> = procs
        .iter()
        .map(|p| st.shared.agent_metrics(&p.agent_id).unwrap_or_default())
        .collect();
    let rows: Vec<_> = procs
        .iter()
        .zip(metrics.iter())
        .map(|(p, m)| {
            let u = usage.get(&p.agent_id);
            (
                AgentGauges {
                    agent_id: &p.agent_id,
                    state: p.state.as_str(),
                    restarts: p.restarts,
                    rss_bytes: u.map(|u| (u.rss_mb * 1024.0 * 1024.0) as u64),
                    cpu_percent: u.map(|u| u.cpu_percent),
                    in_flight: p.in_flight,
                },
                &**m,
            )
        })
        .collect();
    let text = crate::metrics::render(&rows, st.shared.started.elapsed(), (st.unknown_agents)());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Parses a spawn body; a bad value is a 422 naming its field.
pub fn parse_spec(body: &[u8]) -> Result<AgentSpec, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_field("body", format!("is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::invalid_field("body", "must be a JSON object"));
    };
    match serde_json::from_value::<AgentSpec>(Value::Object(map.clone())) {
        Ok(spec) => Ok(spec),
        Err(e) => {
            // Find the field(s) at fault: every field has a default, so each can be tried alone.
            let mut errors = ValidationErrors::default();
            for (k, v) in map {
                let one = json!({ k.clone(): v });
                if let Err(e) = serde_json::from_value::<AgentSpec>(one) {
                    let msg = e.to_string();
                    let msg = if msg.starts_with("unknown field") {
                        "is not a known field".to_string()
                    } else {
                        msg
                    };
                    errors.push(k, msg);
                }
            }
            if errors.is_empty() {
                errors.push("body", e.to_string());
            }
            Err(ApiError::invalid(&errors))
        }
    }
}

async fn spawn(
    State(st): St,
    ConnectInfo(peer): Peer,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = authorize(&st, &headers, &peer) {
        return e.into_response();
    }
    let spec = match parse_spec(&body) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let spec = {
        let mut s = spec;
        let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
        s.resolve_paths(&cwd);
        s
    };
    let id = spec.id.clone();
    let view = match st.shared.ask(|reply| Msg::Spawn { spec, reply }).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    // `?wait=true`: answer when the agent is ready or has failed.
    if matches!(q.get("wait").map(String::as_str), Some("true" | "1")) {
        let timeout = q
            .get("timeout")
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(120.0)
            .clamp(0.1, 3600.0);
        let deadline = Instant::now() + Duration::from_secs_f64(timeout);
        loop {
            let p = st
                .shared
                .processes()
                .iter()
                .find(|p| p.agent_id == id)
                .cloned();
            match p {
                Some(p) if p.state == AgentState::Ready => {
                    return json_status(StatusCode::CREATED, view_json(&p))
                }
                Some(p) if p.state == AgentState::Failed => {
                    let mut e = ApiError::invalid_field(
                        "package_path",
                        p.last_error
                            .clone()
                            .unwrap_or_else(|| "the agent failed to start".into()),
                    );
                    e.message = format!(
                        "agent '{id}' failed: {}",
                        e.message.trim_start_matches("package_path: ")
                    );
                    return e.into_response();
                }
                Some(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Some(p) => return json_status(StatusCode::ACCEPTED, view_json(&p)),
                None => {
                    return ApiError::not_found(format!("agent '{id}' was removed while starting"))
                        .into_response()
                }
            }
        }
    }
    json_status(StatusCode::CREATED, view_json(&view))
}

fn view_json(p: &ProcessView) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
    v["status"] = json!(p.state);
    v
}

async fn stop(
    State(st): St,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(pid): Path<String>,
) -> Response {
    if let Err(e) = authorize(&st, &headers, &peer) {
        return e.into_response();
    }
    let agent_id = agent_id_of(&pid);
    match st.shared.ask(|reply| Msg::Stop { agent_id, reply }).await {
        Ok(v) => json_status(StatusCode::OK, view_json(&v)),
        Err(e) => e.into_response(),
    }
}

async fn restart(
    State(st): St,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(pid): Path<String>,
) -> Response {
    if let Err(e) = authorize(&st, &headers, &peer) {
        return e.into_response();
    }
    let agent_id = agent_id_of(&pid);
    match st
        .shared
        .ask(|reply| Msg::Restart { agent_id, reply })
        .await
    {
        Ok(v) => json_status(StatusCode::ACCEPTED, view_json(&v)),
        Err(e) => e.into_response(),
    }
}

async fn remove(
    State(st): St,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = authorize(&st, &headers, &peer) {
        return e.into_response();
    }
    let agent_id = agent_id_of(&id);
    match st.shared.ask(|reply| Msg::Remove { agent_id, reply }).await {
        Ok(v) => {
            let mut j = view_json(&v);
            j["removed"] = json!(true);
            json_status(StatusCode::OK, j)
        }
        Err(e) => e.into_response(),
    }
}

/// `PUT /supervisor/agents/{id}`: a full spec (same fields as spawn). An
/// existing agent is rolled out blue/green (202, or 200 when nothing changed);
/// an unknown one is created (201). `?wait=true` answers when the rollout has
/// ended (or the new agent is ready or failed), within `timeout` seconds.
async fn put_agent(
    State(st): St,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(e) = authorize(&st, &headers, &peer) {
        return e.into_response();
    }
    let mut spec = match parse_spec(&body) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let id = agent_id_of(&id);
    if spec.id.is_empty() {
        spec.id = id.clone();
    } else if spec.id != id {
        return ApiError::invalid_field(
            "agent_id",
            format!("{:?} differs from the agent in the path, {id:?}", spec.id),
        )
        .into_response();
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    spec.resolve_paths(&cwd);
    let (tx, rx) = tokio::sync::oneshot::channel();
    if st.shared.tx.send(Msg::Put { spec, reply: tx }).is_err() {
        return ApiError::shutting_down().into_response();
    }
    let (view, outcome) = match rx.await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return e.into_response(),
        Err(_) => return ApiError::shutting_down().into_response(),
    };
    let status = match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Rolling => StatusCode::ACCEPTED,
        PutOutcome::Unchanged => StatusCode::OK,
    };
    let outcome_name = match outcome {
        PutOutcome::Created => "created",
        PutOutcome::Rolling => "rolling",
        PutOutcome::Unchanged => "unchanged",
    };
    let mut view = view;
    if matches!(q.get("wait").map(String::as_str), Some("true" | "1"))
        && outcome != PutOutcome::Unchanged
    {
        let timeout = q
            .get("timeout")
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(120.0)
            .clamp(0.1, 3600.0);
        let deadline = Instant::now() + Duration::from_secs_f64(timeout);
        loop {
            let Some(p) = st
                .shared
                .processes()
                .iter()
                .find(|p| p.agent_id == id)
                .cloned()
            else {
                return ApiError::not_found(format!("agent '{id}' was removed")).into_response();
            };
            let done = match (&p.rollout, outcome) {
                (Some(r), PutOutcome::Rolling) => r.state != "rolling",
                _ => matches!(p.state, AgentState::Ready | AgentState::Failed),
            };
            view = p;
            if done || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut j = view_json(&view);
    j["outcome"] = json!(outcome_name);
    json_status(status, j)
}

/// `POST /supervisor/reload`: re-read the declared agents (config file,
/// `PAR_AGENTS`, registry) and reconcile; answers what changed.
async fn reload(State(st): St, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&st, &headers, &peer) {
        return e.into_response();
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if st.shared.tx.send(Msg::Reload { reply: tx }).is_err() {
        return ApiError::shutting_down().into_response();
    }
    match rx.await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::shutting_down().into_response(),
    }
}

/// `since`: RFC 3339, Unix seconds, or a duration ago (`5m`).
fn parse_since(s: &str) -> Option<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Some(t);
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s)
        .ok()
        .and_then(|d| SystemTime::now().checked_sub(d))
}

fn log_filter(q: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let mut errors = ValidationErrors::default();
    let mut f = Filter {
        process_id: q.get("process_id").filter(|s| !s.is_empty()).cloned(),
        ..Default::default()
    };
    if let Some(l) = q.get("level").filter(|s| !s.is_empty()) {
        match Level::parse(l) {
            Some(l) => f.level = Some(l),
            None => errors.push(
                "level",
                format!("{l:?} is not one of trace, debug, info, warn, error"),
            ),
        }
    }
    if let Some(s) = q.get("since").filter(|s| !s.is_empty()) {
        match parse_since(s) {
            Some(t) => f.since = Some(t),
            None => errors.push(
                "since",
                format!("{s:?} is not an RFC 3339 time, Unix seconds or a duration like 5m"),
            ),
        }
    }
    if let Some(l) = q.get("limit").filter(|s| !s.is_empty()) {
        match l.parse::<usize>() {
            Ok(n) => f.limit = Some(n),
            Err(_) => errors.push("limit", format!("{l:?} is not a number")),
        }
    }
    errors
        .into_result()
        .map(|_| f)
        .map_err(|e| ApiError::invalid(&e))
}

async fn logs(
    State(st): St,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(e) = authorize(&st, &headers, &peer) {
        return e.into_response();
    }
    let mut filter = match log_filter(&q) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let follow = matches!(q.get("follow").map(String::as_str), Some("true" | "1"));
    if !follow {
        if filter.limit.is_none() {
            filter.limit = Some(1000);
        }
        let entries = st.shared.logs.query(&filter);
        let list: Vec<&crate::logs::LogEntry> = entries.iter().map(|e| &**e).collect();
        return Json(json!({ "count": list.len(), "logs": list })).into_response();
    }
    // SSE: the backlog, then live entries; a comment every 15 s keeps proxies from closing it.
    let rx = st.shared.logs.subscribe();
    let backlog = st.shared.logs.query(&Filter {
        limit: Some(filter.limit.unwrap_or(100)),
        ..filter.clone()
    });
    let last_seq = backlog.last().map_or(0, |e| e.seq);
    let first: Vec<Result<Bytes, std::convert::Infallible>> =
        backlog.iter().map(|e| Ok(sse_event(e))).collect();
    let live = futures_util::stream::unfold(
        (rx, filter, last_seq),
        |(mut rx, filter, last_seq)| async move {
            loop {
                let next = tokio::time::timeout(Duration::from_secs(15), rx.recv()).await;
                match next {
                    Err(_) => {
                        return Some((
                            Ok(Bytes::from_static(b": keep-alive\n\n")),
                            (rx, filter, last_seq),
                        ))
                    }
                    Ok(Ok(e)) if e.seq > last_seq && filter.matches(&e) => {
                        return Some((Ok(sse_event(&e)), (rx, filter, last_seq)));
                    }
                    Ok(Ok(_)) => continue,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                        let note = format!(": {n} entries skipped (slow reader)\n\n");
                        return Some((Ok(Bytes::from(note)), (rx, filter, last_seq)));
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
                }
            }
        },
    );
    use futures_util::StreamExt as _;
    let stream = futures_util::stream::iter(first).chain(live);
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn sse_event(e: &crate::logs::LogEntry) -> Bytes {
    let data = serde_json::to_string(e).unwrap_or_default();
    Bytes::from(format!("id: {}\nevent: log\ndata: {data}\n\n", e.seq))
}

async fn clear_logs(
    State(st): St,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(e) = authorize(&st, &headers, &peer) {
        return e.into_response();
    }
    let pid = q.get("process_id").filter(|s| !s.is_empty()).map(|p| {
        if p.starts_with("par-") {
            p.clone()
        } else {
            format!("par-{p}")
        }
    });
    let n = st.shared.logs.clear(pid.as_deref());
    Json(json!({ "cleared": n })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"secret-token", b"secret-token"));
        assert!(!ct_eq(b"secret-token", b"secret-tokeX"));
        assert!(!ct_eq(b"secret", b"secret-token"));
        assert!(!ct_eq(b"", b"x"));
    }

    #[test]
    fn spawn_body_errors_name_the_field() {
        let e =
            parse_spec(br#"{"agent_id":"a","package_path":"/x","cpu_limit":"lots"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.starts_with("cpu_limit:"), "{}", e.message);
        let e = parse_spec(br#"{"agent_id":"a","bogus":1}"#).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
        let e = parse_spec(b"[1]").unwrap_err();
        assert!(e.message.contains("body"));
        assert!(parse_spec(br#"{"agent_id":"a","package_path":"/x"}"#).is_ok());
    }

    #[test]
    fn since_forms() {
        assert!(parse_since("2024-01-01T00:00:00Z").is_some());
        assert!(parse_since("1700000000").is_some());
        assert!(parse_since("5m").is_some());
        assert!(parse_since("yesterday").is_none());
    }
}
