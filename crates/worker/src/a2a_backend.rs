//! The A2A gRPC service's backend: the agent's `custom_handlers`, run by the host.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::host::protocol::to_host;
use crate::host::{HostChannel, Reply};

/// Dispatches A2A `Invoke` to the agent host.
pub struct HostBackend {
    pub host: Arc<HostChannel>,
    /// Action names, listed once at load (the handlers dict does not change).
    pub actions: Vec<String>,
    /// The A2A surface's state: `None` when ready, else why not.
    pub problem: Option<String>,
    pub timeout: Duration,
}

impl par_a2a::Backend for HostBackend {
    fn invoke(
        &self,
        action: String,
        parameters: HashMap<String, String>,
    ) -> BoxFuture<'static, Result<String, String>> {
        let host = Arc::clone(&self.host);
        let timeout = self.timeout;
        // Read here, in the request's task: the gRPC request's trace context.
        let header =
            crate::trace::host_header(serde_json::json!({"op": "a2a_invoke", "action": action}));
        let host_span = crate::trace::host_span("agent host a2a");
        Box::pin(async move {
            let _host_span = host_span;
            let header = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
            let body = serde_json::to_vec(&parameters).map_err(|e| e.to_string())?;
            let mut pending = host.request(to_host::CALL, &header, &body);
            match tokio::time::timeout(timeout, pending.next()).await {
                Err(_) => Err(format!(
                    "action '{action}' did not finish within {} s",
                    timeout.as_secs()
                )),
                Ok(Some(Reply::Ok(text))) => Ok(String::from_utf8_lossy(&text).into_owned()),
                Ok(Some(Reply::Err { error, .. })) => Err(error),
                Ok(Some(other)) => Err(format!("unexpected reply from the agent host: {other:?}")),
                Ok(None) => Err("the agent host exited".to_string()),
            }
        })
    }

    fn actions(&self) -> BoxFuture<'static, Result<Vec<String>, String>> {
        let actions = self.actions.clone();
        Box::pin(async move { Ok(actions) })
    }

    fn health(&self) -> BoxFuture<'static, (bool, String)> {
        let result = match &self.problem {
            None => (true, "ok".to_string()),
            Some(p) => (false, p.clone()),
        };
        Box::pin(async move { result })
    }
}
