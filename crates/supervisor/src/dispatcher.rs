//! The dispatcher: receives every command and event in one order, asks the
//! state machine what they mean, carries out its effects through the runtime,
//! and publishes the routing table and the process snapshot after each batch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use crate::control::{Message, Snapshot};
use crate::http::api::view::{Counters, Published};
use crate::http::metrics::Registry;
use crate::http::route_table::{Admission, Pool, Route as TableRoute, RouteTable, Table, Upstream};
use crate::logs::LogStore;
use crate::model::{
    AgentId, Clock, Effect, Input, Level, LogRecord, MetricEvent, Reply, WaiterId, WorkerEvent,
    WorkerId,
};
use crate::runtime::Runtime;
use crate::state::{Route, Supervisor};

pub struct Dispatcher {
    pub core: Supervisor,
    pub runtime: Runtime,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<Message>,
    pub snapshot: watch::Sender<Snapshot>,
    pub agents_view: watch::Sender<crate::control::Agents>,
    pub routes: Arc<RouteTable>,
    pub logs: Arc<LogStore>,
    pub metrics: Arc<Registry>,
    waiters: HashMap<WaiterId, oneshot::Sender<Reply>>,
    next_waiter: u64,
    upstreams: HashMap<WorkerId, Arc<Upstream>>,
    /// Each agent's admission state, kept across its restarts.
    pools: HashMap<AgentId, Arc<Pool>>,
    /// Agents whose load is sampled (autoscale, scale to zero).
    sampled: Vec<AgentId>,
}

/// How often the load of autoscaled and idling agents is sampled.
const LOAD_SAMPLE: std::time::Duration = std::time::Duration::from_millis(250);

