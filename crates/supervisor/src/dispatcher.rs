//! The dispatcher: receives every command and event in one order, asks the
//! state machine what they mean, carries out its effects through the runtime,
//! and publishes the routing table and the process snapshot after each batch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::control::{Message, Snapshot};
use crate::http::api::view::{Counters, Published};
use crate::http::metrics::Registry;
use crate::http::route_table::{Admission, Pool, Route, RouteTable, Table, Upstream};
use crate::logs::LogStore;
use crate::model::{
    AgentId, Clock, Effect, Input, Launch, Level, LogRecord, MetricEvent, Reply, WaiterId,
    WorkerEvent, WorkerId,
};
use crate::runtime::Runtime;
use crate::state::{RouteDecision, RouteEntry, Supervisor};

pub struct Dispatcher {
    core: Supervisor,
    runtime: Runtime,
    inbox: tokio::sync::mpsc::UnboundedReceiver<Message>,
    out: Outputs,
    waiters: Waiters,
    live: Live,
}

/// What the dispatcher writes and the HTTP side reads: the process snapshot
/// and the agents' views (read through [`crate::control::Control`]), the
/// routing table, and the logs and metrics its effects go to.
pub struct Outputs {
    pub snapshot: watch::Sender<Snapshot>,
    pub agents: watch::Sender<crate::control::Agents>,
    pub routes: Arc<RouteTable>,
    pub logs: Arc<LogStore>,
    pub metrics: Arc<Registry>,
}

/// The commands waiting for their answers.
struct Waiters {
    pending: HashMap<WaiterId, oneshot::Sender<Reply>>,
    /// Answers made in this batch, sent once it is published.
    ready: Vec<(WaiterId, Reply)>,
    last: u64,
}

impl Waiters {
    fn new() -> Self {
        Waiters {
            pending: HashMap::new(),
            ready: Vec::new(),
            last: WaiterId::NOBODY.0,
        }
    }

    fn add(&mut self, reply: oneshot::Sender<Reply>) -> WaiterId {
        self.last += 1;
        let waiter = WaiterId(self.last);
        self.pending.insert(waiter, reply);
        waiter
    }

    /// Held until the batch's views are published: whoever is answered
    /// reads a status, a route table, that already shows what it did.
    fn answer(&mut self, waiter: WaiterId, reply: Reply) {
        self.ready.push((waiter, reply));
    }

    /// Sends the answers the batch made (after its publish).
    fn send_ready(&mut self) {
        for (waiter, reply) in self.ready.drain(..) {
            if let Some(tx) = self.pending.remove(&waiter) {
                let _ = tx.send(reply);
            }
        }
    }
}

/// The live handles the dispatcher keeps between batches.
#[derive(Default)]
struct Live {
    /// Each worker with a port, as the proxy reaches it.
    upstreams: HashMap<WorkerId, Arc<Upstream>>,
    /// Each agent's admission state, kept across its restarts.
    pools: HashMap<AgentId, Arc<Pool>>,
    /// Agents whose load is sampled (autoscale, scale to zero).
    sampled: Vec<AgentId>,
}

/// How often the load of autoscaled and idling agents is sampled.
const LOAD_SAMPLE: std::time::Duration = std::time::Duration::from_millis(250);

impl Dispatcher {
    pub fn new(
        core: Supervisor,
        runtime: Runtime,
        inbox: tokio::sync::mpsc::UnboundedReceiver<Message>,
        out: Outputs,
    ) -> Self {
        Dispatcher {
            core,
            runtime,
            inbox,
            out,
            waiters: Waiters::new(),
            live: Live::default(),
        }
    }

    /// Runs until a shutdown has stopped every worker and been answered.
    pub async fn run(mut self) {
        self.publish();
        let mut tick = tokio::time::interval(LOAD_SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut queue = VecDeque::new();
            tokio::select! {
                msg = self.inbox.recv() => match msg {
                    Some(msg) => queue.extend(self.input(msg)),
                    None => return,
                },
                // A worker prepared to run under its agent's uid: started now.
                Some((worker, prepared)) = self.runtime.prepared() => {
                    queue.extend(self.start_prepared(worker, prepared));
                }
                // Only while some agent's load matters.
                _ = tick.tick(), if !self.live.sampled.is_empty() => queue.extend(self.load_samples()),
            }
            // Everything already queued joins the batch: one publish for all.
            while let Ok(msg) = self.inbox.try_recv() {
                queue.extend(self.input(msg));
            }
            while let Some((worker, prepared)) = self.runtime.try_prepared() {
                queue.extend(self.start_prepared(worker, prepared));
            }
            while let Some(input) = queue.pop_front() {
                let effects = self.core.handle(input, Clock::now());
                for e in effects {
                    self.execute(e, &mut queue);
                }
            }
            self.publish();
            self.waiters.send_ready();
            if self.core.finished() {
                break;
            }
        }
    }

