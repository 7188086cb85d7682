//! What anyone may read: the supervisor's status and processes, aggregate
//! health, the agents list clients read, the ALB health check, metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{json_status, St};
use crate::control::Phase;
use crate::http::error::ApiError;
use crate::model::State as AgentState;

pub async fn root(axum::extract::State(st): St) -> Response {
    Json(json!({
        "service": "par-supervisor",
        "version": env!("CARGO_PKG_VERSION"),
        "state": st.control.phase(),
        "routes": ["/agents", "/agents/{id}/...", "/supervisor/status", "/supervisor/processes", "/runtime/health", "/metrics"],
    }))
    .into_response()
}

pub async fn runtime_health(axum::extract::State(st): St) -> Response {
    match st.control.phase() {
        Phase::Draining | Phase::Stopped => json_status(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "draining"}),
        ),
        _ => json_status(StatusCode::OK, json!({"status": "ok"})),
    }
}

/// Processes with their current usage merged in, their counters as of now
/// (requests in flight, time to the next restart). Without the admin token
/// they carry no agent output: failures are shown by their kind only.
fn processes_json(st: &super::ApiState, admin: bool, live: &Live) -> Vec<Value> {
    let now = std::time::SystemTime::now();
    st.control
        .processes()
        .iter()
        .map(|p| {
            let mut p = p.clone();
            if let Some(&(n, s)) = p.worker.and_then(|w| live.by_worker.get(&w)) {
                (p.in_flight, p.sessions) = (n, s);
            }
            for d in &mut p.draining {
                if let Some(&(n, s)) = live.by_worker.get(&d.worker) {
                    (d.in_flight, d.sessions) = (n, s);
                }
            }
            if let Some(at) = p.restart_at {
                let left = at.duration_since(now).unwrap_or_default();
                p.next_restart_in_seconds = Some(left.as_secs_f64());
            }
            if p.stable_at.is_some_and(|t| t <= now) {
                p.consecutive_failures = 0;
            }
            let p = &p;
            let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
            let u = st.usage.get(&p.process_id);
            let u = u.as_ref();
            v["resources"] = json!({
                "rss_mb": u.map(|u| (u.rss_mb * 10.0).round() / 10.0),
                "cpu_percent": u.map(|u| (u.cpu_percent * 10.0).round() / 10.0),
                "threads": u.map(|u| u.threads),
                "processes": u.map(|u| u.processes),
                "in_flight": p.in_flight,
            });
            if !admin {
                redact(&mut v);
            }
            v
        })
        .collect()
}

/// Requests in flight per worker, and in flight and queued per agent, as of
/// now (the views published by the state machine are as of its last change).
struct Live {
    /// In flight and sessions bound.
    by_worker: std::collections::HashMap<u64, (usize, usize)>,
    /// In flight, queued and live sessions.
    by_agent: std::collections::HashMap<Arc<str>, (usize, usize, usize)>,
}

impl Live {
    fn now(st: &super::ApiState) -> Live {
        use crate::http::route_table::Route;
        let mut live = Live {
            by_worker: Default::default(),
            by_agent: Default::default(),
        };
        for (agent, route) in st.routes.snapshot().iter() {
            let pool = match route {
                Route::Ready {
                    pool,
                    upstreams,
                    draining,
                } => {
                    for u in upstreams.iter().chain(draining.iter()) {
                        live.by_worker
                            .insert(u.worker.0, (u.in_flight.get(), u.sessions.get()));
                    }
                    pool
                }
                Route::Waking { pool, .. } => pool,
                Route::NotReady { .. } => continue,
            };
            let n = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Acquire);
            live.by_agent.insert(
                Arc::clone(agent),
                (n(&pool.in_flight), n(&pool.queued), pool.sessions.live()),
            );
        }
        live
    }

    fn agents(&self, views: &[crate::model::AgentView]) -> Vec<crate::model::AgentView> {
        let mut views = views.to_vec();
        for v in &mut views {
            if let Some(&(in_flight, queued, sessions)) = self.by_agent.get(v.agent_id.as_str()) {
                (v.in_flight, v.queued, v.sessions) = (in_flight, queued, sessions);
            }
        }
        views
    }
}

/// Agent output (error text, log lines) replaced by what kind it is.
fn redact(v: &mut Value) {
    v["last_error"] = v["last_error_class"].clone();
    if v["rollout"].is_object() {
        v["rollout"]["reason"] = v["rollout"]["reason_class"].clone();
    }
}

