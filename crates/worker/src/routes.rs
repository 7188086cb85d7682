//! The worker's own routes: health, meta, invoke, exports, metrics, surface health.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{header, StatusCode};

use crate::error::ApiError;
use crate::host::protocol::to_host;
use crate::host::Reply;
use crate::state::{Agent, AppState, Phase};

/// The whole HTTP surface of the worker.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/meta", get(meta))
        .route("/invoke", post(invoke))
        .route("/exports/{name}", post(export))
        .route("/metrics", get(metrics))
        .route("/ui/health", get(ui_health))
        .route("/a2a/health", get(a2a_health))
        .fallback(crate::asgi::fallback)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            record,
        ))
        .with_state(state)
}

async fn record(
    State(state): State<Arc<AppState>>,
    mut req: http::Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let start = Instant::now();
    let route: &'static str = match req.extensions().get::<MatchedPath>().map(|p| p.as_str()) {
        Some("/health") => "/health",
        Some("/meta") => "/meta",
        Some("/invoke") => "/invoke",
        Some("/exports/{name}") => "/exports/{name}",
        Some("/metrics") => "/metrics",
        Some("/ui/health") => "/ui/health",
        Some("/a2a/health") => "/a2a/health",
        _ if par_a2a::is_grpc(req.headers()) => "grpc",
        _ => "agent",
    };
    // The worker's own probes and pages are not traced; the agent's surfaces are.
    let traced = matches!(route, "/invoke" | "/exports/{name}" | "grpc" | "agent");
    let access = access_log().then(|| (req.method().clone(), req.uri().path().to_string()));
    let tracer = par_telemetry::trace::tracer().filter(|_| traced);
    let (resp, span) = match tracer {
        None if traced => {
            // Tracing off: the caller's context still reaches the agent.
            let carrier = crate::trace::Carrier::from_headers(req.headers());
            let resp = if carrier.is_empty() {
                next.run(req).await
            } else {
                carrier.scope(next.run(req)).await
            };
            (resp, None)
        }
        None => (next.run(req).await, None),
        Some(tracer) => {
            let span = server_span(tracer, route, &mut req, state.port);
            let carrier = crate::trace::Carrier::of(&span);
            let log = tracing::info_span!("request", trace_id = %span.trace_id(), span_id = %span.span_id());
            let resp = carrier
                .scope(tracing::Instrument::instrument(next.run(req), log))
                .await;
            (resp, Some(span))
        }
    };
    let status = resp.status().as_u16();
    state.metrics.record(route, status, start.elapsed());
    if let Some((method, path)) = access {
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        match &span {
            Some(s) => {
                tracing::info!(target: "par::access", method = %method, path = %path, status, ms, trace_id = %s.trace_id(), span_id = %s.span_id(), "served")
            }
            None => {
                tracing::info!(target: "par::access", method = %method, path = %path, status, ms, "served")
            }
        }
    }
    match span {
        Some(mut span) => {
            let surface = resp
                .extensions()
                .get::<crate::trace::Surface>()
                .map(|s| s.0)
                .unwrap_or(match route {
                    "/invoke" => "invoke",
                    "/exports/{name}" => "export",
                    "grpc" => "grpc",
                    _ => "agent",
                });
            span.set("par.surface", surface);
            span.set("http.response.status_code", i64::from(status));
            if status >= 500 {
                span.set_status(par_telemetry::trace::Status::Error(
                    format!("status {status}").into(),
                ));
            }
            // The span ends when the body is done (a stream: its last chunk).
            let (parts, body) = resp.into_parts();
            Response::from_parts(parts, crate::trace::Traced::wrap(body, span))
        }
        None => resp,
    }
}

/// `PAR_ACCESS_LOG=true`: one `par::access` line per request served.
fn access_log() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("PAR_ACCESS_LOG")
            .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "True"))
    })
}

