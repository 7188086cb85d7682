//! Requests in flight on one worker, and a wait for them to end that is told,
//! not polled: the proxy counts each request and stream, and the last one to
//! finish wakes whoever drains the worker.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
    /// A drain gave up waiting with some still there.
    abandoned: AtomicBool,
}

impl InFlight {
    pub fn get(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn enter(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    pub fn leave(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Marks that a drain gave up on what is left.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
    }

    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Waits until nothing is in flight, at most `limit`; returns what is
    /// still in flight then.
    pub async fn drained(&self, limit: Duration) -> usize {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                // Register before checking, so a `leave` in between is not missed.
                idle.as_mut().enable();
                if self.get() == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        self.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn wakes_when_the_last_request_ends() {
        let f = Arc::new(InFlight::default());
        f.enter();
        f.enter();
        let g = Arc::clone(&f);
        let t = tokio::spawn(async move { g.drained(Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        f.leave();
        tokio::task::yield_now().await;
        assert!(!t.is_finished());
        f.leave();
        assert_eq!(t.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn gives_up_at_the_limit() {
        let f = InFlight::default();
        f.enter();
        assert_eq!(f.drained(Duration::from_millis(50)).await, 1);
        assert_eq!(InFlight::default().drained(Duration::from_secs(1)).await, 0);
    }
}
