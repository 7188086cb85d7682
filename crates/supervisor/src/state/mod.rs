//! The supervisor's decisions as a pure state machine: `handle(input, clock)`
//! returns the effects to carry out. No I/O, no clock reads, no tokio: the
//! runtime (`crate::runtime`) feeds it inputs and executes its effects, so
//! every decision is testable without processes, sockets or sleeps.
//!
//! An agent has replicas; each replica moves through the lifecycle table
//! (`lifecycle`) and carries the data of its state (`agent::Life`). Decisions
//! live by subject: commands (`commands`), worker events (`workers`), the
//! restart decision after an exit (`restart`), blue/green rollouts
//! (`rollout`), desired-state reconcile (`reconcile`), resource shares
//! (`limits`), and what the API and the proxy see (`view`).

pub mod agent;
mod commands;
pub mod lifecycle;
pub mod limits;
pub mod load;
mod reconcile;
mod restart;
mod rollout;
pub mod scale;
mod view;
mod workers;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::model::{
    AgentId, Clock, Command, CommandError, Effect, Input, Level, LogRecord, Reply, Timer, WaiterId,
    WorkerId,
};

use agent::{Agent, Goal, Life};
pub(crate) use lifecycle::set_life;
pub use limits::Budget;
pub use view::{RouteDecision, RouteEntry, RoutedWorker};

/// The settings decisions depend on.
#[derive(Debug, Clone)]
pub struct Config {
    /// SIGTERM → SIGKILL for a stopped worker.
    pub stop_grace: Duration,
    /// Longest drain of an old worker after a rollout switched the route.
    pub drain_timeout: Duration,
    /// Shown in the reason of a worker killed for not getting ready.
    pub startup_timeout: Duration,
    /// Failed liveness probes in a row before a restart.
    pub probe_failures: u32,
    pub budget: Budget,
}

pub struct Supervisor {
    cfg: Config,
    agents: BTreeMap<AgentId, Agent>,
    /// Which agent each live worker belongs to.
    owners: HashMap<WorkerId, AgentId>,
    next_worker: u64,
    next_fetch: u64,
    next_rollout: u64,
    rng: fastrand::Rng,
    /// Set by a shutdown: later commands are refused.
    shutdown: bool,
    /// The shutdown's caller, answered once no worker is left.
    shutdown_waiter: Option<WaiterId>,
}

/// The effects of one input, collected as decisions are made.
pub(crate) struct Out {
    pub fx: Vec<Effect>,
    pub clock: Clock,
}

impl Out {
    fn new(clock: Clock) -> Self {
        Out {
            fx: Vec::new(),
            clock,
        }
    }

    pub fn log(&mut self, agent: &AgentId, level: Level, message: impl Into<String>) {
        self.fx.push(Effect::Log(LogRecord {
            agent: agent.clone(),
            level,
            message: message.into(),
            transition: None,
        }));
    }

    pub fn reply(&mut self, waiter: WaiterId, reply: Reply) {
        self.fx.push(Effect::Reply { waiter, reply });
    }

    pub fn timer(&mut self, after: Duration, timer: Timer) {
        self.fx.push(Effect::Timer {
            at: self.clock.now + after,
            timer,
        });
    }
}

impl Supervisor {
    /// `seed` feeds the jitter of backoffs (fixed in tests).
    pub fn new(cfg: Config, seed: u64) -> Self {
        Supervisor {
            cfg,
            agents: BTreeMap::new(),
            owners: HashMap::new(),
            next_worker: 0,
            next_fetch: 0,
            next_rollout: 0,
            rng: fastrand::Rng::with_seed(seed),
            shutdown: false,
            shutdown_waiter: None,
        }
    }

    /// Decides what `input` means; returns what to do about it.
    pub fn handle(&mut self, input: Input, clock: Clock) -> Vec<Effect> {
        let mut out = Out::new(clock);
        match input {
            Input::Command { command, waiter } => self.command(command, waiter, &mut out),
            Input::Worker { worker, event } => self.worker_event(worker, event, &mut out),
            Input::Fetched {
                agent,
                fetch,
                result,
            } => self.with_agent(&agent, &mut out, |s, a, out| {
                s.fetched(a, fetch, result, out)
            }),
            Input::Timer(t) => self.timer(t, &mut out),
            Input::Drained { worker, in_flight } => self.drained(worker, in_flight, &mut out),
            Input::Wake { agent } => self.with_agent(&agent, &mut out, |s, a, out| s.wake(a, out)),
            Input::Load {
                agent,
                in_flight,
                queued,
                idle_for,
                with_sessions,
            } => self.with_agent(&agent, &mut out, |s, a, out| {
                a.with_sessions = with_sessions;
                s.load(a, in_flight, queued, idle_for, out)
            }),
            Input::Sessions {
                agent,
                with_sessions,
            } => {
                if let Some(a) = self.agents.get_mut(&agent) {
                    a.with_sessions = with_sessions;
                }
            }
            Input::OverMemory {
                worker,
                rss_mb,
                limit_mb,
            } => self.over_memory(worker, rss_mb, limit_mb, &mut out),
            Input::OverDisk {
                worker,
                used_mb,
                limit_mb,
            } => self.over_disk(worker, used_mb, limit_mb, &mut out),
        }
        self.settle(&mut out);
        out.fx
    }