/// The worker's server span for a request: continues its `traceparent`,
/// and the request's `traceparent` (and `tracestate`) become the span's, so
/// that what the agent sees has the worker's span as its parent.
fn server_span(
    tracer: &'static par_telemetry::trace::Tracer,
    route: &'static str,
    req: &mut http::Request<Body>,
    port: u16,
) -> par_telemetry::trace::Span {
    let method = req.method().as_str().to_string();
    let path = req.uri().path();
    let name = match route {
        "grpc" => path.trim_start_matches('/').to_string(),
        "agent" => method.clone(),
        r => format!("{method} {r}"),
    };
    let mut span = tracer.server_span(name, req.headers());
    if span.is_recording() {
        if route == "grpc" {
            span.set("rpc.system", "grpc");
            if let Some((service, m)) = path.trim_start_matches('/').split_once('/') {
                span.set("rpc.service", service.to_string());
                span.set("rpc.method", m.to_string());
            }
        } else if route != "agent" {
            span.set("http.route", route);
        }
        span.set("http.request.method", method);
        span.set("url.path", path.to_string());
        if let Some(q) = req.uri().query() {
            span.set("url.query", q.to_string());
        }
        span.set("url.scheme", "http");
        span.set(
            "network.protocol.version",
            match req.version() {
                http::Version::HTTP_2 => "2",
                http::Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
        );
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(a, _)| a).to_string());
        span.set("server.address", host.unwrap_or_else(|| "127.0.0.1".into()));
        span.set("server.port", i64::from(port));
        if let Some(ua) = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            span.set("user_agent.original", ua.to_string());
        }
        if let Some(c) = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        {
            span.set("client.address", c.0.ip().to_string());
            span.set("client.port", i64::from(c.0.port()));
        }
        if let Some(len) = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
        {
            span.set("http.request.body.size", len);
        }
    }
    span.context().inject(req.headers_mut());
    span
}

/// Answers at once in every phase; 200 only when ready.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let phase = state.phase();
    let body = match &*phase {
        Phase::Starting {
            package_id,
            surfaces,
        } => serde_json::json!({
            "status": "starting", "agent_id": state.agent_id, "package_id": package_id, "surfaces": surfaces,
        }),
        Phase::Ready(a) => serde_json::json!({
            "status": "ready", "agent_id": state.agent_id, "package_id": a.package.package_id(), "surfaces": a.surfaces,
        }),
        Phase::Error {
            package_id,
            message,
            surfaces,
        } => serde_json::json!({
            "status": "error", "agent_id": state.agent_id, "package_id": package_id, "error": message, "surfaces": surfaces,
        }),
    };
    let status = if matches!(&*phase, Phase::Ready(_)) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn meta(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let a = state.ready_agent()?;
    let m = a.manifest();
    let exports: Vec<_> = m.metadata.sub_agents.iter().filter(|s| s.public).collect();
    let body = serde_json::json!({
        "agent_id": state.agent_id,
        "package_id": a.package.package_id(),
        "name": m.name,
        "version": m.metadata.version.clone().or_else(|| m.version.clone()),
        "display_name": m.display_name,
        "description": m.description,
        "author": m.author,
        "license": m.license,
        "runtime": m.runtime,
        "entrypoint": m.entrypoint.as_ref().map(entry_string),
        "capabilities": m.capabilities,
        "metadata": m.metadata,
        "surfaces": a.surfaces,
        "exports": exports,
        "a2a_actions": a.hello.a2a_actions,
        "python": a.hello.python,
        "warnings": m.warnings,
        "extra": m.extra,
    });
    Ok(axum::Json(body).into_response())
}

fn entry_string(e: &par_package::manifest::EntryRef) -> String {
    match &e.attr {
        Some(a) => format!("{}:{}", e.module, a),
        None => e.module.clone(),
    }
}

/// Checks that the body of `POST {route}` is a JSON document.
fn json_body(route: &str, body: &Bytes) -> Result<Bytes, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        let what = if body.is_empty() {
            "empty"
        } else {
            "only whitespace"
        };
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the request body is {what}: POST {route} takes a JSON document (send {{}} for no arguments)"),
        ));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("malformed JSON body: {e}"),
        )
    })?;
    Ok(body.clone())
}