    /// The load of each sampled agent; expired sessions end first.
    fn load_samples(&self) -> Vec<Input> {
        let now = std::time::Instant::now();
        self.live
            .sampled
            .iter()
            .filter_map(|a| {
                let pool = self.live.pools.get(a)?;
                if let Some(settings) = pool.session_settings() {
                    pool.sessions.sweep(&settings, &pool.metrics.sessions, now);
                }
                let with_sessions = self.with_sessions(a);
                Some(Input::Load {
                    agent: a.clone(),
                    in_flight: pool.in_flight.load(std::sync::atomic::Ordering::Acquire),
                    queued: pool.queued.load(std::sync::atomic::Ordering::Acquire),
                    idle_for: pool.idle_for(),
                    with_sessions,
                })
            })
            .collect()
    }

    /// The agent's workers with sessions bound to them.
    fn with_sessions(&self, agent: &AgentId) -> Vec<WorkerId> {
        self.live
            .upstreams
            .values()
            .filter(|u| *u.agent_id == *agent.as_str() && u.sessions.get() > 0)
            .map(|u| u.worker)
            .collect()
    }

    fn input(&mut self, msg: Message) -> Vec<Input> {
        match msg {
            Message::Input(i) => vec![i],
            Message::Command { command, reply } => {
                // A new spec may scale the agent down: which of its workers
                // hold sessions is told first, as of now.
                let told = match &command {
                    crate::model::Command::Put { agent, .. } => Some(Input::Sessions {
                        agent: agent.clone(),
                        with_sessions: self.with_sessions(agent),
                    }),
                    _ => None,
                };
                let waiter = self.waiters.add(reply);
                told.into_iter()
                    .chain([Input::Command { command, waiter }])
                    .collect()
            }
        }
    }

    /// The process of a prepared worker started (unless it was stopped
    /// meanwhile): what became of it.
    fn start_prepared(
        &mut self,
        worker: WorkerId,
        prepared: crate::runtime::isolation::Prepared,
    ) -> Option<Input> {
        let event = self.runtime.start_prepared(worker, prepared)?;
        Some(Input::Worker { worker, event })
    }

    /// Carries out one of the state machine's effects; what it tells at
    /// once (a spawn's outcome) joins `queue`.
    fn execute(&mut self, effect: Effect, queue: &mut VecDeque<Input>) {
        match effect {
            Effect::Spawn(launch) => queue.extend(self.spawn(&launch)),
            Effect::Signal { worker, signal } => self.runtime.signal(worker, signal),
            Effect::Release { worker } => {
                self.runtime.release(worker);
                self.live.upstreams.remove(&worker);
            }
            Effect::StopProbe { worker } => self.runtime.stop_probe(worker),
            Effect::Drain {
                worker,
                settle,
                limit,
                sessions,
            } => self.drain(worker, settle, limit, sessions),
            Effect::Fetch {
                agent,
                fetch,
                package,
                sha256,
            } => self.runtime.fetch(agent, fetch, package, sha256),
            Effect::Timer { at, timer } => self.runtime.timer(at, timer),
            Effect::Log(record) => self.log(record),
            Effect::Reply { waiter, reply } => self.waiters.answer(waiter, reply),
            Effect::Forget { agent } => self.forget(&agent),
            Effect::Metric(m) => self.count(m),
        }
    }

    /// Spawns the worker `launch` says, and makes it reachable by the proxy
    /// once it has a port: what became of it, if known at once.
    fn spawn(&mut self, launch: &Launch) -> Option<Input> {
        let outcome = self.runtime.spawn(launch);
        let failed = matches!(outcome.event, Some(WorkerEvent::SpawnFailed { .. }));
        if let (Some(port), false) = (outcome.port, failed) {
            let metrics = self.out.metrics.agent(launch.agent.as_str());
            let process = launch.agent.process_id(launch.replica);
            let up = Upstream::new(
                launch.agent.as_str(),
                &process,
                port,
                launch.worker,
                metrics,
            );
            self.live.upstreams.insert(launch.worker, Arc::new(up));
        }
        let event = outcome.event?;
        Some(Input::Worker {
            worker: launch.worker,
            event,
        })
    }