    /// Whether a shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutdown
    }

    /// True once a shutdown has stopped every worker.
    pub fn finished(&self) -> bool {
        self.shutdown && self.agents.values().all(|a| !a.has_workers())
    }

    fn command(&mut self, command: Command, waiter: WaiterId, out: &mut Out) {
        match command {
            Command::Spawn {
                agent,
                spec,
                origin,
                wait,
            } => self.spawn(agent, spec, origin, wait, waiter, out),
            Command::Stop { agent } => self.stop(&agent, waiter, out),
            Command::Restart { agent, wait } => self.restart(&agent, wait, waiter, out),
            Command::Remove { agent } => self.remove(&agent, waiter, out),
            Command::Put {
                agent,
                spec,
                wait,
                base,
            } => match self.changed_since(&agent, base.as_deref()) {
                Some(e) => out.reply(waiter, Err(e)),
                None => self.put(agent, spec, wait, waiter, out),
            },
            Command::Spec { agent } => {
                let reply = match self.agents.get(&agent) {
                    Some(a) => Ok(crate::model::Answer::Spec(Box::new(
                        a.heading_for().clone(),
                    ))),
                    None => Err(CommandError::not_found(agent.as_str())),
                };
                out.reply(waiter, reply);
            }
            Command::Reconcile { declared, trigger } => {
                let report = self.reconcile(declared, &trigger, out);
                out.reply(waiter, Ok(crate::model::Answer::Reconciled(report)));
            }
            Command::Shutdown { grace } => self.begin_shutdown(grace, waiter, out),
        }
    }

    fn timer(&mut self, timer: Timer, out: &mut Out) {
        match timer {
            Timer::Restart {
                agent,
                replica,
                epoch,
            } => self.with_agent(&agent, out, |s, a, out| {
                let Some(i) = a.replicas.iter().position(|r| r.index == replica) else {
                    return;
                };
                let r = &a.replicas[i];
                if r.epoch == epoch
                    && matches!(r.life(), Life::Backoff { .. })
                    && a.goal == Goal::Run
                {
                    s.start_replica(a, i, out);
                }
            }),
            Timer::Kill { worker } => {
                if self.owners.contains_key(&worker) {
                    out.fx.push(Effect::Signal {
                        worker,
                        signal: crate::model::Signal::Kill,
                    });
                }
            }
        }
    }

    /// Runs `f` on an agent (taken out of the map and put back), then forgets
    /// it if it is being removed and no worker is left.
    fn with_agent(
        &mut self,
        id: &AgentId,
        out: &mut Out,
        f: impl FnOnce(&mut Self, &mut Agent, &mut Out),
    ) {
        let Some(mut a) = self.agents.remove(id) else {
            return;
        };
        f(self, &mut a, out);
        if a.goal == Goal::Remove && !a.has_workers() {
            self.forget(a, out);
        } else {
            self.agents.insert(id.clone(), a);
        }
    }

    /// After every input: finish in-place rollouts, answer the waiters whose
    /// wait is over, and the shutdown once nothing runs.
    fn settle(&mut self, out: &mut Out) {
        let ids: Vec<AgentId> = self.agents.keys().cloned().collect();
        for id in ids {
            if let Some(mut a) = self.agents.remove(&id) {
                rollout::settle_in_place(&mut a, out);
                self.answer_waiters(&mut a, out);
                self.agents.insert(id, a);
            }
        }
        if self.finished() {
            if let Some(w) = self.shutdown_waiter.take() {
                out.reply(w, Ok(crate::model::Answer::Done));
            }
        }
    }

    fn new_worker(&mut self, agent: &AgentId) -> WorkerId {
        self.next_worker += 1;
        let id = WorkerId(self.next_worker);
        self.owners.insert(id, agent.clone());
        id
    }

    /// The worker is gone: free what the runtime holds for it.
    fn release(&mut self, worker: WorkerId, out: &mut Out) {
        self.owners.remove(&worker);
        out.fx.push(Effect::Release { worker });
    }
}
