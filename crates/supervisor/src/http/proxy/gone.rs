//! Noticing a client that gave up while its request waits in an agent's
//! queue (or for the agent's wake, or for the worker's answer), so that it
//! leaves the queue then, and no worker runs the request later for nobody.
//!
//! The end of a client's input is not its leaving: a client may shut its
//! sending side once its request is sent (a half-close) and still read the
//! answer, as HAProxy serves it by default. On the wire a half-close and a
//! close are the same FIN; only writing tells them apart, since a closed
//! socket answers bytes with a reset. So when the input ends before the
//! reply has begun, the client is sent an interim `100 Continue` (which an
//! HTTP/1.1 client must accept unasked, RFC 9110 §15.2) and is gone only if
//! a reset comes back. Once the reply has begun, the end of the input is
//! taken as the client leaving (a stream's reader that gave up).

use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::direct::wire;

/// The interim response that tells a half-closed client from a closed one.
const PROBE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What is known of a client's side during one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Input {
    #[default]
    Open,
    /// Its input ended and it was probed: it waits for its answer unless a
    /// reset comes back.
    HalfClosed,
}

/// Resolves when the client of a request on the direct path is gone; bytes
/// it sends meanwhile (its next request) are kept in `buf`. `replying`: the
/// reply's head has been written.
pub(super) async fn client_left(
    client: &TcpStream,
    buf: &mut Vec<u8>,
    input: &mut Input,
    replying: bool,
) {
    loop {
        if *input == Input::HalfClosed {
            return reset(client).await;
        }
        if buf.len() >= wire::MAX_REQUEST_HEAD {
            // A full head's worth read ahead: wait for the reply to make room.
            return std::future::pending().await;
        }
        if client.readable().await.is_err() {
            return;
        }
        buf.reserve(1024);
        match client.try_read_buf(buf) {
            Ok(0) if replying => return,
            Ok(0) => {
                if !probe(client) {
                    return;
                }
                *input = Input::HalfClosed;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Sends the probe in one write; false when it could not be (the socket
/// failed, or its buffer is full of replies the client never read).
fn probe(client: &TcpStream) -> bool {
    matches!(client.try_write(PROBE), Ok(n) if n == PROBE.len())
}

/// Resolves when the socket reports an error (a reset), never otherwise.
async fn reset(client: &TcpStream) {
    let _ = client.ready(Interest::ERROR).await;
}

/// The socket of an HTTP/1 connection served by hyper, watched without
/// reading it (hyper reads the request body only when a worker takes it, so
/// it would not see the client leave before then): a second descriptor of
/// the same socket, registered only while a request waits (and whether the
/// client, its input ended, was probed already).
#[derive(Clone)]
pub struct ClientSocket(Arc<OwnedFd>, Arc<AtomicBool>);

impl ClientSocket {
    /// A watcher of `stream`'s socket (None when the descriptor cannot be duplicated).
    pub fn of(stream: &TcpStream) -> Option<Self> {
        stream
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(|fd| ClientSocket(Arc::new(fd), Arc::default()))
    }

    /// Resolves when the client has gone: it reset the connection, or (an
    /// HTTP/1.0 client, which may not be sent an interim response) closed
    /// its side. An HTTP/1.1 client whose input ends is probed, and gone
    /// only when that is answered with a reset. Unread request bytes, which
    /// wake it too, are left alone.
    pub(super) async fn closed(&self, http11: bool) {
        let watch = self
            .0
            .try_clone()
            .map(std::net::TcpStream::from)
            .and_then(TcpStream::from_std);
        let Ok(watch) = watch else {
            return std::future::pending().await;
        };
        loop {
            match watch.ready(Interest::READABLE | Interest::ERROR).await {
                Ok(r) if r.is_error() => return,
                Ok(r) if r.is_read_closed() => {
                    // Probed once: its input stays ended (the queue's
                    // watch, then the worker's answer's, see the same end).
                    if !self.1.load(Ordering::Acquire) {
                        if !http11 || !probe(&watch) {
                            return;
                        }
                        self.1.store(true, Ordering::Release);
                    }
                    return reset(&watch).await;
                }
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
