//! The routing table: agent id → its ready workers (with the agent's pool:
//! admission limits, queue, counters), or why it has none. Swapped whole on
//! every change; read on the hot path without waiting, and watched by
//! requests that wait for a route to change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::HeaderValue;
use tokio::sync::{watch, Semaphore};

use super::metrics::AgentMetrics;
use super::sessions::Sessions;
use crate::model::{SessionSettings, State, WorkerId};
use crate::runtime::drain::InFlight;

/// One ready worker as the proxy sees it.
#[derive(Debug)]
pub struct Upstream {
    pub agent_id: Arc<str>,
    /// `x-par-process` of every response it serves.
    pub process_id: HeaderValue,
    pub port: u16,
    pub authority: Authority,
    /// The worker instance (a new one per start); never reused.
    pub worker: WorkerId,
    /// Requests and streams in flight (a drain waits for none).
    pub in_flight: Arc<InFlight>,
    /// Sessions bound to it (a drain that keeps sessions waits for none).
    pub sessions: Arc<InFlight>,
    pub metrics: Arc<AgentMetrics>,
}

impl Upstream {
    pub fn new(
        agent_id: &str,
        process_id: &str,
        port: u16,
        worker: WorkerId,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        let authority = Authority::try_from(format!("127.0.0.1:{port}"))
            .unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
        Upstream {
            agent_id: agent_id.into(),
            process_id: HeaderValue::from_str(process_id)
                .unwrap_or_else(|_| HeaderValue::from_static("par")),
            port,
            authority,
            worker,
            in_flight: Arc::default(),
            sessions: Arc::default(),
            metrics,
        }
    }

    /// Its process id as a span attribute.
    pub fn agent_process(&self) -> par_telemetry::trace::Value {
        String::from_utf8_lossy(self.process_id.as_bytes())
            .into_owned()
            .into()
    }

    /// Whether it was stopped with sessions still bound (its drain for
    /// them ran out of time).
    pub fn drained_for_sessions(&self) -> bool {
        self.sessions.abandoned()
    }
}

/// How an agent admits requests (from its spec).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admission {
    /// In flight per replica; `None` = no limit.
    pub max_concurrency: Option<u32>,
    pub max_queue: u32,
    pub queue_timeout: Duration,
    /// Scaled to zero when idle: requests wake it and wait.
    pub wakes: bool,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_concurrency: None,
            max_queue: 1000,
            queue_timeout: Duration::from_secs(30),
            wakes: false,
        }
    }
}

/// One agent's admission state, kept across its restarts and rollouts.
#[derive(Debug)]
pub struct Pool {
    pub agent_id: Arc<str>,
    pub metrics: Arc<AgentMetrics>,
    admission: RwLock<Admission>,
    /// Free slots of `max_concurrency` × ready replicas (fair: first come, first served).
    slots: Arc<Semaphore>,
    /// Slots the semaphore was given for the current replicas.
    granted: AtomicUsize,
    /// Slots to drop as they come back (the replicas they were for are gone).
    owed: AtomicUsize,
    /// Requests in flight on any replica, and waiting for a slot or a wake.
    pub in_flight: AtomicUsize,
    pub queued: AtomicUsize,
    /// Milliseconds since `epoch` when a request last ended (or started).
    last_active_ms: AtomicU64,
    epoch: Instant,
    /// Its conversations and the processes they are bound to.
    pub sessions: Sessions,
    /// How they are kept; `None`: not tracked.
    session_settings: RwLock<Option<SessionSettings>>,
    /// Whether `session_settings` is `Some`, read per request without the lock.
    tracked: AtomicBool,
}

impl Pool {
    pub fn new(agent_id: &str, metrics: Arc<AgentMetrics>) -> Self {
        Pool {
            agent_id: agent_id.into(),
            metrics,
            admission: RwLock::new(Admission::default()),
            slots: Arc::new(Semaphore::new(0)),
            granted: AtomicUsize::new(0),
            owed: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            sessions: Sessions::default(),
            session_settings: RwLock::new(None),
            tracked: AtomicBool::new(false),
        }
    }

