//! Request bodies a reply did not read (a 404 for an unknown agent, a 401, a
//! 503 while an agent restarts): read and dropped when small, so the
//! keep-alive connection stays usable for the client's next request;
//! otherwise the reply says `Connection: close` rather than leaving the
//! client to find a connection out of step.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

/// Most of an unread body read to keep its connection.
const DRAIN_BYTES: usize = 64 * 1024;
/// Longest wait for it.
const DRAIN_TIME: Duration = Duration::from_secs(1);

type Slot = Arc<Mutex<Option<Incoming>>>;

/// A request body that hands itself back when dropped unread.
pub struct Guarded {
    inner: Option<Incoming>,
    left: Slot,
    /// Frames read ahead (`prefetch`), passed on first.
    ahead: std::collections::VecDeque<Result<Frame<Bytes>, hyper::Error>>,
}

/// Where an unread body ends up.
pub struct Leftover(Slot);

pub fn guard(body: Incoming) -> (Guarded, Leftover) {
    let left: Slot = Arc::default();
    (
        Guarded {
            inner: Some(body),
            left: Arc::clone(&left),
            ahead: Default::default(),
        },
        Leftover(left),
    )
}

impl Guarded {
    /// Reads the whole body when it is at most `max` bytes and comes within
    /// `time`, and returns it; it is still passed on whole. None (a longer,
    /// slower or failed body): what was read is passed on, then the rest.
    pub async fn prefetch(&mut self, max: usize, time: Duration) -> Option<Bytes> {
        let mut read = 0usize;
        let whole = tokio::time::timeout(time, async {
            loop {
                let Some(inner) = self.inner.as_mut() else {
                    return true;
                };
                match inner.frame().await {
                    None => {
                        self.inner = None;
                        return true;
                    }
                    Some(Ok(f)) => {
                        read += f.data_ref().map_or(0, Bytes::len);
                        let data = f.is_data();
                        self.ahead.push_back(Ok(f));
                        if read > max || !data {
                            return false;
                        }
                    }
                    Some(Err(e)) => {
                        self.ahead.push_back(Err(e));
                        return false;
                    }
                }
            }
        })
        .await
        .unwrap_or(false);
        if !whole {
            return None;
        }
        let mut out = bytes::BytesMut::with_capacity(read);
        for f in self.ahead.iter().flatten() {
            if let Some(d) = f.data_ref() {
                out.extend_from_slice(d);
            }
        }
        Some(out.freeze())
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(f) = self.ahead.pop_front() {
            return Poll::Ready(Some(f));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let r = Pin::new(inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) {
            self.inner = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_empty() && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let ahead: u64 = self
            .ahead
            .iter()
            .flatten()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        let rest = self
            .inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint());
        let mut h = SizeHint::new();
        h.set_lower(rest.lower() + ahead);
        if let Some(u) = rest.upper() {
            h.set_upper(u + ahead);
        }
        h
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(b) = self.inner.take() {
            if !http_body::Body::is_end_stream(&b) {
                *self.left.lock().unwrap_or_else(|e| e.into_inner()) = Some(b);
            }
        }
    }
}

impl Leftover {
    /// After the reply: reads what the handler left unread, or marks the
    /// reply `Connection: close` when there is too much of it.
    pub async fn settle(self, resp: &mut Response<Body>) {
        let body = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut body) = body else { return };
        let drained = tokio::time::timeout(DRAIN_TIME, async {
            let mut read = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { return false };
                read += frame.data_ref().map_or(0, Bytes::len);
                if read > DRAIN_BYTES {
                    return false;
                }
            }
            true
        })
        .await
        .unwrap_or(false);
        if !drained {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
}
