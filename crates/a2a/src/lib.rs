//! The A2A gRPC service `pixell.agent.AgentService`: generated protocol types, the
//! server (an axum `Router` that shares the worker's port) and a small client.
//!
//! The service answers `Health`, `Ping` and `DescribeCapabilities` itself and hands
//! `Invoke` to a [`Backend`] (in the worker: the agent's `custom_handlers`).

pub mod client;
mod service;

pub use service::{router, service, AgentServiceImpl, RPC_METHODS};

use std::collections::HashMap;

use futures_util::future::BoxFuture;

/// Types and tonic stubs generated from `proto/agent.proto` (package `pixell.agent`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("pixell.agent");
}

/// The gRPC path prefix of every AgentService method: `/pixell.agent.AgentService/`.
pub const SERVICE_PATH_PREFIX: &str = "/pixell.agent.AgentService/";

/// Prefix of an action in `Capabilities.methods` (`"action:echo"`), so actions
/// never collide with the four rpc names listed there.
pub const ACTION_METHOD_PREFIX: &str = "action:";

/// What the service calls into: the agent's A2A handlers.
pub trait Backend: Send + Sync + 'static {
    /// Runs the handler registered for `action`. `Ok` is the handler's return
    /// rendered as a string; `Err` is the failure message (it becomes
    /// `ActionResult.error`). The service only calls this for an action that
    /// [`Backend::actions`] lists.
    fn invoke(
        &self,
        action: String,
        parameters: HashMap<String, String>,
    ) -> BoxFuture<'static, Result<String, String>>;

    /// Names of the custom handlers (empty when the A2A function returned
    /// nothing). Called by every `Invoke` and `DescribeCapabilities`: keep it cheap.
    fn actions(&self) -> BoxFuture<'static, Result<Vec<String>, String>>;

    /// `(ok, message)` reported by `Health`.
    fn health(&self) -> BoxFuture<'static, (bool, String)>;
}

/// True when a request carries gRPC (`content-type: application/grpc...`), which
/// the worker uses to send it to [`router`] rather than to the agent's HTTP routes.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}
