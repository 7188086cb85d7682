//! The server side of `pixell.agent.AgentService`, built on a [`Backend`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use crate::proto::agent_service_server::{AgentService, AgentServiceServer};
use crate::proto::{ActionRequest, ActionResult, Capabilities, Empty, HealthStatus, Pong};
use crate::{Backend, ACTION_METHOD_PREFIX, SERVICE_PATH_PREFIX};

/// The rpc names listed first in `Capabilities.methods`.
pub const RPC_METHODS: [&str; 4] = ["Health", "DescribeCapabilities", "Invoke", "Ping"];

/// The service implementation: answers Health/Ping/DescribeCapabilities and
/// dispatches Invoke to the backend.
pub struct AgentServiceImpl {
    backend: Arc<dyn Backend>,
    metadata: HashMap<String, String>,
}

impl AgentServiceImpl {
    /// `metadata` is returned as `Capabilities.metadata` (the manifest metadata).
    pub fn new(backend: Arc<dyn Backend>, metadata: HashMap<String, String>) -> Self {
        Self { backend, metadata }
    }
}

/// The tonic service, for callers that build their own tonic/axum stack.
pub fn service(
    backend: Arc<dyn Backend>,
    metadata: HashMap<String, String>,
) -> AgentServiceServer<AgentServiceImpl> {
    AgentServiceServer::new(AgentServiceImpl::new(backend, metadata))
}

/// An axum router serving `/pixell.agent.AgentService/*` (gRPC over HTTP/2;
/// an unknown method there answers gRPC `UNIMPLEMENTED`). It has no fallback,
/// so it merges into the worker's router (`Router::merge`) without a conflict.
pub fn router(backend: Arc<dyn Backend>, metadata: HashMap<String, String>) -> axum::Router {
    let path = format!("{SERVICE_PATH_PREFIX}{{*method}}");
    axum::Router::new().route_service(&path, service(backend, metadata))
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn new_request_id() -> String {
    format!("req-{:032x}", fastrand::u128(..))
}

#[tonic::async_trait]
impl AgentService for AgentServiceImpl {
    async fn health(&self, _request: Request<Empty>) -> Result<Response<HealthStatus>, Status> {
        let (ok, message) = self.backend.health().await;
        Ok(Response::new(HealthStatus {
            ok,
            message,
            timestamp: unix_ms(),
        }))
    }

    async fn describe_capabilities(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Capabilities>, Status> {
        let mut methods: Vec<String> = RPC_METHODS.iter().map(|m| m.to_string()).collect();
        // A failing A2A function still lets clients see the service itself.
        if let Ok(actions) = self.backend.actions().await {
            methods.extend(actions.iter().map(|a| format!("{ACTION_METHOD_PREFIX}{a}")));
        }
        Ok(Response::new(Capabilities {
            methods,
            metadata: self.metadata.clone(),
        }))
    }

    async fn invoke(
        &self,
        request: Request<ActionRequest>,
    ) -> Result<Response<ActionResult>, Status> {
        let started = Instant::now();
        let ActionRequest {
            action,
            parameters,
            request_id,
        } = request.into_inner();
        let request_id = if request_id.is_empty() {
            new_request_id()
        } else {
            request_id
        };
        let outcome = if action.is_empty() {
            Err("missing action: ActionRequest.action is empty".to_string())
        } else {
            match self.backend.actions().await {
                Err(e) => Err(format!("a2a handlers unavailable: {e}")),
                Ok(actions) if !actions.contains(&action) => {
                    let known = if actions.is_empty() {
                        "none".to_string()
                    } else {
                        actions.join(", ")
                    };
                    Err(format!(
                        "No handler found for action: {action} (available actions: {known})"
                    ))
                }
                Ok(_) => self.backend.invoke(action, parameters).await,
            }
        };
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (success, result, error) = match outcome {
            Ok(result) => (true, result, String::new()),
            Err(error) => (false, String::new(), error),
        };
        Ok(Response::new(ActionResult {
            success,
            result,
            error,
            request_id,
            duration_ms,
        }))
    }

    async fn ping(&self, _request: Request<Empty>) -> Result<Response<Pong>, Status> {
        Ok(Response::new(Pong {
            message: "pong".into(),
            timestamp: unix_ms(),
        }))
    }
}
