//! The WebSocket relay: frames pass from one side to the other as they
//! arrive, without being reassembled. Only frame headers are read (to check
//! them against the limits and the protocol, count messages and see the
//! close); payload bytes are copied through a small buffer per direction, so
//! a socket costs the same whatever its messages' size, finished or not.
//! Frames from the client stay masked as it sent them (what a client must
//! send); the worker's are unmasked, as a server's must be.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{GOING_AWAY, PROTOCOL_ERROR, SERVICE_RESTART, TOO_BIG};

/// Bytes read ahead per direction.
const BUFFER: usize = 16 * 1024;
/// How long a closing handshake may take before the sockets are dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The largest message and frame either side may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message: u64,
    pub max_frame: u64,
}

/// One frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    /// Bytes of the header itself (2 to 14).
    size: usize,
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    payload: u64,
}

const CONTINUATION: u8 = 0;
const CLOSE: u8 = 8;

/// The header at the start of `b`, or `None` while it is incomplete.
fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < 2 {
        return None;
    }
    let masked = b[1] & 0x80 != 0;
    let (payload, mut size) = match b[1] & 0x7f {
        126 => (u64::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
        127 => {
            let bytes: [u8; 8] = b.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(bytes), 10)
        }
        n => (u64::from(n), 2),
    };
    if masked {
        size += 4;
    }
    if b.len() < size {
        return None;
    }
    Some(Header {
        size,
        fin: b[0] & 0x80 != 0,
        rsv: b[0] & 0x70,
        opcode: b[0] & 0x0f,
        masked,
        payload,
    })
}

/// A close frame with `code` and `reason`; masked (as a client's must be)
/// when it goes to the worker.
fn close_frame(code: u16, reason: &str, masked: bool) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
    let mut frame = vec![0x80 | CLOSE, payload.len() as u8];
    if masked {
        frame[1] |= 0x80;
        let key = fastrand::u32(..).to_be_bytes();
        frame.extend_from_slice(&key);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    frame.extend_from_slice(&payload);
    frame
}

/// How one direction stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pumped {
    /// The sending side's close frame was passed on.
    Closed,
    /// The sending side's connection ended or failed.
    Gone,
    /// The receiving side could not take more.
    PeerGone,
    /// A frame or message over the limits (nothing of that frame was passed on).
    TooBig,
    /// A frame the protocol does not allow (nothing of it was passed on).
    Protocol,
}

/// When something last crossed the relay.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves when nothing crossed the relay for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// The reading side of one direction, with what it knows of the frame in
/// passage. Every step is cancel-safe: a pump dropped mid-frame leaves the
/// state to resume (or to drain) from.
struct Inbound<R> {
    from: R,
    /// Frames from a client are masked; from a worker they must not be.
    from_client: bool,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes of the frame in passage (its header included) still to pass
    /// on: zero when the writer on the other side is at a frame boundary.
    remaining: u64,
    /// The frame in passage ends a data message, or is a close.
    ends_message: bool,
    is_close: bool,
    /// Inside a fragmented data message, and its length so far.
    in_message: bool,
    message_len: u64,
}