impl Dispatcher {
    // Each argument is a distinct channel or shared table the loop feeds.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: Supervisor,
        runtime: Runtime,
        rx: tokio::sync::mpsc::UnboundedReceiver<Message>,
        snapshot: watch::Sender<Snapshot>,
        agents_view: watch::Sender<crate::control::Agents>,
        routes: Arc<RouteTable>,
        logs: Arc<LogStore>,
        metrics: Arc<Registry>,
    ) -> Self {
        Dispatcher {
            core,
            runtime,
            rx,
            snapshot,
            agents_view,
            routes,
            logs,
            metrics,
            waiters: HashMap::new(),
            next_waiter: WaiterId::NOBODY.0,
            upstreams: HashMap::new(),
            pools: HashMap::new(),
            sampled: Vec::new(),
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
                msg = self.rx.recv() => match msg {
                    Some(msg) => queue.extend(self.input(msg)),
                    None => return,
                },
                // Only while some agent's load matters.
                _ = tick.tick(), if !self.sampled.is_empty() => queue.extend(self.load_samples()),
            }
            // Everything already queued joins the batch: one publish for all.
            while let Ok(msg) = self.rx.try_recv() {
                queue.extend(self.input(msg));
            }
            while let Some(input) = queue.pop_front() {
                let effects = self.core.handle(input, Clock::now());
                for e in effects {
                    self.execute(e, &mut queue);
                }
            }
            self.publish();
            if self.core.finished() {
                break;
            }
        }
    }

    /// The load of each sampled agent; expired sessions end first.
    fn load_samples(&self) -> Vec<Input> {
        let now = std::time::Instant::now();
        self.sampled
            .iter()
            .filter_map(|a| {
                let pool = self.pools.get(a)?;
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
        self.upstreams
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
                self.next_waiter += 1;
                let waiter = WaiterId(self.next_waiter);
                self.waiters.insert(waiter, reply);
                told.into_iter()
                    .chain([Input::Command { command, waiter }])
                    .collect()
            }
            Message::Prepared { worker, prepared } => self
                .runtime
                .start_prepared(worker, prepared)
                .map(|event| Input::Worker { worker, event })
                .into_iter()
                .collect(),
        }
    }

    fn execute(&mut self, effect: Effect, queue: &mut VecDeque<Input>) {
        match effect {
            Effect::Spawn(launch) => {
                let outcome = self.runtime.spawn(&launch);
                let failed = matches!(outcome.event, Some(WorkerEvent::SpawnFailed { .. }));
                if let (Some(port), false) = (outcome.port, failed) {
                    let metrics = self.metrics.agent(launch.agent.as_str());
                    let process = launch.agent.process_id(launch.replica);
                    let up = Upstream::new(
                        launch.agent.as_str(),
                        &process,
                        port,
                        launch.worker,
                        metrics,
                    );
                    self.upstreams.insert(launch.worker, Arc::new(up));
                }
                if let Some(event) = outcome.event {
                    queue.push_back(Input::Worker {
                        worker: launch.worker,
                        event,
                    });
                }
            }
            Effect::Signal { worker, signal } => self.runtime.signal(worker, signal),
            Effect::Release { worker } => {
                self.runtime.release(worker);
                self.upstreams.remove(&worker);
            }
            Effect::StopProbe { worker } => self.runtime.stop_probe(worker),
            Effect::Drain {
                worker,
                settle,
                limit,
                sessions,
            } => {
                let up = self.upstreams.get(&worker);
                let in_flight = up.map(|u| Arc::clone(&u.in_flight));
                let bound = up
                    .filter(|_| !sessions.is_zero())
                    .map(|u| (Arc::clone(&u.sessions), sessions));
                self.runtime.drain(worker, in_flight, settle, limit, bound);
            }
            Effect::Fetch {
                agent,
                fetch,
                package,
                sha256,
            } => self.runtime.fetch(agent, fetch, package, sha256),
            Effect::Timer { at, timer } => self.runtime.timer(at, timer),
            Effect::Log(record) => self.log(record),
            Effect::Reply { waiter, reply } => {
                if let Some(tx) = self.waiters.remove(&waiter) {
                    let _ = tx.send(reply);
                }
            }
            Effect::Forget { agent } => {
                self.metrics.forget(agent.as_str());
                self.logs.forget(agent.as_str());
                if let Some(pool) = self.pools.remove(&agent) {
                    pool.sessions.clear();
                }
            }
            Effect::Metric(m) => match m {
                MetricEvent::Autoscaled { agent, .. } => {
                    self.metrics.agent(agent.as_str()).count_autoscale();
                }
                MetricEvent::Woken { agent } => self.metrics.agent(agent.as_str()).count_wake(),
            },
        }
    }

    fn log(&self, r: LogRecord) {
        let level = match r.level {
            Level::Info => crate::logs::Level::Info,
            Level::Warn => crate::logs::Level::Warn,
            Level::Error => crate::logs::Level::Error,
        };
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
        }
        self.logs.record(agent, level, r.message, fields);
    }

    /// The routing table and the snapshot, from the state machine's views.
    fn publish(&mut self) {
        let clock = Clock::now();
        let mut table = Table::new();
        let entries = self.core.routes(clock);
        self.sampled = entries
            .iter()
            .filter(|e| e.sampled)
            .map(|e| e.agent.clone())
            .collect();
        for entry in entries {
            let pool = Arc::clone(self.pools.entry(entry.agent.clone()).or_insert_with(|| {
                let metrics = self.metrics.agent(entry.agent.as_str());
                Arc::new(Pool::new(entry.agent.as_str(), metrics))
            }));
            let admission = Admission {
                max_concurrency: entry.max_concurrency,
                max_queue: entry.max_queue,
                queue_timeout: entry.queue_timeout,
                wakes: entry.wakes,
            };
            pool.track_sessions(entry.sessions);
            let route = match entry.route {
                Route::Ready(ups) => {
                    let ups: Vec<_> = ups
                        .iter()
                        .filter_map(|u| self.upstreams.get(&u.worker).cloned())
                        .collect();
                    pool.configure(admission, ups.len());
                    if ups.is_empty() {
                        continue;
                    }
                    let draining: Vec<_> = entry
                        .draining
                        .iter()
                        .filter_map(|u| self.upstreams.get(&u.worker).cloned())
                        .collect();
                    TableRoute::Ready {
                        pool,
                        upstreams: ups.into(),
                        draining: draining.into(),
                    }
                }
                Route::Waking(state) => {
                    pool.configure(admission, 0);
                    TableRoute::Waking { pool, state }
                }
                Route::NotReady {
                    state,
                    retry_after_secs,
                    reason,
                } => {
                    pool.configure(admission, 0);
                    TableRoute::NotReady {
                        state,
                        retry_after_secs,
                        reason: reason.map(Arc::from),
                    }
                }
            };
            table.insert(Arc::from(entry.agent.as_str()), route);
        }
        self.routes.publish(table);
        // The views as the state machine made them; the counters they are
        // shown with are the workers' and pools' own, read when shown.
        self.snapshot.send_replace(Arc::new(self.core.views(clock)));
        self.agents_view.send_replace(Arc::new(Published {
            agents: self.core.agent_views(),
            counters: Counters {
                workers: self.upstreams.clone(),
                pools: self.pools.clone(),
            },
        }));
    }
}
