//! One proxy thread's keep-alive sockets to its workers, for the direct
//! path: a free list per worker instance, most recently used first. A
//! socket goes back when its response was read to the end; one the worker
//! closed meanwhile (it restarted, its idle timeout passed) is seen as
//! readable when taken, and dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::super::conns::ConnectError;
use crate::model::WorkerId;

/// Idle sockets kept per worker; more are closed when given back.
const MAX_IDLE: usize = 256;

pub(in crate::http::proxy) struct Sockets {
    idle: Mutex<Idle>,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

struct Idle {
    by_worker: HashMap<WorkerId, Vec<(TcpStream, Instant)>>,
    swept: Option<Instant>,
}

impl Sockets {
    pub(in crate::http::proxy) fn new(idle_timeout: Duration, connect_timeout: Duration) -> Self {
        Sockets {
            idle: Mutex::new(Idle {
                by_worker: HashMap::new(),
                swept: None,
            }),
            idle_timeout,
            connect_timeout,
        }
    }

    /// An idle socket to `worker` still open, if one is kept.
    pub(super) fn checkout(&self, worker: WorkerId) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.by_worker.get_mut(&worker)?;
        while let Some((s, since)) = list.pop() {
            if since.elapsed() < self.idle_timeout && quiet(&s) {
                return Some(s);
            }
        }
        None
    }

    /// A new socket to the worker on `port`.
    pub(super) async fn connect(&self, port: u16) -> Result<TcpStream, ConnectError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                // Small frames (one SSE event) go out at once (no Nagle wait).
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(source)) => Err(ConnectError::Io { addr, source }),
            Err(_) => Err(ConnectError::Timeout {
                addr,
                after: self.connect_timeout,
            }),
        }
    }

    /// Keeps `socket` for the next request to `worker`.
    pub(super) fn put_back(&self, worker: WorkerId, socket: TcpStream) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Now and then, forget sockets closed or idle too long, and workers that are gone.
        if idle
            .swept
            .is_none_or(|t| now.duration_since(t) >= self.idle_timeout / 2)
        {
            idle.swept = Some(now);
            let timeout = self.idle_timeout;
            idle.by_worker.retain(|_, list| {
                list.retain(|(s, since)| now.duration_since(*since) < timeout && quiet(s));
                !list.is_empty()
            });
        }
        let list = idle.by_worker.entry(worker).or_default();
        if list.len() < MAX_IDLE {
            list.push((socket, now));
        }
    }
}

/// Whether nothing arrived on an idle socket: no bytes, no end. Asks the
/// runtime first (free), and the socket only when the runtime saw something
/// or cannot tell.
fn quiet(s: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match s.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}