    /// Drains `worker`: its requests in flight waited for (after `settle`,
    /// within `limit`), then its bound sessions (at most `sessions`; zero:
    /// not waited for).
    fn drain(&self, worker: WorkerId, settle: Duration, limit: Duration, sessions: Duration) {
        let up = self.live.upstreams.get(&worker);
        let in_flight = up.map(|u| Arc::clone(&u.in_flight));
        let bound = up
            .filter(|_| !sessions.is_zero())
            .map(|u| (Arc::clone(&u.sessions), sessions));
        self.runtime.drain(worker, in_flight, settle, limit, bound);
    }

    /// Forgets a removed agent: its metrics, its logs, its sessions.
    fn forget(&mut self, agent: &AgentId) {
        self.out.metrics.forget(agent.as_str());
        self.out.logs.forget(agent.as_str());
        if let Some(pool) = self.live.pools.remove(agent) {
            pool.sessions.clear();
        }
    }

    /// Counts an autoscale or a wake in the agent's metrics.
    fn count(&self, m: MetricEvent) {
        match m {
            MetricEvent::Autoscaled { agent, .. } => {
                self.out.metrics.agent(agent.as_str()).count_autoscale();
            }
            MetricEvent::Woken { agent } => self.out.metrics.agent(agent.as_str()).count_wake(),
        }
    }

    fn log(&self, r: LogRecord) {
        let fields = r.transition.map(|(from, to)| {
            let mut f = serde_json::Map::new();
            f.insert("from".into(), from.as_str().into());
            f.insert("to".into(), to.as_str().into());
            f
        });
        let agent = r.agent.as_str();
        match r.level {
            Level::Error => tracing::error!(agent, "{}", r.message),
            Level::Warn => tracing::warn!(agent, "{}", r.message),
            Level::Info => tracing::info!(agent, "{}", r.message),
            Level::Debug => tracing::debug!(agent, "{}", r.message),
            Level::Trace => tracing::trace!(agent, "{}", r.message),
        }
        self.out.logs.record(agent, r.level, r.message, fields);
    }

    /// The routing table and the snapshot, from the state machine's views.
    fn publish(&mut self) {
        let clock = Clock::now();
        let mut table = Table::new();
        let entries = self.core.routes(clock);
        self.live.sampled = entries
            .iter()
            .filter(|e| e.sampled)
            .map(|e| e.agent.clone())
            .collect();
        for entry in entries {
            let agent = Arc::from(entry.agent.as_str());
            if let Some(route) = self.live.route(entry, &self.out.metrics) {
                table.insert(agent, route);
            }
        }
        self.out.routes.publish(table);
        // The views as the state machine made them; the counters they are
        // shown with are the workers' and pools' own, read when shown.
        self.out
            .snapshot
            .send_replace(Arc::new(self.core.views(clock)));
        self.out.agents.send_replace(Arc::new(Published {
            agents: self.core.agent_views(),
            counters: Counters {
                workers: self.live.upstreams.clone(),
                pools: self.live.pools.clone(),
            },
        }));
    }
}

impl Live {
    /// The proxy's route of one agent: its pool (made on first sight,
    /// configured from the entry) and the upstreams of its ready and
    /// draining workers; none while it is ready with no upstream yet.
    fn route(&mut self, entry: RouteEntry, metrics: &Registry) -> Option<Route> {
        let pool = Arc::clone(self.pools.entry(entry.agent.clone()).or_insert_with(|| {
            let metrics = metrics.agent(entry.agent.as_str());
            Arc::new(Pool::new(entry.agent.as_str(), metrics))
        }));
        let admission = Admission {
            max_concurrency: entry.max_concurrency,
            max_queue: entry.max_queue,
            queue_timeout: entry.queue_timeout,
            wakes: entry.wakes,
        };
        pool.track_sessions(entry.sessions);
        let upstreams = |workers: &[crate::state::RoutedWorker]| -> Vec<Arc<Upstream>> {
            workers
                .iter()
                .filter_map(|u| self.upstreams.get(&u.worker).cloned())
                .collect()
        };
        Some(match entry.route {
            RouteDecision::Ready(ups) => {
                let ups = upstreams(&ups);
                pool.configure(admission, ups.len());
                if ups.is_empty() {
                    return None;
                }
                Route::Ready {
                    pool,
                    upstreams: ups.into(),
                    draining: upstreams(&entry.draining).into(),
                }
            }
            RouteDecision::Waking(state) => {
                pool.configure(admission, 0);
                Route::Waking { pool, state }
            }
            RouteDecision::NotReady {
                state,
                retry_after_secs,
                reason,
            } => {
                pool.configure(admission, 0);
                Route::NotReady {
                    state,
                    retry_after_secs,
                    reason: reason.map(Arc::from),
                }
            }
        })
    }
}
