//! WebSocket connections to the agent's ASGI app: the handshake (the app
//! accepts, refuses, or answers with an HTTP response) and, once upgraded, the
//! bridge between the client's socket and the host channel, with a
//! flow-control window each way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::error::ApiError;
use crate::host::protocol::{self, to_host, WS_MESSAGE_OVERHEAD};
use crate::host::{Pending, Reply};
use crate::state::{Agent, AppState};

/// Close code when the worker stops or its agent host goes away: the service
/// is restarting and the client may reconnect (RFC 6455 registry: 1012).
pub const SERVICE_RESTART: u16 = 1012;

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The protocol layer's read buffer: allocated per socket and zeroed before
/// each read, so its default (128 KiB) costs memory per idle socket and CPU
/// per message. Larger messages still arrive whole (the buffer grows).
const READ_BUFFER: usize = 16 * 1024;

/// Whether a request asks to switch to the WebSocket protocol.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Checks the handshake (RFC 6455 §4.2.1) and returns the client's key.
fn client_key(req: &http::Request<Body>) -> Result<HeaderValue, ApiError> {
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_websocket_handshake", m);
    if req.version() != http::Version::HTTP_11 {
        return Err(bad("WebSocket upgrades need HTTP/1.1"));
    }
    if req.method() != Method::GET {
        return Err(bad("a WebSocket handshake must be a GET"));
    }
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return Err(bad("a WebSocket handshake needs `Connection: Upgrade`"));
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "bad_websocket_handshake",
            "unsupported Sec-WebSocket-Version: only 13 is spoken",
        ));
    }
    req.headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())
        .cloned()
        .ok_or_else(|| bad("a WebSocket handshake needs a Sec-WebSocket-Key"))
}

/// Offers the connection to the agent's app and answers as it decides: 101
/// (then the bridge runs on the upgraded socket), 403 for a refusal, its own
/// response for a `websocket.http.response` denial, 500 when it raised.
pub async fn handle(
    state: &AppState,
    agent: &Agent,
    client: Option<SocketAddr>,
    mut req: http::Request<Body>,
) -> Result<Response, ApiError> {
    let key = match client_key(&req) {
        Ok(k) => k,
        Err(e) if e.status == StatusCode::UPGRADE_REQUIRED => {
            let mut resp = axum::response::IntoResponse::into_response(e);
            resp.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return Ok(resp);
        }
        Err(e) => return Err(e),
    };
    if !agent.hello.asgi {
        return Err(ApiError::not_found(
            "this agent has no ASGI app (rest.entry or http_server) to take WebSocket connections",
        ));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let header = super::scope::scope_header(&parts, client, false)?;
    let mut pending = agent.host.request(to_host::WS_CONNECT, &header, b"");
    let first = tokio::time::timeout(state.timeout, pending.next())
        .await
        .map_err(|_| ApiError::timeout(state.timeout))?;
    match first {
        Some(Reply::WsAccept {
            subprotocol,
            headers,
        }) => {
            let mut resp = super::scope::response(101, headers, Body::empty());
            let h = resp.headers_mut();
            h.remove(header::SEC_WEBSOCKET_ACCEPT);
            h.remove(header::SEC_WEBSOCKET_PROTOCOL);
            h.remove(header::SEC_WEBSOCKET_EXTENSIONS);
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(v) = HeaderValue::try_from(derive_accept_key(key.as_bytes())) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
            if let Some(p) = subprotocol.and_then(|p| HeaderValue::try_from(p).ok()) {
                h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
            }
            let open = state.sockets.enter();
            let closing = state.sockets.closing.subscribe();
            tokio::spawn(async move {
                let _open = open;
                match on_upgrade.await {
                    Ok(upgraded) => {
                        let io = TokioIo::new(upgraded);
                        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
                        let ws =
                            WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                        bridge(ws, pending, closing).await;
                    }
                    // Dropping `pending` tells the app the client is gone.
                    Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
                }
            });
            Ok(resp)
        }
        Some(Reply::WsClose { code, reason }) => {
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            };
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "websocket_refused",
                format!("the agent's app refused the WebSocket (close code {code}{reason})"),
            ))
        }
        Some(Reply::Start {
            status,
            headers,
            body: Some(body),
        }) => Ok(super::scope::response(status, headers, Body::from(body))),
        other => Err(super::scope::not_a_head(
            other,
            " during the WebSocket handshake",
        )),
    }
}

/// How a bridged WebSocket ended.
#[derive(Debug)]
enum End {
    /// The client sent a close frame (its code, or 1005 for none).
    ClientClosed(u16, String),
    /// The client's socket failed or closed without a close frame.
    ClientGone,
    /// The app closed with this code.
    AppClosed(u16, String),
    /// The app raised, or sent something the protocol cannot carry.
    AppFailed(String),
    /// The worker is stopping or the agent host went away.
    Restart,
}

