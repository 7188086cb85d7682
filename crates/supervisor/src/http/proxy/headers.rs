//! Headers on the way through: request ids, hop-by-hop headers removed,
//! `X-Forwarded-*` added, and gRPC errors as trailers-only responses.

use std::net::SocketAddr;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Response;

pub(super) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(super) static X_AGENT_ID: HeaderName = HeaderName::from_static("x-agent-id");
pub(super) static X_PAR_PROCESS: HeaderName = HeaderName::from_static("x-par-process");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

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

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1), and those the
/// `Connection` header names. gRPC keeps `te: trailers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, grpc: bool) {
    if let Some(conn) = headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        for name in conn.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Ok(name) = HeaderName::try_from(name) {
                if !(grpc && name == header::TE) {
                    headers.remove(name);
                }
            }
        }
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if !grpc {
        headers.remove(header::TE);
    }
}

pub fn append_forwarded(headers: &mut HeaderMap, peer: SocketAddr, prefix: Option<HeaderValue>) {
    let ip = peer.ip().to_string();
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if let Some(p) = prefix {
        headers.insert(X_FORWARDED_PREFIX.clone(), p);
    }
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
