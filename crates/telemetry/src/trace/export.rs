//! The exporter: a bounded queue that never blocks the span's producer, and
//! a thread of its own that sends batches (up to [`BATCH`] spans, or what
//! came within [`BATCH_DELAY`]) as OTLP/HTTP protobuf POSTs.
//!
//! A span is queued under a lock held for a push (no allocation, no
//! wake-up): the exporter is woken only by a batch's first span (it then
//! waits up to [`BATCH_DELAY`] for more), by a full batch, and by a flush.
//! The protobuf is written straight from the spans into one buffer a batch.

// A span moves as the Box its `Span` built (queued, exported, reused whole).
#![allow(clippy::vec_box)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;

use super::config::{ecs_attributes, Config};
use super::{SpanData, Stats, Status, Value, BATCH, BATCH_DELAY, QUEUE};

/// The producers' end.
pub(crate) struct Queue {
    shared: Arc<Shared>,
}

struct Shared {
    spans: Mutex<Vec<Box<SpanData>>>,
    capacity: usize,
    /// The exporter's wake-up: a batch's first span, a full batch, a flush.
    wake: Notify,
    flushes: Mutex<Vec<std::sync::mpsc::SyncSender<()>>>,
    /// Exported spans emptied, for new ones: their vectors' room is kept,
    /// and a span costs its producer no allocation of its own.
    free: Mutex<Vec<Box<SpanData>>>,
    /// No exporter (it failed to start), or the queue is gone.
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Queue {
    fn new(capacity: usize) -> Queue {
        Queue {
            shared: Arc::new(Shared {
                spans: Mutex::new(Vec::with_capacity(capacity.min(QUEUE))),
                capacity,
                wake: Notify::new(),
                flushes: Mutex::new(Vec::new()),
                free: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Queues a span; `false` when the queue is full.
    pub fn push(&self, span: Box<SpanData>) -> bool {
        let queued = {
            let mut q = lock(&self.shared.spans);
            if q.len() < self.shared.capacity {
                q.push(span);
                Ok(q.len())
            } else {
                Err(span)
            }
        };
        match queued {
            Ok(n) => {
                if n == 1 || n == BATCH {
                    self.shared.wake.notify_one();
                }
                true
            }
            // Freed outside the lock.
            Err(_) => false,
        }
    }

    /// An exported span, emptied, when there is one.
    pub fn recycled(&self) -> Option<Box<SpanData>> {
        lock(&self.shared.free).pop()
    }

    /// Asks the exporter to send all it holds and waits, at most `within`.
    pub fn flush(&self, within: Duration) {
        if self.shared.closed.load(Ordering::Relaxed) {
            return;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        lock(&self.shared.flushes).push(tx);
        self.shared.wake.notify_one();
        let _ = rx.recv_timeout(within);
    }

    /// A queue of `capacity` that no exporter drains (tests: [`Queue::take`]).
    #[cfg(test)]
    pub fn detached(capacity: usize) -> Queue {
        let q = Queue::new(capacity);
        q.shared.closed.store(true, Ordering::Relaxed);
        q
    }

    /// Empties `spans` and keeps them for new ones, as the exporter does (tests).
    #[cfg(test)]
    pub fn give_back(&self, spans: Vec<Box<SpanData>>) {
        for mut s in spans {
            empty(&mut s);
            lock(&self.shared.free).push(s);
        }
    }

    /// What is queued, oldest first (tests).
    #[cfg(test)]
    pub fn take(&self) -> Vec<Box<SpanData>> {
        std::mem::take(&mut *lock(&self.shared.spans))
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }
}

/// Starts the exporter thread.
pub(crate) fn start(cfg: Config, stats: Arc<Stats>) -> Queue {
    let queue = Queue::new(QUEUE);
    let shared = Arc::clone(&queue.shared);
    let spawned = std::thread::Builder::new()
        .name("par-otlp-export".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run(cfg, stats, &shared)),
                Err(e) => tracing::warn!("traces not exported: no runtime for the exporter: {e}"),
            }
            shared.closed.store(true, Ordering::Relaxed);
        });
    if let Err(e) = spawned {
        queue.shared.closed.store(true, Ordering::Relaxed);
        tracing::warn!("traces not exported: failed to start the exporter thread: {e}");
    }
    queue
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn run(cfg: Config, stats: Arc<Stats>, shared: &Shared) {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let mut resource = cfg.resource.clone();
    if let Some(uri) = &cfg.ecs_metadata_uri {
        match ecs_task(&client, uri).await {
            Ok(task) => resource.extend(ecs_attributes(&task)),
            Err(e) => tracing::warn!(
                "traces: ECS task metadata not read ({e}); spans carry no aws.ecs.* attributes"
            ),
        }
    }
    let mut exporter = Exporter {
        client,
        cfg,
        stats,
        encoder: Encoder::new(&resource),
        failing: false,
    };
    // Swapped with the queue's: both keep their capacity.
    let mut batch: Vec<Box<SpanData>> = Vec::with_capacity(QUEUE);
    let ready = || {
        lock(&shared.spans).len() >= BATCH
            || !lock(&shared.flushes).is_empty()
            || shared.closed.load(Ordering::Relaxed)
    };
    loop {
        shared.wake.notified().await;
        if !ready() {
            // A batch's first span: more for up to BATCH_DELAY.
            let deadline = tokio::time::sleep(BATCH_DELAY);
            tokio::pin!(deadline);
            while !ready() {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = &mut deadline => break,
                }
            }
        }
        std::mem::swap(&mut *lock(&shared.spans), &mut batch);
        let flushes = std::mem::take(&mut *lock(&shared.flushes));
        for chunk in batch.chunks(BATCH) {
            exporter.export(chunk).await;
        }
        // Emptied here (their strings freed), kept for new spans.
        for s in &mut batch {
            empty(s);
        }
        {
            let mut free = lock(&shared.free);
            let room = FREE.saturating_sub(free.len());
            let n = room.min(batch.len());
            free.extend(batch.drain(..n));
        }
        batch.clear();
        for f in flushes {
            let _ = f.send(());
        }
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// Spans kept for reuse at most.
const FREE: usize = BATCH;

/// A span as a new one starts (what `Tracer::start` does not set).
fn empty(s: &mut SpanData) {
    s.context.state = None;
    s.name = std::borrow::Cow::Borrowed("");
    s.name_at = None;
    s.text.clear();
    s.end = 0;
    s.attributes.clear();
    s.dropped_attributes = 0;
    s.events.clear();
    s.event_attributes.clear();
    s.dropped_events = 0;
    s.links.clear();
    s.status = Status::Unset;
}

async fn ecs_task(client: &HttpClient, uri: &str) -> Result<serde_json::Value, String> {
    let url: http::Uri = format!("{}/task", uri.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("bad URI: {e}"))?;
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(1), fetch)
        .await
        .map_err(|_| "timed out after 1 s".to_string())?
}

struct Exporter {
    client: HttpClient,
    cfg: Config,
    stats: Arc<Stats>,
    encoder: Encoder,
    /// The last export failed (a warning per run of failures, not per batch).
    failing: bool,
}

impl Exporter {
    async fn export(&mut self, batch: &[Box<SpanData>]) {
        let n = batch.len() as u64;
        let body = self.encoder.encode(batch);
        let mut req = http::Request::post(self.cfg.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .expect("a request from a parsed URI");
        for (k, v) in &self.cfg.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let send = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| crate::error_chain(&e))?;
            let status = resp.status();
            // Read the (small) answer so the connection can be reused.
            let _ = resp.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the collector answered {status}"))
            }
        };
        let result = match tokio::time::timeout(self.cfg.timeout, send).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.cfg.timeout)),
        };
        match result {
            Ok(()) => {
                self.stats.exported.fetch_add(n, Ordering::Relaxed);
                if std::mem::take(&mut self.failing) {
                    tracing::info!(endpoint = %self.cfg.endpoint, "traces: exporting again");
                }
            }
            Err(e) => {
                self.stats.failed_exports.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(endpoint = %self.cfg.endpoint, spans = n, "traces: export failed, spans dropped: {e}");
                }
            }
        }
    }
}

