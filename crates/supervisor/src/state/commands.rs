//! Commands: spawn, stop, restart, remove, put, shutdown — and the moves they
//! share (starting a replica, a graceful stop, forgetting an agent, answering
//! the callers who wait).

use std::time::Duration;

use super::agent::{AfterStop, Agent, Goal, Life, Package, Wait, Worker};
use super::{lifecycle, set_life, Out, Supervisor};
use crate::model::{
    AgentId, AgentSpec, Answer, CommandError, Effect, Launch, Level, Origin, PutOutcome, Signal,
    State, WaiterId,
};

impl Supervisor {
    pub(super) fn spawn(
        &mut self,
        id: AgentId,
        spec: AgentSpec,
        origin: Origin,
        wait: bool,
        waiter: WaiterId,
        out: &mut Out,
    ) {
        match self.create(id, spec, origin, out) {
            Err(e) => out.reply(waiter, Err(e)),
            Ok(id) => self.answer_now_or_later(&id, wait.then_some(Wait::Settled), waiter, out),
        }
    }

    /// A new agent, starting.
    pub(super) fn create(
        &mut self,
        id: AgentId,
        spec: AgentSpec,
        origin: Origin,
        out: &mut Out,
    ) -> Result<AgentId, CommandError> {
        if self.shutdown {
            return Err(CommandError::shutting_down());
        }
        if let Some(a) = self.agents.get(&id) {
            return Err(CommandError::conflict(format!(
                "agent '{id}' already exists (state: {}); restart it, or DELETE /supervisor/agents/{id} first",
                a.state()
            )));
        }
        let pid = id.process_id(0);
        if let Some(other) = self
            .agents
            .values()
            .find(|o| o.replicas.iter().any(|r| o.id.process_id(r.index) == pid))
        {
            return Err(CommandError::conflict(format!(
                "agent '{id}' would have the process id {pid}, which a replica of agent '{}' has",
                other.id
            )));
        }
        let mut a = Agent::new(id.clone(), spec, origin, out.clock.wall);
        self.start_replica(&mut a, 0, out);
        let n = a.spec.floor();
        self.scale_to(&mut a, n, out);
        self.agents.insert(id.clone(), a);
        Ok(id)
    }

    pub(super) fn stop(&mut self, id: &AgentId, waiter: WaiterId, out: &mut Out) {
        if !self.agents.contains_key(id) {
            return out.reply(waiter, Err(CommandError::not_found(id.as_str())));
        }
        self.with_agent(id, out, |s, a, out| {
            s.cancel_rollout(a, "the agent was stopped", out);
            s.stop_retiring(a, out);
            a.goal = Goal::Stop;
            s.stop_replicas(a, AfterStop::Rest, "stopped on request", out);
        });
        self.answer_now_or_later(id, Some(Wait::Stopped), waiter, out);
    }

    /// Stops every replica: a graceful stop of those with a worker (then
    /// `after`), `stopped` for the others.
    fn stop_replicas(&mut self, a: &mut Agent, after: AfterStop, why: &str, out: &mut Out) {
        for i in 0..a.replicas.len() {
            let r = &mut a.replicas[i];
            r.epoch += 1;
            let (state, has_worker) = (r.state(), r.worker().is_some());
            if let Some(then) = r.after_stop_mut() {
                // A replica scaled away may be waiting for its sessions: not now.
                let kept_for_sessions = *then == AfterStop::Drop;
                *then = after;
                if kept_for_sessions {
                    self.terminate(a, i, after, out);
                }
            } else if has_worker {
                self.begin_stop(a, i, after, out);
            } else if state != State::Stopped {
                set_life(&a.id, r, Life::Stopped, why, out);
            }
        }
    }

    pub(super) fn restart(&mut self, id: &AgentId, wait: bool, waiter: WaiterId, out: &mut Out) {
        if self.shutdown {
            return out.reply(waiter, Err(CommandError::shutting_down()));
        }
        if !self.agents.contains_key(id) {
            return out.reply(waiter, Err(CommandError::not_found(id.as_str())));
        }
        self.with_agent(id, out, |s, a, out| {
            s.start_all_again(a, true, "restart requested", out);
        });
        self.answer_now_or_later(id, wait.then_some(Wait::Settled), waiter, out);
    }

