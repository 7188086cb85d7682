//! What crosses to the agent host for an ASGI request, and back: the scope
//! header of an `http` or `websocket` request, and the response the app's
//! status and headers make.

use std::net::SocketAddr;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderName, HeaderValue, StatusCode};

use crate::error::ApiError;
use crate::host::Reply;

/// Header and value as the host reads them (bytes as latin-1 chars).
pub(crate) fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

#[derive(serde::Serialize)]
struct Scope<'a> {
    method: &'a str,
    path: &'a str,
    query: String,
    version: &'static str,
    headers: Vec<(String, String)>,
    more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<(String, u16)>,
}

/// The scope the host builds an ASGI `http` or `websocket` scope from;
/// `more` says whether body frames follow.
pub(crate) fn scope_header(
    parts: &http::request::Parts,
    client: Option<SocketAddr>,
    more: bool,
) -> Result<Vec<u8>, ApiError> {
    let version = match parts.version {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    let scope = Scope {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts
            .uri
            .query()
            .map(|q| latin1(q.as_bytes()))
            .unwrap_or_default(),
        version,
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), latin1(v.as_bytes())))
            .collect(),
        more,
        client: client.map(|c| (c.ip().to_string(), c.port())),
    };
    serde_json::to_vec(&scope)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// A response with the app's status and headers (latin-1 strings from the
/// host; invalid and hop-by-hop ones dropped).
pub(crate) fn response(status: u16, headers: Vec<(String, String)>, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let map = resp.headers_mut();
    for (k, v) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(&v.chars().map(|c| c as u8).collect::<Vec<_>>()),
        ) else {
            continue;
        };
        if is_hop_by_hop(&name) {
            continue;
        }
        map.append(name, value);
    }
    resp
}

pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-connection"
            | "te"
            | "trailer"
    )
}

/// The error for a host reply that is not the response head awaited: the
/// app failed (500), the host refused (502), or the host is gone.
pub(crate) fn not_a_head(reply: Option<Reply>, during: &str) -> ApiError {
    match reply {
        Some(Reply::Failed { error, .. }) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "agent_error",
            format!("the agent's ASGI app failed{during}: {error}"),
        ),
        Some(Reply::Err { error, .. }) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "bad_host_reply", error)
        }
        Some(other) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_host_reply",
            format!("unexpected reply from the agent host: {other:?}"),
        ),
        None => ApiError::host_gone(),
    }
}
