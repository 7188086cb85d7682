//! The management API client of `par ctl`: requests with the admin token,
//! and every failure turned into an error that names the problem and carries
//! its exit code.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::status::{Process, Status};

/// What went wrong, by exit code.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Usage(String),
    #[error("supervisor not reachable at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    UnknownAgent(String),
}

impl CtlError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Failed(_) => 1,
            CtlError::Usage(_) => 2,
            CtlError::Unreachable { .. } => 3,
            CtlError::Auth(_) => 4,
            CtlError::UnknownAgent(_) => 5,
        }
    }
}

/// The admin token and where it came from (named when it is refused).
pub struct Token {
    pub value: String,
    pub source: String,
}

pub struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<Token>,
}

impl Api {
    pub fn new(url: &str, token: Option<Token>) -> Result<Api, CtlError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| CtlError::Usage(format!("--url {url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(CtlError::Usage(format!(
                "--url {url:?} must be http://HOST:PORT or https://HOST"
            )));
        }
        // reqwest is built without a bundled TLS provider (see par-fetch).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("par-ctl/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5));
        let host = parsed.host_str().unwrap_or_default();
        if host == "localhost" || host.starts_with("127.") || host == "[::1]" {
            // A proxy from the environment has no business with a local supervisor.
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| CtlError::Failed(format!("cannot build an HTTP client: {e}")))?;
        Ok(Api {
            client,
            base: url.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut rb = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(&t.value);
        }
        rb
    }

    fn unreachable(&self, e: &reqwest::Error) -> CtlError {
        let reason = if e.is_timeout() {
            "no answer in time".to_string()
        } else if e.is_connect() {
            let mut src: Option<&dyn std::error::Error> = Some(e);
            let mut last = e.to_string();
            while let Some(s) = src {
                last = s.to_string();
                src = s.source();
            }
            last
        } else {
            e.to_string()
        };
        CtlError::Unreachable {
            url: self.base.clone(),
            reason: format!("{reason} (is `par supervisor` running? --url or SUPERVISOR_PORT choose another address)"),
        }
    }

    /// Sends a request; a non-2xx answer becomes the matching CtlError.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, CtlError> {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        if let Some(t) = timeout {
            rb = rb.timeout(t);
        }
        let resp = rb.send().await.map_err(|e| self.unreachable(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<Value>(&text) {
            Ok(v) => (
                v["error"]["code"].as_str().unwrap_or("").to_string(),
                v["error"]["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| text.chars().take(200).collect()),
            ),
            Err(_) => (String::new(), text.chars().take(200).collect()),
        };
        Err(match status {
            401 => CtlError::Auth(match &self.token {
                Some(t) => format!("the supervisor refused the admin token from {} (401: {message})", t.source),
                None => format!("the supervisor needs the admin token for {method} {path} (401: {message}); pass --token or set PAR_ADMIN_TOKEN"),
            }),
            403 => CtlError::Auth(format!("{method} {path} is refused (403: {message})")),
            404 if code == "not_found" && is_agent_path(path) && message.contains("agent") => {
                CtlError::UnknownAgent(format!("unknown agent: {message}"))
            }
            _ => CtlError::Failed(format!("{method} {path} failed ({status} {code}): {message}")),
        })
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CtlError> {
        let resp = self
            .send_raw(method, path, body, Some(Duration::from_secs(120)))
            .await?;
        let url = self.base.clone();
        let bytes = resp.bytes().await.map_err(|e| CtlError::Unreachable {
            url,
            reason: format!("the answer was cut: {e}"),
        })?;
        serde_json::from_slice(&bytes).map_err(|_| {
            CtlError::Failed(format!(
                "{method} {path}: the answer of {} is not JSON; is it a PAR supervisor?",
                self.base
            ))
        })
    }

    pub async fn get_json(&self, path: &str) -> Result<Value, CtlError> {
        self.send("GET", path, None).await
    }

    /// `/supervisor/status`, typed.
    pub async fn status(&self) -> Result<Status, CtlError> {
        typed(
            self.get_json("/supervisor/status").await?,
            "/supervisor/status",
        )
    }

    pub async fn get_text(&self, path: &str) -> Result<String, CtlError> {
        let resp = self
            .send_raw("GET", path, None, Some(Duration::from_secs(30)))
            .await?;
        resp.text().await.map_err(|e| self.unreachable(&e))
    }

    /// The agent named `name` from the status: an agent id, or a process id
    /// (`par-ID`, `par-ID-N`) for its agent. One reading each: no agent id
    /// begins with `par-` and every process id does.
    pub async fn agent(&self, name: &str) -> Result<Process, CtlError> {
        use par_supervisor::model::id::RESERVED_PREFIX;
        let by_process = name.starts_with(RESERVED_PREFIX);
        if !by_process {
            par_supervisor::model::AgentId::new(name).map_err(CtlError::Usage)?;
        }
        let mut procs = self.status().await?.processes;
        let named = |p: &Process| {
            if by_process {
                p.process_id == name
            } else {
                p.agent_id == name
            }
        };
        if let Some(i) = procs.iter().position(named) {
            return Ok(procs.swap_remove(i));
        }
        if by_process {
            return Err(CtlError::UnknownAgent(format!(
                "no process {name:?}: agent ids may not begin with \"{RESERVED_PREFIX}\", so \
                 {name:?} can only be a process id ({RESERVED_PREFIX}<agent>[-N]) and no process has it"
            )));
        }
        let mut known: Vec<String> = procs.iter().map(|p| p.agent_id.clone()).collect();
        known.dedup();
        Err(CtlError::UnknownAgent(if known.is_empty() {
            format!(
                "unknown agent {name:?}: the supervisor at {} has no agents",
                self.base
            )
        } else {
            format!(
                "unknown agent {name:?}; the supervisor has: {}",
                known.join(", ")
            )
        }))
    }
}

fn is_agent_path(path: &str) -> bool {
    [
        "/supervisor/agents/",
        "/supervisor/restart/",
        "/supervisor/stop/",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

/// A JSON answer read into the type `par ctl` expects of it.
pub fn typed<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, CtlError> {
    serde_json::from_value(v)
        .map_err(|e| CtlError::Failed(format!("unexpected answer from {what}: {e}")))
}

pub fn str_field(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// A value for a table cell; missing is "-".
pub fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A `last_error` as text: a string, or a classified `{kind, message}` object.
pub fn error_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::Object(o)) => {
            let kind = ["kind", "class", "code", "type"]
                .iter()
                .find_map(|k| o.get(*k))
                .and_then(Value::as_str);
            let msg = ["message", "detail", "reason"]
                .iter()
                .find_map(|k| o.get(*k))
                .and_then(Value::as_str);
            match (kind, msg) {
                (Some(k), Some(m)) => format!("{k}: {m}"),
                (Some(x), None) | (None, Some(x)) => x.to_string(),
                _ => Value::Object(o.clone()).to_string(),
            }
        }
        other => text(other),
    }
}

/// Polls the agent until `done` says so, or fails after `timeout`.
pub async fn wait_for<T>(
    api: &Api,
    id: &str,
    timeout: Duration,
    mut done: impl FnMut(&Process) -> Option<T>,
) -> Result<Process, CtlError> {
    let deadline = Instant::now() + timeout;
    loop {
        let path = format!("/supervisor/agents/{id}");
        let p: Process = typed(api.get_json(&path).await?, &path)?;
        if done(&p).is_some() {
            return Ok(p);
        }
        if Instant::now() >= deadline {
            return Err(CtlError::Failed(format!(
                "agent {id} is still {} after {}",
                p.state,
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