    pub(super) fn remove(&mut self, id: &AgentId, waiter: WaiterId, out: &mut Out) {
        if !self.agents.contains_key(id) {
            return out.reply(waiter, Err(CommandError::not_found(id.as_str())));
        }
        if let Some(a) = self.agents.get_mut(id) {
            a.waiters.push((waiter, Wait::Removed));
        }
        self.with_agent(id, out, |s, a, out| {
            s.cancel_rollout(a, "the agent was removed", out);
            s.stop_retiring(a, out);
            a.goal = Goal::Remove;
            s.stop_replicas(a, AfterStop::Rest, "removed", out);
        });
    }

    /// A conflict when `base` is given and the agent no longer heads for it
    /// (another change came between a patch's read and its write).
    pub(super) fn changed_since(
        &self,
        id: &AgentId,
        base: Option<&AgentSpec>,
    ) -> Option<CommandError> {
        let base = base?;
        match self.agents.get(id) {
            None => Some(CommandError::not_found(id.as_str())),
            Some(a) if a.heading_for() != base => Some(CommandError::conflict(format!(
                "agent '{id}' changed while the patch was made; read it again and retry"
            ))),
            Some(_) => None,
        }
    }

    pub(super) fn put(
        &mut self,
        id: AgentId,
        spec: AgentSpec,
        wait: bool,
        waiter: WaiterId,
        out: &mut Out,
    ) {
        if self.shutdown {
            return out.reply(waiter, Err(CommandError::shutting_down()));
        }
        if !self.agents.contains_key(&id) {
            return match self.create(id, spec, Origin::Api, out) {
                Err(e) => out.reply(waiter, Err(e)),
                Ok(id) => self.answer_now_or_later(&id, Some(Wait::Created { wait }), waiter, out),
            };
        }
        let mut outcome = PutOutcome::Unchanged;
        self.with_agent(&id, out, |s, a, out| outcome = s.roll(a, spec, out));
        let rollout = self
            .agents
            .get(&id)
            .and_then(|a| a.rollout.as_ref())
            .filter(|r| r.in_progress())
            .map(|r| r.number);
        match (wait, rollout) {
            (true, Some(n)) if outcome == PutOutcome::Rolling => {
                if let Some(a) = self.agents.get_mut(&id) {
                    a.waiters.push((waiter, Wait::Rollout(n)));
                }
            }
            _ => {
                let reply = self.agents.get(&id).map(|a| {
                    Answer::Put(
                        Box::new(self.view_of(a, &a.replicas[0], out.clock)),
                        outcome,
                    )
                });
                out.reply(
                    waiter,
                    reply.ok_or_else(|| CommandError::not_found(id.as_str())),
                );
            }
        }
    }

    pub(super) fn begin_shutdown(&mut self, grace: Duration, waiter: WaiterId, out: &mut Out) {
        self.shutdown = true;
        self.shutdown_waiter = Some(waiter);
        self.cfg.stop_grace = grace;
        let ids: Vec<AgentId> = self.agents.keys().cloned().collect();
        for id in ids {
            self.with_agent(&id, out, |s, a, out| {
                s.cancel_rollout(a, "the supervisor is shutting down", out);
                s.stop_retiring(a, out);
                a.goal = Goal::Stop;
                for i in 0..a.replicas.len() {
                    let r = &mut a.replicas[i];
                    r.epoch += 1;
                    let state = r.state();
                    if r.worker().is_some() {
                        s.terminate(a, i, AfterStop::Rest, out);
                    } else if !lifecycle::settled(state) || state == State::Idle {
                        set_life(&a.id, r, Life::Stopped, "supervisor shutting down", out);
                    }
                }
            });
        }
    }

