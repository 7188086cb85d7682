//! Probing a worker's `/health`: quickly until it is ready (and says it is
//! this agent: a route never points at another agent's port), then at the
//! liveness interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::control::Control;
use crate::model::{Health, Input, WorkerEvent, WorkerId};

/// Probe timing.
#[derive(Debug, Clone, Copy)]
pub struct ProbeOptions {
    pub interval: Duration,
    pub timeout: Duration,
    pub startup_timeout: Duration,
}

pub type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> ProbeClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(Duration::from_millis(500)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(c)
}

async fn get_json(client: &ProbeClient, url: &str, timeout: Duration) -> Result<(u16, Value), ()> {
    let uri: http::Uri = url.parse().map_err(|_| ())?;
    let fut = async {
        let resp = client.get(uri).await.map_err(|_| ())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|_| ())?.to_bytes();
        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, v))
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| ())?
}

/// Probes the worker until the task is aborted or the state machine is gone.
pub async fn run(
    control: Control,
    worker: WorkerId,
    agent: Arc<str>,
    port: u16,
    client: ProbeClient,
    opts: ProbeOptions,
) {
    let send = |event| control.send(Input::Worker { worker, event });
    if !readiness(&send, &agent, port, &client, opts).await {
        return;
    }
    let health = format!("http://127.0.0.1:{port}/health");
    let mut failures = 0u32;
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let ok = matches!(
            get_json(&client, &health, opts.timeout).await,
            Ok((200, v)) if v.get("agent_id").and_then(Value::as_str) == Some(&*agent)
        );
        if ok && failures > 0 {
            failures = 0;
            if !send(WorkerEvent::Probe { ok: true, failures }) {
                return;
            }
        } else if !ok {
            failures += 1;
            if !send(WorkerEvent::Probe {
                ok: false,
                failures,
            }) {
                return;
            }
        }
    }
}

/// Polls quickly until ready; false when it gave up (startup timeout or no
/// one listens to its events any more).
async fn readiness(
    send: &impl Fn(WorkerEvent) -> bool,
    agent: &str,
    port: u16,
    client: &ProbeClient,
    opts: ProbeOptions,
) -> bool {
    let health = format!("http://127.0.0.1:{port}/health");
    let started = Instant::now();
    let mut last_error: Option<String> = None;
    loop {
        let elapsed = started.elapsed();
        if elapsed > opts.startup_timeout {
            send(WorkerEvent::StartupTimeout);
            return false;
        }
        if let Ok((status, v)) = get_json(client, &health, Duration::from_secs(1)).await {
            let same_agent = v.get("agent_id").and_then(Value::as_str) == Some(agent);
            let state = v.get("status").and_then(Value::as_str).unwrap_or("");
            if same_agent && status == 200 && state == "ready" {
                let package_id = v
                    .get("package_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let meta = get_json(
                    client,
                    &format!("http://127.0.0.1:{port}/meta"),
                    Duration::from_secs(2),
                )
                .await
                .ok()
                .filter(|(s, _)| *s == 200)
                .map(|(_, v)| pick_meta(&v));
                return send(WorkerEvent::Ready(Health { package_id, meta }));
            }
            if let Some(p) = problem(&v, same_agent, state, agent, port) {
                if last_error.as_deref() != Some(p.as_str()) {
                    last_error = Some(p.clone());
                    if !send(WorkerEvent::HealthError(p)) {
                        return false;
                    }
                }
            }
        }
        // A worker is usually ready within a second; poll fast first, then slower.
        let wait = match elapsed.as_secs() {
            0..=1 => 20,
            2..=29 => 100,
            _ => 500,
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// What is wrong with a `/health` answer that is not "ready", if anything.
fn problem(v: &Value, same_agent: bool, state: &str, agent: &str, port: u16) -> Option<String> {
    if !same_agent && !v.is_null() {
        return Some(format!(
            "port {port} answers for agent {:?}, not {agent:?}",
            v.get("agent_id").and_then(Value::as_str).unwrap_or("?")
        ));
    }
    if state != "error" {
        return None;
    }
    Some(
        v.get("error")
            .map(|e| match e {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| e.to_string()),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "the worker reports an error".into()),
    )
}

/// The agent metadata clients read from `GET /agents`.
fn pick_meta(v: &Value) -> Value {
    let src = v.get("manifest").filter(|m| m.is_object()).unwrap_or(v);
    let mut out = serde_json::Map::new();
    for key in [
        "name",
        "display_name",
        "version",
        "description",
        "capabilities",
        "package_id",
        "surfaces",
    ] {
        if let Some(x) = src.get(key).or_else(|| v.get(key)) {
            out.insert(key.to_string(), x.clone());
        }
    }
    Value::Object(out)
}
