//! The routing table: agent id → its ready workers, or why it has none.
//! Swapped whole on every change; read on the hot path without waiting, and
//! watched by requests that wait for a route to change.

use std::collections::HashMap;
use std::sync::Arc;

use http::uri::Authority;
use tokio::sync::watch;

use super::metrics::AgentMetrics;
use crate::model::{State, WorkerId};
use crate::runtime::drain::InFlight;

/// One ready worker as the proxy sees it.
#[derive(Debug)]
pub struct Upstream {
    pub agent_id: Arc<str>,
    pub port: u16,
    pub authority: Authority,
    /// The worker instance (a new one per start); never reused.
    pub worker: WorkerId,
    /// Requests and streams in flight (a drain waits for none).
    pub in_flight: Arc<InFlight>,
    pub metrics: Arc<AgentMetrics>,
}

impl Upstream {
    pub fn new(agent_id: &str, port: u16, worker: WorkerId, metrics: Arc<AgentMetrics>) -> Self {
        let authority = Authority::try_from(format!("127.0.0.1:{port}"))
            .unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
        Upstream {
            agent_id: agent_id.into(),
            port,
            authority,
            worker,
            in_flight: Arc::default(),
            metrics,
        }
    }
}

/// What the proxy does with `/agents/{id}/...`.
#[derive(Debug, Clone)]
pub enum Route {
    Ready(Arc<Upstream>),
    /// Known but not routable: 503 with `Retry-After`.
    NotReady {
        state: State,
        retry_after_secs: u32,
        reason: Option<Arc<str>>,
    },
}

pub type Table = HashMap<Arc<str>, Route>;

pub struct RouteTable {
    tx: watch::Sender<Arc<Table>>,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable {
            tx: watch::Sender::new(Arc::new(Table::new())),
        }
    }
}

impl RouteTable {
    pub fn get(&self, agent_id: &str) -> Option<Route> {
        self.tx.borrow().get(agent_id).cloned()
    }

    pub fn snapshot(&self) -> Arc<Table> {
        Arc::clone(&self.tx.borrow())
    }

    pub fn publish(&self, table: Table) {
        self.tx.send_replace(Arc::new(table));
    }

    /// Told of every publish from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Table>> {
        self.tx.subscribe()
    }
}