    /// Starts a replica's worker (`starting`), or waits for the package
    /// (`fetching`, starting the fetch if none runs).
    pub(super) fn start_replica(&mut self, a: &mut Agent, i: usize, out: &mut Out) {
        a.replicas[i].probe_failures = 0;
        match &a.package {
            Package::Fetching(_) => {
                let why = format!("fetching {}", crate::model::spec::redacted(&a.spec.package));
                set_life(&a.id, &mut a.replicas[i], Life::Fetching, why, out);
            }
            Package::Unresolved => {
                let fetch = self.new_fetch();
                a.package = Package::Fetching(fetch);
                out.fx.push(Effect::Fetch {
                    agent: a.id.clone(),
                    fetch,
                    package: a.spec.package.clone(),
                    sha256: a.spec.sha256.clone(),
                });
                let why = format!("fetching {}", crate::model::spec::redacted(&a.spec.package));
                set_life(&a.id, &mut a.replicas[i], Life::Fetching, why, out);
            }
            Package::Local | Package::Resolved(_) => {
                let index = a.replicas[i].index;
                let w = self.launch(&a.id, &a.spec, &a.package, index, out);
                set_life(
                    &a.id,
                    &mut a.replicas[i],
                    Life::Starting(w),
                    "starting",
                    out,
                );
            }
        }
    }

    /// A new worker for `spec`; the runtime starts it (`Effect::Spawn`).
    pub(super) fn launch(
        &mut self,
        agent: &AgentId,
        spec: &AgentSpec,
        package: &Package,
        replica: u32,
        out: &mut Out,
    ) -> Worker {
        let id = self.new_worker(agent);
        let (path, sha256) = match package.resolved() {
            Some(r) => (r.path.clone(), Some(r.sha256.clone())),
            None => (spec.package.clone(), spec.sha256.clone()),
        };
        out.fx.push(Effect::Spawn(Launch {
            worker: id,
            agent: agent.clone(),
            replica,
            package: path,
            sha256,
            env_vars: spec.env_vars.clone(),
            task_role: spec.task_role,
        }));
        Worker::new(id, out.clock.now, out.clock.wall)
    }

    /// Graceful stop: no more requests routed to it, in-flight ones finish
    /// (up to half the stop grace), then SIGTERM.
    pub(super) fn begin_stop(&mut self, a: &mut Agent, i: usize, after: AfterStop, out: &mut Out) {
        self.stop_after_drain(a, i, after, Duration::ZERO, out);
    }

    /// Graceful stop of a replica no longer wanted (scaled down): it keeps
    /// serving the sessions bound to it until they end, at most the agent's
    /// `session_drain_timeout`.
    pub(super) fn begin_stop_keeping_sessions(&mut self, a: &mut Agent, i: usize, out: &mut Out) {
        let keep = if a.tracks_sessions() {
            a.spec.session_drain_timeout
        } else {
            Duration::ZERO
        };
        self.stop_after_drain(a, i, AfterStop::Drop, keep, out);
    }

    fn stop_after_drain(
        &mut self,
        a: &mut Agent,
        i: usize,
        after: AfterStop,
        sessions: Duration,
        out: &mut Out,
    ) {
        let r = &mut a.replicas[i];
        let Some(w) = r.worker().cloned() else {
            return;
        };
        out.fx.push(Effect::Drain {
            worker: w.id,
            settle: Duration::ZERO,
            limit: self.cfg.stop_grace / 2,
            sessions,
        });
        set_life(&a.id, r, Life::Stopping(w, after), "stopping", out);
    }

    /// SIGTERM to the replica's worker now, SIGKILL after the stop grace.
    pub(super) fn terminate(&mut self, a: &mut Agent, i: usize, after: AfterStop, out: &mut Out) {
        let r = &mut a.replicas[i];
        if !matches!(r.life(), Life::Stopping(..)) {
            let Some(w) = r.worker().cloned() else {
                return;
            };
            set_life(&a.id, r, Life::Stopping(w, after), "stopping", out);
        }
        let stopping = matches!(r.life(), Life::Stopping(..));
        if let Some(w) = r.worker_mut().filter(|_| stopping) {
            self.sigterm_then_kill(w, out);
        }
    }

