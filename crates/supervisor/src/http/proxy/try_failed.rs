//! A try that got no answer from a worker, and whether the request may go
//! to another one.

use http::Method;

use super::body::Unsent;
use super::idle;

/// A try that got no response.
pub(super) struct TryFailed {
    /// The connection could not be made.
    pub(super) connect: bool,
    /// The request certainly never reached the worker (it was given back).
    unsent: bool,
    /// The connection closed before an answer came.
    closed_early: bool,
    pub(super) error: Box<dyn std::error::Error + Send + Sync>,
}

impl TryFailed {
    pub(super) fn connect(e: idle::ConnectError) -> Self {
        TryFailed {
            connect: true,
            unsent: true,
            closed_early: false,
            error: Box::new(e),
        }
    }

    pub(super) fn http(e: hyper::Error, given_back: bool) -> Self {
        TryFailed {
            connect: false,
            unsent: given_back,
            closed_early: e.is_canceled() || e.is_incomplete_message(),
            error: Box::new(e),
        }
    }

    /// A socket error on the direct path; `closed_early` when nothing came back.
    pub(super) fn io(e: std::io::Error, closed_early: bool) -> Self {
        TryFailed {
            connect: false,
            unsent: false,
            closed_early,
            error: Box::new(e),
        }
    }

    /// For a request held whole (the direct path): whether it can go to
    /// another worker: it never reached this one, or it is idempotent and
    /// the connection closed before any answer.
    pub(super) fn retriable_whole(&self, idempotent: bool) -> bool {
        self.unsent || (idempotent && self.closed_early)
    }

    /// Whether the try certainly did not reach the worker's handler: the
    /// connection was refused, the request given back, or the body never
    /// read and the request idempotent or its connection closed before
    /// any answer.
    pub(super) fn retriable(&self, body: &Unsent, method: &Method) -> bool {
        if self.unsent {
            return true;
        }
        let idempotent = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        body.untouched() && (idempotent || self.closed_early)
    }
}

impl From<hyper_util::client::legacy::Error> for TryFailed {
    fn from(e: hyper_util::client::legacy::Error) -> Self {
        let closed_early = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<hyper::Error>())
            .is_some_and(|h| h.is_canceled() || h.is_incomplete_message());
        TryFailed {
            connect: e.is_connect(),
            unsent: e.is_connect(),
            closed_early,
            error: Box::new(e),
        }
    }
}
