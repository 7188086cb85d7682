//! The admin check for mutating routes and logs, as a layer:
//! `Authorization: Bearer <token>` — `PAR_ADMIN_TOKEN`, or, when none is
//! configured, the token the supervisor made at start and wrote to
//! `$PAR_HOME/run/supervisor-<port>.token` (readable by the supervisor's
//! user only).
//! Access is by this capability, never by address: agent code runs on
//! loopback too.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::http::error::ApiError;

pub async fn require_admin(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    match authorize(&st, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Whether the request carries the admin token (public routes show more to it).
pub fn is_admin(st: &ApiState, headers: &axum::http::HeaderMap) -> bool {
    authorize(st, headers).is_ok()
}

fn authorize(st: &ApiState, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(g) if ct_eq(g.as_bytes(), st.admin.token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("the bearer token is not valid")),
        None => Err(ApiError::unauthorized(match &st.admin.file {
            Some(f) => format!(
                "this route needs Authorization: Bearer <token>; the token of this boot is in {} (par ctl reads it)",
                f.display()
            ),
            None => "this route needs Authorization: Bearer <PAR_ADMIN_TOKEN>".to_string(),
        })),
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
