//! The direct path's replies: a worker's response body passed to the
//! client as it comes, a reply made here, and a refused head answered
//! before the connection closes.

use super::*;

impl Proxy {
    /// Passes the response body (its first bytes are in `b.response` after
    /// the head) to the client as it comes; the worker's socket is kept
    /// when the body ended where its framing said.
    pub(super) async fn pass_body(
        &self,
        client: &mut TcpStream,
        mut socket: TcpStream,
        head: &wire::Response,
        upstream: &Upstream,
        b: &mut Buffers,
    ) -> Next {
        let mut chunks = Chunks::default();
        // Body bytes still to come (Length), or whether the end was seen.
        let mut left = match head.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        let mut start = head.head_len;
        let mut first = true;
        let mut ended = head.framing == Framing::Empty;
        let mut extra = false;
        loop {
            // What of b.response[start..] belongs to this body.
            let avail = &b.response[start..];
            let take = match head.framing {
                Framing::Empty => 0,
                Framing::Length(_) => {
                    let t = (left as usize).min(avail.len());
                    left -= t as u64;
                    ended = left == 0;
                    t
                }
                Framing::Chunked => match chunks.feed(avail) {
                    Ok(Some(n)) => {
                        ended = true;
                        n
                    }
                    Ok(None) => avail.len(),
                    Err(what) => {
                        tracing::debug!(agent = %upstream.agent_id, "a chunked reply ended early: {what}");
                        // The client sees a reply cut short, as it was.
                        let _ = client.write_all(&b.reply).await;
                        return Next::Close;
                    }
                },
                Framing::Close => avail.len(),
            };
            extra |= take < avail.len();
            let data = &b.response[start..start + take];
            if let Some(w) = b.watch.as_mut() {
                w.feed(data);
            }
            b.trace.bytes += take as u64;
            let written = if first {
                b.reply.extend_from_slice(data);
                client.write_all(&b.reply).await
            } else if take > 0 {
                client.write_all(data).await
            } else {
                Ok(())
            };
            first = false;
            if written.is_err() {
                if let Some(s) = b.trace.span.as_mut() {
                    span::client_gone(s);
                }
                return Next::Close;
            }
            if ended {
                break;
            }
            b.response.clear();
            start = 0;
            b.response.reserve(8192);
            // The next bytes of the reply; meanwhile a client that goes
            // away (a stream's reader gave up) ends it at once.
            let read = tokio::time::timeout(self.opts.idle_timeout, async {
                tokio::select! {
                    biased;
                    r = socket.read_buf(&mut b.response) => Some(r),
                    () = client_left(client, &mut b.client, &mut b.input, true) => None,
                }
            })
            .await;
            match read {
                Ok(Some(Ok(n))) if n > 0 => {}
                // A reply delimited by the end of the connection is whole.
                Ok(Some(Ok(_))) if head.framing == Framing::Close => return Next::Close,
                Ok(None) => {
                    tracing::debug!(agent = %upstream.agent_id, "the client went away during the reply");
                    if let Some(s) = b.trace.span.as_mut() {
                        span::client_gone(s);
                    }
                    return Next::Close;
                }
                _ => {
                    tracing::debug!(agent = %upstream.agent_id, "the worker's reply ended early");
                    return Next::Close;
                }
            }
        }
        if head.reusable && !extra {
            self.sockets.put_back(upstream.worker, socket);
        }
        if head.framing == Framing::Close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// A reply made here (an admission refusal, a worker's failure), with the request's id.
    pub(super) async fn reply(
        &self,
        client: &mut TcpStream,
        resp: Response<Body>,
        req: &wire::Request,
        close: bool,
        b: &mut Buffers,
    ) -> Next {
        let (mut parts, body) = resp.into_parts();
        if !parts.headers.contains_key(&X_REQUEST_ID) {
            parts
                .headers
                .insert(X_REQUEST_ID.clone(), req.request_id.clone());
        }
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        b.reply.clear();
        let head_request = req.method == Method::Idempotent { head: true };
        wire::write_reply(&mut b.reply, &parts, &body, head_request, close);
        if client.write_all(&b.reply).await.is_err() {
            return Next::Close;
        }
        Next::KeepAlive
    }
}

/// A head the framing rules refuse: the reply says why, and the connection
/// closes, its unread bytes (the rest of the request) read and dropped for a
/// moment first so the close does not reset the reply away.
pub(super) async fn refuse(
    mut client: TcpStream,
    r: crate::http::proxy::framing::Refusal,
    out: &mut Vec<u8>,
) -> Served {
    let (parts, body) = r.into_api_error().into_response_body().into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    out.clear();
    wire::write_reply(out, &parts, &body, false, true);
    if client.write_all(out).await.is_ok() && client.shutdown().await.is_ok() {
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut left = 64 * 1024usize;
            while let Ok(n @ 1..) = client.read(&mut sink).await {
                left = left.saturating_sub(n);
                if left == 0 {
                    break;
                }
            }
        })
        .await;
    }
    Served::Done
}