    /// How the agent's sessions are kept; `None` when they are not tracked.
    pub fn session_settings(&self) -> Option<SessionSettings> {
        *self
            .session_settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Tracks sessions with `settings` from now on, or stops (`None`:
    /// every binding goes).
    pub fn track_sessions(&self, settings: Option<SessionSettings>) {
        let mut s = self
            .session_settings
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if s.is_some() && settings.is_none() {
            self.sessions.clear();
        }
        *s = settings;
        self.tracked.store(settings.is_some(), Ordering::Release);
    }

    /// Whether the agent's sessions are tracked (`session_settings` is
    /// `Some`), without taking its lock.
    pub fn tracks(&self) -> bool {
        self.tracked.load(Ordering::Acquire)
    }

    pub fn admission(&self) -> Admission {
        *self.admission.read().unwrap_or_else(|e| e.into_inner())
    }

    /// New limits, or a new number of ready replicas: the slots follow.
    pub fn configure(&self, admission: Admission, ready: usize) {
        *self.admission.write().unwrap_or_else(|e| e.into_inner()) = admission;
        let want = admission.max_concurrency.map_or(0, |m| m as usize * ready);
        let had = self.granted.swap(want, Ordering::AcqRel);
        if want > had {
            // Slots still owed come back as they are: fewer new ones needed.
            let extra = want - had;
            let owed = self.owed.load(Ordering::Acquire);
            let cancel = owed.min(extra);
            self.owed.fetch_sub(cancel, Ordering::AcqRel);
            self.slots.add_permits(extra - cancel);
        } else if had > want {
            // Slots held by requests in flight come back and are dropped then.
            let gone = self.slots.forget_permits(had - want);
            self.owed.fetch_add(had - want - gone, Ordering::AcqRel);
        }
    }

    pub fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }

    /// Takes a place in the queue if there is one (`max_queue`).
    pub fn enqueue(&self, max_queue: u32) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < max_queue as usize).then_some(q + 1)
            })
            .is_ok()
    }

    pub fn dequeue(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// A slot back: dropped if the replicas it was for are gone.
    pub fn release_slot(&self, permit: tokio::sync::OwnedSemaphorePermit) {
        let owed = self.owed.load(Ordering::Acquire);
        if owed > 0
            && self
                .owed
                .compare_exchange(owed, owed - 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            permit.forget();
        }
    }

    pub fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_active_ms.store(ms, Ordering::Release);
    }

    /// How long no request has run (zero while one does, or while a
    /// session is live: a conversation waiting on its user is not idle).
    pub fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 || self.sessions.live() > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_active_ms.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// What the proxy does with `/agents/{id}/...`.
#[derive(Debug, Clone)]
pub enum Route {
    Ready {
        pool: Arc<Pool>,
        upstreams: Arc<[Arc<Upstream>]>,
        /// Workers kept only for the sessions bound to them (the old
        /// version after a rollout, a replica scaled away): no new session
        /// or request without one goes there.
        draining: Arc<[Arc<Upstream>]>,
    },
    /// Scaled to zero, or starting after a wake: requests wait for it.
    Waking { pool: Arc<Pool>, state: State },
    /// Known but not routable: 503 with `Retry-After`.
    NotReady {
        state: State,
        retry_after_secs: u32,
        reason: Option<Arc<str>>,
    },
}

pub type Table = HashMap<Arc<str>, Route>;

/// One agent's route as last read from one table (`RouteTable::get_cached`).
/// It keeps that table alive until the next read (its identity is what
/// says the route is still current).
#[derive(Default)]
pub struct RouteCache {
    table: Option<Arc<Table>>,
    agent: String,
    route: Option<Route>,
}

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

    /// Whether the agent's sessions are tracked (it is ready and they are),
    /// without cloning its route.
    pub fn tracks_sessions(&self, agent_id: &str) -> bool {
        matches!(
            self.tx.borrow().get(agent_id),
            Some(Route::Ready { pool, .. }) if pool.tracks()
        )
    }

    /// `get` for a connection that asks again and again: the route kept in
    /// `cache` while the table is the one it was read from (the table is
    /// swapped whole on a change, never changed in place), else read and
    /// kept. A hit costs a compare where `get` hashes the id.
    pub fn get_cached(&self, agent_id: &str, cache: &mut RouteCache) -> Option<Route> {
        let table = self.tx.borrow();
        let fresh = cache
            .table
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, &table) && *cache.agent == *agent_id);
        if !fresh {
            cache.route = table.get(agent_id).cloned();
            cache.table = Some(Arc::clone(&table));
            cache.agent.clear();
            cache.agent.push_str(agent_id);
        }
        cache.route.clone()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn not_ready(secs: u32) -> Route {
        Route::NotReady {
            state: State::Starting,
            retry_after_secs: secs,
            reason: None,
        }
    }

    fn secs(r: Option<Route>) -> Option<u32> {
        match r {
            Some(Route::NotReady {
                retry_after_secs, ..
            }) => Some(retry_after_secs),
            _ => None,
        }
    }

    #[test]
    fn a_cached_route_is_read_again_once_the_table_changes() {
        let routes = RouteTable::default();
        let mut cache = RouteCache::default();
        assert_eq!(secs(routes.get_cached("a", &mut cache)), None);
        routes.publish(Table::from([
            ("a".into(), not_ready(1)),
            ("b".into(), not_ready(2)),
        ]));
        assert_eq!(secs(routes.get_cached("a", &mut cache)), Some(1));
        assert_eq!(secs(routes.get_cached("a", &mut cache)), Some(1));
        // Another agent on the same table; then a new table.
        assert_eq!(secs(routes.get_cached("b", &mut cache)), Some(2));
        routes.publish(Table::from([("b".into(), not_ready(3))]));
        assert_eq!(secs(routes.get_cached("b", &mut cache)), Some(3));
        assert_eq!(secs(routes.get_cached("a", &mut cache)), None);
        assert_eq!(secs(routes.get("b")), Some(3));
    }
}
