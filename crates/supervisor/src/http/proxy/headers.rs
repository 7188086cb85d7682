//! Headers on the way through: request ids, hop-by-hop headers removed,
//! `X-Forwarded-*` added, and gRPC errors as trailers-only responses.

use std::net::{IpAddr, SocketAddr};

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

/// Hop-by-hop headers (RFC 9110 §7.6.1) besides `te`, which gRPC keeps.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Named by `Connection`, still never removed: what delimits the message
/// and names its target (`framing`).
static NEVER_BY_CONNECTION: [HeaderName; 3] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::HOST,
];

/// Removes every `Authorization` value that is the admin credential.
pub fn drop_credential(headers: &mut HeaderMap, admin: &crate::http::api::auth::AdminCredential) {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    if !values.any(|v| admin.is(v.as_bytes())) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter(|v| !admin.is(v.as_bytes()))
        .cloned()
        .collect();
    headers.remove(header::AUTHORIZATION);
    for v in kept {
        headers.append(header::AUTHORIZATION, v);
    }
}

fn is_hop_by_hop(name: &HeaderName, grpc: bool) -> bool {
    HOP_BY_HOP.contains(name) || (!grpc && *name == header::TE)
}

/// Removes the hop-by-hop headers, and those the `Connection` header names.
/// gRPC keeps `te: trailers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, grpc: bool) {
    // Most messages carry none: one look at each name is cheaper than a
    // hashed removal of each of the nine.
    if !headers.keys().any(|name| is_hop_by_hop(name, grpc)) {
        return;
    }
    // Every `Connection` line counts. A request whose lines name a framing
    // header never gets here (`framing`); a response's may: the worker's
    // framing is hyper's to read, not these headers'.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok())
        .collect();
    for name in named {
        if !(NEVER_BY_CONNECTION.contains(&name) || grpc && name == header::TE) {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if !grpc {
        headers.remove(header::TE);
    }
}

pub fn append_forwarded(headers: &mut HeaderMap, peer: SocketAddr, prefix: Option<HeaderValue>) {
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => HeaderValue::try_from(format!("{prev}, {}", peer.ip())).ok(),
        None => Some(ip_value(peer.ip())),
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if let Some(p) = prefix {
        headers.insert(X_FORWARDED_PREFIX.clone(), p);
    }
}

/// The address as a header value; IPv4 written by hand (it runs per request,
/// and the formatting machinery costs more than the rest of this function).
fn ip_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::try_from(ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    };
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    HeaderValue::from_bytes(&buf[..n]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(255, 255, 255, 255),
            Ipv4Addr::new(10, 99, 100, 9),
            Ipv4Addr::new(192, 168, 1, 250),
        ] {
            assert_eq!(ip_value(IpAddr::V4(ip)), ip.to_string().as_str());
        }
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(ip_value(v6), "::1");
    }

    #[test]
    fn hop_by_hop_headers_go_and_the_others_stay() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let mut grpc = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
        strip_hop_by_hop(&mut grpc, true);
        let mut kept: Vec<_> = grpc.keys().map(|k| k.as_str()).collect();
        kept.sort();
        assert_eq!(kept, ["accept", "te"]);
        let mut plain = HeaderMap::new();
        plain.insert(header::HOST, HeaderValue::from_static("a"));
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn forwarded_for_is_appended_to_what_came_before() {
        let peer: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        append_forwarded(&mut h, peer, None);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR.clone(), HeaderValue::from_static("1.2.3.4"));
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
        append_forwarded(&mut h, peer, HeaderValue::from_str("/agents/a").ok());
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_PREFIX], "/agents/a");
    }
}
