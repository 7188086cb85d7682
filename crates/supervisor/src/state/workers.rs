//! Events of worker processes: started, ready, health reports, liveness
//! probes, startup timeouts, the memory watchdog — routed to the replica,
//! the rollout or the retiring worker they belong to.

use super::agent::{AfterStop, Agent, Failure, Life};
use super::{set_life, Out, Supervisor};
use crate::model::{
    Effect, FailureClass, Health, Level, Signal, SpawnFailure, State, WorkerEvent, WorkerId,
};

/// Where a worker sits in its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum At {
    Replica(usize),
    Rollout(usize),
    Retiring(usize),
}

pub(super) fn locate(a: &Agent, worker: WorkerId) -> Option<At> {
    if let Some(i) = a
        .replicas
        .iter()
        .position(|r| r.worker_id() == Some(worker))
    {
        return Some(At::Replica(i));
    }
    if let Some(i) = a.rollout.as_ref().and_then(|r| {
        r.replicas
            .iter()
            .position(|x| x.worker_id() == Some(worker))
    }) {
        return Some(At::Rollout(i));
    }
    a.retiring
        .iter()
        .position(|w| w.id == worker)
        .map(At::Retiring)
}

impl Supervisor {
    pub(super) fn worker_event(&mut self, worker: WorkerId, event: WorkerEvent, out: &mut Out) {
        // Events of a worker already let go of are stale.
        let Some(agent) = self.owners.get(&worker).cloned() else {
            return;
        };
        self.with_agent(&agent, out, |s, a, out| match locate(a, worker) {
            Some(At::Replica(i)) => s.replica_event(a, i, event, out),
            Some(At::Rollout(i)) => s.rollout_event(a, i, event, out),
            Some(At::Retiring(i)) => s.retiring_event(a, i, event, out),
            None => {}
        });
    }

    fn replica_event(&mut self, a: &mut Agent, i: usize, event: WorkerEvent, out: &mut Out) {
        match event {
            WorkerEvent::Spawned { pid, port } => {
                if let Some(w) = a.replicas[i].worker_mut() {
                    w.pid = Some(pid);
                    w.port = Some(port);
                }
                out.log(
                    &a.id,
                    Level::Info,
                    format!("worker pid {pid} on port {port}"),
                );
            }
            WorkerEvent::SpawnFailed { reason, kind } => self.spawn_failed(a, i, reason, kind, out),
            WorkerEvent::Ready(h) => self.replica_ready(a, i, h, out),
            WorkerEvent::HealthError(msg) => {
                let r = &mut a.replicas[i];
                if let Some(w) = r.worker_mut() {
                    w.health_error = Some(msg.clone());
                }
                r.last_error = Some(Failure::new(FailureClass::HealthError, msg.clone()));
                out.log(&a.id, Level::Warn, format!("worker health: {msg}"));
            }
            WorkerEvent::StartupTimeout => {
                let secs = self.cfg.startup_timeout.as_secs();
                if let Some(w) = a.replicas[i].worker_mut() {
                    let reason = format!("not ready within {secs} s");
                    w.kill_reason = Some(Failure::new(FailureClass::StartupTimeout, reason));
                    out.fx.push(Effect::Signal {
                        worker: w.id,
                        signal: Signal::Kill,
                    });
                }
            }
            WorkerEvent::Probe { ok, failures } => self.probe(a, i, ok, failures, out),
            WorkerEvent::Exited { exit, errors } => self.exited(a, i, exit, errors, out),
        }
    }

    /// The worker could not be started: no free port (transient: back off and
    /// try again) or no worker program (the agent fails).
    fn spawn_failed(
        &mut self,
        a: &mut Agent,
        i: usize,
        reason: String,
        kind: SpawnFailure,
        out: &mut Out,
    ) {
        if let Some(w) = a.replicas[i].worker() {
            let id = w.id;
            self.release(id, out);
        }
        let r = &mut a.replicas[i];
        match kind {
            SpawnFailure::NoPort => {
                r.last_error = Some(Failure::new(FailureClass::NoFreePort, reason.clone()));
                if set_life(&a.id, r, Life::Crashed, reason, out) {
                    self.schedule_restart(a, i, out);
                }
            }
            SpawnFailure::Exec => {
                r.last_error = Some(Failure::new(FailureClass::SpawnFailed, reason.clone()));
                set_life(&a.id, r, Life::Failed, reason, out);
            }
        }
    }

