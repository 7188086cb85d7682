//! One worker process: spawning it (own process group, parent-death signal,
//! its environment), watching its exit, capturing its output, and probing
//! its `/health` for readiness (with identity) and liveness.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use crate::logs::LogStore;
use crate::supervisor::Msg;

/// Exit code of a worker whose package cannot load (EX_CONFIG): no restart.
pub const EXIT_PACKAGE_FAILURE: i32 = 78;

/// Variables of the supervisor's own environment a worker must not inherit.
const NOT_INHERITED: &[&str] = &[
    "PAR_ADMIN_TOKEN",
    "PAR_AGENTS",
    "PAR_CONFIG",
    "PAR_MODE",
    "SUPERVISOR_PORT",
    "PAR_WORKER_PORTS",
    "PAR_WORKER_BIN",
    "PAR_SUPERVISOR_HOST",
    "PAR_SUPERVISOR_GRACE",
];

/// How a worker ended.
#[derive(Debug, Clone, Serialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    #[serde(serialize_with = "crate::api::ser_time")]
    pub at: SystemTime,
    /// Seconds the worker ran.
    pub ran_seconds: f64,
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => format!(
                "killed by signal {}",
                nix::sys::signal::Signal::try_from(s)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| s.to_string())
            ),
            _ => "exited".into(),
        }
    }
}

/// What the worker's `/health` said.
#[derive(Debug, Clone)]
pub struct Health {
    pub package_id: Option<String>,
    /// `name`, `version`, `description`, `capabilities` from `/meta`.
    pub meta: Option<Value>,
}

/// Events of one worker instance, sent to the supervisor's state task.
#[derive(Debug)]
pub enum WorkerEvent {
    Exited(ExitInfo),
    Ready(Health),
    /// The worker reported an error on `/health` while starting.
    HealthError(String),
    StartupTimeout,
    /// A liveness probe result; `failures` in a row.
    Probe {
        ok: bool,
        failures: u32,
    },
}

/// What the supervisor needs to start a worker.
pub struct Launch<'a> {
    pub agent_id: &'a str,
    pub worker: u64,
    pub port: u16,
    pub package: &'a str,
    pub sha256: Option<&'a str>,
    pub env_vars: &'a BTreeMap<String, String>,
    pub command: &'a [String],
    pub home: &'a std::path::Path,
    pub supervisor_url: &'a str,
}

/// Probe timing.
#[derive(Debug, Clone, Copy)]
pub struct ProbeOptions {
    pub interval: Duration,
    pub timeout: Duration,
    pub startup_timeout: Duration,
}

pub type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

pub fn probe_client() -> ProbeClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(Duration::from_millis(500)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(c)
}

/// A spawned worker's handles.
pub struct Running {
    pub pid: u32,
    pub exited: Arc<AtomicBool>,
    pub probe: JoinHandle<()>,
}

