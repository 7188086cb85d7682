//! Hygiene of the supervisor's client connections, so that no client can
//! starve the others or the ALB's health check.
//!
//! - A request head is due within `client_header_timeout` (nginx's name):
//!   the first one from the accept, a later one from its first byte; an idle
//!   keep-alive connection waits for that first byte `keepalive_timeout`.
//! - Once the open connections pass a high-water mark (three quarters of the
//!   cap), heads are due within `PRESSED_HEAD_TIMEOUT` instead, those already
//!   being read included (Apache mod_reqtimeout's minimum rate, made simple:
//!   the ALB and agents on loopback send a head in one piece).
//! - At the cap, the connection that has waited longest for its next request
//!   is closed to make room, whether it sent nothing, part of a head, or is an
//!   idle keep-alive one: never one with a request in flight. A connection
//!   whose whole first head is already in its buffer when accepted (the ALB's
//!   health check sends its head at once, and it is there when a burst of
//!   connections makes the accept queue long) has a request in flight from
//!   the start; any other fresh one is the youngest, evicted last.
//! - When every connection has a request in flight, a reserve of connections
//!   serves `/runtime/health` only, its oldest waiting one evicted likewise.

use std::collections::HashMap;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Connections served for the health check only, past the cap.
const HEALTH_ONLY: usize = 64;

/// File descriptors kept for everything that is not a client connection:
/// worker pipes, connections to workers, files, the listener.
const RESERVED_FDS: u64 = 1024;

/// The head deadline past the high-water mark (and always for the health
/// reserve): long enough for a head delayed by a few lost packets, short
/// enough that holding connections open costs an attacker a reconnection
/// every two seconds each.
pub const PRESSED_HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// Victims chosen per scan of the open connections (nginx drains 32 at a
/// time too): the scan is paid once for that many evictions.
const VICTIMS_PER_SCAN: usize = 32;

/// In `Entry::busy`: closed or evicted (no request may start).
const EVICTED: u32 = 1 << 31;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub client_header_timeout: Duration,
    pub keepalive_timeout: Duration,
}

/// How a new connection is served.
pub enum Admitted {
    /// Normally.
    Full(Conn),
    /// Past the cap with every connection busy: `/runtime/health` only.
    HealthOnly(Conn),
    Refused,
}

/// What the table knows of one open connection.
struct Entry {
    /// Counts the wakes: a wait recomputes its deadline only after one.
    woken: AtomicU32,
    /// Requests in flight (HTTP/2 can have several), or `EVICTED`.
    busy: AtomicU32,
    /// When it began waiting for its next request (the accept, or the end
    /// of its last response): ms since `Connections::epoch`.
    since: AtomicU64,
    /// When the first byte of the head being read came (ms + 1; 0: none yet).
    head_at: AtomicU64,
    /// Whether a request was served (the first head is due from the accept).
    served: AtomicBool,
    /// Counted in `busy` from the accept: its whole first head had arrived.
    preloaded: AtomicBool,
    /// Bytes came while a request was in flight (hyper reads ahead): the
    /// next head began before the wait for it.
    read_ahead: AtomicBool,
    /// Whether a task waits on `wake` while requests are in flight (hyper's path).
    watched: AtomicBool,
    /// Evicted, the pressure rose, or (watched) the last request ended: the
    /// task waiting in `expired` (one at most) looks again.
    wake: AtomicWaker,
    health_only: bool,
}

impl Entry {
    /// Has the task waiting in `expired` look again.
    fn wake(&self) {
        self.woken.fetch_add(1, Ordering::AcqRel);
        self.wake.wake();
    }
}

#[derive(Default)]
struct Table {
    all: HashMap<u64, Arc<Entry>>,
    /// The oldest waiting connections as of the last scan, newest first
    /// (popped oldest first), each with its `since` then.
    victims: Vec<(u64, Arc<Entry>)>,
}

pub struct Connections {
    pub limits: Limits,
    epoch: Instant,
    open: AtomicUsize,
    health_only: AtomicUsize,
    /// Past the high-water mark (heads due within `PRESSED_HEAD_TIMEOUT`).
    pressed: AtomicBool,
    next: AtomicU64,
    table: Mutex<Table>,
    health_table: Mutex<Table>,
}