/// Export names the original PAR routed to the entrypoint handler of a
/// package that has no export of that name.
const LEGACY_EXPORTS: [&str; 4] = ["execute", "invoke", "get_info", "list_capabilities"];

/// What `POST /exports/{name}` calls.
#[derive(Debug, PartialEq)]
enum ExportTarget {
    /// The package's own public export.
    Export,
    /// The entrypoint handler, with the body as it is (as for `/invoke`).
    Entrypoint,
    /// Nothing: a 404 with this message.
    Missing(String),
}

fn export_target(
    sub_agents: &[par_package::manifest::SubAgent],
    has_entrypoint: bool,
    name: &str,
) -> ExportTarget {
    match sub_agents.iter().find(|s| s.name == name) {
        Some(s) if s.public => ExportTarget::Export,
        Some(_) => ExportTarget::Missing(format!("no public export named '{name}'")),
        None if LEGACY_EXPORTS.contains(&name) && has_entrypoint => ExportTarget::Entrypoint,
        None if LEGACY_EXPORTS.contains(&name) => ExportTarget::Missing(format!(
            "no public export named '{name}', and no entrypoint to take it"
        )),
        None => ExportTarget::Missing(format!("no public export named '{name}'")),
    }
}

async fn invoke(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let a = state.ready_agent()?;
    if !a.hello.entrypoint {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_entrypoint",
            "this agent has no entrypoint configured (agent.yaml `entrypoint`), so POST /invoke has nothing to call",
        ));
    }
    let body = json_body("/invoke", &body)?;
    let header = invoke_header();
    call(&state, &a, to_host::INVOKE, &header, &body).await
}

async fn export(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let a = state.ready_agent()?;
    let target = export_target(&a.manifest().metadata.sub_agents, a.hello.entrypoint, &name);
    let body = match target {
        ExportTarget::Missing(message) => return Err(ApiError::not_found(message)),
        _ => json_body(&format!("/exports/{name}"), &body)?,
    };
    if target == ExportTarget::Entrypoint {
        let header = invoke_header();
        return call(&state, &a, to_host::INVOKE, &header, &body).await;
    }
    let header = crate::trace::host_header(serde_json::json!({"op": "export", "name": name}));
    let header = serde_json::to_vec(&header)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    call(&state, &a, to_host::CALL, &header, &body).await
}

/// An invoke frame's header: empty, or `{"trace": {...}}` when the request
/// has a trace context to pass on.
fn invoke_header() -> Vec<u8> {
    match crate::trace::current().and_then(|c| c.json()) {
        Some(t) => serde_json::to_vec(&serde_json::json!({ "trace": t })).unwrap_or_default(),
        None => Vec::new(),
    }
}

