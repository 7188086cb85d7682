//! The worker's part of a trace: a server span per request (continuing the
//! caller's `traceparent`), the host round trip as a child span, and the
//! worker span's context handed to the agent (the `traceparent` header of
//! an ASGI request; `trace` in the header of an invoke, export or A2A call).
//! With tracing off ([`par_telemetry::trace::tracer`] is `None`) no span is
//! built; the caller's `traceparent` still reaches the agent as it came.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use http::{HeaderMap, HeaderValue};
use par_telemetry::trace::{Kind, Span, SpanContext, Status};

/// The W3C context a request's handlers pass on to the agent.
#[derive(Debug, Clone, Default)]
pub struct Carrier {
    pub traceparent: Option<HeaderValue>,
    pub tracestate: Option<HeaderValue>,
    /// The worker's server span (tracing on).
    pub span: Option<SpanContext>,
}

tokio::task_local! {
    static CURRENT: Carrier;
}

impl Carrier {
    /// The caller's headers as they came (tracing off).
    pub fn from_headers(h: &HeaderMap) -> Carrier {
        Carrier {
            traceparent: h.get("traceparent").cloned(),
            tracestate: h.get("tracestate").cloned(),
            span: None,
        }
    }

    pub fn of(span: &Span) -> Carrier {
        let c = span.context();
        Carrier {
            traceparent: Some(c.traceparent_header()),
            tracestate: c
                .state
                .as_deref()
                .and_then(|s| HeaderValue::from_str(s).ok()),
            span: Some(c.clone()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.traceparent.is_none()
    }

    /// `{"traceparent": ..., "tracestate"?: ...}` for a host frame's header.
    pub fn json(&self) -> Option<serde_json::Value> {
        let tp = self.traceparent.as_ref()?.to_str().ok()?;
        let mut m = serde_json::Map::new();
        m.insert("traceparent".into(), tp.into());
        if let Some(ts) = self.tracestate.as_ref().and_then(|v| v.to_str().ok()) {
            m.insert("tracestate".into(), ts.into());
        }
        Some(m.into())
    }

    /// Runs `f` with this carrier as the request's.
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        CURRENT.scope(self, f).await
    }
}

/// The current request's carrier (none outside a request, or nothing to pass).
pub fn current() -> Option<Carrier> {
    CURRENT
        .try_with(|c| c.clone())
        .ok()
        .filter(|c| !c.is_empty())
}

/// A frame header for the host with the request's trace context added as `trace`.
pub fn host_header(mut header: serde_json::Value) -> serde_json::Value {
    if let (Some(t), Some(m)) = (current().and_then(|c| c.json()), header.as_object_mut()) {
        m.insert("trace".into(), t);
    }
    header
}

/// A child span of the request's server span for a round trip to the
/// agent host; `None` when tracing is off or the request is not sampled.
pub fn host_span(name: &'static str) -> Option<Span> {
    let tracer = par_telemetry::trace::tracer()?;
    let parent = CURRENT.try_with(|c| c.span.clone()).ok().flatten()?;
    if !parent.sampled() {
        return None;
    }
    let mut s = tracer.start(name, Kind::Internal, Some(&parent));
    s.set("par.host.op", name);
    Some(s)
}

/// Which surface of the agent answered (set on the response by the handler).
#[derive(Debug, Clone, Copy)]
pub struct Surface(pub &'static str);

/// A response body that ends the request's span when it is done (or dropped:
/// the client went away).
pub struct Traced {
    inner: Body,
    span: Option<Span>,
}

impl Traced {
    pub fn wrap(inner: Body, span: Span) -> Body {
        Body::new(Traced {
            inner,
            span: Some(span),
        })
    }
}

impl http_body::Body for Traced {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => {
                self.span.take();
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(mut s) = self.span.take() {
                    s.set_status(Status::Error(format!("response body failed: {e}").into()));
                }
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
