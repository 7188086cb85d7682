//! Starting the agent in the background (its package, its host, its load
//! report, its surfaces), then watching its host until it exits, stops
//! answering or the worker stops.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::{Lifecycle, Settings, EXIT_PACKAGE};
use crate::host::{self, HostChannel, HostSpec};
use crate::loader::{self, Prepared};
use crate::state::{declared_surfaces, Agent, AppState, Phase, SurfaceState};

/// What starting the agent and watching its host report to.
pub(super) struct AgentTask {
    pub(super) state: Arc<AppState>,
    pub(super) life: Arc<Lifecycle>,
    pub(super) settings: Settings,
    pub(super) exit: mpsc::UnboundedSender<i32>,
    pub(super) host_exited: watch::Sender<bool>,
}

/// Why the agent could not start, or stopped: the message shown and the
/// worker's exit code.
struct Fatal {
    message: String,
    code: i32,
}

impl Fatal {
    fn new(message: impl Into<String>, code: i32) -> Self {
        Fatal {
            message: message.into(),
            code,
        }
    }
}

/// The agent host started: its process, its channel, and what the channel
/// tells once (its load report; that it closed).
struct Host {
    child: tokio::process::Child,
    chan: Arc<HostChannel>,
    hello: oneshot::Receiver<host::Hello>,
    closed: oneshot::Receiver<String>,
}

/// Loads the package, starts the host, waits for its load report, then
/// watches it; a failure is the agent's (and the worker exits with its code).
pub(super) async fn start_agent(task: AgentTask) {
    if let Err(f) = task.start_and_watch().await {
        tracing::error!(error = %f.message, exit_code = f.code, "agent failed");
        task.state.fail(f.message);
        let _ = task.exit.send(f.code);
    }
}

impl AgentTask {
    async fn start_and_watch(&self) -> Result<(), Fatal> {
        let started = Instant::now();
        let Prepared {
            package,
            python,
            env,
        } = self.load_package().await?;
        self.keep_in_cache(&package);
        let declared = self.starting(&package);
        let mut host = self.start_host(&package, python, env)?;
        let hello = self.loaded(&mut host).await?;
        let agent = self.ready_agent(package, &host.chan, hello, &declared);
        tracing::info!(
            package_id = %agent.package.package_id(),
            python = agent.hello.python.as_deref().unwrap_or("?"),
            surfaces = ?agent.surfaces.iter().map(|(k, v)| format!("{k}={}", v.status)).collect::<Vec<_>>(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "agent ready"
        );
        self.state.set_phase(Phase::Ready(Arc::new(agent)));
        self.watch(host).await
    }

    /// Unpacks and verifies the package and finds its environment (off the
    /// runtime's threads).
    async fn load_package(&self) -> Result<Prepared, Fatal> {
        let s = &self.settings;
        let (source, sha, home, python) = (
            s.package.clone(),
            s.sha256.clone(),
            s.home.clone(),
            s.python.clone(),
        );
        let prepared = tokio::task::spawn_blocking(move || {
            loader::prepare(&source, sha.as_deref(), &home, python.as_deref())
        })
        .await;
        match prepared {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => {
                let code = if e.is_package_fault() {
                    EXIT_PACKAGE
                } else {
                    1
                };
                Err(Fatal::new(e.to_string(), code))
            }
            Err(e) => Err(Fatal::new(format!("package loading panicked: {e}"), 1)),
        }
    }

    /// Marks the package used, and sweeps the cache of those unused for
    /// long (`PAR_KEEP_UNUSED`).
    fn keep_in_cache(&self, package: &par_package::LoadedPackage) {
        match par_package::keep_unused_from_env() {
            Ok(Some(keep)) => crate::cache::keep_and_sweep(
                self.settings.home.clone(),
                package.root.clone(),
                package.sha256.clone(),
                keep,
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}; the package cache is not swept"),
        }
    }

    /// The phase `starting`, with the surfaces the manifest declares; they
    /// are returned.
    fn starting(&self, package: &par_package::LoadedPackage) -> Vec<&'static str> {
        let manifest = &package.manifest;
        let declared = declared_surfaces(manifest);
        let package_id = package.package_id();
        self.state.set_phase(Phase::Starting {
            package_id: Some(package_id.clone()),
            surfaces: declared
                .iter()
                .map(|s| (*s, SurfaceState::starting()))
                .collect(),
        });
        for w in &manifest.warnings {
            tracing::warn!(package_id = %package_id, "agent.yaml: {w}");
        }
        declared
    }

