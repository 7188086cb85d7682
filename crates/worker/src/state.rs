//! The worker's shared state: where the agent is in its life, and what it serves.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use par_package::manifest::Manifest;
use par_package::LoadedPackage;

use crate::host::{Hello, HostChannel};
use crate::metrics::Metrics;

/// State of one surface as `/health` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SurfaceState {
    /// `starting`, `ready` or `error`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SurfaceState {
    pub fn starting() -> Self {
        Self {
            status: "starting",
            error: None,
        }
    }
    pub fn ready() -> Self {
        Self {
            status: "ready",
            error: None,
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            status: "error",
            error: Some(message.into()),
        }
    }
    /// From the host's report: `"ready"` or `"error: ..."`.
    pub fn from_report(report: &str) -> Self {
        match report.strip_prefix("error: ") {
            Some(msg) => Self::error(msg),
            None if report == "ready" => Self::ready(),
            None => Self::error(report),
        }
    }
}

/// The surfaces a manifest declares: `rest` (a `rest.entry` or an `http_server`
/// ASGI app), `a2a` (`a2a.entry`/`a2a.service`) and `ui`.
pub fn declared_surfaces(m: &Manifest) -> Vec<&'static str> {
    let mut v = Vec::new();
    if m.rest.is_some()
        || m.http_server.is_some()
        || m.a2a.as_ref().is_some_and(|a| a.http_server.is_some())
    {
        v.push("rest");
    }
    if m.a2a.as_ref().is_some_and(|a| a.entry.is_some()) {
        v.push("a2a");
    }
    if m.ui.is_some() {
        v.push("ui");
    }
    v
}

/// A loaded agent with its running host.
pub struct Agent {
    pub package: LoadedPackage,
    pub host: Arc<HostChannel>,
    pub hello: Hello,
    pub surfaces: BTreeMap<&'static str, SurfaceState>,
    pub ui: Option<crate::ui::UiMounts>,
    /// The A2A gRPC service, when the package declares `a2a`.
    pub grpc: Option<axum::Router>,
}

impl Agent {
    pub fn manifest(&self) -> &Manifest {
        &self.package.manifest
    }
}

/// Where the worker is in its life.
pub enum Phase {
    /// Loading the package, installing dependencies, starting the host.
    Starting {
        package_id: Option<String>,
        surfaces: BTreeMap<&'static str, SurfaceState>,
    },
    Ready(Arc<Agent>),
    Error {
        package_id: Option<String>,
        message: String,
        surfaces: BTreeMap<&'static str, SurfaceState>,
    },
}

/// Shared by every request handler.
pub struct AppState {
    pub agent_id: String,
    pub port: u16,
    /// `http://host:port` of this worker, for calls to itself (gRPC health).
    pub self_url: String,
    pub timeout: Duration,
    pub phase: RwLock<Arc<Phase>>,
    pub metrics: Metrics,
    /// Open WebSockets, closed with 1012 on shutdown.
    pub sockets: Arc<crate::asgi::sockets::Sockets>,
}

impl AppState {
    /// The agent, or a 503 that says why not.
    pub fn ready_agent(&self) -> Result<Arc<Agent>, crate::error::ApiError> {
        use http::StatusCode;
        match &*self.phase() {
            Phase::Ready(a) => Ok(Arc::clone(a)),
            Phase::Starting { .. } => Err(crate::error::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the agent is still starting (loading the package or installing dependencies)",
            )),
            Phase::Error { message, .. } => Err(crate::error::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "agent_error",
                format!("the agent failed: {message}"),
            )),
        }
    }

    pub fn new(agent_id: String, port: u16, self_url: String, timeout: Duration) -> Self {
        Self {
            agent_id,
            port,
            self_url,
            timeout,
            phase: RwLock::new(Arc::new(Phase::Starting {
                package_id: None,
                surfaces: BTreeMap::new(),
            })),
            metrics: Metrics::default(),
            sockets: Arc::default(),
        }
    }

    pub fn phase(&self) -> Arc<Phase> {
        Arc::clone(&self.phase.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set_phase(&self, phase: Phase) {
        *self.phase.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(phase);
    }

    /// The agent when ready.
    pub fn agent(&self) -> Option<Arc<Agent>> {
        match &*self.phase() {
            Phase::Ready(a) => Some(Arc::clone(a)),
            _ => None,
        }
    }

    /// Moves to `Error`, keeping what is known about the package.
    pub fn fail(&self, message: String) {
        let (package_id, mut surfaces) = match &*self.phase() {
            Phase::Starting {
                package_id,
                surfaces,
            } => (package_id.clone(), surfaces.clone()),
            Phase::Ready(a) => (Some(a.package.package_id()), a.surfaces.clone()),
            Phase::Error {
                package_id,
                surfaces,
                ..
            } => (package_id.clone(), surfaces.clone()),
        };
        for s in surfaces.values_mut() {
            if s.status != "error" {
                *s = SurfaceState::error("agent is not running");
            }
        }
        self.set_phase(Phase::Error {
            package_id,
            message,
            surfaces,
        });
    }
}
