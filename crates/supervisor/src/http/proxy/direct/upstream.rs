//! One proxy thread's keep-alive sockets to its workers, for the direct
//! path: a free list per worker instance, most recently used first. A
//! socket goes back when its response was read to the end; one the worker
//! closed meanwhile (it restarted, its idle timeout passed) is seen as
//! readable when taken, and dropped.

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::net::TcpStream;

use super::super::idle::{self, ConnectError, IdleLists};
use crate::model::WorkerId;

pub(in crate::http::proxy) struct Sockets {
    idle: IdleLists<TcpStream>,
    connect_timeout: Duration,
}

impl Sockets {
    pub(in crate::http::proxy) fn new(idle_timeout: Duration, connect_timeout: Duration) -> Self {
        Sockets {
            idle: IdleLists::new(idle_timeout),
            connect_timeout,
        }
    }

    /// An idle socket to `worker` still open, if one is kept.
    pub(super) fn checkout(&self, worker: WorkerId) -> Option<TcpStream> {
        self.idle.take(worker, quiet)
    }

    /// A new socket to the worker on `port`.
    pub(super) async fn connect(&self, port: u16) -> Result<TcpStream, ConnectError> {
        idle::connect(port, self.connect_timeout).await
    }

    /// Keeps `socket` for the next request to `worker`.
    pub(super) fn put_back(&self, worker: WorkerId, socket: TcpStream) {
        self.idle.keep(worker, socket, quiet);
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