impl Connections {
    /// With `max_connections` at most what the open-files limit leaves (more
    /// would fail accepts with EMFILE, the health check's among them).
    pub fn new(mut limits: Limits) -> Arc<Self> {
        let open_files = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        let room = default_max_connections(open_files);
        if limits.max_connections > room {
            tracing::warn!(
                max_connections = limits.max_connections,
                open_files,
                "max_connections is more than the open-files limit leaves: {room} are served"
            );
            limits.max_connections = room;
        }
        Arc::new(Connections {
            limits,
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
            health_only: AtomicUsize::new(0),
            pressed: AtomicBool::new(false),
            next: AtomicU64::new(0),
            table: Mutex::default(),
            health_table: Mutex::default(),
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Whether heads are due within the short deadline now.
    pub fn pressed(&self) -> bool {
        self.pressed.load(Ordering::Relaxed)
    }

    fn high_water(&self) -> usize {
        (self.limits.max_connections * 3 / 4).max(1)
    }

    fn low_water(&self) -> usize {
        self.limits.max_connections / 2
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    fn table(&self, health_only: bool) -> std::sync::MutexGuard<'_, Table> {
        let t = if health_only {
            &self.health_table
        } else {
            &self.table
        };
        t.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection in, making room when at the cap. `preloaded`:
    /// its first request head is whole in its buffer already (a request in
    /// flight, never evicted).
    pub fn admit(self: &Arc<Self>, preloaded: bool) -> Admitted {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        if open > self.limits.max_connections && !self.evict(false) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            let n = self.health_only.fetch_add(1, Ordering::AcqRel) + 1;
            if n > HEALTH_ONLY && !self.evict(true) {
                self.health_only.fetch_sub(1, Ordering::AcqRel);
                return Admitted::Refused;
            }
            return Admitted::HealthOnly(self.register(true, preloaded));
        }
        if open >= self.high_water() && !self.pressed.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                open,
                max_connections = self.limits.max_connections,
                "many open connections: request heads are due within {} s",
                PRESSED_HEAD_TIMEOUT.as_secs_f64()
            );
            // Waits already under way shorten too.
            for e in self.table(false).all.values() {
                if e.busy.load(Ordering::Acquire) == 0 {
                    e.wake();
                }
            }
        }
        Admitted::Full(self.register(false, preloaded))
    }

    fn register(self: &Arc<Self>, health_only: bool, preloaded: bool) -> Conn {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            woken: AtomicU32::new(0),
            busy: AtomicU32::new(u32::from(preloaded)),
            preloaded: AtomicBool::new(preloaded),
            read_ahead: AtomicBool::new(false),
            since: AtomicU64::new(self.now_ms()),
            head_at: AtomicU64::new(0),
            served: AtomicBool::new(false),
            watched: AtomicBool::new(false),
            wake: AtomicWaker::new(),
            health_only,
        });
        self.table(health_only).all.insert(id, Arc::clone(&entry));
        Conn {
            conns: Arc::clone(self),
            entry,
            id,
        }
    }

    /// Closes the connection of the class that has waited longest for its
    /// next request; false when every one has a request in flight.
    fn evict(&self, health_only: bool) -> bool {
        let mut t = self.table(health_only);
        let mut scanned = false;
        loop {
            while let Some((since, e)) = t.victims.pop() {
                // Still waiting since then (not a newer wait), and not closed.
                if e.since.load(Ordering::Acquire) == since
                    && e.busy
                        .compare_exchange(0, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    e.wake();
                    return true;
                }
            }
            if scanned {
                return false;
            }
            scanned = true;
            let mut oldest: Vec<(u64, u64)> = t
                .all
                .iter()
                .filter(|(_, e)| e.busy.load(Ordering::Acquire) == 0)
                .map(|(id, e)| (e.since.load(Ordering::Acquire), *id))
                .collect();
            if oldest.len() > VICTIMS_PER_SCAN {
                oldest.select_nth_unstable(VICTIMS_PER_SCAN);
                oldest.truncate(VICTIMS_PER_SCAN);
            }
            oldest.sort_unstable_by(|a, b| b.cmp(a));
            let victims = oldest
                .into_iter()
                .filter_map(|(since, id)| t.all.get(&id).map(|e| (since, Arc::clone(e))))
                .collect();
            t.victims = victims;
        }
    }
}

/// One open connection, counted until dropped.
pub struct Conn {
    conns: Arc<Connections>,
    entry: Arc<Entry>,
    id: u64,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.entry.busy.store(EVICTED, Ordering::Release);
        let health_only = self.entry.health_only;
        self.conns.table(health_only).all.remove(&self.id);
        if health_only {
            self.conns.health_only.fetch_sub(1, Ordering::AcqRel);
        } else {
            let open = self.conns.open.fetch_sub(1, Ordering::AcqRel) - 1;
            if open < self.conns.low_water() && self.conns.pressed() {
                self.conns.pressed.store(false, Ordering::Release);
            }
        }
    }
}

impl Conn {
    /// Served for `/runtime/health` only.
    pub fn health_only(&self) -> bool {
        self.entry.health_only
    }

    /// The first byte of a head came (no-op when already known, or busy).
    pub fn head_started(&self) {
        let e = &self.entry;
        // (A preloaded connection's first head is whole already.)
        if e.head_at.load(Ordering::Relaxed) != 0 || e.preloaded.load(Ordering::Relaxed) {
            return;
        }
        if e.busy.load(Ordering::Relaxed) != 0 {
            e.read_ahead.store(true, Ordering::Relaxed);
        } else {
            e.head_at.store(self.conns.now_ms() + 1, Ordering::Relaxed);
            // A watcher waiting out the keep-alive time: the head's deadline now.
            if e.watched.load(Ordering::Relaxed) {
                e.wake();
            }
        }
    }

