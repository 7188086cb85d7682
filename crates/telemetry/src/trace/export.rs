//! The exporter: a bounded queue that never blocks the span's producer, and
//! a thread of its own that sends batches (up to [`BATCH`] spans, or what
//! came within [`BATCH_DELAY`]) as OTLP/HTTP protobuf POSTs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::config::{ecs_attributes, Config};
use super::{proto, SpanData, Stats, Status, Value, BATCH, BATCH_DELAY, QUEUE};

/// The producers' end.
pub(crate) struct Queue {
    spans: mpsc::Sender<Box<SpanData>>,
    flush: mpsc::UnboundedSender<std::sync::mpsc::SyncSender<()>>,
}

impl Queue {
    /// Queues a span; `false` when the queue is full (or the exporter gone).
    pub fn push(&self, span: Box<SpanData>) -> bool {
        self.spans.try_send(span).is_ok()
    }

    /// Asks the exporter to send all it holds and waits, at most `within`.
    pub fn flush(&self, within: Duration) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.flush.send(tx).is_ok() {
            let _ = rx.recv_timeout(within);
        }
    }

    /// A queue of `capacity` with the receiving ends handed back (tests).
    #[cfg(test)]
    pub fn detached(
        capacity: usize,
    ) -> (
        Queue,
        mpsc::Receiver<Box<SpanData>>,
        mpsc::UnboundedReceiver<std::sync::mpsc::SyncSender<()>>,
    ) {
        let (tx, rx) = mpsc::channel(capacity);
        let (ftx, frx) = mpsc::unbounded_channel();
        (
            Queue {
                spans: tx,
                flush: ftx,
            },
            rx,
            frx,
        )
    }
}

/// Starts the exporter thread.
pub(crate) fn start(cfg: Config, stats: Arc<Stats>) -> Queue {
    let (tx, rx) = mpsc::channel(QUEUE);
    let (ftx, frx) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new()
        .name("par-otlp-export".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run(cfg, stats, rx, frx)),
                Err(e) => tracing::warn!("traces not exported: no runtime for the exporter: {e}"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("traces not exported: failed to start the exporter thread: {e}");
    }
    Queue {
        spans: tx,
        flush: ftx,
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn run(
    cfg: Config,
    stats: Arc<Stats>,
    mut spans: mpsc::Receiver<Box<SpanData>>,
    mut flushes: mpsc::UnboundedReceiver<std::sync::mpsc::SyncSender<()>>,
) {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let mut resource = cfg.resource.clone();
    if let Some(uri) = &cfg.ecs_metadata_uri {
        match ecs_task(&client, uri).await {
            Ok(task) => resource.extend(ecs_attributes(&task)),
            Err(e) => tracing::warn!(
                "traces: ECS task metadata not read ({e}); spans carry no aws.ecs.* attributes"
            ),
        }
    }
    let resource = proto::Resource {
        attributes: resource
            .into_iter()
            .map(|(k, v)| key_value(k, &v))
            .collect(),
        dropped_attributes_count: 0,
    };
    let mut exporter = Exporter {
        client,
        cfg,
        stats,
        resource,
        failing: false,
    };
    loop {
        let mut batch = Vec::with_capacity(64);
        let mut flush = None;
        // What is queued is taken at once (`recv_many`): one wake-up and one
        // timer per batch, not per span.
        tokio::select! {
            n = spans.recv_many(&mut batch, BATCH) => if n == 0 {
                return;
            },
            Some(f) = flushes.recv() => flush = Some(f),
        }
        if flush.is_none() {
            let deadline = tokio::time::sleep_until(Instant::now() + BATCH_DELAY);
            tokio::pin!(deadline);
            while batch.len() < BATCH {
                let room = BATCH - batch.len();
                tokio::select! {
                    n = spans.recv_many(&mut batch, room) => if n == 0 {
                        break;
                    },
                    Some(f) = flushes.recv() => {
                        flush = Some(f);
                        break;
                    }
                    _ = &mut deadline => break,
                }
            }
        }
        if flush.is_some() {
            while let Ok(s) = spans.try_recv() {
                batch.push(s);
                if batch.len() >= BATCH {
                    exporter.export(&std::mem::take(&mut batch)).await;
                }
            }
        }
        if !batch.is_empty() {
            exporter.export(&batch).await;
        }
        if let Some(f) = flush {
            let _ = f.send(());
        }
    }
}

async fn ecs_task(client: &HttpClient, uri: &str) -> Result<serde_json::Value, String> {
    let url: http::Uri = format!("{}/task", uri.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("bad URI: {e}"))?;
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(1), fetch)
        .await
        .map_err(|_| "timed out after 1 s".to_string())?
}

struct Exporter {
    client: HttpClient,
    cfg: Config,
    stats: Arc<Stats>,
    resource: proto::Resource,
    /// The last export failed (a warning per run of failures, not per batch).
    failing: bool,
}

impl Exporter {
    async fn export(&mut self, batch: &[Box<SpanData>]) {
        let n = batch.len() as u64;
        let body = encode(&self.resource, batch);
        let mut req = http::Request::post(self.cfg.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .expect("a request from a parsed URI");
        for (k, v) in &self.cfg.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let send = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| crate::error_chain(&e))?;
            let status = resp.status();
            // Read the (small) answer so the connection can be reused.
            let _ = resp.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the collector answered {status}"))
            }
        };
        let result = match tokio::time::timeout(self.cfg.timeout, send).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.cfg.timeout)),
        };
        match result {
            Ok(()) => {
                self.stats.exported.fetch_add(n, Ordering::Relaxed);
                if std::mem::take(&mut self.failing) {
                    tracing::info!(endpoint = %self.cfg.endpoint, "traces: exporting again");
                }
            }
            Err(e) => {
                self.stats.failed_exports.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(endpoint = %self.cfg.endpoint, spans = n, "traces: export failed, spans dropped: {e}");
                }
            }
        }
    }
}

