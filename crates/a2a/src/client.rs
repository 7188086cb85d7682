//! A small AgentService client: one connection per call, bounded by a timeout.
//! Used by the worker's `GET /a2a/health` and by tests.

use std::collections::HashMap;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::proto::agent_service_client::AgentServiceClient;
use crate::proto::{ActionRequest, ActionResult, Capabilities, Empty, HealthStatus, Pong};

/// Connect and call timeout of the helpers below.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Failure of a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid a2a uri {uri:?}")]
    InvalidUri {
        uri: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("failed to connect to a2a service at {uri}")]
    Connect {
        uri: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("a2a call failed: {0}")]
    Call(#[from] tonic::Status),
}

/// Opens a client to `uri` (e.g. `http://127.0.0.1:8080`) with `timeout` for
/// connecting and for every call.
pub async fn connect_with_timeout(
    uri: &str,
    timeout: Duration,
) -> Result<AgentServiceClient<Channel>, ClientError> {
    let endpoint = Endpoint::from_shared(uri.to_string())
        .map_err(|source| ClientError::InvalidUri {
            uri: uri.to_string(),
            source,
        })?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            uri: uri.to_string(),
            source,
        })?;
    Ok(AgentServiceClient::new(channel))
}

/// [`connect_with_timeout`] with [`DEFAULT_TIMEOUT`].
pub async fn connect(uri: &str) -> Result<AgentServiceClient<Channel>, ClientError> {
    connect_with_timeout(uri, DEFAULT_TIMEOUT).await
}

/// Calls `Health`.
pub async fn health(uri: &str) -> Result<HealthStatus, ClientError> {
    Ok(connect(uri).await?.health(Empty {}).await?.into_inner())
}

/// Calls `Ping`.
pub async fn ping(uri: &str) -> Result<Pong, ClientError> {
    Ok(connect(uri).await?.ping(Empty {}).await?.into_inner())
}

/// Calls `DescribeCapabilities`.
pub async fn describe(uri: &str) -> Result<Capabilities, ClientError> {
    Ok(connect(uri)
        .await?
        .describe_capabilities(Empty {})
        .await?
        .into_inner())
}

/// Calls `Invoke`; an empty `request_id` lets the server generate one.
pub async fn invoke(
    uri: &str,
    action: &str,
    parameters: HashMap<String, String>,
    request_id: &str,
) -> Result<ActionResult, ClientError> {
    let request = ActionRequest {
        action: action.to_string(),
        parameters,
        request_id: request_id.to_string(),
    };
    Ok(connect(uri).await?.invoke(request).await?.into_inner())
}
