//! Bodies on the way through: the worker's response passed on frame by frame
//! (ended after a silence too long), holding the request's place in flight;
//! and the client's request body, kept whole until the worker first reads it
//! so a request that never reached a worker can go to another one, its
//! progress told apart from the worker's (`Unsent::silence`): the upstream
//! timeout counts the worker's time only, not a slow upload's.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;

use super::conns::Lease;
use super::span;
use crate::http::leftover::Guarded;
use crate::http::route_table::{Pool, Upstream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request in flight on a worker (and a slot of its agent, when limited),
/// from the moment it is sent until its response body is dropped.
pub(super) struct RequestGuard {
    upstream: Arc<Upstream>,
    pool: Arc<Pool>,
    slot: Option<OwnedSemaphorePermit>,
}

impl RequestGuard {
    pub(super) fn new(
        upstream: Arc<Upstream>,
        pool: Arc<Pool>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        upstream.in_flight.enter();
        pool.in_flight.fetch_add(1, Ordering::AcqRel);
        pool.touch();
        RequestGuard {
            upstream,
            pool,
            slot,
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.upstream.in_flight.leave();
        self.pool.touch();
        self.pool.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(p) = self.slot.take() {
            self.pool.release_slot(p);
        }
    }
}

/// The worker's response body, passed through frame by frame (nothing is
/// buffered), ended with an error after `idle` without a frame. Its
/// connection goes back to the pool once the body has been read to the end.
pub(super) struct Tracked {
    inner: Incoming,
    idle: Duration,
    /// Armed only when the body first has to wait, so short bodies cost no timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    last: Instant,
    lease: Option<Lease<Replayable>>,
    /// What of the reply is watched for sessions.
    watch: Option<crate::http::sessions::Watch>,
    /// The request's span, ended with the body (bytes counted).
    span: Option<(par_telemetry::trace::Span, u64)>,
    _guard: RequestGuard,
}

impl Tracked {
    /// Ends `span` when the body ends (or is dropped), with its size.
    pub(super) fn traced(mut self, span: Option<par_telemetry::trace::Span>) -> Self {
        self.span = span.map(|s| (s, 0));
        self
    }

    /// Watches the reply for sessions (`sessions::Watch`).
    pub(super) fn watched(mut self, watch: Option<crate::http::sessions::Watch>) -> Self {
        self.watch = watch;
        self
    }

    pub(super) fn new(
        inner: Incoming,
        idle: Duration,
        lease: Option<Lease<Replayable>>,
        guard: RequestGuard,
    ) -> Self {
        Tracked {
            inner,
            idle,
            sleep: None,
            last: Instant::now(),
            lease,
            watch: None,
            span: None,
            _guard: guard,
        }
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }
}

impl Drop for Tracked {
    /// A server that stops at `is_end_stream` never asks for the end: the
    /// connection is given back here. One left mid-body is closed.
    fn drop(&mut self) {
        if let Some((mut s, bytes)) = self.span.take() {
            if !http_body::Body::is_end_stream(&self.inner) {
                span::client_gone(&mut s);
            }
            span::body_ended(s, bytes);
        }
        if http_body::Body::is_end_stream(&self.inner) {
            self.release();
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.last = Instant::now();
                if let (Some(w), Some(d)) = (this.watch.as_mut(), frame.data_ref()) {
                    w.feed(d);
                }
                if let (Some((_, n)), Some(d)) = (this.span.as_mut(), frame.data_ref()) {
                    *n += d.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = this.last + this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
                loop {
                    match sleep.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) => {
                            let deadline = this.last + this.idle;
                            if Instant::now() >= deadline {
                                return Poll::Ready(Some(Err(
                                    "the agent's response stream was idle too long".into(),
                                )));
                            }
                            sleep.as_mut().reset(deadline.into());
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Longest wait for the client's next bytes of a request body being sent
/// to a worker (nginx's `client_body_timeout` default).
const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The client's request body, shared between tries: taken by the first body
/// the client actually reads. Until then another try can send it.
#[derive(Clone)]
pub(super) struct Unsent(
    Arc<Mutex<Option<Guarded>>>,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<Progress>,
);

/// Who a request being sent waits for: the client (its body's next bytes)
/// or the worker (to take them, or to answer), and since when.
struct Progress {
    state: Mutex<(bool, Instant)>,
    /// The client's bytes came after a wait for them.
    came: tokio::sync::Notify,
}

/// Whose silence ended a try.
pub(super) enum Silence {
    /// The worker took nothing and answered nothing for the upstream timeout.
    Worker,
    /// The client sent no body bytes for `CLIENT_BODY_TIMEOUT`.
    Client,
}

impl Unsent {
    pub(super) fn new(body: Guarded) -> Self {
        let progress = Progress {
            state: Mutex::new((false, Instant::now())),
            came: tokio::sync::Notify::new(),
        };
        Unsent(
            Arc::new(Mutex::new(Some(body))),
            Arc::default(),
            Arc::new(progress),
        )
    }

    fn progress(&self, waiting_on_client: bool) {
        let mut st = self.2.state.lock().unwrap_or_else(|e| e.into_inner());
        let was_waiting = st.0;
        *st = (waiting_on_client, Instant::now());
        drop(st);
        if was_waiting && !waiting_on_client {
            self.2.came.notify_one();
        }
    }

    /// Resolves when the worker has been silent for `timeout`: neither
    /// taking the body's next bytes nor answering, from the start of the try
    /// or the last bytes the client sent. The time the body waits for the
    /// client is not counted (that is bounded by `CLIENT_BODY_TIMEOUT`).
    pub(super) async fn silence(&self, timeout: Duration) -> Silence {
        self.progress(false);
        loop {
            let came = self.2.came.notified();
            let (waiting, last) = *self.2.state.lock().unwrap_or_else(|e| e.into_inner());
            if waiting {
                let until = last + CLIENT_BODY_TIMEOUT;
                if tokio::time::timeout_at(until.into(), came).await.is_err() {
                    return Silence::Client;
                }
                continue;
            }
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return Silence::Worker;
            }
            tokio::select! {
                () = came => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// Whether reading the client's body failed (a malformed chunk, a
    /// connection cut mid-upload): the client's error, not the agent's.
    pub(super) fn client_failed(&self) -> bool {
        self.1.load(Ordering::Acquire)
    }

    /// Whether no try has read from it yet.
    pub(super) fn untouched(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// A body for one try.
    pub(super) fn body(&self) -> Replayable {
        let hint = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|b| {
                (
                    http_body::Body::is_end_stream(b),
                    http_body::Body::size_hint(b),
                )
            });
        Replayable {
            shared: self.clone(),
            inner: None,
            hint,
        }
    }
}

pub(super) struct Replayable {
    shared: Unsent,
    inner: Option<Guarded>,
    /// `is_end_stream` and `size_hint` of the body before anyone read it.
    hint: Option<(bool, SizeHint)>,
}

impl http_body::Body for Replayable {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if this.inner.is_none() {
            this.inner = this
                .shared
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        }
        match this.inner.as_mut() {
            Some(b) => {
                let r = Pin::new(b).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Err(_))) => this.shared.1.store(true, Ordering::Release),
                    Poll::Ready(_) => this.shared.progress(false),
                    Poll::Pending => this.shared.progress(true),
                }
                r
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(b) => b.is_end_stream(),
            None => self.hint.as_ref().is_none_or(|(end, _)| *end),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => self.hint.as_ref().map(|(_, h)| *h).unwrap_or_default(),
        }
    }
}