    /// Starts the agent host on the package with its environment.
    fn start_host(
        &self,
        package: &par_package::LoadedPackage,
        python: PathBuf,
        env: BTreeMap<String, String>,
    ) -> Result<Host, Fatal> {
        let spec = HostSpec {
            root: package.root.clone(),
            env: self.host_env(package, env),
            config: self.host_config(package),
            python,
        };
        let (child, stream) = host::spawn(&spec).map_err(|e| {
            Fatal::new(
                format!(
                    "failed to start the agent host with {}: {e}",
                    spec.python.display()
                ),
                1,
            )
        })?;
        self.life
            .host_pid
            .store(child.id().unwrap_or(0), Ordering::SeqCst);
        let (chan, hello, closed) = HostChannel::start(stream);
        *self.life.host.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&chan));
        Ok(Host {
            child,
            chan,
            hello,
            closed,
        })
    }

    /// What the host loads: the manifest's entries, its thread pool, the port.
    fn host_config(&self, package: &par_package::LoadedPackage) -> serde_json::Value {
        let manifest = &package.manifest;
        let entry = |e: &par_package::manifest::EntryRef| match &e.attr {
            Some(a) => format!("{}:{}", e.module, a),
            None => e.module.clone(),
        };
        let a2a = manifest.a2a.as_ref();
        serde_json::json!({
            "entrypoint": manifest.entrypoint.as_ref().map(entry),
            "http_server": manifest.http_server.as_ref().or(a2a.and_then(|a| a.http_server.as_ref())).map(entry),
            "rest": manifest.rest.as_ref().map(|r| entry(&r.entry)),
            "a2a": a2a.and_then(|a| a.entry.as_ref()).map(entry),
            "threads": self.settings.threads,
            "port": self.state.port,
            "window": host::protocol::STREAM_WINDOW,
        })
    }

    /// The package's environment, with the agent's and package's ids.
    fn host_env(
        &self,
        package: &par_package::LoadedPackage,
        mut env: BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let agent_id = &self.settings.agent_id;
        env.insert("PAR_AGENT_ID".into(), agent_id.clone());
        env.insert("PAR_PACKAGE_ID".into(), package.package_id());
        // The agent's own OpenTelemetry SDK names its service after the agent,
        // unless the package or the spec's env_vars name it.
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            env.entry("OTEL_SERVICE_NAME".into())
                .or_insert_with(|| agent_id.clone());
        }
        env
    }

    /// The host's load report, if the agent's code loaded.
    async fn loaded(&self, host: &mut Host) -> Result<host::Hello, Fatal> {
        let hello = tokio::select! {
            h = &mut host.hello => h.ok(),
            status = host.child.wait() => return Err(self.exited_while_loading(status)),
        };
        let Some(hello) = hello else {
            let status = host.child.wait().await;
            return Err(self.exited_while_loading(status));
        };
        if !hello.ok {
            let message = hello
                .error
                .clone()
                .unwrap_or_else(|| "the agent's code failed to load".into());
            let _ = tokio::time::timeout(Duration::from_secs(2), host.child.wait()).await;
            let _ = self.host_exited.send(true);
            return Err(Fatal::new(message, EXIT_PACKAGE));
        }
        Ok(hello)
    }

    /// The agent's own code ended the host while loading (an exit call, an
    /// import that raised SystemExit): a package failure, even with code 0.
    /// Only a signal may be something passing.
    fn exited_while_loading(&self, status: std::io::Result<std::process::ExitStatus>) -> Fatal {
        let _ = self.host_exited.send(true);
        let by_code = status.as_ref().ok().and_then(|s| s.code()).is_some();
        Fatal::new(
            format!(
                "agent host exited while loading the agent ({})",
                describe_exit(status)
            ),
            if by_code { EXIT_PACKAGE } else { 1 },
        )
    }

    /// The loaded agent with the state of each surface: as the host reports
    /// it, the UI's files opened here, the A2A gRPC service built on the host.
    fn ready_agent(
        &self,
        package: par_package::LoadedPackage,
        chan: &Arc<HostChannel>,
        hello: host::Hello,
        declared: &[&'static str],
    ) -> Agent {
        let mut surfaces: BTreeMap<&'static str, SurfaceState> = BTreeMap::new();
        for s in declared {
            let st = match *s {
                "ui" => continue,
                name => hello
                    .surfaces
                    .get(name)
                    .map(|r| SurfaceState::from_report(r))
                    .unwrap_or_else(|| {
                        SurfaceState::error(format!(
                            "the agent host did not load the {name} surface"
                        ))
                    }),
            };
            surfaces.insert(s, st);
        }
        let ui = open_ui(&package, &mut surfaces);
        let grpc = declared.contains(&"a2a").then(|| {
            let problem = surfaces.get("a2a").and_then(|s| s.error.clone());
            let backend = crate::a2a_backend::HostBackend {
                host: Arc::clone(chan),
                actions: hello.a2a_actions.clone(),
                problem,
                timeout: self.settings.timeout,
            };
            par_a2a::router(
                Arc::new(backend),
                grpc_metadata(&package, &self.settings.agent_id),
            )
        });
        Agent {
            package,
            host: Arc::clone(chan),
            hello,
            surfaces,
            ui,
            grpc,
        }
    }

    /// Until the host exits, its channel closes or it stops answering pings;
    /// only on the way out (SIGTERM) is that not a failure.
    async fn watch(&self, host: Host) -> Result<(), Fatal> {
        let Host {
            mut child,
            chan,
            closed,
            ..
        } = host;
        let reason = tokio::select! {
            status = child.wait() => format!("agent host exited ({})", describe_exit(status)),
            why = host::liveness::watch(chan, self.settings.liveness, &self.life.shutting_down) => {
                // Its host is killed on the way out (the fatal path).
                return Err(Fatal::new(why, par_contract::exit::UNRESPONSIVE));
            }
            r = closed => {
                let reason = r.unwrap_or_else(|_| "agent host channel closed".into());
                // Reap it so the exit status is logged.
                let status = tokio::time::timeout(Duration::from_millis(300), child.wait()).await;
                match status {
                    Ok(s) => format!("{reason}; agent host exited ({})", describe_exit(s)),
                    Err(_) => reason,
                }
            }
        };
        let _ = self.host_exited.send(true);
        if self.life.shutting_down.load(Ordering::SeqCst) {
            tracing::info!("{reason}");
            return Ok(());
        }
        Err(Fatal::new(reason, 1))
    }
}

