//! The worker's end of the host channel: one writer task, one reader task, and a
//! map from request id to the sender that receives that request's replies.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};

use super::protocol::{self, from_host, to_host};

/// The host's load report, sent once when the agent's code is loaded (or failed to).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Hello {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub python: Option<String>,
    #[serde(default)]
    pub entrypoint: bool,
    #[serde(default)]
    pub asgi: bool,
    /// Surface name -> "ready" or "error: ..." for the surfaces the host loaded.
    #[serde(default)]
    pub surfaces: BTreeMap<String, String>,
    #[serde(default)]
    pub a2a_actions: Vec<String>,
}

/// One reply frame for a request.
#[derive(Debug)]
pub enum Reply {
    /// A call's JSON (or text, for A2A) result.
    Ok(Bytes),
    /// A call failed: the handler's `Type: message`, and a kind
    /// (`exception`, `not_found`, `no_entrypoint`, `bad_request`, `cancelled`, `internal`).
    Err { error: String, kind: String },
    /// ASGI response head; `body` is `Some` when the whole response came at once.
    Start {
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
    },
    /// A streamed body chunk.
    Body(Bytes),
    /// The last body chunk.
    End(Bytes),
    /// The ASGI app raised; `started` tells whether the head was already sent.
    Failed { error: String, started: bool },
    /// The app accepted a WebSocket.
    WsAccept {
        subprotocol: Option<String>,
        headers: Vec<(String, String)>,
    },
    /// A WebSocket text message from the app (UTF-8 checked by the reader).
    WsText(Bytes),
    /// A WebSocket binary message from the app.
    WsBinary(Bytes),
    /// The app closed the WebSocket (or refused it, before accepting).
    WsClose { code: u16, reason: String },
    /// The app took this many more bytes of client messages.
    WsCredit(u32),
}

#[derive(serde::Deserialize)]
struct ErrHeader {
    error: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    started: bool,
}

#[derive(serde::Deserialize)]
struct AcceptHeader {
    #[serde(default)]
    subprotocol: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

#[derive(serde::Deserialize)]
struct CloseHeader {
    #[serde(default = "normal_closure")]
    code: u16,
    #[serde(default)]
    reason: String,
}

fn normal_closure() -> u16 {
    1000
}

#[derive(serde::Deserialize)]
struct StartHeader {
    status: u16,
    headers: Vec<(String, String)>,
}

type Senders = Mutex<HashMap<u32, mpsc::UnboundedSender<Reply>>>;

/// The channel to a running agent host. Cheap to share (`Arc`).
pub struct HostChannel {
    out: mpsc::UnboundedSender<Bytes>,
    pending: Senders,
    next_id: AtomicU32,
}

impl HostChannel {
    /// Starts the reader and writer tasks on `stream`. Returns the channel, the
    /// host's load report (once it comes), and a receiver that fires when the
    /// host closes the channel (it exited).
    pub fn start(
        stream: tokio::net::UnixStream,
    ) -> (
        Arc<Self>,
        oneshot::Receiver<Hello>,
        oneshot::Receiver<String>,
    ) {
        let (read, write) = stream.into_split();
        let (out, out_rx) = mpsc::unbounded_channel();
        let chan = Arc::new(Self {
            out,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
        });
        let (hello_tx, hello_rx) = oneshot::channel();
        let (closed_tx, closed_rx) = oneshot::channel();
        tokio::spawn(write_loop(write, out_rx));
        tokio::spawn(read_loop(read, Arc::clone(&chan), hello_tx, closed_tx));
        (chan, hello_rx, closed_rx)
    }

    /// Registers a new request and sends its first frame.
    pub fn request(self: &Arc<Self>, kind: u8, header: &[u8], body: &[u8]) -> Pending {
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                break id;
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(id, tx);
        self.send(protocol::encode(kind, id, header, body));
        Pending {
            id,
            rx,
            chan: Arc::clone(self),
            done: false,
        }
    }

    /// Sends a raw frame (for request body chunks).
    pub fn send(&self, frame: Bytes) {
        let _ = self.out.send(frame);
    }

    /// Asks the host to run ASGI lifespan shutdown and exit.
    pub fn shutdown(&self) {
        self.send(protocol::encode(to_host::SHUTDOWN, 0, b"", b""));
    }

    /// Requests waiting for a reply.
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::UnboundedSender<Reply>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request in flight. Dropping it before its reply is complete tells the host
/// to cancel (client gone, or timed out).
pub struct Pending {
    id: u32,
    rx: mpsc::UnboundedReceiver<Reply>,
    chan: Arc<HostChannel>,
    done: bool,
}

impl Pending {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The next reply; `None` when the host is gone.
    pub async fn next(&mut self) -> Option<Reply> {
        let r = self.rx.recv().await;
        if matches!(
            r,
            None | Some(
                Reply::Ok(_)
                    | Reply::Err { .. }
                    | Reply::End(_)
                    | Reply::Failed { .. }
                    | Reply::WsClose { .. }
                    | Reply::Start { body: Some(_), .. }
            )
        ) {
            self.done = true;
        }
        r
    }

