//! One proxy thread's own keep-alive HTTP/1.1 connections to its workers.
//!
//! Each proxy thread serves its connections start to end on one
//! single-threaded runtime, so its upstream connections are its own too: a
//! free list per worker instance, taken and given back without contention
//! and without hashing a pool key per request. A connection goes back to
//! its list when the worker's response body has been read to the end;
//! one closed by the worker (it restarted, its idle timeout passed) is
//! dropped when next looked at. A request sent on a pooled connection that
//! turns out to be closed comes back unsent (`try_send_request`), so it can
//! go out again on a new connection, whatever its method.

use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use bytes::Bytes;
use http_body::Body;

use super::idle::{self, ConnectError, IdleLists};
use crate::model::WorkerId;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One thread's connections, sending request bodies of type `B`.
pub(super) struct Conns<B> {
    idle: IdleLists<SendRequest<B>>,
    connect_timeout: Duration,
}

/// A connection lent to one request, given back when its response is read.
pub(super) struct Lease<B: Body + Send + 'static> {
    conns: Arc<Conns<B>>,
    worker: WorkerId,
    sender: Option<SendRequest<B>>,
}

impl<B> Lease<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// Gives the connection back for the next request.
    pub(super) fn release(mut self) {
        if let Some(s) = self.sender.take() {
            Arc::clone(&self.conns).put_back(self.worker, s);
        }
    }
}

impl<B> Conns<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    pub(super) fn new(idle_timeout: Duration, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Conns {
            idle: IdleLists::new(idle_timeout),
            connect_timeout,
        })
    }

    /// An idle connection to `worker` ready for a request, if one is kept.
    pub(super) fn checkout(&self, worker: WorkerId) -> Option<SendRequest<B>> {
        self.idle.take(worker, |s| !s.is_closed() && s.is_ready())
    }

    /// A new connection to the worker on `port`.
    pub(super) async fn connect(&self, port: u16) -> Result<SendRequest<B>, ConnectError> {
        let stream = idle::connect(port, self.connect_timeout).await?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let (sender, conn) = http1::Builder::new()
            .writev(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection to {addr} ended: {e}");
            }
        });
        Ok(sender)
    }

    /// Lends `sender` to one request on `worker`.
    pub(super) fn lease(self: &Arc<Self>, worker: WorkerId, sender: SendRequest<B>) -> Lease<B> {
        Lease {
            conns: Arc::clone(self),
            worker,
            sender: Some(sender),
        }
    }

    fn put_back(self: Arc<Self>, worker: WorkerId, mut sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        if !sender.is_ready() {
            // Still reading the end of the last reply: kept once it is done.
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    self.keep(worker, sender);
                }
            });
            return;
        }
        self.keep(worker, sender);
    }

    fn keep(&self, worker: WorkerId, sender: SendRequest<B>) {
        self.idle.keep(worker, sender, |s| !s.is_closed());
    }

    /// Idle connections kept (for tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.count()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt as _, Empty};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    type Pool = Arc<Conns<Empty<Bytes>>>;

    /// A plain HTTP/1.1 server on loopback answering "ok" to each request.
    struct Server {
        port: u16,
        /// Connections accepted.
        accepted: Arc<AtomicUsize>,
        /// Connections it closed.
        closed: Arc<AtomicUsize>,
        /// Lets a connection that gave its last reply close.
        close: Arc<tokio::sync::Notify>,
    }

    /// A server that closes a connection (without saying so) after
    /// `per_conn` replies, once `close` lets it.
    async fn server(per_conn: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server {
            port: listener.local_addr().unwrap().port(),
            accepted: Arc::default(),
            closed: Arc::default(),
            close: Arc::default(),
        };
        let (count, gone) = (Arc::clone(&server.accepted), Arc::clone(&server.closed));
        let close = Arc::clone(&server.close);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (gone, close) = (Arc::clone(&gone), Arc::clone(&close));
                tokio::spawn(async move {
                    if answer(&mut s, per_conn).await {
                        close.notified().await;
                    }
                    drop(s);
                    gone.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        server
    }

    /// Answers "ok" to up to `replies` requests on `s`: whether it gave
    /// them all (the client may have gone first).
    async fn answer(s: &mut tokio::net::TcpStream, replies: usize) -> bool {
        let mut buf = Vec::new();
        for _ in 0..replies {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.clear();
            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if s.write_all(reply).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Waits until `done` holds, looking again every millisecond; fails
    /// after 10 s.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not so within 10 s: {what}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// One GET over the pool, as the proxy sends it: a pooled connection
    /// when one is free, the body read to the end, the connection given back.
    async fn get(pool: &Pool, port: u16) -> String {
        let worker = WorkerId(1);
        let mut req = http::Request::new(Empty::new());
        *req.uri_mut() = http::Uri::from_static("/health");
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("w"));
        let mut pooled = pool.checkout(worker);
        loop {
            let (mut sender, was_pooled) = match pooled.take() {
                Some(s) => (s, true),
                None => (pool.connect(port).await.unwrap(), false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    pool.lease(worker, sender).release();
                    return String::from_utf8(body.to_vec()).unwrap();
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if was_pooled => req = back,
                    _ => panic!("request failed: {}", e.into_error()),
                },
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_connection_serves_requests_one_after_another() {
        let server = server(usize::MAX).await;
        let pool: Pool = Conns::new(Duration::from_secs(60), Duration::from_secs(5));
        for _ in 0..5 {
            assert_eq!(get(&pool, server.port).await, "ok");
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_worker_closed_is_not_used_again() {
        let server = server(1).await;
        let pool: Pool = Conns::new(Duration::from_secs(60), Duration::from_secs(5));
        for i in 0..5 {
            assert_eq!(get(&pool, server.port).await, "ok", "request {i}");
            // Kept while open; then the worker closes it.
            until("the connection kept", || pool.idle_count() == 1).await;
            server.close.notify_one();
            until("the worker closed it", || {
                server.closed.load(Ordering::SeqCst) == i + 1
            })
            .await;
            // Until its connection has seen the close, the pool may lend it
            // (open: it goes back); from then on, never.
            until("the pool no longer lends it", || {
                match pool.checkout(WorkerId(1)) {
                    Some(s) => {
                        assert!(!s.is_closed(), "a closed connection lent (request {i})");
                        pool.lease(WorkerId(1), s).release();
                        false
                    }
                    None => true,
                }
            })
            .await;
            assert_eq!(server.accepted.load(Ordering::SeqCst), i + 1);
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 5);
    }

    /// Kept no time at all (idle timeout zero), a connection is already
    /// idle too long when next looked for: a new one is made, no clock
    /// needs to pass.
    #[tokio::test(flavor = "current_thread")]
    async fn connections_idle_too_long_are_closed_not_reused() {
        let server = server(usize::MAX).await;
        let pool: Pool = Conns::new(Duration::ZERO, Duration::from_secs(5));
        assert_eq!(get(&pool, server.port).await, "ok");
        until("the connection kept", || pool.idle_count() == 1).await;
        assert!(pool.checkout(WorkerId(1)).is_none());
        assert_eq!(get(&pool, server.port).await, "ok");
        assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_connection_names_the_address() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let pool: Pool = Conns::new(Duration::from_secs(60), Duration::from_secs(5));
        let err = pool.connect(port).await.unwrap_err();
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
