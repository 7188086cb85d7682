//! What anyone may read: the supervisor's status and processes, aggregate
//! health, the agents list clients read, the ALB health check, metrics.

use std::sync::atomic::Ordering;

use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::view::{self, Access, Rendering};
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

/// Every process as the status listings show it: the published views with
/// their live counters and usage, as of now.
fn processes_json(st: &super::ApiState, access: Access) -> Vec<Value> {
    let now = std::time::SystemTime::now();
    let published = st.control.agents();
    st.control
        .processes()
        .iter()
        .map(|p| {
            let usage = st.usage.get(&p.process_id);
            let shown = view::process(
                p,
                &published.counters,
                access,
                Rendering::Listing(usage.as_ref()),
                now,
            );
            serde_json::to_value(shown).unwrap_or(Value::Null)
        })
        .collect()
}

fn access(st: &super::ApiState, headers: &HeaderMap) -> Access {
    if super::auth::is_admin(st, headers) {
        Access::Admin
    } else {
        Access::Public
    }
}

pub async fn status(axum::extract::State(st): St, headers: HeaderMap) -> Response {
    let access = access(&st, &headers);
    let procs = st.control.processes();
    let published = st.control.agents();
    let agents: Vec<_> = published
        .agents
        .iter()
        .map(|a| view::agent(a, &published.counters))
        .collect();
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
        "agents": agents,
        "processes": processes_json(&st, access),
    }))
    .into_response()
}

fn self_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some((pages * 4096) as f64 / (1024.0 * 1024.0))
}

pub async fn processes(axum::extract::State(st): St, headers: HeaderMap) -> Response {
    let access = access(&st, &headers);
    Json(json!({ "processes": processes_json(&st, access) })).into_response()
}

pub async fn agent(
    axum::extract::State(st): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let access = access(&st, &headers);
    match processes_json(&st, access)
        .into_iter()
        .find(|p| p["agent_id"] == id.as_str())
    {
        Some(p) => Json(p).into_response(),
        None => ApiError::not_found(format!("no agent '{id}'")).into_response(),
    }
}

pub async fn health(axum::extract::State(st): St, headers: HeaderMap) -> Response {
    let access = access(&st, &headers);
    let procs = st.control.processes();
    let agents: serde_json::Map<String, Value> = procs
        .iter()
        .filter(|p| p.replica == 0)
        .map(|p| {
            let error = if access == Access::Admin {
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
    let published = st.control.agents();
    let counters = &published.counters;
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
            in_flight: counters.worker(p.worker).0,
            sessions: counters.worker(p.worker).1,
        })
        .collect();
    let views: Vec<_> = published
        .agents
        .iter()
        .map(|a| view::agent(a, counters))
        .collect();
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