/// Moves messages between the client and the app until either side ends,
/// then tells the other side. Client messages are forwarded only while the
/// app has credit left (`WS_CREDIT` refills it); app messages are credited
/// back to the host once written to the client.
async fn bridge<S>(
    mut ws: WebSocketStream<S>,
    mut pending: Pending,
    mut closing: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    const BATCH: u32 = protocol::STREAM_WINDOW / 4;
    let chan = Arc::clone(pending.channel());
    let id = pending.id();
    let mut credit = i64::from(protocol::STREAM_WINDOW);
    let mut owed: u32 = 0;
    let end = loop {
        tokio::select! {
            biased;
            () = async { let _ = closing.wait_for(|c| *c).await; } => break End::Restart,
            reply = pending.next() => {
                let (msg, cost) = match reply {
                    Some(Reply::WsText(b)) => {
                        let cost = message_cost(b.len());
                        match Utf8Bytes::try_from(b) {
                            Ok(t) => (Message::Text(t), cost),
                            Err(_) => break End::AppFailed("the app sent text that is not UTF-8".into()),
                        }
                    }
                    Some(Reply::WsBinary(b)) => {
                        let cost = message_cost(b.len());
                        (Message::Binary(b), cost)
                    }
                    Some(Reply::WsCredit(n)) => {
                        credit += i64::from(n);
                        continue;
                    }
                    Some(Reply::WsClose { code, reason }) => break End::AppClosed(code, reason),
                    Some(Reply::Failed { error, .. }) => break End::AppFailed(error),
                    Some(other) => break End::AppFailed(format!("unexpected reply from the agent host: {other:?}")),
                    None => break End::Restart,
                };
                if ws.send(msg).await.is_err() {
                    break End::ClientGone;
                }
                owed = owed.saturating_add(cost);
                if owed >= BATCH {
                    pending.grant(owed);
                    owed = 0;
                }
            }
            msg = ws.next(), if credit > 0 => match msg {
                Some(Ok(Message::Text(t))) => {
                    credit -= i64::from(message_cost(t.len()));
                    chan.send(protocol::encode(to_host::WS_TEXT, id, b"", t.as_bytes()));
                }
                Some(Ok(Message::Binary(b))) => {
                    credit -= i64::from(message_cost(b.len()));
                    chan.send(protocol::encode(to_host::WS_BINARY, id, b"", &b));
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
                    break End::ClientClosed(code, reason);
                }
                // Pings are answered by the protocol layer; pongs need nothing.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break End::ClientGone,
            },
        }
    };
    let disconnect = |code: u16, reason: &str| {
        let header = serde_json::json!({"code": code, "reason": reason}).to_string();
        chan.send(protocol::encode(
            to_host::WS_DISCONNECT,
            id,
            header.as_bytes(),
            b"",
        ));
    };
    let close = match end {
        End::ClientClosed(code, reason) => {
            disconnect(code, &reason);
            None // the protocol layer has queued the reply; draining sends it
        }
        End::ClientGone => {
            disconnect(1006, "");
            return;
        }
        End::AppClosed(code, reason) => Some((sendable(code), reason)),
        End::AppFailed(error) => {
            tracing::warn!(error = %error, "agent's WebSocket app failed");
            Some((1011, "internal error".to_string()))
        }
        End::Restart => {
            disconnect(SERVICE_RESTART, "service restart");
            Some((SERVICE_RESTART, "service restart".to_string()))
        }
    };
    drop(pending);
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            if ws.send(Message::Close(Some(frame))).await.is_err() {
                return;
            }
        }
        // Until the client's reply (or its side of the close) arrives.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

fn message_cost(len: usize) -> u32 {
    u32::try_from(len)
        .unwrap_or(u32::MAX)
        .saturating_add(WS_MESSAGE_OVERHEAD)
}

/// A close code the app chose, or 1000 when it may not be sent on the wire
/// (1005, 1006, 1015, or outside the registered ranges).
fn sendable(code: u16) -> u16 {
    if CloseCode::from(code).is_allowed() {
        code
    } else {
        1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asgi::sockets::Sockets;

    #[test]
    fn upgrade_header_is_a_token_list() {
        let mut h = HeaderMap::new();
        assert!(!is_upgrade(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_upgrade(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("foo, WebSocket"));
        assert!(is_upgrade(&h));
    }

    #[test]
    fn only_sendable_close_codes_reach_the_wire() {
        for (app, wire) in [
            (1000, 1000),
            (1001, 1001),
            (1011, 1011),
            (3000, 3000),
            (4321, 4321),
            (1005, 1000),
            (1006, 1000),
            (1015, 1000),
            (999, 1000),
            (2000, 1000),
            (5000, 1000),
        ] {
            assert_eq!(sendable(app), wire, "{app}");
        }
    }

    #[test]
    fn costs_count_each_message() {
        assert_eq!(message_cost(0), WS_MESSAGE_OVERHEAD);
        assert_eq!(message_cost(3), 3 + WS_MESSAGE_OVERHEAD);
        assert_eq!(message_cost(usize::MAX), u32::MAX);
    }

    #[tokio::test]
    async fn sockets_wait_for_the_last_one() {
        let sockets = Arc::new(Sockets::default());
        sockets.wait_closed().await;
        let a = sockets.enter();
        let b = sockets.enter();
        assert_eq!(sockets.open(), 2);
        let waiter = {
            let s = Arc::clone(&sockets);
            tokio::spawn(async move { s.wait_closed().await })
        };
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("wait_closed returns once none is open")
            .unwrap();
    }
}