impl<R: AsyncRead + Unpin> Inbound<R> {
    fn new(from: R, from_client: bool) -> Self {
        Inbound {
            from,
            from_client,
            buf: vec![0; BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            remaining: 0,
            ends_message: false,
            is_close: false,
            in_message: false,
            message_len: 0,
        }
    }

    /// Reads more; `false` at the end of the connection or on an error.
    async fn fill(&mut self, activity: &Activity) -> bool {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        match self.from.read(&mut self.buf[self.end..]).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.end += n;
                activity.touch();
                true
            }
        }
    }

    /// The next frame's header, read ahead and not consumed.
    async fn next_header(&mut self, activity: &Activity) -> Option<Header> {
        loop {
            if let Some(h) = parse_header(&self.buf[self.start..self.end]) {
                return Some(h);
            }
            if !self.fill(activity).await {
                return None;
            }
        }
    }

    /// Checks a header against the protocol and the limits and, when it
    /// passes, notes the frame as in passage.
    fn admit(&mut self, h: &Header, limits: Limits) -> Result<(), Pumped> {
        let reserved = h.opcode & 0x07 >= 3;
        if h.rsv != 0 || reserved || h.masked != self.from_client || h.payload >> 63 != 0 {
            return Err(Pumped::Protocol);
        }
        if h.opcode >= CLOSE {
            if !h.fin || h.payload > 125 {
                return Err(Pumped::Protocol);
            }
        } else {
            if h.payload > limits.max_frame {
                return Err(Pumped::TooBig);
            }
            if (h.opcode == CONTINUATION) != self.in_message {
                return Err(Pumped::Protocol);
            }
            let total = if h.opcode == CONTINUATION {
                self.message_len + h.payload
            } else {
                h.payload
            };
            if total > limits.max_message {
                return Err(Pumped::TooBig);
            }
            self.in_message = !h.fin;
            self.message_len = if h.fin { 0 } else { total };
        }
        self.remaining = h.size as u64 + h.payload;
        self.ends_message = h.opcode < CLOSE && h.fin;
        self.is_close = h.opcode == CLOSE;
        Ok(())
    }

    /// Passes frames on to `to` until a close has gone through or a side
    /// stops; `messages` counts the data messages passed on.
    async fn pump<W: AsyncWrite + Unpin>(
        &mut self,
        to: &mut W,
        limits: Limits,
        activity: &Activity,
        messages: &AtomicU64,
    ) -> Pumped {
        loop {
            if self.remaining == 0 {
                let Some(h) = self.next_header(activity).await else {
                    return Pumped::Gone;
                };
                if let Err(stop) = self.admit(&h, limits) {
                    return stop;
                }
            }
            if self.start == self.end && !self.fill(activity).await {
                return Pumped::Gone;
            }
            let n =
                (self.end - self.start).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            match to.write(&self.buf[self.start..self.start + n]).await {
                Ok(0) | Err(_) => return Pumped::PeerGone,
                Ok(w) => {
                    self.start += w;
                    self.remaining -= w as u64;
                }
            }
            if self.remaining == 0 {
                if self.is_close {
                    return Pumped::Closed;
                }
                if self.ends_message {
                    messages.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Reads and drops frames until the side's close frame (or its end).
    async fn drain(&mut self, activity: &Activity) {
        loop {
            if self.remaining == 0 {
                let Some(h) = self.next_header(activity).await else {
                    return;
                };
                self.remaining = h.size as u64 + h.payload;
                self.is_close = h.opcode == CLOSE;
            }
            if self.start == self.end && !self.fill(activity).await {
                return;
            }
            let n =
                (self.end - self.start).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            self.start += n;
            self.remaining -= n as u64;
            if self.remaining == 0 && self.is_close {
                return;
            }
        }
    }
}

/// Sends a close frame (best effort).
async fn send_close<W: AsyncWrite + Unpin>(to: &mut W, code: u16, reason: &str, masked: bool) {
    let frame = close_frame(code, reason, masked);
    if to.write_all(&frame).await.is_ok() {
        let _ = to.flush().await;
    }
}

/// Which side did something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Worker,
}

/// How the relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Closed(Side),
    ClientGone,
    WorkerGone,
    TooBig(Side),
    Protocol(Side),
    Idle,
    Shutdown,
}

/// What the relay needs to know and count.
pub struct Relay<'a> {
    pub limits: Limits,
    pub idle: Duration,
    pub messages_in: &'a AtomicU64,
    pub messages_out: &'a AtomicU64,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Relay<'_> {
    /// Relays between the client's and the worker's connections until one
    /// side closes or goes, the socket idles for `idle`, or shutdown.
    pub async fn run<C, W>(mut self, client: C, worker: W)
    where
        C: AsyncRead + AsyncWrite + Unpin,
        W: AsyncRead + AsyncWrite + Unpin,
    {
        let (client_read, mut to_client) = tokio::io::split(client);
        let (worker_read, mut to_worker) = tokio::io::split(worker);
        let mut up = Inbound::new(client_read, true);
        let mut down = Inbound::new(worker_read, false);
        let activity = Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        };
        let (limits, a) = (self.limits, &activity);
        let end = tokio::select! {
            p = up.pump(&mut to_worker, limits, a, self.messages_in) => match p {
                Pumped::Closed => End::Closed(Side::Client),
                Pumped::Gone => End::ClientGone,
                Pumped::PeerGone => End::WorkerGone,
                Pumped::TooBig => End::TooBig(Side::Client),
                Pumped::Protocol => End::Protocol(Side::Client),
            },
            p = down.pump(&mut to_client, limits, a, self.messages_out) => match p {
                Pumped::Closed => End::Closed(Side::Worker),
                Pumped::Gone => End::WorkerGone,
                Pumped::PeerGone => End::ClientGone,
                Pumped::TooBig => End::TooBig(Side::Worker),
                Pumped::Protocol => End::Protocol(Side::Worker),
            },
            () = activity.idle_for(self.idle) => End::Idle,
            () = async { let _ = self.shutdown.wait_for(|c| *c).await; } => End::Shutdown,
        };
        // A writer takes a frame of the relay's own only between frames.
        let client_ready = down.remaining == 0;
        let worker_ready = up.remaining == 0;
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            match end {
                // The other side's reply (and what it still sends) passes on.
                End::Closed(Side::Client) => {
                    down.pump(&mut to_client, limits, a, self.messages_out)
                        .await;
                }
                End::Closed(Side::Worker) => {
                    up.pump(&mut to_worker, limits, a, self.messages_in).await;
                }
                // The worker sees its connection end: the app gets a disconnect (1006).
                End::ClientGone => {}
                End::WorkerGone => {
                    if client_ready {
                        send_close(&mut to_client, SERVICE_RESTART, "service restart", false).await;
                        up.drain(a).await;
                    }
                }
                End::TooBig(side) | End::Protocol(side) => {
                    let (code, reason, other) = match end {
                        End::TooBig(_) => {
                            (TOO_BIG, "message too big", "peer sent a message too big")
                        }
                        _ => (PROTOCOL_ERROR, "protocol error", "peer broke the protocol"),
                    };
                    let (to_client_says, to_worker_says) = match side {
                        Side::Client => ((code, reason), (GOING_AWAY, other)),
                        Side::Worker => ((GOING_AWAY, other), (code, reason)),
                    };
                    tokio::join!(
                        async {
                            if client_ready {
                                let (c, r) = to_client_says;
                                send_close(&mut to_client, c, r, false).await;
                            }
                        },
                        async {
                            if worker_ready {
                                let (c, r) = to_worker_says;
                                send_close(&mut to_worker, c, r, true).await;
                            }
                        },
                        up.drain(a),
                        down.drain(a),
                    );
                }
                End::Idle | End::Shutdown => {
                    let reason = if end == End::Idle {
                        "idle timeout"
                    } else {
                        "going away"
                    };
                    tokio::join!(
                        async {
                            if client_ready {
                                send_close(&mut to_client, GOING_AWAY, reason, false).await;
                            }
                        },
                        async {
                            if worker_ready {
                                send_close(&mut to_worker, GOING_AWAY, reason, true).await;
                            }
                        },
                        up.drain(a),
                        down.drain(a),
                    );
                }
            }
        })
        .await;
        let _ = tokio::time::timeout(Duration::from_millis(100), async {
            tokio::join!(to_client.shutdown(), to_worker.shutdown())
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