/// The UI's files, when the manifest declares a UI (its surface's state
/// set either way).
fn open_ui(
    package: &par_package::LoadedPackage,
    surfaces: &mut BTreeMap<&'static str, SurfaceState>,
) -> Option<crate::ui::UiMounts> {
    let u = package.manifest.ui.as_ref()?;
    match crate::ui::UiMounts::open(&package.root, u) {
        Ok(ui) => {
            surfaces.insert("ui", SurfaceState::ready());
            Some(ui)
        }
        Err(e) => {
            tracing::warn!(error = %e, "ui surface unavailable");
            surfaces.insert("ui", SurfaceState::error(e));
            None
        }
    }
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "unknown status".into(),
        },
        Err(e) => format!("status unknown: {e}"),
    }
}

/// Manifest metadata reported by the A2A `DescribeCapabilities`.
fn grpc_metadata(package: &par_package::LoadedPackage, agent_id: &str) -> HashMap<String, String> {
    let m = &package.manifest;
    let mut md = HashMap::new();
    md.insert("agent_id".into(), agent_id.to_string());
    md.insert("package_id".into(), package.package_id());
    md.insert("name".into(), m.name.clone());
    if let Some(v) = m.metadata.version.clone().or_else(|| m.version.clone()) {
        md.insert("version".into(), v);
    }
    for (k, v) in [
        ("display_name", &m.display_name),
        ("description", &m.description),
        ("author", &m.author),
    ] {
        if let Some(v) = v {
            md.insert(k.into(), v.clone());
        }
    }
    if !m.capabilities.is_empty() {
        md.insert("capabilities".into(), m.capabilities.join(","));
    }
    md
}
