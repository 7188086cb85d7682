//! The routing table: agent id → ready upstream or why not, swapped whole on
//! every state change and read without waiting on the hot path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use http::uri::Authority;

use crate::lifecycle::State;
use crate::metrics::AgentMetrics;

/// One ready worker as the proxy sees it.
#[derive(Debug)]
pub struct Upstream {
    pub agent_id: Arc<str>,
    pub port: u16,
    pub authority: Authority,
    /// The worker instance (a new one per start); never reused.
    pub worker: u64,
    /// Requests and streams in flight (drain waits for zero).
    pub inflight: AtomicUsize,
    pub metrics: Arc<AgentMetrics>,
}

impl Upstream {
    pub fn new(agent_id: &str, port: u16, worker: u64, metrics: Arc<AgentMetrics>) -> Self {
        let authority = Authority::try_from(format!("127.0.0.1:{port}"))
            .unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
        Upstream {
            agent_id: agent_id.into(),
            port,
            authority,
            worker,
            inflight: AtomicUsize::new(0),
            metrics,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
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

/// The current table; readers clone an `Arc` under a read lock held for nanoseconds.
#[derive(Debug, Default)]
pub struct RouteTable {
    inner: RwLock<Arc<Table>>,
}

impl RouteTable {
    pub fn get(&self, agent_id: &str) -> Option<Route> {
        let table = Arc::clone(&self.inner.read().unwrap_or_else(|e| e.into_inner()));
        table.get(agent_id).cloned()
    }

    pub fn snapshot(&self) -> Arc<Table> {
        Arc::clone(&self.inner.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn publish(&self, table: Table) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }
}
