//! The one HTTP error type: JSON `{"error":{"code","message",...}}` with a fitting status.

use axum::body::Body;
use axum::response::IntoResponse;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use crate::config::ValidationErrors;
use crate::model::{CommandError, ErrorKind};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after_secs: None,
        }
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", m)
    }
    pub fn unavailable(m: impl Into<String>, retry_after_secs: u32) -> Self {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", m)
        }
    }
    pub fn bad_gateway(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", m)
    }
    pub fn timeout(m: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn not_implemented(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
    pub fn headers_too_large(m: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            m,
        )
    }
    pub fn shutting_down() -> Self {
        Self::unavailable("the supervisor is shutting down", 5)
    }
    /// 422 listing every field error; the message names them all.
    pub fn invalid(errors: &ValidationErrors) -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            errors.to_string().replace('\n', "; "),
        );
        e.details = serde_json::to_value(errors).ok();
        e
    }
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let mut v = ValidationErrors::default();
        v.push(field, message);
        Self::invalid(&v)
    }

    pub fn into_response_body(self) -> Response<Body> {
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(d) = self.details {
            if let Some(first) = d.get(0).and_then(|f| f.get("field")).cloned() {
                err["field"] = first;
            }
            err["fields"] = d;
        }
        let body = serde_json::to_vec(&json!({ "error": err })).unwrap_or_default();
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e.kind {
            ErrorKind::NotFound => ApiError::not_found(e.message),
            ErrorKind::Conflict => ApiError::conflict(e.message),
            ErrorKind::ShuttingDown => ApiError::shutting_down(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        self.into_response_body()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}
