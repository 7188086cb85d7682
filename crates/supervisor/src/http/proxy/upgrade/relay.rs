//! The WebSocket relay: frames pass from one side to the other as they
//! arrive, without being reassembled. Only frame headers are read (to check
//! them against the limits and the protocol, count messages and see the
//! close); payload bytes are copied through a small buffer per direction, so
//! a socket costs the same whatever its messages' size, finished or not.
//! Frames from the client stay masked as it sent them (what a client must
//! send); the worker's are unmasked, as a server's must be.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{GOING_AWAY, PROTOCOL_ERROR, SERVICE_RESTART, TOO_BIG};

mod frame;
use frame::{close_frame, parse_header, Header, CLOSE, CONTINUATION};

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

/// The waker the relay's timer and shutdown signal are polled with: it
/// notes that one of them may be ready, and wakes the relay's task. They
/// are polled only after it rang (and at the first turn), so a frame
/// passing through costs no poll of either.
struct Alarm {
    rang: AtomicBool,
    task: AtomicWaker,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm {
            // Rung: the first turn polls both (which registers them).
            rang: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }
    }
}

impl Alarm {
    /// Whether it rang since the last call; `task` is the waker it wakes.
    fn rang(&self, task: &Waker) -> bool {
        self.task.register(task);
        self.rang.swap(false, Ordering::AcqRel)
    }
}

impl Wake for Alarm {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.rang.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// One direction's state: what was read ahead from its sending side, and
/// what it knows of the frames in passage. The sockets are passed to each
/// call, so that one task can serve both directions; every step is
/// cancel-safe: a pump dropped mid-frame leaves the state to resume (or to
/// drain) from.
struct Inbound {
    /// Frames from a client are masked; from a worker they must not be.
    from_client: bool,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes of the frames in passage (headers included) still to pass
    /// on: zero when the writer on the other side is at a frame boundary.
    /// Every frame wholly read when a header is admitted is admitted with
    /// it, so that one write passes them all on.
    remaining: u64,
    /// The last frame in passage ends a data message, or is a close.
    ends_message: bool,
    is_close: bool,
    /// Data messages ended by the frames in passage before the last one.
    messages_ahead: u64,
    /// Inside a fragmented data message, and its length so far.
    in_message: bool,
    message_len: u64,
}

impl Inbound {
    /// `ahead`: bytes already read from the side (after its handshake).
    fn new(from_client: bool, ahead: &[u8]) -> Self {
        let mut buf = vec![0; BUFFER.max(ahead.len())].into_boxed_slice();
        buf[..ahead.len()].copy_from_slice(ahead);
        Inbound {
            from_client,
            buf,
            start: 0,
            end: ahead.len(),
            remaining: 0,
            ends_message: false,
            is_close: false,
            messages_ahead: 0,
            in_message: false,
            message_len: 0,
        }
    }

