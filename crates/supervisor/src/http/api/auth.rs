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
        .map(|v| (bearer_token(v.as_bytes()).is_some(), v.as_bytes()));
    match given {
        Some((true, v)) if is_admin_credential(v, st.admin.token.as_bytes()) => Ok(()),
        Some((true, _)) => Err(ApiError::unauthorized("the bearer token is not valid")),
        _ => Err(ApiError::unauthorized(match &st.admin.file {
            Some(f) => format!(
                "this route needs Authorization: Bearer <token>; the token of this boot is in {} (par ctl reads it)",
                f.display()
            ),
            None => "this route needs Authorization: Bearer <PAR_ADMIN_TOKEN>".to_string(),
        })),
    }
}

/// The one rule for "this `Authorization` value is the admin credential":
/// the admin check accepts exactly these values, and the proxy removes
/// exactly these (and so every spelling that is accepted) before a request
/// reaches an agent.
pub fn is_admin_credential(value: &[u8], token: &[u8]) -> bool {
    !token.is_empty() && bearer_token(value).is_some_and(|t| ct_eq(t, token))
}

/// The credentials of a `Bearer` value (RFC 6750 §2.1; the scheme in any
/// case, RFC 9110 §11.1), the spaces around them dropped.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let v = value.trim_ascii();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ' || b == b'\t')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// The admin credential as the proxy holds it, to keep it from agents.
#[derive(Debug, Clone)]
pub struct AdminCredential(Arc<str>);

impl AdminCredential {
    pub fn new(token: &str) -> Self {
        AdminCredential(Arc::from(token))
    }

    /// Whether an `Authorization` value carries it ([`is_admin_credential`]).
    pub fn is(&self, value: &[u8]) -> bool {
        is_admin_credential(value, self.0.as_bytes())
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

    #[test]
    fn the_admin_credential_in_every_spelling_the_check_accepts() {
        let t = b"s3cret";
        for yes in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "Bearer  s3cret",
            "Bearer\ts3cret",
            " Bearer s3cret  ",
        ] {
            assert!(is_admin_credential(yes.as_bytes(), t), "{yes:?}");
        }
        for no in [
            "Bearer s3cretx",
            "Bearers3cret",
            "Basic s3cret",
            "s3cret",
            "Bearer",
            "Bearer ",
            "Bearer s3 cret",
        ] {
            assert!(!is_admin_credential(no.as_bytes(), t), "{no:?}");
        }
        assert!(!is_admin_credential(b"Bearer ", b""));
        assert!(AdminCredential::new("s3cret").is(b"bEaReR   s3cret"));
    }
}