/// Spawns the worker and the tasks that watch it. Must run on a long-lived
/// runtime thread (see [`crate::unix::isolate`]).
pub fn spawn(
    launch: &Launch<'_>,
    tx: &UnboundedSender<Msg>,
    logs: &Arc<LogStore>,
    client: &ProbeClient,
    probe: ProbeOptions,
) -> std::io::Result<Running> {
    let (program, args) = launch.command.split_first().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty worker command")
    })?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    for k in NOT_INHERITED {
        cmd.env_remove(k);
    }
    cmd.envs(launch.env_vars)
        .env("PAR_MODE", "worker")
        .env("PAR_HOST", "127.0.0.1")
        .env("PAR_PORT", launch.port.to_string())
        .env("PAR_AGENT_ID", launch.agent_id)
        .env("PAR_PACKAGE_PATH", launch.package)
        .env("PAR_SUPERVISOR_URL", launch.supervisor_url)
        .env("PAR_PARENT_PID", std::process::id().to_string())
        .env("PAR_HOME", launch.home)
        .env("PAR_LOG_FORMAT", "json");
    if let Some(sha) = launch.sha256 {
        cmd.env("PAR_PACKAGE_SHA256", sha);
    }
    crate::unix::isolate(&mut cmd);
    let mut child = crate::unix::spawn_tracked(|| {
        let child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        Ok((child, pid))
    })?;
    let pid = child.id().unwrap_or(0);
    let started = Instant::now();
    let agent: Arc<str> = launch.agent_id.into();
    let worker = launch.worker;

    let out = child.stdout.take().map(|p| {
        tokio::spawn(crate::logs::capture(
            Arc::clone(logs),
            agent.to_string(),
            "stdout",
            p,
        ))
    });
    let err = child.stderr.take().map(|p| {
        tokio::spawn(crate::logs::capture(
            Arc::clone(logs),
            agent.to_string(),
            "stderr",
            p,
        ))
    });

    let exited = Arc::new(AtomicBool::new(false));
    {
        let exited = Arc::clone(&exited);
        let tx = tx.clone();
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            let status = child.wait().await;
            exited.store(true, Ordering::Release);
            crate::unix::untrack(pid);
            let info = match status {
                Ok(s) => ExitInfo {
                    code: s.code(),
                    signal: s.signal(),
                    at: SystemTime::now(),
                    ran_seconds: started.elapsed().as_secs_f64(),
                },
                Err(_) => ExitInfo {
                    code: None,
                    signal: None,
                    at: SystemTime::now(),
                    ran_seconds: started.elapsed().as_secs_f64(),
                },
            };
            // A package failure's reason is in its last lines: let them arrive first.
            if info.code == Some(EXIT_PACKAGE_FAILURE) {
                let drain = async {
                    if let Some(t) = out {
                        let _ = t.await;
                    }
                    if let Some(t) = err {
                        let _ = t.await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
            }
            let _ = tx.send(Msg::Worker {
                agent_id: agent.to_string(),
                worker,
                event: WorkerEvent::Exited(info),
            });
        });
    }

    let probe = tokio::spawn(probe_loop(
        tx.clone(),
        agent,
        worker,
        launch.port,
        client.clone(),
        probe,
    ));
    Ok(Running { pid, exited, probe })
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

async fn probe_loop(
    tx: UnboundedSender<Msg>,
    agent: Arc<str>,
    worker: u64,
    port: u16,
    client: ProbeClient,
    opts: ProbeOptions,
) {
    let send = |event| {
        tx.send(Msg::Worker {
            agent_id: agent.to_string(),
            worker,
            event,
        })
        .is_ok()
    };
    let health = format!("http://127.0.0.1:{port}/health");
    let started = Instant::now();
    let mut last_error: Option<String> = None;
    // Readiness: poll quickly; route only to a worker that says it is this agent.
    loop {
        let elapsed = started.elapsed();
        if elapsed > opts.startup_timeout {
            send(WorkerEvent::StartupTimeout);
            return;
        }
        if let Ok((status, v)) = get_json(&client, &health, Duration::from_secs(1)).await {
            let same_agent = v.get("agent_id").and_then(Value::as_str) == Some(&*agent);
            let state = v.get("status").and_then(Value::as_str).unwrap_or("");
            if same_agent && status == 200 && state == "ready" {
                let package_id = v
                    .get("package_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let meta = get_json(
                    &client,
                    &format!("http://127.0.0.1:{port}/meta"),
                    Duration::from_secs(2),
                )
                .await
                .ok()
                .filter(|(s, _)| *s == 200)
                .map(|(_, v)| pick_meta(&v));
                if !send(WorkerEvent::Ready(Health { package_id, meta })) {
                    return;
                }
                break;
            }
            let problem = if !same_agent && !v.is_null() {
                Some(format!(
                    "port {port} answers for agent {:?}, not {agent:?}",
                    v.get("agent_id").and_then(Value::as_str).unwrap_or("?")
                ))
            } else if state == "error" {
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
            } else {
                None
            };
            if let Some(p) = problem {
                if last_error.as_deref() != Some(p.as_str()) {
                    last_error = Some(p.clone());
                    if !send(WorkerEvent::HealthError(p)) {
                        return;
                    }
                }
            }
        }
        let wait = if elapsed < Duration::from_secs(2) {
            20
        } else if elapsed < Duration::from_secs(30) {
            100
        } else {
            500
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    // Liveness.
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(opts.interval).await;
        let ok = matches!(
            get_json(&client, &health, opts.timeout).await,
            Ok((200, v)) if v.get("agent_id").and_then(Value::as_str) == Some(&*agent)
        );
        if ok {
            if failures > 0 {
                failures = 0;
                if !send(WorkerEvent::Probe {
                    ok: true,
                    failures: 0,
                }) {
                    return;
                }
            }
        } else {
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