    fn replica_ready(&mut self, a: &mut Agent, i: usize, h: Health, out: &mut Out) {
        let r = &mut a.replicas[i];
        if r.state() != State::Starting {
            return;
        }
        let Some(w) = r.worker_mut() else {
            return;
        };
        w.ready_at = Some(out.clock.wall);
        w.package_id = h.package_id;
        w.meta = h.meta;
        w.health_error = None;
        let ms = out
            .clock
            .now
            .saturating_duration_since(w.started)
            .as_millis();
        let w = w.clone();
        set_life(
            &a.id,
            r,
            Life::Ready(w),
            format!("ready after {ms} ms"),
            out,
        );
        self.record_package(a, out);
    }

    fn probe(&mut self, a: &mut Agent, i: usize, ok: bool, failures: u32, out: &mut Out) {
        let limit = self.cfg.probe_failures;
        let r = &mut a.replicas[i];
        r.probe_failures = failures;
        match (r.life(), ok) {
            (Life::Unhealthy(w), true) => {
                let w = w.clone();
                set_life(&a.id, r, Life::Ready(w), "liveness probe passed", out);
            }
            (Life::Ready(w), false) => {
                let w = w.clone();
                let why = format!("liveness probe failed ({failures} in a row)");
                set_life(&a.id, r, Life::Unhealthy(w), why, out);
            }
            _ => {}
        }
        if !ok && failures >= limit && r.state() == State::Unhealthy {
            if let Some(w) = r.worker_mut() {
                let why = format!("{failures} liveness probes failed in a row");
                w.kill_reason = Some(Failure::new(FailureClass::LivenessProbeFailed, why));
            }
            self.terminate(a, i, AfterStop::Decide, out);
        }
    }

    pub(super) fn drained(&mut self, worker: WorkerId, in_flight: usize, out: &mut Out) {
        let Some(agent) = self.owners.get(&worker).cloned() else {
            return;
        };
        self.with_agent(&agent, out, |s, a, out| match locate(a, worker) {
            Some(At::Replica(i)) if a.replicas[i].state() == State::Stopping => {
                let after = match *a.replicas[i].life() {
                    Life::Stopping(_, after) => after,
                    _ => AfterStop::Rest,
                };
                s.terminate(a, i, after, out);
            }
            Some(At::Retiring(i)) => {
                let mut w = a.retiring[i].clone();
                let msg = format!(
                    "old worker {} drained ({in_flight} in flight); stopping it",
                    w.describe()
                );
                s.sigterm_then_kill(&mut w, out);
                a.retiring[i] = w;
                out.log(&a.id, Level::Info, msg);
            }
            _ => {}
        });
    }

    pub(super) fn over_memory(
        &mut self,
        worker: WorkerId,
        rss_mb: u64,
        limit_mb: u64,
        out: &mut Out,
    ) {
        let reason = format!(
            "memory {rss_mb} MB stayed over the limit of {limit_mb} MB; restarted by the watchdog"
        );
        self.watchdog_kill(worker, FailureClass::MemoryLimit, reason, out);
    }

    /// The disk watchdog's restart: like the memory one, with its reason.
    pub(super) fn over_disk(
        &mut self,
        worker: WorkerId,
        used_mb: Option<u64>,
        limit_mb: u64,
        out: &mut Out,
    ) {
        let reason = match used_mb {
            Some(used) => format!(
                "the agent's folder holds {used} MB, over its disk limit of {limit_mb} MB; \
                 restarted by the watchdog with its tmp cleared"
            ),
            None => format!(
                "the agent's folder (disk limit {limit_mb} MB) could not be counted three \
                 times in a row; restarted by the watchdog with its tmp cleared"
            ),
        };
        self.watchdog_kill(worker, FailureClass::DiskLimit, reason, out);
    }

    /// Kills a running replica's worker for a watchdog, recording the class
    /// and reason its failure is reported with.
    fn watchdog_kill(
        &mut self,
        worker: WorkerId,
        class: FailureClass,
        reason: String,
        out: &mut Out,
    ) {
        let Some(agent) = self.owners.get(&worker).cloned() else {
            return;
        };
        self.with_agent(&agent, out, |_, a, out| {
            let Some(At::Replica(i)) = locate(a, worker) else {
                return;
            };
            if let Some(w) = a.replicas[i].worker_mut() {
                w.kill_reason = Some(Failure::new(class.clone(), reason.clone()));
                out.fx.push(Effect::Signal {
                    worker,
                    signal: Signal::Kill,
                });
                out.log(&a.id, Level::Warn, reason);
            }
        });
    }
}