    /// Reads more; `false` at the end of the connection or on an error.
    fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        from: &mut R,
        activity: &Activity,
        cx: &mut Context<'_>,
    ) -> Poll<bool> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let mut read = ReadBuf::new(&mut self.buf[self.end..]);
        match ready!(Pin::new(from).poll_read(cx, &mut read)) {
            Ok(()) if !read.filled().is_empty() => {
                self.end += read.filled().len();
                activity.touch();
                Poll::Ready(true)
            }
            _ => Poll::Ready(false),
        }
    }

    /// The next frame's header, read ahead and not consumed; `None` at
    /// the end of the connection.
    fn poll_header<R: AsyncRead + Unpin>(
        &mut self,
        from: &mut R,
        activity: &Activity,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Header>> {
        loop {
            if let Some(h) = parse_header(&self.buf[self.start..self.end]) {
                return Poll::Ready(Some(h));
            }
            if !ready!(self.poll_fill(from, activity, cx)) {
                return Poll::Ready(None);
            }
        }
    }

    /// Checks a header against the protocol and the limits and, when it
    /// passes, notes the frame as in passage (nothing changes when it
    /// does not).
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

    /// After a header was admitted: admits the frames after it that were
    /// read whole, up to a close or a frame that does not pass (met again,
    /// and refused, when the writer gets to it).
    fn admit_read_ahead(&mut self, limits: Limits) {
        self.messages_ahead = 0;
        let mut through = self.remaining;
        while !self.is_close && through < (self.end - self.start) as u64 {
            let at = self.start + through as usize;
            let Some(h) = parse_header(&self.buf[at..self.end]) else {
                break;
            };
            if h.size as u64 + h.payload > (self.end - at) as u64 {
                break;
            }
            let ended = self.ends_message;
            if self.admit(&h, limits).is_err() {
                // `admit` left the last frame's state as it was.
                self.remaining = through;
                break;
            }
            self.messages_ahead += u64::from(ended);
            through += self.remaining;
            self.remaining = through;
        }
    }

    /// Passes frames on to `to` until a close has gone through or a side
    /// stops; `messages` counts the data messages passed on.
    fn poll_pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        from: &mut R,
        to: &mut W,
        (limits, activity, messages): (Limits, &Activity, &AtomicU64),
        cx: &mut Context<'_>,
    ) -> Poll<Pumped> {
        loop {
            if self.remaining == 0 {
                let Some(h) = ready!(self.poll_header(from, activity, cx)) else {
                    return Poll::Ready(Pumped::Gone);
                };
                if let Err(stop) = self.admit(&h, limits) {
                    return Poll::Ready(stop);
                }
                self.admit_read_ahead(limits);
            }
            if self.start == self.end && !ready!(self.poll_fill(from, activity, cx)) {
                return Poll::Ready(Pumped::Gone);
            }
            let n =
                (self.end - self.start).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            match ready!(Pin::new(&mut *to).poll_write(cx, &self.buf[self.start..self.start + n])) {
                Ok(0) | Err(_) => return Poll::Ready(Pumped::PeerGone),
                Ok(w) => {
                    self.start += w;
                    self.remaining -= w as u64;
                }
            }
            if self.remaining == 0 {
                let ended = self.messages_ahead + u64::from(self.ends_message);
                self.messages_ahead = 0;
                if ended > 0 {
                    messages.fetch_add(ended, Ordering::Relaxed);
                }
                if self.is_close {
                    return Poll::Ready(Pumped::Closed);
                }
            }
        }
    }

    async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        from: &mut R,
        to: &mut W,
        counting: (Limits, &Activity, &AtomicU64),
    ) -> Pumped {
        std::future::poll_fn(|cx| self.poll_pump(from, to, counting, cx)).await
    }

    /// Reads and drops frames until the side's close frame (or its end).
    fn poll_drain<R: AsyncRead + Unpin>(
        &mut self,
        from: &mut R,
        activity: &Activity,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        loop {
            if self.remaining == 0 {
                let Some(h) = ready!(self.poll_header(from, activity, cx)) else {
                    return Poll::Ready(());
                };
                self.remaining = h.size as u64 + h.payload;
                self.is_close = h.opcode == CLOSE;
            }
            if self.start == self.end && !ready!(self.poll_fill(from, activity, cx)) {
                return Poll::Ready(());
            }
            let n =
                (self.end - self.start).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            self.start += n;
            self.remaining -= n as u64;
            if self.remaining == 0 && self.is_close {
                return Poll::Ready(());
            }
        }
    }

    async fn drain<R: AsyncRead + Unpin>(&mut self, from: &mut R, activity: &Activity) {
        std::future::poll_fn(|cx| self.poll_drain(from, activity, cx)).await
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
    /// `worker_ahead`: what was read from the worker after its handshake.
    ///
    /// Both directions are served by this one task, each turn polling the
    /// two sides' reads (as an event loop would) with no lock or channel
    /// between them; the sockets are split only for the closing handshake.
    pub async fn run<C, W>(mut self, mut client: C, mut worker: W, worker_ahead: &[u8])
    where
        C: AsyncRead + AsyncWrite + Unpin,
        W: AsyncRead + AsyncWrite + Unpin,
    {
        let mut up = Inbound::new(true, &[]);
        let mut down = Inbound::new(false, worker_ahead);
        let activity = Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        };
        let (limits, a) = (self.limits, &activity);
        let (count_in, count_out) = (
            (limits, a, self.messages_in),
            (limits, a, self.messages_out),
        );
        let mut idle = std::pin::pin!(activity.idle_for(self.idle));
        let shutdown = &mut self.shutdown;
        let mut shutdown = std::pin::pin!(async move {
            let _ = shutdown.wait_for(|c| *c).await;
        });
        // The timer and the shutdown signal are polled when their alarm
        // rings, not at every frame.
        let alarm = Arc::new(Alarm::default());
        let alarm_waker = Waker::from(Arc::clone(&alarm));
        // Which direction goes first this turn: they take turns, so that a
        // side that never stops sending (each turn ends when the runtime's
        // budget does) cannot starve the other.
        let mut down_first = false;
        let end = std::future::poll_fn(|cx| {
            down_first = !down_first;
            for down_turn in [down_first, !down_first] {
                let end = if down_turn {
                    down.poll_pump(&mut worker, &mut client, count_out, cx)
                        .map(|p| match p {
                            Pumped::Closed => End::Closed(Side::Worker),
                            Pumped::Gone => End::WorkerGone,
                            Pumped::PeerGone => End::ClientGone,
                            Pumped::TooBig => End::TooBig(Side::Worker),
                            Pumped::Protocol => End::Protocol(Side::Worker),
                        })
                } else {
                    up.poll_pump(&mut client, &mut worker, count_in, cx)
                        .map(|p| match p {
                            Pumped::Closed => End::Closed(Side::Client),
                            Pumped::Gone => End::ClientGone,
                            Pumped::PeerGone => End::WorkerGone,
                            Pumped::TooBig => End::TooBig(Side::Client),
                            Pumped::Protocol => End::Protocol(Side::Client),
                        })
                };
                if end.is_ready() {
                    return end;
                }
            }
            if alarm.rang(cx.waker()) {
                let mut cx = Context::from_waker(&alarm_waker);
                if idle.as_mut().poll(&mut cx).is_ready() {
                    return Poll::Ready(End::Idle);
                }
                if shutdown.as_mut().poll(&mut cx).is_ready() {
                    return Poll::Ready(End::Shutdown);
                }
            }
            Poll::Pending
        })
        .await;
        let (mut client_read, mut to_client) = tokio::io::split(client);
        let (mut worker_read, mut to_worker) = tokio::io::split(worker);
        // A writer takes a frame of the relay's own only between frames.
        let client_ready = down.remaining == 0;
        let worker_ready = up.remaining == 0;
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            match end {
                // The other side's reply (and what it still sends) passes on.
                End::Closed(Side::Client) => {
                    down.pump(&mut worker_read, &mut to_client, count_out).await;
                }
                End::Closed(Side::Worker) => {
                    up.pump(&mut client_read, &mut to_worker, count_in).await;
                }
                // The worker sees its connection end: the app gets a disconnect (1006).
                End::ClientGone => {}
                End::WorkerGone => {
                    if client_ready {
                        send_close(&mut to_client, SERVICE_RESTART, "service restart", false).await;
                        up.drain(&mut client_read, a).await;
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
                        up.drain(&mut client_read, a),
                        down.drain(&mut worker_read, a),
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
                        up.drain(&mut client_read, a),
                        down.drain(&mut worker_read, a),
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
