//! Noticing a client that gave up while its request waits in an agent's
//! queue (or for the agent's wake), so that it leaves the queue then, and
//! no worker runs the request later for nobody.

use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::Arc;

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::fast::wire;

/// Resolves when the client of a request on the direct path closes its
/// connection; bytes it sends meanwhile (its next request) are kept in `buf`.
pub(super) async fn client_left(client: &TcpStream, buf: &mut Vec<u8>) {
    while buf.len() < wire::MAX_REQUEST_HEAD {
        if client.readable().await.is_err() || client_gone(client, buf) {
            return;
        }
    }
    // A full head's worth read ahead: wait for the reply to make room.
    std::future::pending().await
}

/// Whether a client watched during a request has closed; bytes it sent
/// early (its next request) are kept in `buf`.
fn client_gone(client: &TcpStream, buf: &mut Vec<u8>) -> bool {
    buf.reserve(1024);
    match client.try_read_buf(buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// The socket of an HTTP/1 connection served by hyper, watched without
/// reading it (hyper reads the request body only when a worker takes it, so
/// it would not see the client leave before then): a second descriptor of
/// the same socket, registered only while a request waits.
#[derive(Clone)]
pub struct ClientSocket(Arc<OwnedFd>);

impl ClientSocket {
    /// A watcher of `stream`'s socket (None when the descriptor cannot be duplicated).
    pub fn of(stream: &TcpStream) -> Option<Self> {
        stream
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(|fd| ClientSocket(Arc::new(fd)))
    }

    /// Resolves when the client has closed its side of the connection (or
    /// reset it); unread request bytes, which wake it too, are left alone.
    pub(super) async fn closed(&self) {
        let watch = self
            .0
            .try_clone()
            .map(std::net::TcpStream::from)
            .and_then(TcpStream::from_std);
        let Ok(watch) = watch else {
            return std::future::pending().await;
        };
        loop {
            match watch.ready(Interest::READABLE).await {
                Ok(r) if r.is_read_closed() => return,
                Ok(_) => {
                    // Data (the body hyper has not read yet): clear the
                    // readiness, without reading, and wait for the next event.
                    let _ = watch.try_io(Interest::READABLE, || {
                        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                    });
                }
                Err(_) => return std::future::pending().await,
            }
        }
    }
}
