//! Commands on agents: spawn, stop, restart, remove, put (rollout), reload.
//! `?wait=true` is answered by the state machine itself once the agent has
//! settled (or the rollout ended), within `timeout` seconds.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{agent_of_path, agent_of_process, json_status, parse_spec, view_json, wait_of, St};
use crate::config::validate_spec;
use crate::http::error::ApiError;
use crate::model::{
    AgentId, AgentSpec, Answer, Command, Origin, ProcessView, PutOutcome, Reply, State,
};
use crate::runtime::desired::{self, ReloadError};

type Q = Query<HashMap<String, String>>;

/// A spec from a request body: parsed, relative paths made absolute, checked
/// (a local package against the package roots, unless it is `kept`: the one
/// the agent already has).
fn checked_spec(
    settings: &crate::config::Settings,
    body: &[u8],
    path_id: Option<&AgentId>,
    kept: Option<&str>,
) -> Result<(AgentId, AgentSpec), ApiError> {
    let mut spec = parse_spec(body)?;
    if let Some(id) = path_id {
        if spec.id.is_empty() {
            spec.id = id.to_string();
        } else if spec.id != id.as_str() {
            return Err(ApiError::invalid_field(
                "agent_id",
                format!("{:?} differs from the agent in the path, {id:?}", spec.id),
            ));
        }
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    spec.resolve_paths(&cwd);
    let kept = kept.is_some_and(|k| k == spec.package);
    if !spec.is_remote() && !kept && !settings.package_allowed(&spec.package) {
        return Err(ApiError::invalid_field(
            "package_path",
            format!(
                "local packages must be in a package root: {} is not ({}; PAR_PACKAGE_ROOTS)",
                spec.package,
                settings.package_roots_shown()
            ),
        ));
    }
    let mut errors = crate::config::ValidationErrors::default();
    validate_spec(&spec, "", &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid(&errors));
    }
    let id = AgentId::new(&spec.id).map_err(|e| ApiError::invalid_field("agent_id", e))?;
    Ok((id, spec))
}

/// The answer, or, when `wait` runs out first, the agent as it is now (202).
async fn ask_within(
    st: &super::ApiState,
    command: Command,
    wait: Option<Duration>,
    agent: &AgentId,
) -> Result<Reply, Response> {
    let ask = st.control.ask(command);
    let Some(limit) = wait else {
        return Ok(ask.await);
    };
    match tokio::time::timeout(limit + Duration::from_millis(200), ask).await {
        Ok(reply) => Ok(reply),
        Err(_) => {
            let now = st.control.processes();
            match now.iter().find(|p| p.agent_id == agent.as_str()) {
                Some(p) => Err(json_status(StatusCode::ACCEPTED, view_json(st, p))),
                None => Err(ApiError::not_found(format!("no agent '{agent}'")).into_response()),
            }
        }
    }
}

fn agent_view(reply: Reply) -> Result<ProcessView, ApiError> {
    match reply? {
        Answer::Agent(v) | Answer::Put(v, _) => Ok(*v),
        _ => Err(ApiError::internal("unexpected answer")),
    }
}

pub async fn spawn(axum::extract::State(st): St, Query(q): Q, body: Bytes) -> Response {
    let (id, spec) = match checked_spec(&st.settings, &body, None, None) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let wait = wait_of(&q);
    let command = Command::Spawn {
        agent: id.clone(),
        spec,
        origin: Origin::Api,
        wait: wait.is_some(),
    };
    let view = match ask_within(&st, command, wait, &id).await {
        Ok(reply) => agent_view(reply),
        Err(timed_out) => return timed_out,
    };
    match view {
        Err(e) => e.into_response(),
        Ok(v) if wait.is_none() || v.state == State::Ready => {
            json_status(StatusCode::CREATED, view_json(&st, &v))
        }
        Ok(v) => not_running(&st, &id, &v),
    }
}

/// A `?wait` that ended with the agent settled but not running.
fn not_running(st: &super::ApiState, id: &AgentId, v: &ProcessView) -> Response {
    let why = v.last_error.clone().unwrap_or_else(|| v.state.to_string());
    if v.state == State::Failed {
        let mut e = ApiError::invalid_field("package_path", why);
        e.message = format!(
            "agent '{id}' failed: {}",
            e.message.trim_start_matches("package_path: ")
        );
        return e.into_response();
    }
    let mut body = view_json(st, v);
    body["error"] = json!({
        "code": "agent_not_running",
        "message": format!("agent '{id}' is {}: {why}", v.state),
    });
    json_status(StatusCode::INTERNAL_SERVER_ERROR, body)
}

pub async fn stop(axum::extract::State(st): St, Path(pid): Path<String>) -> Response {
    let agent = match agent_of_process(&st, &pid) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    match agent_view(st.control.ask(Command::Stop { agent }).await) {
        Ok(v) => json_status(StatusCode::OK, view_json(&st, &v)),
        Err(e) => e.into_response(),
    }
}