    /// A request head is complete: the request is in flight from now on
    /// and the connection is never evicted meanwhile. False: it was
    /// evicted already (close it).
    pub fn begin_request(&self) -> bool {
        let e = &self.entry;
        // The first request of a preloaded connection was counted at the accept.
        let begun = if e.preloaded.load(Ordering::Relaxed) {
            e.preloaded.store(false, Ordering::Relaxed);
            true
        } else {
            e.busy
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                    (b & EVICTED == 0).then_some(b + 1)
                })
                .is_ok()
        };
        // Bytes from now on (read ahead) begin the next head.
        e.head_at.store(0, Ordering::Relaxed);
        begun
    }

    /// A response is done: the connection waits for its next request.
    pub fn end_request(&self) {
        let e = &self.entry;
        let now = self.conns.now_ms();
        e.since.store(now, Ordering::Release);
        let ahead = e.read_ahead.swap(false, Ordering::Relaxed);
        e.head_at
            .store(if ahead { now + 1 } else { 0 }, Ordering::Relaxed);
        e.served.store(true, Ordering::Relaxed);
        let before = e
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                ((b & !EVICTED) > 0).then(|| b - 1)
            });
        if before == Ok(1) && e.watched.load(Ordering::Relaxed) {
            e.wake();
        }
    }

    /// The connection was upgraded (a WebSocket): in flight, never evicted,
    /// until it closes. Its slot is held by the upgraded socket's reads.
    pub fn upgraded(&self) {
        self.entry.busy.fetch_add(1, Ordering::AcqRel);
    }

    /// A guard that ends the request when dropped (hyper's path: the
    /// response body, dropped once written, or the request abandoned).
    pub fn request(self: &Arc<Self>) -> Option<ConnRequest> {
        self.begin_request().then(|| ConnRequest(Arc::clone(self)))
    }

    /// When the wait for the current request must end.
    fn deadline(&self) -> Instant {
        let (e, l) = (&self.entry, &self.conns.limits);
        let head = if e.health_only || self.conns.pressed() {
            l.client_header_timeout.min(PRESSED_HEAD_TIMEOUT)
        } else {
            l.client_header_timeout
        };
        let since = self.conns.at(e.since.load(Ordering::Acquire));
        if !e.served.load(Ordering::Relaxed) {
            return since + head;
        }
        match e.head_at.load(Ordering::Relaxed) {
            0 if e.health_only => since + head,
            0 => since + l.keepalive_timeout,
            at => self.conns.at(at - 1) + head,
        }
    }

    /// Resolves when the connection must close: evicted, or its wait for a
    /// request past its deadline. Pending while a request is in flight
    /// (hyper's path: call `watch` first so the end of one wakes it).
    pub async fn expired(&self) {
        let e = &self.entry;
        let mut seen = e.woken.load(Ordering::Acquire);
        let sleep = tokio::time::sleep_until(self.deadline());
        tokio::pin!(sleep);
        std::future::poll_fn(|cx| {
            // Registered before the state is read: no wake is missed.
            e.wake.register(cx.waker());
            let busy = e.busy.load(Ordering::Acquire);
            if busy & EVICTED != 0 {
                return Poll::Ready(());
            }
            if busy > 0 {
                return Poll::Pending;
            }
            // The deadline moves only with a wake (pressure, a request's
            // end, a head's start).
            let woken = e.woken.load(Ordering::Acquire);
            if woken != seen {
                seen = woken;
                let deadline = self.deadline();
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Due: unless the deadline moved later meanwhile (the pressure
            // fell), which wakes no one.
            let deadline = self.deadline();
            if deadline > sleep.deadline() {
                sleep.as_mut().reset(deadline);
                return sleep.as_mut().poll(cx);
            }
            Poll::Ready(())
        })
        .await
    }

    /// `expired` will be awaited while requests are in flight.
    pub fn watch(&self) {
        self.entry.watched.store(true, Ordering::Relaxed);
    }
}

/// A request in flight on hyper's path; ended when dropped.
pub struct ConnRequest(Arc<Conn>);

impl Drop for ConnRequest {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// A connection's reads, telling its `Conn` when a head begins (hyper's path).
pub struct Reading<T> {
    inner: T,
    conn: Arc<Conn>,
}

impl<T> Reading<T> {
    pub fn new(inner: T, conn: Arc<Conn>) -> Self {
        Reading { inner, conn }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Reading<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.head_started();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Reading<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises the soft open-files limit to the hard one; returns the soft limit.
pub fn raise_open_files() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!("could not raise the open-files limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// The connection cap for an open-files limit: what the reserve leaves.
pub fn default_max_connections(open_files: u64) -> usize {
    open_files.saturating_sub(RESERVED_FDS).max(256) as usize
}

#[cfg(test)]
mod tests;
