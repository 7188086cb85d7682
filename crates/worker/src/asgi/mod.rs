//! Requests the worker does not answer itself: gRPC, the UI's static files, the
//! agent's ASGI app (streamed both ways), the SPA fallback, else a JSON 404.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::StatusCode;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::host::protocol::{self, to_host};
use crate::host::{Pending, Reply};
use crate::state::{Agent, AppState};
use scope::{not_a_head, response, scope_header};

mod scope;
pub mod sockets;
mod websocket;

/// Request bodies up to this size (known from Content-Length) go in one frame.
const INLINE_BODY: u64 = 1024 * 1024;

pub async fn fallback(State(state): State<Arc<AppState>>, req: http::Request<Body>) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match handle(&state, client, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn surface(mut resp: Response, name: &'static str) -> Response {
    resp.extensions_mut().insert(crate::trace::Surface(name));
    resp
}

async fn handle(
    state: &AppState,
    client: Option<SocketAddr>,
    req: http::Request<Body>,
) -> Result<Response, ApiError> {
    let agent = state.ready_agent()?;
    if par_a2a::is_grpc(req.headers()) {
        let Some(grpc) = agent.grpc.clone() else {
            return Err(ApiError::not_found("this agent declares no a2a surface"));
        };
        return grpc.oneshot(req).await.map_err(|e| match e {});
    }
    if websocket::is_upgrade(req.headers()) {
        return websocket::handle(state, &agent, client, req)
            .await
            .map(|r| surface(r, "websocket"));
    }
    let (parts, body) = req.into_parts();
    // Under `/ui/` (or a dedicated basePath) the UI answers first.
    if let Some(mount) = agent
        .ui
        .as_ref()
        .and_then(|u| u.dedicated(parts.uri.path()))
    {
        if let Some(resp) = mount.redirect_to_slash(&parts) {
            return Ok(surface(resp, "ui"));
        }
        if let Some(resp) = mount.serve_file(&parts).await {
            return Ok(surface(resp, "ui"));
        }
        if let Some(resp) = mount.spa_fallback(&parts).await {
            return Ok(surface(resp, "ui"));
        }
    }
    // Elsewhere the agent's routes come first; the UI at `/` takes their 404s.
    if agent.hello.asgi {
        let resp = forward(state, &agent, client, &parts, body).await?;
        let app = if agent.manifest().rest.is_some() {
            "rest"
        } else {
            "asgi"
        };
        if resp.status() != StatusCode::NOT_FOUND {
            return Ok(surface(resp, app));
        }
        if let Some(ui) = root_ui(&agent, &parts).await {
            return Ok(surface(ui, "ui"));
        }
        return Ok(surface(resp, app));
    }
    if let Some(ui) = root_ui(&agent, &parts).await {
        return Ok(surface(ui, "ui"));
    }
    Err(ApiError::not_found(format!(
        "no route for {} {}",
        parts.method,
        parts.uri.path()
    )))
}

/// A file of the UI mounted at `/`, else its SPA fallback.
async fn root_ui(agent: &Agent, parts: &http::request::Parts) -> Option<Response> {
    let ui = agent.ui.as_ref()?.root()?;
    match ui.serve_file(parts).await {
        Some(resp) => Some(resp),
        None => ui.spa_fallback(parts).await,
    }
}

/// Sends the request to the agent's ASGI app and streams its response back.
async fn forward(
    state: &AppState,
    agent: &Agent,
    client: Option<SocketAddr>,
    parts: &http::request::Parts,
    body: Body,
) -> Result<Response, ApiError> {
    let (inline, body) = match http_body::Body::size_hint(&body).exact() {
        Some(n) if n <= INLINE_BODY => {
            let bytes = body
                .collect()
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("failed to read request body: {e}"),
                    )
                })?
                .to_bytes();
            (Some(bytes), None)
        }
        _ => (None, Some(body)),
    };
    let header = scope_header(parts, client, inline.is_none())?;
    // The round trip to the response head.
    let mut host_span = crate::trace::host_span("agent host http");
    let mut pending = agent
        .host
        .request(to_host::HTTP, &header, inline.as_deref().unwrap_or(b""));
    if let Some(body) = body {
        tokio::spawn(pump_body(Arc::clone(pending.channel()), pending.id(), body));
    }
    let first = tokio::time::timeout(state.timeout, pending.next())
        .await
        .map_err(|_| ApiError::timeout(state.timeout))?;
    if let (Some(s), Some(Reply::Start { status, .. })) = (host_span.as_mut(), &first) {
        s.set("http.response.status_code", i64::from(*status));
    }
    drop(host_span);
    match first {
        Some(Reply::Start {
            status,
            headers,
            body,
        }) => {
            let body = match body {
                Some(b) => Body::from(b),
                None => stream_body(pending),
            };
            Ok(response(status, headers, body))
        }
        other => Err(not_a_head(other, "")),
    }
}

/// Streams a request body to the host as BODY frames.
async fn pump_body(chan: Arc<crate::host::HostChannel>, id: u32, body: Body) {
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) if b.is_empty() => {}
            Ok(b) => chan.send(protocol::encode(to_host::BODY, id, b"", &b)),
            Err(_) => {
                chan.send(protocol::encode(to_host::CANCEL, id, b"", b""));
                return;
            }
        }
    }
    chan.send(protocol::encode(to_host::BODY_END, id, b"", b""));
}

/// The response body: chunks as the host sends them. Each chunk taken by the
/// connection is credited back to the host (in batches of a quarter window), so
/// the host never runs more than [`protocol::STREAM_WINDOW`] ahead of a slow
/// client. Dropping it (client gone) drops `pending`, which tells the app the
/// client disconnected.
fn stream_body(pending: Pending) -> Body {
    const BATCH: u32 = protocol::STREAM_WINDOW / 4;
    let stream = futures_util::stream::unfold(Some((pending, 0u32)), |state| async move {
        let (mut pending, mut owed) = state?;
        match pending.next().await {
            Some(Reply::Body(b)) => {
                // The connection takes this chunk now: credit it.
                owed = owed.saturating_add(u32::try_from(b.len()).unwrap_or(u32::MAX));
                if owed >= BATCH {
                    pending.grant(owed);
                    owed = 0;
                }
                Some((Ok::<Bytes, std::io::Error>(b), Some((pending, owed))))
            }
            Some(Reply::End(b)) => Some((Ok(b), None)),
            Some(Reply::Failed { error, .. }) => Some((
                Err(std::io::Error::other(format!(
                    "agent's ASGI app failed mid-response: {error}"
                ))),
                None,
            )),
            Some(other) => Some((
                Err(std::io::Error::other(format!(
                    "unexpected reply from the agent host: {other:?}"
                ))),
                None,
            )),
            None => Some((
                Err(std::io::Error::other("the agent host exited mid-response")),
                None,
            )),
        }
    });
    Body::from_stream(stream)
}