pub async fn restart(
    axum::extract::State(st): St,
    Path(pid): Path<String>,
    Query(q): Q,
) -> Response {
    let agent = match agent_of_process(&st, &pid) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let wait = wait_of(&q);
    let command = Command::Restart {
        agent: agent.clone(),
        wait: wait.is_some(),
    };
    match ask_within(&st, command, wait, &agent).await.map(agent_view) {
        Err(timed_out) => timed_out,
        Ok(Err(e)) => e.into_response(),
        Ok(Ok(v)) if wait.is_some() && v.state == State::Ready => {
            json_status(StatusCode::OK, view_json(&st, &v))
        }
        Ok(Ok(v)) if wait.is_some() => not_running(&st, &agent, &v),
        Ok(Ok(v)) => json_status(StatusCode::ACCEPTED, view_json(&st, &v)),
    }
}

pub async fn remove(axum::extract::State(st): St, Path(id): Path<String>) -> Response {
    let agent = match agent_of_path(&st, &id) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    match agent_view(st.control.ask(Command::Remove { agent }).await) {
        Ok(v) => {
            let mut j = view_json(&st, &v);
            j["removed"] = json!(true);
            json_status(StatusCode::OK, j)
        }
        Err(e) => e.into_response(),
    }
}

/// `PUT /supervisor/agents/{id}`: a full spec (same fields as spawn). An
/// existing agent is rolled out blue/green (202, or 200 when nothing
/// changed); an unknown one is created (201). `?wait=true` answers when the
/// rollout has ended — 409 if a newer spec superseded it first.
pub async fn put(
    axum::extract::State(st): St,
    Path(id): Path<String>,
    Query(q): Q,
    body: Bytes,
) -> Response {
    let path_id = match agent_of_path(&st, &id) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let (agent, spec) = match checked_spec(&st.settings, &body, Some(&path_id), None) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let wait = wait_of(&q);
    rollout(&st, agent, spec, None, wait).await
}

/// `PATCH /supervisor/agents/{id}`: a JSON merge patch (RFC 7396) on the
/// spec the agent heads for; what it leaves out is kept (`env_vars`
/// included, which no read route shows). A new package without a `sha256`
/// drops the old one's. Then as PUT; 409 if the agent changed meanwhile.
pub async fn patch(
    axum::extract::State(st): St,
    Path(id): Path<String>,
    Query(q): Q,
    body: Bytes,
) -> Response {
    let agent = match agent_of_path(&st, &id) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let patch = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(m)) => m,
        Ok(_) => return ApiError::invalid_field("body", "must be a JSON object").into_response(),
        Err(e) => {
            return ApiError::invalid_field("body", format!("is not valid JSON: {e}"))
                .into_response()
        }
    };
    let base = match st
        .control
        .ask(Command::Spec {
            agent: agent.clone(),
        })
        .await
    {
        Ok(Answer::Spec(s)) => s,
        Ok(_) => return ApiError::internal("unexpected answer").into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let merged = match serde_json::to_value(&*base) {
        Ok(v) => crate::model::spec::merge_patch(v, patch),
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    let (agent, spec) = match checked_spec(
        &st.settings,
        merged.to_string().as_bytes(),
        Some(&agent),
        Some(&base.package),
    ) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    rollout(&st, agent, spec, Some(base), wait_of(&q)).await
}

async fn rollout(
    st: &super::ApiState,
    agent: AgentId,
    spec: AgentSpec,
    base: Option<Box<AgentSpec>>,
    wait: Option<Duration>,
) -> Response {
    let command = Command::Put {
        agent: agent.clone(),
        spec,
        wait: wait.is_some(),
        base,
    };
    let (view, outcome) = match ask_within(st, command, wait, &agent).await {
        Err(timed_out) => return timed_out,
        Ok(Err(e)) => return ApiError::from(e).into_response(),
        Ok(Ok(Answer::Put(v, o))) => (v, o),
        Ok(Ok(_)) => return ApiError::internal("unexpected answer").into_response(),
    };
    let status = match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Rolling => StatusCode::ACCEPTED,
        PutOutcome::Unchanged | PutOutcome::Scaled => StatusCode::OK,
        PutOutcome::Superseded => StatusCode::CONFLICT,
    };
    let mut j = view_json(st, &view);
    j["outcome"] = json!(outcome.as_str());
    json_status(status, j)
}

/// `POST /supervisor/reload`: re-read the declared agents (config file,
/// `PAR_AGENTS`, registry) and reconcile; answers what changed.
pub async fn reload(axum::extract::State(st): St, Query(q): Q) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let req = desired::Request::Reload {
        trigger: "api",
        allow_empty: matches!(q.get("allow_empty").map(String::as_str), Some("true" | "1")),
        reply: tx,
    };
    if st.reload.send(req).is_err() {
        return ApiError::shutting_down().into_response();
    }
    match rx.await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(ReloadError::Invalid(e))) => ApiError::invalid(&e).into_response(),
        Ok(Err(ReloadError::Registry(m))) => ApiError::bad_gateway(m).into_response(),
        Ok(Err(ReloadError::ShuttingDown)) | Err(_) => ApiError::shutting_down().into_response(),
    }
}

/// The `url` of an agent in `GET /agents`: a reference relative to the
/// supervisor the list was read from (RFC 3986 §4.2). Built from nothing the
/// client sent: a `Host` or `X-Forwarded-*` header reflected here would let
/// whoever sends one choose where other clients are pointed.
pub(super) fn agent_url(agent_id: &str) -> String {
    format!("/agents/{agent_id}")
}
