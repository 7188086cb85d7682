//! Hygiene of the supervisor's client connections, so that no client can
//! starve the others or the ALB's health check: a first byte within
//! `client_header_timeout` (a connection that sends nothing is closed), idle
//! keep-alive bounded by `keepalive_timeout` (hyper's header-read timeout),
//! and a cap on open connections below the open-files limit. At the cap the
//! oldest connection that has not sent a byte yet makes room; when none can,
//! a small reserve of connections is served for `/runtime/health` only.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// Connections served for the health check only, past the cap.
const HEALTH_ONLY: usize = 64;

/// File descriptors kept for everything that is not a client connection:
/// worker pipes, connections to workers, files, the listener.
const RESERVED_FDS: u64 = 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub client_header_timeout: Duration,
    pub keepalive_timeout: Duration,
}

/// How a new connection is served.
pub enum Admitted {
    /// Normally; the slot is given back when the connection ends.
    Full(Slot, Waiting),
    /// Past the cap: `/runtime/health` only, then closed.
    HealthOnly(Slot),
    Refused,
}

/// A connection counted until dropped.
pub struct Slot {
    conns: Arc<Connections>,
    health_only: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let counter = if self.health_only {
            &self.conns.health_only
        } else {
            &self.conns.open
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection that has not sent its first byte: evicted through `evicted`
/// when room is needed. Dropping it (first byte, or gone) leaves the queue.
pub struct Waiting {
    conns: Arc<Connections>,
    id: u64,
    pub evicted: oneshot::Receiver<()>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut q = self.conns.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = q.iter().position(|(id, _)| *id == self.id) {
            q.remove(i);
        }
    }
}

pub struct Connections {
    pub limits: Limits,
    open: AtomicUsize,
    health_only: AtomicUsize,
    next: AtomicU64,
    /// Oldest first.
    waiting: Mutex<VecDeque<(u64, oneshot::Sender<()>)>>,
}

impl Connections {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Connections {
            limits,
            open: AtomicUsize::new(0),
            health_only: AtomicUsize::new(0),
            next: AtomicU64::new(0),
            waiting: Mutex::new(VecDeque::new()),
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Counts a new connection in, making room when at the cap.
    pub fn admit(self: &Arc<Self>) -> Admitted {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open >= self.limits.max_connections && !self.evict_oldest() {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return match self
                .health_only
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < HEALTH_ONLY).then_some(n + 1)
                }) {
                Ok(_) => Admitted::HealthOnly(Slot {
                    conns: Arc::clone(self),
                    health_only: true,
                }),
                Err(_) => Admitted::Refused,
            };
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((id, tx));
        Admitted::Full(
            Slot {
                conns: Arc::clone(self),
                health_only: false,
            },
            Waiting {
                conns: Arc::clone(self),
                id,
                evicted: rx,
            },
        )
    }

    /// Closes the oldest connection still waiting for its first byte.
    fn evict_oldest(&self) -> bool {
        let victim = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        match victim {
            Some((_, tx)) => tx.send(()).is_ok(),
            None => false,
        }
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
mod tests {
    use super::*;

    fn conns(max: usize) -> Arc<Connections> {
        Connections::new(Limits {
            max_connections: max,
            client_header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
        })
    }

    #[test]
    fn at_the_cap_the_oldest_silent_connection_makes_room() {
        let c = conns(2);
        let (Admitted::Full(_s1, mut w1), Admitted::Full(_s2, w2)) = (c.admit(), c.admit()) else {
            panic!("room for two");
        };
        // The second one sent its first byte: it may not be evicted.
        drop(w2);
        let Admitted::Full(_s3, w3) = c.admit() else {
            panic!("room made");
        };
        drop(w3);
        assert_eq!(w1.evicted.try_recv(), Ok(()));
        // Nobody left to evict: health only, then refused.
        for _ in 0..HEALTH_ONLY {
            let keep = match c.admit() {
                Admitted::Full(..) => panic!("over the cap"),
                a => a,
            };
            std::mem::forget(keep);
        }
        assert!(matches!(c.admit(), Admitted::Refused));
    }

    #[test]
    fn slots_come_back() {
        let c = conns(1);
        let first = c.admit();
        assert_eq!(c.open(), 1);
        drop(first);
        assert_eq!(c.open(), 0);
        assert!(matches!(c.admit(), Admitted::Full(..)));
    }

    #[test]
    fn the_reserve_is_kept() {
        assert_eq!(default_max_connections(20_000), 18_976);
        assert_eq!(default_max_connections(1024), 256);
    }
}