fn any_value(v: &Value) -> proto::AnyValue {
    use proto::any_value::Value as V;
    proto::AnyValue {
        value: Some(match v {
            Value::Str(s) => V::StringValue(s.to_string()),
            Value::Shared(s) => V::StringValue(s.to_string()),
            Value::Int(i) => V::IntValue(*i),
            Value::Float(f) => V::DoubleValue(*f),
            Value::Bool(b) => V::BoolValue(*b),
        }),
    }
}

fn key_value(k: impl Into<String>, v: &Value) -> proto::KeyValue {
    proto::KeyValue {
        key: k.into(),
        value: Some(any_value(v)),
    }
}

fn attributes(a: &[super::Attribute]) -> Vec<proto::KeyValue> {
    a.iter().map(|(k, v)| key_value(*k, v)).collect()
}

/// One span as OTLP has it.
pub(crate) fn span(s: &SpanData) -> proto::Span {
    proto::Span {
        trace_id: s.context.trace_id.0.to_vec(),
        span_id: s.context.span_id.0.to_vec(),
        trace_state: s.context.state.as_deref().unwrap_or("").to_string(),
        parent_span_id: s.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
        name: s.name.to_string(),
        kind: s.kind as i32,
        start_time_unix_nano: s.start,
        end_time_unix_nano: s.end,
        attributes: attributes(&s.attributes),
        dropped_attributes_count: s.dropped_attributes,
        events: s
            .events
            .iter()
            .map(|e| proto::Event {
                time_unix_nano: e.time,
                name: e.name.to_string(),
                attributes: attributes(&e.attributes),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: s.dropped_events,
        links: s
            .links
            .iter()
            .map(|(c, a)| proto::Link {
                trace_id: c.trace_id.0.to_vec(),
                span_id: c.span_id.0.to_vec(),
                trace_state: c.state.as_deref().unwrap_or("").to_string(),
                attributes: attributes(a),
                dropped_attributes_count: 0,
                flags: u32::from(c.flags),
            })
            .collect(),
        dropped_links_count: 0,
        status: match &s.status {
            Status::Unset => None,
            Status::Ok => Some(proto::Status {
                message: String::new(),
                code: 1,
            }),
            Status::Error(m) => Some(proto::Status {
                message: m.to_string(),
                code: 2,
            }),
        },
        // Bits 0-7: the W3C trace flags.
        flags: u32::from(s.context.flags),
    }
}

/// The request body for a batch.
pub(crate) fn encode(resource: &proto::Resource, batch: &[Box<SpanData>]) -> Vec<u8> {
    let req = proto::ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![proto::ScopeSpans {
                scope: Some(proto::InstrumentationScope {
                    name: "par".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans: batch.iter().map(|s| span(s)).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    req.encode_to_vec()
}
