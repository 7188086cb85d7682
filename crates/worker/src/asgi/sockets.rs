//! The open WebSockets of a worker, counted so that shutdown can close them
//! (upgraded connections leave the HTTP server's graceful shutdown).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

/// The open WebSockets of this worker. Upgraded connections leave the HTTP
/// server's graceful shutdown, so shutdown closes them through this.
pub struct Sockets {
    pub(super) closing: watch::Sender<bool>,
    open: AtomicUsize,
    idle: Notify,
}

impl Default for Sockets {
    fn default() -> Self {
        Sockets {
            closing: watch::Sender::new(false),
            open: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }
}

impl Sockets {
    /// Closes every open WebSocket with 1012 (and every later one at once).
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// WebSockets open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until no WebSocket is open.
    pub async fn wait_closed(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(super) fn enter(self: &Arc<Self>) -> OpenSocket {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenSocket(Arc::clone(self))
    }
}

/// Counts one WebSocket as open until dropped.
pub(super) struct OpenSocket(Arc<Sockets>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
