//! Headers the proxy makes: request ids and gRPC errors as trailers-only
//! responses. What is passed on, removed and added on the way through is
//! `policy`'s.

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Response;

use super::policy::X_REQUEST_ID;

pub(super) static X_AGENT_ID: HeaderName = HeaderName::from_static("x-agent-id");

pub(super) fn with_request_id(mut resp: Response<Body>, req: &HeaderMap) -> Response<Body> {
    let id = req
        .get(&X_REQUEST_ID)
        .cloned()
        .unwrap_or_else(new_request_id);
    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
    resp
}

/// 32 random hex digits (no formatting machinery: it runs per request).
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut v = fastrand::u128(..);
    let mut buf = [0u8; 32];
    for b in buf.iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A trailers-only gRPC error response.
pub fn grpc_error(code: u8, message: &str) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    let encoded =
        percent_encoding::utf8_percent_encode(message, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    if let Ok(v) = HeaderValue::try_from(encoded) {
        h.insert("grpc-message", v);
    }
    resp
}