    /// Grants the host `n` more bytes of this request's streamed response.
    pub fn grant(&self, n: u32) {
        if !self.done && n > 0 {
            self.chan.send(protocol::encode(
                to_host::CREDIT,
                self.id,
                b"",
                &n.to_be_bytes(),
            ));
        }
    }

    /// The channel this request runs on (to send body chunks).
    pub fn channel(&self) -> &Arc<HostChannel> {
        &self.chan
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.chan.lock().remove(&self.id);
        if !self.done {
            self.chan
                .send(protocol::encode(to_host::CANCEL, self.id, b"", b""));
        }
    }
}

async fn write_loop(
    write: tokio::net::unix::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) {
    let mut w = BufWriter::with_capacity(64 * 1024, write);
    while let Some(frame) = rx.recv().await {
        if w.write_all(&frame).await.is_err() {
            return;
        }
        // Coalesce whatever else is queued into the same write.
        while let Ok(frame) = rx.try_recv() {
            if w.write_all(&frame).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
}

async fn read_loop(
    mut read: tokio::net::unix::OwnedReadHalf,
    chan: Arc<HostChannel>,
    hello_tx: oneshot::Sender<Hello>,
    closed_tx: oneshot::Sender<String>,
) {
    let mut hello_tx = Some(hello_tx);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let reason = loop {
        match read.read_buf(&mut buf).await {
            Ok(0) => break "agent host closed its channel".to_string(),
            Ok(_) => {}
            Err(e) => break format!("agent host channel failed: {e}"),
        }
        let mut bad = None;
        loop {
            match protocol::decode(&mut buf) {
                Ok(Some(frame)) => dispatch(&chan, frame, &mut hello_tx),
                Ok(None) => break,
                Err(e) => {
                    bad = Some(format!("agent host sent a bad frame: {e}"));
                    break;
                }
            }
        }
        if let Some(b) = bad {
            break b;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
    };
    // Wake every waiting request: their senders drop, so they see `None`.
    chan.lock().clear();
    let _ = closed_tx.send(reason);
}

fn dispatch(
    chan: &HostChannel,
    frame: protocol::Frame,
    hello_tx: &mut Option<oneshot::Sender<Hello>>,
) {
    let reply = match frame.kind {
        from_host::HELLO => {
            let hello = serde_json::from_slice::<Hello>(&frame.header).unwrap_or_else(|e| Hello {
                ok: false,
                error: Some(format!("agent host sent an unreadable load report: {e}")),
                ..Hello::default()
            });
            if let Some(tx) = hello_tx.take() {
                let _ = tx.send(hello);
            }
            return;
        }
        from_host::RESULT_OK => Reply::Ok(frame.body),
        from_host::RESULT_ERR | from_host::RESP_ERROR => {
            let h = serde_json::from_slice::<ErrHeader>(&frame.header).unwrap_or(ErrHeader {
                error: String::from_utf8_lossy(&frame.header).into_owned(),
                kind: "internal".into(),
                started: false,
            });
            if frame.kind == from_host::RESULT_ERR {
                Reply::Err {
                    error: h.error,
                    kind: h.kind,
                }
            } else {
                Reply::Failed {
                    error: h.error,
                    started: h.started,
                }
            }
        }
        from_host::RESP_START | from_host::RESP_FULL => {
            match serde_json::from_slice::<StartHeader>(&frame.header) {
                Ok(h) => Reply::Start {
                    status: h.status,
                    headers: h.headers,
                    body: (frame.kind == from_host::RESP_FULL).then_some(frame.body),
                },
                Err(e) => Reply::Failed {
                    error: format!("agent host sent a bad response head: {e}"),
                    started: false,
                },
            }
        }
        from_host::RESP_BODY => Reply::Body(frame.body),
        from_host::RESP_END => Reply::End(frame.body),
        from_host::WS_ACCEPT => match serde_json::from_slice::<AcceptHeader>(&frame.header) {
            Ok(h) => Reply::WsAccept {
                subprotocol: h.subprotocol,
                headers: h.headers,
            },
            Err(e) => Reply::Failed {
                error: format!("agent host sent a bad websocket.accept: {e}"),
                started: false,
            },
        },
        from_host::WS_TEXT => Reply::WsText(frame.body),
        from_host::WS_BINARY => Reply::WsBinary(frame.body),
        from_host::WS_CLOSE => {
            let h = serde_json::from_slice::<CloseHeader>(&frame.header).unwrap_or(CloseHeader {
                code: normal_closure(),
                reason: String::new(),
            });
            Reply::WsClose {
                code: h.code,
                reason: h.reason,
            }
        }
        from_host::WS_CREDIT => {
            Reply::WsCredit(<[u8; 4]>::try_from(&frame.body[..]).map_or(0, u32::from_be_bytes))
        }
        other => {
            tracing::warn!(kind = other, "agent host sent an unknown frame kind");
            return;
        }
    };
    let tx = chan.lock().get(&frame.id).cloned();
    if let Some(tx) = tx {
        let _ = tx.send(reply);
    }
}