pub async fn status(axum::extract::State(st): St, headers: HeaderMap) -> Response {
    let admin = super::auth::is_admin(&st, &headers);
    let live = Live::now(&st);
    let procs = st.control.processes();
    let ready = procs
        .iter()
        .filter(|p| p.state == AgentState::Ready)
        .count();
    let s = &st.settings;
    Json(json!({
        "supervisor": {
            "state": st.control.phase(),
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "port": st.port,
            "started_at": humantime::format_rfc3339_millis(st.started_at).to_string(),
            "uptime_seconds": st.started.elapsed().as_secs_f64(),
            "worker_ports": format!("{}-{}", s.worker_ports.start, s.worker_ports.end),
            "auth": if st.admin.file.is_some() { "boot-token" } else { "token" },
            "uid": nix::unistd::geteuid().as_raw(),
            "isolation": st.isolation.name(),
            "isolation_reason": st.isolation.reason(),
            "resources": st.resources,
            "rss_mb": self_rss_mb(),
            "log_lines_dropped": st.logs.dropped.load(Ordering::Relaxed),
        },
        "agents_total": procs.len(),
        "agents_ready": ready,
        "desired": st.desired.view(),
        "agents": live.agents(&st.control.agents()),
        "processes": processes_json(&st, admin, &live),
    }))
    .into_response()
}

fn self_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some((pages * 4096) as f64 / (1024.0 * 1024.0))
}

pub async fn processes(axum::extract::State(st): St, headers: HeaderMap) -> Response {
    let admin = super::auth::is_admin(&st, &headers);
    Json(json!({ "processes": processes_json(&st, admin, &Live::now(&st)) })).into_response()
}

pub async fn agent(
    axum::extract::State(st): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let admin = super::auth::is_admin(&st, &headers);
    match processes_json(&st, admin, &Live::now(&st))
        .into_iter()
        .find(|p| p["agent_id"] == id.as_str())
    {
        Some(p) => Json(p).into_response(),
        None => ApiError::not_found(format!("no agent '{id}'")).into_response(),
    }
}

pub async fn health(axum::extract::State(st): St, headers: HeaderMap) -> Response {
    let admin = super::auth::is_admin(&st, &headers);
    let procs = st.control.processes();
    let agents: serde_json::Map<String, Value> = procs
        .iter()
        .filter(|p| p.replica == 0)
        .map(|p| {
            let error = if admin {
                p.last_error.clone()
            } else {
                p.last_error_class.as_ref().map(ToString::to_string)
            };
            (
                p.agent_id.clone(),
                json!({"state": p.state, "port": p.port, "last_error": error}),
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

pub async fn agents(axum::extract::State(st): St) -> Response {
    let list: Vec<Value> = st
        .control
        .processes()
        .iter()
        .filter(|p| p.replica == 0)
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
                "url": super::agents::agent_url(&p.agent_id),
                "status": p.state,
                "package_id": p.package_id,
            })
        })
        .collect();
    Json(json!({ "agents": list })).into_response()
}

pub async fn metrics(axum::extract::State(st): St) -> Response {
    let live = Live::now(&st);
    let procs = st.control.processes();
    let mut agents: Vec<(&str, _)> = Vec::new();
    for p in procs.iter().filter(|p| p.replica == 0) {
        agents.push((p.agent_id.as_str(), st.metrics.agent(&p.agent_id)));
    }
    let usage: Vec<_> = procs.iter().map(|p| st.usage.get(&p.process_id)).collect();
    let gauges: Vec<_> = procs
        .iter()
        .zip(&usage)
        .map(|(p, u)| crate::http::metrics::Gauges {
            agent_id: &p.agent_id,
            process_id: &p.process_id,
            state: p.state.as_str(),
            restarts: p.restarts,
            rss_bytes: u.as_ref().map(|u| (u.rss_mb * 1024.0 * 1024.0) as u64),
            cpu_percent: u.as_ref().map(|u| u.cpu_percent),
            in_flight: p
                .worker
                .and_then(|w| live.by_worker.get(&w).map(|l| l.0))
                .unwrap_or(p.in_flight),
            sessions: p
                .worker
                .and_then(|w| live.by_worker.get(&w).map(|l| l.1))
                .unwrap_or(p.sessions),
        })
        .collect();
    let views = live.agents(&st.control.agents());
    let mut text = crate::http::metrics::render(
        &agents,
        &views,
        &gauges,
        st.started.elapsed(),
        st.unknown_agents.load(Ordering::Relaxed),
    );
    text.push_str(&st.logs.metrics_text());
    (
        [(
            header::CONTENT_TYPE,
            par_telemetry::prometheus::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}
