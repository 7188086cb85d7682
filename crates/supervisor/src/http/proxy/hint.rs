//! What a request on hyper's path says of its session (the key from its
//! header, or its small JSON body read ahead), and how a span shows a key.

use std::time::Duration;

use http::Method;

use super::admit::SessionHint;
use super::Proxy;
use crate::http::leftover::Guarded;
use crate::http::sessions::key;

impl Proxy {
    /// What a request says of its session: its `x-par-session-id`, else
    /// (for an agent whose sessions are tracked) its JSON body's, read
    /// ahead when its length is known and at most `key::MAX_BODY`.
    pub(super) async fn session_hint(
        &self,
        agent_id: &str,
        parts: &http::request::Parts,
        body: &mut Guarded,
    ) -> SessionHint {
        let hint = header_hint(&parts.headers);
        // A gRPC call's body is protobuf (and may be a stream): its key is
        // in its metadata only.
        let grpc = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if hint != SessionHint::None
            || grpc
            || parts.method == Method::GET
            || parts.method == Method::HEAD
        {
            return hint;
        }
        let small = http_body::Body::size_hint(body)
            .exact()
            .is_some_and(|n| n > 0 && n <= key::MAX_BODY as u64);
        if !small || !self.routes.tracks_sessions(agent_id) {
            return SessionHint::None;
        }
        let Some(bytes) = body.prefetch(key::MAX_BODY, BODY_READ_AHEAD).await else {
            return SessionHint::None;
        };
        let found = key::from_body(&bytes);
        match (found.session, found.interaction) {
            (Some(k), _) => SessionHint::Key(k.into()),
            (None, Some(i)) => SessionHint::Interaction(i.into()),
            (None, None) => SessionHint::None,
        }
    }
}

/// Longest wait for a small body read ahead for its session key.
const BODY_READ_AHEAD: Duration = Duration::from_secs(60);

/// The session a request's `x-par-session-id` names (when valid).
pub(super) fn header_hint(headers: &http::HeaderMap) -> SessionHint {
    headers
        .get(key::HEADER)
        .and_then(|v| key::valid(v.as_bytes()))
        .map_or(SessionHint::None, |k| SessionHint::Key(k.into()))
}

/// A session key as a span shows it: hashed (a key may be all that
/// continues someone's conversation).
pub(super) fn trace_hash(key: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    format!("{:016x}", h.finish())
}