/// Writes OTLP's `ExportTraceServiceRequest` (protobuf, the field numbers
/// of `proto`'s messages) straight from the spans: no message structs, no
/// copies of their strings. Fields holding their default value are left
/// out, as prost does: the bytes are those of `proto`'s encoding.
pub(crate) struct Encoder {
    /// `ResourceSpans.resource` and `ScopeSpans.scope`, each whole (field
    /// key, length, message), written once.
    resource: Vec<u8>,
    scope: Vec<u8>,
    /// The last body's length: the next one's first guess.
    last: usize,
}

// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

impl Encoder {
    pub fn new(resource: &[(String, Value)]) -> Encoder {
        let mut r = Vec::new();
        for (k, v) in resource {
            key_value(&mut r, 1, k, v, None);
        }
        let mut s = Vec::new();
        string(&mut s, 1, "par");
        string(&mut s, 2, env!("CARGO_PKG_VERSION"));
        let whole = |body: Vec<u8>| {
            let mut out = Vec::with_capacity(body.len() + 6);
            key(&mut out, 1, LEN);
            varint(&mut out, body.len() as u64);
            out.extend_from_slice(&body);
            out
        };
        Encoder {
            resource: whole(r),
            scope: whole(s),
            last: 0,
        }
    }

    /// The request body for a batch.
    pub fn encode(&mut self, batch: &[Box<SpanData>]) -> Bytes {
        // The spans are written first, after room for what goes before
        // them (whose lengths are theirs): nothing is moved or copied.
        let head_room = 3 * (1 + 5) + self.resource.len() + self.scope.len();
        let mut buf = Vec::with_capacity(head_room + self.last.max(batch.len() * 400));
        buf.resize(head_room, 0);
        for s in batch {
            span(&mut buf, s);
        }
        let spans = buf.len() - head_room;
        let scope_spans = self.scope.len() + spans;
        let resource_spans = self.resource.len() + 1 + varint_len(scope_spans) + scope_spans;
        let mut head = Vec::with_capacity(head_room);
        key(&mut head, 1, LEN);
        varint(&mut head, resource_spans as u64);
        head.extend_from_slice(&self.resource);
        key(&mut head, 2, LEN);
        varint(&mut head, scope_spans as u64);
        head.extend_from_slice(&self.scope);
        let start = head_room - head.len();
        buf[start..head_room].copy_from_slice(&head);
        self.last = buf.len();
        Bytes::from(buf).slice(start..)
    }
}

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: usize) -> usize {
    let bits = 64 - (v as u64 | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn key(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, u64::from((field << 3) | wire));
}

fn bytes_field(buf: &mut Vec<u8>, field: u32, b: &[u8]) {
    if !b.is_empty() {
        key(buf, field, LEN);
        varint(buf, b.len() as u64);
        buf.extend_from_slice(b);
    }
}

fn string(buf: &mut Vec<u8>, field: u32, s: &str) {
    bytes_field(buf, field, s.as_bytes());
}

fn fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(buf, field, FIXED64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed32(buf: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        key(buf, field, FIXED32);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn uint(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(buf, field, VARINT);
        varint(buf, v);
    }
}

/// A message field: its key, room for its length (`guess` bytes), and the
/// length written once the message is (moved when the guess was wrong).
fn message(buf: &mut Vec<u8>, field: u32, guess: usize, body: impl FnOnce(&mut Vec<u8>)) {
    key(buf, field, LEN);
    let at = buf.len();
    buf.resize(at + guess, 0);
    body(buf);
    let len = buf.len() - at - guess;
    let n = varint_len(len);
    if n != guess {
        let end = buf.len();
        if n > guess {
            buf.resize(end + n - guess, 0);
        }
        buf.copy_within(at + guess..end, at + n);
        buf.truncate(end + n - guess);
    }
    let mut v = len;
    for b in &mut buf[at..at + n] {
        *b = (v as u8 & 0x7f) | if v >= 0x80 { 0x80 } else { 0 };
        v >>= 7;
    }
}

/// A `KeyValue` (its length computed first: no room guessed).
fn key_value(buf: &mut Vec<u8>, field: u32, k: &str, v: &Value, of: Option<&SpanData>) {
    let s = v.as_text(of.map_or("", |d| &d.text));
    let value_len = match (v, &s) {
        (_, Some(s)) => 1 + varint_len(s.len()) + s.len(),
        (Value::Int(i), _) => 1 + varint_len(*i as u64 as usize),
        (Value::Float(_), _) => 1 + 8,
        _ => 2,
    };
    let key_len = if k.is_empty() {
        0
    } else {
        1 + varint_len(k.len()) + k.len()
    };
    key(buf, field, LEN);
    varint(
        buf,
        (key_len + 1 + varint_len(value_len) + value_len) as u64,
    );
    string(buf, 1, k);
    key(buf, 2, LEN);
    varint(buf, value_len as u64);
    // AnyValue: its one field is written even when it holds a default.
    match (v, s) {
        (_, Some(s)) => {
            key(buf, 1, LEN);
            varint(buf, s.len() as u64);
            buf.extend_from_slice(s.as_bytes());
        }
        (Value::Bool(b), _) => {
            key(buf, 2, VARINT);
            buf.push(u8::from(*b));
        }
        (Value::Int(i), _) => {
            key(buf, 3, VARINT);
            varint(buf, *i as u64);
        }
        (Value::Float(f), _) => {
            key(buf, 4, FIXED64);
            buf.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        _ => unreachable!("strings have their text"),
    }
}

fn attributes(buf: &mut Vec<u8>, field: u32, a: &[super::Attribute], of: &SpanData) {
    for (k, v) in a {
        key_value(buf, field, k, v, Some(of));
    }
}

/// One span, as `ScopeSpans.spans` has it (`proto::Span`).
fn span(buf: &mut Vec<u8>, s: &SpanData) {
    message(buf, 2, 2, |buf| {
        bytes_field(buf, 1, &s.context.trace_id.0);
        bytes_field(buf, 2, &s.context.span_id.0);
        string(buf, 3, s.context.state.as_deref().unwrap_or(""));
        if let Some(p) = s.parent {
            bytes_field(buf, 4, &p.0);
        }
        string(buf, 5, s.name());
        uint(buf, 6, s.kind as u64);
        fixed64(buf, 7, s.start);
        fixed64(buf, 8, s.end);
        attributes(buf, 9, &s.attributes, s);
        uint(buf, 10, s.dropped_attributes.into());
        for e in &s.events {
            message(buf, 11, 1, |buf| {
                fixed64(buf, 1, e.time);
                string(buf, 2, &e.name);
                attributes(buf, 3, &s.event_attributes[e.attributes.clone()], s);
            });
        }
        uint(buf, 12, s.dropped_events.into());
        for (c, a) in &s.links {
            message(buf, 13, 1, |buf| {
                bytes_field(buf, 1, &c.trace_id.0);
                bytes_field(buf, 2, &c.span_id.0);
                string(buf, 3, c.state.as_deref().unwrap_or(""));
                attributes(buf, 4, a, s);
                fixed32(buf, 6, u32::from(c.flags));
            });
        }
        let status = match &s.status {
            Status::Unset => None,
            Status::Ok => Some(("", 1)),
            Status::Error(m) => Some((&**m, 2)),
        };
        if let Some((m, code)) = status {
            message(buf, 15, 1, |buf| {
                string(buf, 2, m);
                uint(buf, 3, code);
            });
        }
        // Bits 0-7: the W3C trace flags.
        fixed32(buf, 16, u32::from(s.context.flags));
    });
}

/// The request body for a batch (tests: one encoder, one batch).
#[cfg(test)]
pub(crate) fn encode(resource: &[(String, Value)], batch: &[Box<SpanData>]) -> Bytes {
    Encoder::new(resource).encode(batch)
}
