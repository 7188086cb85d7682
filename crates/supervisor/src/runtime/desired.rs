//! Desired state: the declared agents — the config file's `[[agents]]`,
//! `PAR_AGENTS` and the optional registry index — gathered and handed to the
//! state task to reconcile, on start, on `POST /supervisor/reload`, on SIGHUP
//! and on every registry poll.
//!
//! Later sources win for the same id: file, then `PAR_AGENTS`, then the
//! registry. Agents spawned through the API are not declared: reconcile
//! leaves them alone (unless a declaration takes their id, which adopts them).
//! A registry that cannot be read, or answers something that is not a valid
//! list of agents, changes nothing; the problem is shown in status.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::config::{self, validate_spec, AgentSpec, Settings, ValidationErrors};
use crate::control::{Control, Phase};
use crate::model::spec::redacted;
use crate::model::{AgentId, Answer, Command, ReconcileReport};
use par_telemetry::error_chain;

/// Largest registry index accepted.
const MAX_INDEX_BYTES: usize = 4 * 1024 * 1024;

/// A request to the desired-state task.
#[derive(Debug)]
pub enum Request {
    Reload {
        trigger: &'static str,
        /// Whether declaring no agent at all (stopping every declared one) is meant.
        allow_empty: bool,
        reply: oneshot::Sender<Result<ReconcileReport, ReloadError>>,
    },
}

/// Why a reload changed nothing.
#[derive(Debug, Clone)]
pub enum ReloadError {
    /// The declarations are not valid (every problem named).
    Invalid(ValidationErrors),
    /// The registry could not be read (a poll only).
    Registry(String),
    ShuttingDown,
}

impl ReloadError {
    fn field(field: &str, message: impl Into<String>) -> Self {
        let mut e = ValidationErrors::default();
        e.push(field, message);
        ReloadError::Invalid(e)
    }

    pub fn message(&self) -> String {
        match self {
            ReloadError::Invalid(e) => e.to_string().replace('\n', "; "),
            ReloadError::Registry(m) => m.clone(),
            ReloadError::ShuttingDown => "the supervisor is shutting down".into(),
        }
    }
}

/// The registry as status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryView {
    pub url: String,
    pub poll_interval_seconds: f64,
    pub polls: u64,
    pub failures: u64,
    #[serde(serialize_with = "crate::model::view::ser_opt_time")]
    pub last_poll_at: Option<SystemTime>,
    #[serde(serialize_with = "crate::model::view::ser_opt_time")]
    pub last_success_at: Option<SystemTime>,
    pub last_error: Option<String>,
    #[serde(serialize_with = "crate::model::view::ser_opt_time")]
    pub last_error_at: Option<SystemTime>,
    /// Agents in the last index read successfully.
    pub agents: Option<usize>,
}

/// Desired state as status shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DesiredView {
    pub config_file: Option<String>,
    pub registry: Option<RegistryView>,
    pub last_reconcile: Option<ReconcileReport>,
    /// The last reload that changed nothing because the declarations were invalid.
    pub last_reload_error: Option<String>,
}

/// Shared with the HTTP side (status).
#[derive(Debug, Default)]
pub struct DesiredStatus(RwLock<DesiredView>);

