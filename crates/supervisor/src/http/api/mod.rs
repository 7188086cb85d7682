//! The management API: `/supervisor/*`, `GET /agents`, `/runtime/health`,
//! `/metrics`. Reads what the state machine published; never waits on routing.
//! Mutating routes and logs pass the admin check (`auth`) first.

mod agents;
pub mod auth;
mod logs;
mod status;
pub mod view;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::metrics::Registry;
use crate::config::{AgentSpec, Settings, ValidationErrors};
use crate::control::Control;
use crate::logs::LogStore;
use crate::model::{AgentId, ProcessView};
use crate::runtime::desired::{self, DesiredStatus};
use crate::runtime::resources::{TaskResources, UsageTable};

/// The token that opens the admin routes.
pub struct Admin {
    pub token: String,
    /// Where this boot's token was written (none when `PAR_ADMIN_TOKEN` is set).
    pub file: Option<std::path::PathBuf>,
}

/// What the handlers share.
pub struct ApiState {
    pub control: Control,
    pub admin: Admin,
    pub routes: Arc<super::route_table::RouteTable>,
    pub settings: Arc<Settings>,
    pub logs: Arc<LogStore>,
    pub metrics: Arc<Registry>,
    pub usage: Arc<UsageTable>,
    pub resources: TaskResources,
    pub desired: Arc<DesiredStatus>,
    pub reload: mpsc::UnboundedSender<desired::Request>,
    /// Requests for unknown agents (counted by the proxy).
    pub unknown_agents: Arc<AtomicU64>,
    pub started: Instant,
    pub started_at: SystemTime,
    /// The port the supervisor listens on.
    pub port: u16,
    /// How agents are kept apart (`per-agent-uid` or `shared-uid`).
    pub isolation: crate::runtime::isolation::Isolation,
}

type St = axum::extract::State<Arc<ApiState>>;

pub fn router(state: Arc<ApiState>) -> Router {
    let admin = Router::new()
        .route("/supervisor/spawn", post(agents::spawn))
        .route("/supervisor/stop/{process_id}", post(agents::stop))
        .route("/supervisor/restart/{process_id}", post(agents::restart))
        .route("/supervisor/logs", get(logs::logs).delete(logs::clear))
        .route(
            "/supervisor/agents/{agent_id}",
            axum::routing::delete(agents::remove)
                .put(agents::put)
                .patch(agents::patch),
        )
        .route("/supervisor/reload", post(agents::reload))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_admin,
        ));
    Router::new()
        .route("/", get(status::root))
        .route("/agents", get(status::agents))
        .route("/agents/", get(status::agents))
        .route("/runtime/health", get(status::runtime_health))
        .route("/health", get(status::runtime_health))
        .route("/metrics", get(status::metrics))
        .route("/supervisor/status", get(status::status))
        .route("/supervisor/processes", get(status::processes))
        .route("/supervisor/health", get(status::health))
        .route("/supervisor/agents/{agent_id}", get(status::agent))
        .merge(admin)
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}

fn json_status(status: StatusCode, v: Value) -> Response {
    (status, Json(v)).into_response()
}

/// A process as an answer to a command shows it (the caller is the admin).
fn view_json(st: &ApiState, p: &ProcessView) -> Value {
    let published = st.control.agents();
    let shown = view::process(
        p,
        &published.counters,
        view::Access::Admin,
        view::Rendering::Answer,
        SystemTime::now(),
    );
    serde_json::to_value(shown).unwrap_or(Value::Null)
}

/// The agent a process id names: the process with exactly that id first,
/// then an agent with exactly that id, then `par-{agent}` of the original API.
fn agent_of_process(st: &ApiState, process_id: &str) -> Result<AgentId, ApiError> {
    let procs = st.control.processes();
    let id = procs
        .iter()
        .find(|p| p.process_id == process_id)
        .map(|p| p.agent_id.as_str())
        .or_else(|| {
            procs
                .iter()
                .find(|p| p.agent_id == process_id)
                .map(|p| p.agent_id.as_str())
        })
        .unwrap_or(process_id);
    AgentId::new(id).map_err(|_| ApiError::not_found(format!("no process '{process_id}'")))
}

/// The agent an agent id path names: exactly that id, never read another
/// way (`par-…` is no agent id: see `AgentId`).
fn agent_of_path(_st: &ApiState, raw: &str) -> Result<AgentId, ApiError> {
    AgentId::new(raw).map_err(|e| ApiError::invalid_field("agent_id", e))
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
                        format!(
                            "is not a known field (a spec takes: {})",
                            crate::model::settings::spec_field_names().join(", ")
                        )
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

/// `?wait=true` and its `timeout` (seconds, default 120).
fn wait_of(q: &HashMap<String, String>) -> Option<std::time::Duration> {
    matches!(q.get("wait").map(String::as_str), Some("true" | "1")).then(|| {
        let secs = q
            .get("timeout")
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(120.0)
            .clamp(0.1, 3600.0);
        std::time::Duration::from_secs_f64(secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_body_errors_name_the_field() {
        let e =
            parse_spec(br#"{"agent_id":"a","package_path":"/x","cpu_limit":"lots"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.starts_with("cpu_limit:"), "{}", e.message);
        let e = parse_spec(br#"{"agent_id":"a","bogus":1}"#).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
        // The names it would take are listed, other names of a field included.
        for name in [
            "max_queue",
            "session_drain_timeout",
            "package_path",
            "env_vars",
        ] {
            assert!(e.message.contains(name), "{}", e.message);
        }
        let e = parse_spec(b"[1]").unwrap_err();
        assert!(e.message.contains("body"));
        assert!(parse_spec(br#"{"agent_id":"a","package_path":"/x"}"#).is_ok());
    }

    #[test]
    fn wait_and_timeout() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(wait_of(&q(&[])), None);
        assert_eq!(
            wait_of(&q(&[("wait", "true")])),
            Some(std::time::Duration::from_secs(120))
        );
        assert_eq!(
            wait_of(&q(&[("wait", "1"), ("timeout", "0.5")])),
            Some(std::time::Duration::from_millis(500))
        );
    }
}
