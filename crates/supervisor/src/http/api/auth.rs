//! The admin check for mutating routes and logs, as a layer:
//! `Authorization: Bearer $PAR_ADMIN_TOKEN`, or, with no token configured,
//! loopback peers only.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::http::error::ApiError;

pub async fn require_admin(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match authorize(&st, req.headers(), peer) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn authorize(
    st: &ApiState,
    headers: &axum::http::HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<(), ApiError> {
    match st.settings.admin_token.as_deref().filter(|t| !t.is_empty()) {
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
        None if peer.is_some_and(|p| is_loopback(&p)) => Ok(()),
        None => Err(ApiError::forbidden(
            "no PAR_ADMIN_TOKEN is configured, so this route is accepted from loopback only",
        )),
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
}