    pub(super) fn sigterm_then_kill(&self, w: &mut Worker, out: &mut Out) {
        if w.term_sent {
            return;
        }
        w.term_sent = true;
        out.fx.push(Effect::Signal {
            worker: w.id,
            signal: Signal::Term,
        });
        out.timer(
            self.cfg.stop_grace,
            crate::model::Timer::Kill { worker: w.id },
        );
    }

    /// SIGTERM to every old worker still draining.
    pub(super) fn stop_retiring(&self, a: &mut Agent, out: &mut Out) {
        for w in &mut a.retiring {
            self.sigterm_then_kill(w, out);
        }
    }

    /// Drops the agent; its remaining waiters get its last view.
    pub(super) fn forget(&mut self, mut a: Agent, out: &mut Out) {
        if let Some(r) = a.rollout.take() {
            for w in r.replicas.iter().filter_map(|x| x.worker()) {
                self.release(w.id, out);
            }
        }
        for w in std::mem::take(&mut a.retiring) {
            self.release(w.id, out);
        }
        let view = self.view_of(&a, &a.replicas[0], out.clock);
        for (w, _) in a.waiters.drain(..) {
            out.reply(w, Ok(Answer::Agent(Box::new(view.clone()))));
        }
        out.fx.push(Effect::Forget {
            agent: a.id.clone(),
        });
        out.log(&a.id, Level::Info, "agent removed");
    }

    /// Answers at once, or registers the wait (answered by `answer_waiters`).
    fn answer_now_or_later(
        &mut self,
        id: &AgentId,
        wait: Option<Wait>,
        waiter: WaiterId,
        out: &mut Out,
    ) {
        let Some(a) = self.agents.get(id) else {
            return;
        };
        let view = || Box::new(self.view_of(a, &a.replicas[0], out.clock));
        let answer = match wait {
            Some(Wait::Created { wait: false }) => Some(Answer::Put(view(), PutOutcome::Created)),
            Some(_) => None,
            None => Some(Answer::Agent(view())),
        };
        match (answer, wait) {
            (Some(answer), _) => out.reply(waiter, Ok(answer)),
            (None, Some(w)) => {
                if let Some(a) = self.agents.get_mut(id) {
                    a.waiters.push((waiter, w));
                }
            }
            (None, None) => {}
        }
    }

    /// Answers the waits that are over.
    pub(super) fn answer_waiters(&self, a: &mut Agent, out: &mut Out) {
        if a.waiters.is_empty() {
            return;
        }
        let settled = a.replicas.iter().all(|r| lifecycle::settled(r.state()))
            && !a
                .rollout
                .as_ref()
                .is_some_and(|r| r.in_progress() && !r.blue_green);
        let stopped = !a.replicas.iter().any(|r| r.worker().is_some());
        let rolling = a
            .rollout
            .as_ref()
            .filter(|r| r.in_progress())
            .map(|r| r.number);
        let current = a.rollout.as_ref().map(|r| r.number);
        let mut done = Vec::new();
        a.waiters.retain(|(w, wait)| {
            let over = match wait {
                Wait::Settled | Wait::Created { .. } => settled,
                Wait::Stopped => stopped,
                Wait::Removed => false,
                Wait::Rollout(n) => rolling != Some(*n),
            };
            if over {
                done.push((*w, *wait));
            }
            !over
        });
        for (w, wait) in done {
            let view = Box::new(self.view_of(a, &a.replicas[0], out.clock));
            let answer = match wait {
                // A later spec replaced this rollout before it ended: say so.
                Wait::Rollout(n) if current != Some(n) => Answer::Put(view, PutOutcome::Superseded),
                Wait::Rollout(_) => Answer::Put(view, PutOutcome::Rolling),
                Wait::Created { .. } => Answer::Put(view, PutOutcome::Created),
                _ => Answer::Agent(view),
            };
            out.reply(w, Ok(answer));
        }
    }

    pub(super) fn new_fetch(&mut self) -> crate::model::FetchId {
        self.next_fetch += 1;
        crate::model::FetchId(self.next_fetch)
    }
}