/// Runs a call on the host and answers in the pixell envelope.
async fn call(
    state: &AppState,
    a: &Agent,
    kind: u8,
    header: &[u8],
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut host_span = crate::trace::host_span(if kind == to_host::INVOKE {
        "agent host invoke"
    } else {
        "agent host call"
    });
    let mut pending = a.host.request(kind, header, body);
    let reply = tokio::time::timeout(state.timeout, pending.next())
        .await
        .map_err(|_| ApiError::timeout(state.timeout))?;
    if let Some(s) = host_span.as_mut() {
        match &reply {
            Some(Reply::Ok(data)) => s.set("par.host.reply_bytes", data.len()),
            Some(Reply::Err { kind, .. }) => s.set_status(par_telemetry::trace::Status::Error(
                format!("agent error ({kind})").into(),
            )),
            _ => s.set_status(par_telemetry::trace::Status::Error("no reply".into())),
        }
    }
    drop(host_span);
    match reply {
        Some(Reply::Ok(data)) => {
            let mut out = Vec::with_capacity(data.len() + 40);
            out.extend_from_slice(br#"{"status":"success","data":"#);
            out.extend_from_slice(&data);
            out.extend_from_slice(br#","error":null}"#);
            Ok(json_response(StatusCode::OK, out))
        }
        Some(Reply::Err { error, kind }) => match kind.as_str() {
            "bad_request" => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", error)),
            "not_found" => Err(ApiError::not_found(error)),
            "no_entrypoint" => Err(ApiError::new(StatusCode::NOT_FOUND, "no_entrypoint", error)),
            _ => {
                let body = serde_json::json!({"status": "error", "data": null, "error": error});
                Ok((StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response())
            }
        },
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_host_reply",
            format!("unexpected reply from the agent host: {other:?}"),
        )),
        None => Err(ApiError::host_gone()),
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let agent = state.agent();
    let text = state.metrics.render(
        &state.agent_id,
        agent.is_some(),
        agent.map(|a| a.host.in_flight()).unwrap_or(0),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn ui_health(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let a = state.ready_agent()?;
    let Some(s) = a.surfaces.get("ui") else {
        return Err(ApiError::not_found("this agent declares no ui surface"));
    };
    let status = if s.status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if s.status == "ready" { "ok" } else { "error" },
        "error": s.error,
        "path": a.manifest().ui.as_ref().map(|u| u.path.clone()),
        "base_path": a.manifest().ui.as_ref().map(|u| u.base_path.clone()),
        "mounts": a.ui.as_ref().map(|u| u.base_paths()),
    });
    Ok((status, axum::Json(body)).into_response())
}

/// Calls the agent's own gRPC Health over the worker's port (a real round trip).
async fn a2a_health(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let a = state.ready_agent()?;
    if a.grpc.is_none() {
        return Err(ApiError::not_found("this agent declares no a2a surface"));
    }
    match par_a2a::client::health(&state.self_url).await {
        Ok(h) => {
            let status = if h.ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::json!({
                "status": if h.ok { "ok" } else { "error" }, "grpc": true, "message": h.message, "timestamp": h.timestamp,
            });
            Ok((status, axum::Json(body)).into_response())
        }
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "a2a_unavailable",
            format!("gRPC Health call failed: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use par_package::manifest::SubAgent;

    fn sub(name: &str, public: bool) -> SubAgent {
        SubAgent {
            name: name.into(),
            description: None,
            public,
        }
    }

    #[test]
    fn legacy_export_names_reach_the_entrypoint_unless_the_package_has_them() {
        let own = [
            sub("execute", true),
            sub("get_info", false),
            sub("add", true),
        ];
        for (subs, entry, name, want) in [
            (&own[..], true, "execute", ExportTarget::Export),
            (&own[..], true, "add", ExportTarget::Export),
            (&own[..], true, "invoke", ExportTarget::Entrypoint),
            (
                &own[..],
                true,
                "list_capabilities",
                ExportTarget::Entrypoint,
            ),
            (&[][..], true, "execute", ExportTarget::Entrypoint),
        ] {
            assert_eq!(export_target(subs, entry, name), want, "{name}");
        }
        for (subs, entry, name, message) in [
            // A private export of that name keeps the name private.
            (
                &own[..],
                true,
                "get_info",
                "no public export named 'get_info'",
            ),
            (&[][..], true, "other", "no public export named 'other'"),
            (
                &[][..],
                false,
                "invoke",
                "no public export named 'invoke', and no entrypoint to take it",
            ),
        ] {
            assert_eq!(
                export_target(subs, entry, name),
                ExportTarget::Missing(message.into()),
                "{name}"
            );
        }
    }

    #[test]
    fn an_empty_body_is_named_as_the_problem() {
        for (raw, what) in [(&b""[..], "empty"), (&b" \r\n\t"[..], "only whitespace")] {
            let e = json_body("/invoke", &Bytes::copy_from_slice(raw)).unwrap_err();
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "bad_request"));
            assert!(e.message.contains(what), "{}", e.message);
            assert!(e.message.contains("POST /invoke"), "{}", e.message);
        }
        let e = json_body("/invoke", &Bytes::from_static(b"{not json")).unwrap_err();
        assert!(
            e.message.starts_with("malformed JSON body"),
            "{}",
            e.message
        );
        assert_eq!(
            json_body("/exports/x", &Bytes::from_static(b" [1] ")).unwrap(),
            Bytes::from_static(b" [1] ")
        );
    }
}