impl DesiredStatus {
    pub fn view(&self) -> DesiredView {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub(crate) fn update(&self, f: impl FnOnce(&mut DesiredView)) {
        f(&mut self.0.write().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Starts the desired-state task; requests go through the returned sender.
pub fn spawn(
    control: Control,
    settings: Arc<Settings>,
    status: Arc<DesiredStatus>,
) -> mpsc::UnboundedSender<Request> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(
        Task {
            control,
            settings,
            status,
        },
        rx,
    ));
    tx
}

/// What the task works with.
struct Task {
    control: Control,
    settings: Arc<Settings>,
    status: Arc<DesiredStatus>,
}

/// What the task remembers between reloads.
struct Declared {
    file_agents: Vec<AgentSpec>,
    /// The last registry index read successfully.
    registry_agents: Option<Vec<AgentSpec>>,
    client: Option<reqwest::Client>,
}

async fn run(t: Task, mut rx: mpsc::UnboundedReceiver<Request>) {
    // The start-up agents are spawned first; reconcile after them.
    t.control.wait_phase(|p| p != Phase::Starting).await;
    let settings = &t.settings;
    let mut d = Declared {
        file_agents: match &settings.config_path {
            Some(p) => config::load_file(p)
                .map(|f| f.agents)
                .unwrap_or_else(|_| settings.agents.clone()),
            None => Vec::new(),
        },
        registry_agents: None,
        client: settings.registry_url.as_ref().map(|_| registry_client()),
    };
    t.status.update(|v| {
        v.config_file = settings
            .config_path
            .as_ref()
            .map(|p| p.display().to_string());
        v.registry = settings.registry_url.as_ref().map(|u| RegistryView {
            url: redacted(u),
            poll_interval_seconds: settings.registry_poll.as_secs_f64(),
            polls: 0,
            failures: 0,
            last_poll_at: None,
            last_success_at: None,
            last_error: None,
            last_error_at: None,
            agents: None,
        });
    });
    let mut tick = settings.registry_url.as_ref().map(|_| {
        let mut t = tokio::time::interval(settings.registry_poll);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let stopping = t
        .control
        .wait_phase(|p| matches!(p, Phase::Draining | Phase::Stopped));
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            req = rx.recv() => match req {
                Some(Request::Reload { trigger, allow_empty, reply }) => {
                    let r = reload(&t, &mut d, trigger, true, allow_empty).await;
                    let _ = reply.send(r);
                }
                None => return,
            },
            Some(()) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::info!("SIGHUP received: reloading the declared agents");
                let _ = reload(&t, &mut d, "SIGHUP", true, false).await;
            }
            _ = async {
                match tick.as_mut() {
                    // The first tick is at once: the start-up poll.
                    Some(t) => t.tick().await,
                    None => std::future::pending().await,
                }
            } => {
                let trigger = if t.status.view().registry.is_some_and(|r| r.polls == 0) { "start" } else { "poll" };
                let _ = reload(&t, &mut d, trigger, false, false).await;
            }
            _ = &mut stopping => return,
        }
    }
}

/// Gathers the declarations and reconciles. `full`: re-read the config file
/// too (reload, SIGHUP); a poll only reads the registry.
async fn reload(
    t: &Task,
    d: &mut Declared,
    trigger: &'static str,
    full: bool,
    allow_empty: bool,
) -> Result<ReconcileReport, ReloadError> {
    let settings = &t.settings;
    let refuse = |e: ReloadError| {
        let msg = e.message();
        tracing::error!(trigger, "reload refused, nothing changed: {msg}");
        t.status.update(|v| v.last_reload_error = Some(msg));
        Err(e)
    };
    if full {
        if let Some(path) = &settings.config_path {
            match config::load_file(path) {
                Ok(f) => d.file_agents = f.agents,
                Err(e) => return refuse(ReloadError::field("config", error_chain(&e))),
            }
        }
    }
    let env_agents = match settings.env_agents.as_deref() {
        Some(json) => match config::parse_env_agents(json) {
            Ok(a) => a,
            Err(e) => return refuse(ReloadError::field("PAR_AGENTS", e.to_string())),
        },
        None => Vec::new(),
    };
    let registry_error = read_registry_into(t, d).await;
    if let (Some(e), false) = (&registry_error, full) {
        // An unreadable registry changes nothing.
        return Err(ReloadError::Registry(e.clone()));
    }
    let mut declared = Settings::default();
    declared.merge_agents(d.file_agents.clone());
    declared.merge_agents(env_agents);
    declared.merge_agents(d.registry_agents.clone().unwrap_or_default());
    let mut errors = ValidationErrors::default();
    let mut specs = Vec::with_capacity(declared.agents.len());
    for (i, a) in declared.agents.into_iter().enumerate() {
        validate_spec(&a, &format!("agents[{i}]({}).", a.id), &mut errors);
        if let Ok(id) = AgentId::new(&a.id) {
            specs.push((id, a));
        }
    }
    if !errors.is_empty() {
        return refuse(ReloadError::Invalid(errors));
    }
    // A reload of an emptied file would stop every declared agent: only when
    // asked for in so many words. (A registry index that lists nothing is
    // the registry's own statement, applied on its polls.)
    let declared_now = t
        .control
        .processes()
        .iter()
        .filter(|p| p.origin == crate::model::Origin::Declared)
        .count();
    if full && specs.is_empty() && declared_now > 0 && !allow_empty {
        return refuse(ReloadError::field(
            "agents",
            format!(
                "the declarations name no agent, which would stop all {declared_now} declared; reload with allow_empty=true if that is meant"
            ),
        ));
    }
    let mut report = match t
        .control
        .ask(Command::Reconcile {
            declared: specs,
            trigger: trigger.to_string(),
        })
        .await
    {
        Ok(Answer::Reconciled(r)) => r,
        _ => return Err(ReloadError::ShuttingDown),
    };
    report.registry_error = registry_error;
    if report.changed() || trigger != "poll" {
        tracing::info!(
            trigger,
            started = ?report.started,
            stopped = ?report.stopped,
            rolled = ?report.rolled,
            failed = report.failed.len(),
            unchanged = report.unchanged.len(),
            "reconciled the declared agents"
        );
    }
    let r = report.clone();
    t.status.update(|v| {
        v.last_reconcile = Some(r);
        if full {
            v.last_reload_error = None;
        }
    });
    Ok(report)
}

/// Reads the registry index (when one is configured) into `d`; the error, if
/// it could not be read, for status and the report.
async fn read_registry_into(t: &Task, d: &mut Declared) -> Option<String> {
    let (Some(url), Some(client)) = (&t.settings.registry_url, &d.client) else {
        return None;
    };
    let at = SystemTime::now();
    let result = if url.starts_with("s3://") {
        read_s3_registry(url, &t.settings.home).await
    } else {
        read_registry(client, url).await
    };
    let result = result.and_then(|agents| {
        match agents
            .iter()
            .enumerate()
            .find(|(_, a)| !a.is_remote() && !t.settings.package_allowed(&a.package))
        {
            Some((i, a)) => Err(format!(
                "invalid registry index: [{i}].package_path: {} is not in a package root ({}; PAR_PACKAGE_ROOTS)",
                a.package,
                t.settings.package_roots_shown()
            )),
            None => Ok(agents),
        }
    });
    let count = result.as_ref().map(Vec::len).ok();
    let error = match result {
        Ok(agents) => {
            d.registry_agents = Some(agents);
            None
        }
        Err(e) => {
            tracing::warn!("registry index not applied: {e}");
            Some(e)
        }
    };
    let err = error.clone();
    t.status.update(|v| {
        if let Some(r) = v.registry.as_mut() {
            r.polls += 1;
            r.last_poll_at = Some(at);
            match err {
                None => {
                    r.last_success_at = Some(at);
                    r.agents = count;
                    r.last_error = None;
                }
                Some(e) => {
                    r.failures += 1;
                    r.last_error = Some(e);
                    r.last_error_at = Some(at);
                }
            }
        }
    });
    error
}

fn registry_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("par-supervisor/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default()
}

/// Reads and checks the index: a JSON array of agent specs, or `{"agents": [...]}`.
async fn read_registry(client: &reqwest::Client, url: &str) -> Result<Vec<AgentSpec>, String> {
    let shown = redacted(url);
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {shown} failed: {}", error_chain(&e.without_url())))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("GET {shown} answered HTTP {}", status.as_u16()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_INDEX_BYTES as u64)
    {
        return Err(format!(
            "the index at {shown} is over {MAX_INDEX_BYTES} bytes"
        ));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("GET {shown} failed: {}", error_chain(&e.without_url())))?;
    if body.len() > MAX_INDEX_BYTES {
        return Err(format!(
            "the index at {shown} is over {MAX_INDEX_BYTES} bytes"
        ));
    }
    parse_index(&body).map_err(|e| format!("invalid registry index at {shown}: {e}"))
}

/// Reads the index from S3 (credentials, region and endpoint as for
/// packages) into memory.
async fn read_s3_registry(url: &str, home: &std::path::Path) -> Result<Vec<AgentSpec>, String> {
    let source = par_fetch::Source::parse(url).map_err(|e| error_chain(&e))?;
    let par_fetch::Source::S3 { bucket, key } = source else {
        return Err(format!("{url} is not an s3:// URL"));
    };
    let mut opts = par_fetch::FetchOptions::from_env(home).map_err(|e| error_chain(&e))?;
    opts.max_size_bytes = MAX_INDEX_BYTES as u64;
    opts.retries = 1;
    opts.timeout = Duration::from_secs(15);
    opts.connect_timeout = Duration::from_secs(5);
    let body = par_fetch::read_s3(&bucket, &key, &opts)
        .await
        .map_err(|e| format!("GET {url} failed: {}", error_chain(&e)))?;
    parse_index(&body).map_err(|e| format!("invalid registry index at {url}: {e}"))
}

/// Parses and validates an index; every problem is named.
pub fn parse_index(body: &[u8]) -> Result<Vec<AgentSpec>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not valid JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut o) => match o.remove("agents") {
            Some(Value::Array(items)) => items,
            _ => return Err("expected a JSON array of agents or {\"agents\": [...]}".into()),
        },
        _ => return Err("expected a JSON array of agents or {\"agents\": [...]}".into()),
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let mut errors = ValidationErrors::default();
    let mut agents = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.into_iter().enumerate() {
        match serde_json::from_value::<AgentSpec>(item) {
            Ok(mut a) => {
                a.resolve_paths(&cwd);
                validate_spec(&a, &format!("[{i}]."), &mut errors);
                if !seen.insert(a.id.clone()) {
                    errors.push(
                        format!("[{i}].agent_id"),
                        format!("{:?} is listed twice", a.id),
                    );
                }
                agents.push(a);
            }
            Err(e) => errors.push(format!("[{i}]"), e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(agents)
    } else {
        Err(errors.to_string().replace('\n', "; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_forms_and_errors() {
        let a = parse_index(br#"[{"agent_id":"a","package":"s3://b/a.apkg"}]"#).unwrap();
        assert_eq!(a[0].id, "a");
        let a = parse_index(br#"{"agents":[{"id":"a","package":"https://h/a.apkg"}]}"#).unwrap();
        assert_eq!(a[0].package, "https://h/a.apkg");
        for (body, needle) in [
            (&b"{not json"[..], "not valid JSON"),
            (br#"{"x":1}"#, "expected a JSON array"),
            (
                br#"[{"agent_id":"A","package":"s3://b/k"}]"#,
                "[0].agent_id",
            ),
            (
                br#"[{"agent_id":"a","package":"s3://b/k","bogus":1}]"#,
                "bogus",
            ),
            (
                br#"[{"id":"a","package":"s3://b/k"},{"id":"a","package":"s3://b/k"}]"#,
                "listed twice",
            ),
        ] {
            let e = parse_index(body).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
