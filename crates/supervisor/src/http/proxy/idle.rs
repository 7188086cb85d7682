//! Idle upstream connections kept per worker instance, for both of a proxy
//! thread's pools (hyper's connections and the direct path's sockets): a
//! free list per worker, most recently used first, with an age limit and a
//! sweep now and then of connections closed meanwhile and workers gone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::model::WorkerId;

/// Idle connections kept per worker; more are closed when given back.
const MAX_IDLE: usize = 256;

pub(super) struct IdleLists<T> {
    lists: Mutex<Lists<T>>,
    timeout: Duration,
}

struct Lists<T> {
    by_worker: HashMap<WorkerId, Vec<(T, Instant)>>,
    swept: Option<Instant>,
}

impl<T> IdleLists<T> {
    /// Lists whose connections are dropped after `timeout` unused.
    pub(super) fn new(timeout: Duration) -> Self {
        IdleLists {
            lists: Mutex::new(Lists {
                by_worker: HashMap::new(),
                swept: None,
            }),
            timeout,
        }
    }

    /// The warmest idle connection to `worker` that is still `usable`.
    pub(super) fn take(&self, worker: WorkerId, usable: impl Fn(&T) -> bool) -> Option<T> {
        let mut lists = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        let list = lists.by_worker.get_mut(&worker)?;
        while let Some((c, since)) = list.pop() {
            if since.elapsed() < self.timeout && usable(&c) {
                return Some(c);
            }
        }
        None
    }

    /// Keeps `conn` for the next request to `worker`; now and then first
    /// forgets the connections no longer `usable` or idle too long.
    pub(super) fn keep(&self, worker: WorkerId, conn: T, usable: impl Fn(&T) -> bool) {
        let now = Instant::now();
        let mut lists = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        if lists
            .swept
            .is_none_or(|t| now.duration_since(t) >= self.timeout / 2)
        {
            lists.swept = Some(now);
            let timeout = self.timeout;
            lists.by_worker.retain(|_, list| {
                list.retain(|(c, since)| now.duration_since(*since) < timeout && usable(c));
                !list.is_empty()
            });
        }
        let list = lists.by_worker.entry(worker).or_default();
        if list.len() < MAX_IDLE {
            list.push((conn, now));
        }
    }

    /// Idle connections kept (for tests).
    #[cfg(test)]
    pub(super) fn count(&self) -> usize {
        let lists = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        lists.by_worker.values().map(Vec::len).sum()
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error("connect to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr}: no answer within {} s", .after.as_secs_f64())]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("connection to {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

/// A new TCP connection to the worker on `port`, within `timeout`.
pub(super) async fn connect(port: u16, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            // Small frames (one SSE event) go out at once (no Nagle wait).
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(source)) => Err(ConnectError::Io { addr, source }),
        Err(_) => Err(ConnectError::Timeout {
            addr,
            after: timeout,
        }),
    }
}
