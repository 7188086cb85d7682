//! The dispatcher: receives every command and event in one order, asks the
//! state machine what they mean, carries out its effects through the runtime,
//! and publishes the routing table and the process snapshot after each batch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use crate::control::{Message, Snapshot};
use crate::http::metrics::Registry;
use crate::http::route_table::{Route as TableRoute, RouteTable, Table, Upstream};
use crate::logs::LogStore;
use crate::model::{
    Clock, Effect, Input, Level, LogRecord, Reply, WaiterId, WorkerEvent, WorkerId,
};
use crate::runtime::Runtime;
use crate::state::{Route, Supervisor};

pub struct Dispatcher {
    pub core: Supervisor,
    pub runtime: Runtime,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<Message>,
    pub snapshot: watch::Sender<Snapshot>,
    pub routes: Arc<RouteTable>,
    pub logs: Arc<LogStore>,
    pub metrics: Arc<Registry>,
    waiters: HashMap<WaiterId, oneshot::Sender<Reply>>,
    next_waiter: u64,
    upstreams: HashMap<WorkerId, Arc<Upstream>>,
    /// Which agent each started worker belongs to (for its upstream).
    agents: HashMap<WorkerId, crate::model::AgentId>,
}

impl Dispatcher {
    pub fn new(
        core: Supervisor,
        runtime: Runtime,
        rx: tokio::sync::mpsc::UnboundedReceiver<Message>,
        snapshot: watch::Sender<Snapshot>,
        routes: Arc<RouteTable>,
        logs: Arc<LogStore>,
        metrics: Arc<Registry>,
    ) -> Self {
        Dispatcher {
            core,
            runtime,
            rx,
            snapshot,
            routes,
            logs,
            metrics,
            waiters: HashMap::new(),
            next_waiter: WaiterId::NOBODY.0,
            upstreams: HashMap::new(),
            agents: HashMap::new(),
        }
    }

    /// Runs until a shutdown has stopped every worker and been answered.
    pub async fn run(mut self) {
        self.publish();
        while let Some(msg) = self.rx.recv().await {
            let mut queue = VecDeque::new();
            queue.push_back(self.input(msg));
            // Everything already queued joins the batch: one publish for all.
            while let Ok(msg) = self.rx.try_recv() {
                queue.push_back(self.input(msg));
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

    fn input(&mut self, msg: Message) -> Input {
        match msg {
            Message::Input(i) => i,
            Message::Command { command, reply } => {
                self.next_waiter += 1;
                let waiter = WaiterId(self.next_waiter);
                self.waiters.insert(waiter, reply);
                Input::Command { command, waiter }
            }
        }
    }

    fn execute(&mut self, effect: Effect, queue: &mut VecDeque<Input>) {
        match effect {
            Effect::Spawn(launch) => {
                let event = self.runtime.spawn(&launch);
                if let WorkerEvent::Spawned { port, .. } = event {
                    let metrics = self.metrics.agent(launch.agent.as_str());
                    let up = Upstream::new(launch.agent.as_str(), port, launch.worker, metrics);
                    self.upstreams.insert(launch.worker, Arc::new(up));
                    self.agents.insert(launch.worker, launch.agent.clone());
                }
                queue.push_back(Input::Worker {
                    worker: launch.worker,
                    event,
                });
            }
            Effect::Signal { worker, signal } => self.runtime.signal(worker, signal),
            Effect::Release { worker } => {
                self.runtime.release(worker);
                self.upstreams.remove(&worker);
                self.agents.remove(&worker);
            }
            Effect::StopProbe { worker } => self.runtime.stop_probe(worker),
            Effect::Drain {
                worker,
                settle,
                limit,
            } => {
                let in_flight = self
                    .upstreams
                    .get(&worker)
                    .map(|u| Arc::clone(&u.in_flight));
                self.runtime.drain(worker, in_flight, settle, limit);
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
                self.logs.forget(&agent.process_id(0));
            }
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
        self.logs
            .record(agent, "supervisor", level, r.message, fields);
    }

    /// The routing table and the snapshot, from the state machine's views.
    fn publish(&self) {
        let clock = Clock::now();
        let mut table = Table::new();
        for entry in self.core.routes(clock) {
            let route = match entry.route {
                Route::Ready(ups) => {
                    match ups.first().and_then(|u| self.upstreams.get(&u.worker)) {
                        Some(u) => TableRoute::Ready(Arc::clone(u)),
                        None => continue,
                    }
                }
                Route::NotReady {
                    state,
                    retry_after_secs,
                    reason,
                } => TableRoute::NotReady {
                    state,
                    retry_after_secs,
                    reason: reason.map(Arc::from),
                },
            };
            table.insert(Arc::from(entry.agent.as_str()), route);
        }
        self.routes.publish(table);
        let mut views = self.core.views(clock);
        let in_flight = |w: u64| {
            self.upstreams
                .get(&WorkerId(w))
                .map_or(0, |u| u.in_flight.get())
        };
        for v in &mut views {
            v.in_flight = v.worker.map_or(0, in_flight);
            for d in &mut v.draining {
                d.in_flight = in_flight(d.worker);
            }
        }
        self.snapshot.send_replace(Arc::new(views));
    }
}
