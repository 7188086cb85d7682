//! Blue/green rollouts: the new generation starts next to the serving one;
//! once every new replica is ready the route switches in one publish, the old
//! workers drain their in-flight requests and streams, then stop. A new
//! generation that never gets ready leaves the old one serving. With nothing
//! serving, the spec is replaced in place.

use std::time::Duration;

use super::agent::{Agent, Failure, Goal, Life, Package, Replica, Rollout, RolloutState};
use super::restart::fetched_message;
use super::{set_life, Out, Supervisor};
use crate::model::spec::{only_scaling, redacted, same_deployment};
use crate::model::{
    AgentSpec, Effect, FailureClass, FetchFailure, FetchId, Level, PackageRecord, PutOutcome,
    Resolved, Signal, State, WorkerEvent,
};

impl Supervisor {
    /// Rolls `a` to `spec`: blue/green when it serves, else in place.
    pub(super) fn roll(&mut self, a: &mut Agent, spec: AgentSpec, out: &mut Out) -> PutOutcome {
        if same_deployment(a.heading_for(), &spec) && a.goal != Goal::Remove {
            return PutOutcome::Unchanged;
        }
        let settled = a.rollout.as_ref().is_none_or(|r| !r.in_progress());
        if settled && a.goal == Goal::Run && a.serving() && only_scaling(&a.spec, &spec) {
            self.rescale(a, spec, out);
            return PutOutcome::Scaled;
        }
        self.cancel_rollout(a, "superseded by a newer spec", out);
        let serving = a.serving();
        if serving && same_deployment(&a.spec, &spec) {
            // Set back to what serves while a rollout was on its way: nothing to start.
            return PutOutcome::Rolling;
        }
        self.next_rollout += 1;
        let mut rollout = Rollout {
            number: self.next_rollout,
            spec: spec.clone(),
            package: Package::for_spec(&spec),
            state: RolloutState::Starting,
            blue_green: serving,
            taken_over: false,
            replicas: Vec::new(),
            started: out.clock.now,
            started_at: out.clock.wall,
            finished_at: None,
        };
        let sha = spec
            .sha256
            .as_deref()
            .map(|s| format!(" sha256 {}", &s[..12.min(s.len())]))
            .unwrap_or_default();
        let how = if serving {
            "blue/green"
        } else {
            "in place: nothing serves"
        };
        out.log(
            &a.id,
            Level::Info,
            format!("rollout to {}{sha} ({how})", redacted(&spec.package)),
        );
        if serving {
            if let Package::Unresolved = rollout.package {
                let fetch = self.new_fetch();
                rollout.package = Package::Fetching(fetch);
                rollout.state = RolloutState::Fetching;
                out.fx.push(Effect::Fetch {
                    agent: a.id.clone(),
                    fetch,
                    package: spec.package.clone(),
                    sha256: spec.sha256.clone(),
                });
                a.rollout = Some(rollout);
            } else {
                a.rollout = Some(rollout);
                self.start_next(a, out);
            }
            return PutOutcome::Rolling;
        }
        a.rollout = Some(rollout);
        self.replace_in_place(a, spec, out);
        PutOutcome::Rolling
    }

    /// A new size or routing settings for the running processes: replicas
    /// are added or drained (those without sessions first), nothing restarts.
    fn rescale(&mut self, a: &mut Agent, spec: AgentSpec, out: &mut Out) {
        let from = a.replicas.len() as u32;
        a.spec = spec;
        let n = if a.spec.autoscaled() {
            from.clamp(a.spec.floor(), a.spec.ceiling())
        } else {
            a.spec.floor()
        };
        if n != from {
            out.log(
                &a.id,
                Level::Info,
                format!("scaled: {from} -> {n} replicas (spec changed)"),
            );
        }
        if !a.is_idle() {
            self.scale_to(a, n, out);
        }
    }

    /// Nothing serves: the new spec replaces the old one; a running worker is
    /// stopped first and the new one started at its exit.
    fn replace_in_place(&mut self, a: &mut Agent, spec: AgentSpec, out: &mut Out) {
        a.package = Package::for_spec(&spec);
        a.spec = spec;
        self.start_all_again(a, false, "spec replaced", out);
    }

    /// Starts the rollout's new generation next to the serving one: as many
    /// replicas as the new spec wants (an autoscaled agent keeps its size
    /// within the new bounds).
    fn start_next(&mut self, a: &mut Agent, out: &mut Out) {
        let Some(ro) = a.rollout.as_ref() else { return };
        let (spec, package) = (ro.spec.clone(), ro.package.clone());
        let n = if spec.autoscaled() {
            (a.replicas.len() as u32).clamp(spec.floor(), spec.ceiling())
        } else {
            spec.floor()
        };
        let mut indices: Vec<u32> = a.replicas.iter().map(|r| r.index).collect();
        indices.truncate(n as usize);
        while indices.len() < n as usize {
            let next = self.free_index(a, &indices);
            indices.push(next);
        }
        let mut replicas = Vec::with_capacity(n as usize);
        for index in indices {
            let w = self.launch(&a.id, &spec, &package, index, out);
            let mut new = Replica::new(index, out.clock.wall);
            set_life(
                &a.id,
                &mut new,
                Life::Starting(w),
                "rollout: new worker",
                out,
            );
            replicas.push(new);
        }
        if let Some(ro) = a.rollout.as_mut() {
            ro.replicas = replicas;
            ro.state = RolloutState::Starting;
        }
    }

    pub(super) fn rollout_fetched(
        &mut self,
        a: &mut Agent,
        fetch: FetchId,
        result: Result<Resolved, FetchFailure>,
        out: &mut Out,
    ) {
        let Some(ro) = a
            .rollout
            .as_mut()
            .filter(|r| r.package == Package::Fetching(fetch) && r.state == RolloutState::Fetching)
        else {
            return;
        };
        match result {
            Ok(res) => {
                let msg = format!("rollout: {}", fetched_message(&ro.spec.package, &res));
                ro.package = Package::Resolved(res);
                out.log(&a.id, Level::Info, msg);
                self.start_next(a, out);
            }
            Err(f) => {
                let reason = Failure::new(
                    FailureClass::FetchFailed,
                    format!("fetch failed: {}", f.message),
                );
                self.rollout_failed(a, reason, f.transient, out);
            }
        }
    }

    /// Events of the new generation's workers (not serving yet).
    pub(super) fn rollout_event(
        &mut self,
        a: &mut Agent,
        i: usize,
        event: WorkerEvent,
        out: &mut Out,
    ) {
        let Some(ro) = a.rollout.as_mut() else { return };
        let r = &mut ro.replicas[i];
        match event {
            WorkerEvent::Spawned { pid, port } => {
                if let Some(w) = r.worker_mut() {
                    w.pid = Some(pid);
                    w.port = Some(port);
                }
                let msg = format!("rollout: new worker pid {pid} on port {port}");
                out.log(&a.id, Level::Info, msg);
            }
            WorkerEvent::SpawnFailed { reason, kind } => {
                let retryable = kind == crate::model::SpawnFailure::NoPort;
                let class = if retryable {
                    FailureClass::NoFreePort
                } else {
                    FailureClass::SpawnFailed
                };
                self.rollout_failed(a, Failure::new(class, reason), retryable, out);
            }
            WorkerEvent::Ready(h) => {
                let starting = r.state() == State::Starting;
                if let Some(w) = r.worker_mut().filter(|_| starting) {
                    w.ready_at = Some(out.clock.wall);
                    w.package_id = h.package_id;
                    w.meta = h.meta;
                    w.health_error = None;
                    let w = w.clone();
                    set_life(&a.id, r, Life::Ready(w), "rollout: new worker ready", out);
                }
                if ro.replicas.iter().all(|x| x.state() == State::Ready) {
                    self.switch(a, out);
                }
            }
            WorkerEvent::HealthError(msg) => {
                if let Some(w) = r.worker_mut() {
                    w.health_error = Some(msg.clone());
                }
                out.log(
                    &a.id,
                    Level::Warn,
                    format!("rollout: new worker health: {msg}"),
                );
            }
            WorkerEvent::StartupTimeout => {
                if let Some(w) = r.worker_mut() {
                    let secs = self.cfg.startup_timeout.as_secs();
                    w.kill_reason = Some(Failure::new(
                        FailureClass::StartupTimeout,
                        format!("not ready within {secs} s"),
                    ));
                    out.fx.push(Effect::Signal {
                        worker: w.id,
                        signal: Signal::Kill,
                    });
                }
            }
            // Liveness starts to matter once it serves.
            WorkerEvent::Probe { .. } => {}
            WorkerEvent::Exited { exit, errors } => {
                let w = r.worker().cloned();
                self.rollout_exited(a, w, &exit, errors, out);
            }
        }
    }

    /// A new worker exited before the switch: the rollout failed, the old
    /// version keeps serving.
    fn rollout_exited(
        &mut self,
        a: &mut Agent,
        w: Option<crate::state::agent::Worker>,
        exit: &crate::model::ExitInfo,
        errors: Vec<String>,
        out: &mut Out,
    ) {
        let (kill, health) = w
            .map(|w| (w.kill_reason, w.health_error))
            .unwrap_or_default();
        let retryable = !exit.is_package_failure() && kill.is_none();
        let class = match (&kill, exit.is_package_failure()) {
            (Some(k), _) => k.class.clone(),
            (None, true) => FailureClass::PackageFailure,
            (None, false) => FailureClass::of_exit(exit),
        };
        let mut reason = match (&kill, exit.is_package_failure()) {
            (Some(k), _) => k.message.clone(),
            (None, true) => format!(
                "package failure (exit {})",
                par_contract::exit::PACKAGE_FAILURE
            ),
            (None, false) => format!("the new worker {} before it was ready", exit.describe()),
        };
        let mut detail: Vec<String> = health.into_iter().collect();
        detail.extend(errors);
        if !detail.is_empty() {
            reason = format!("{reason}: {}", detail.join(" | "));
        }
        self.rollout_failed(a, Failure::new(class, reason), retryable, out);
    }

    /// Every new replica is ready: the route switches to them in one publish,
    /// and the old workers drain, then stop.
    fn switch(&mut self, a: &mut Agent, out: &mut Out) {
        let Some(ro) = a.rollout.as_mut() else { return };
        ro.state = RolloutState::RolledOut;
        ro.finished_at = Some(out.clock.wall);
        let took = out.clock.now.saturating_duration_since(ro.started);
        a.spec = ro.spec.clone();
        a.package = ro.package.clone();
        let new = std::mem::take(&mut ro.replicas);
        let old = std::mem::replace(&mut a.replicas, new);
        let to = describe_all(a.replicas.iter().filter_map(|r| r.worker()));
        let from = describe_all(old.iter().filter_map(|r| r.worker()));
        let from = if from.is_empty() {
            String::new()
        } else {
            format!(" from {from}")
        };
        self.record_package(a, out);
        out.log(
            &a.id,
            Level::Info,
            format!("rolled out to {to}{from} in {} ms", took.as_millis()),
        );
        for r in old {
            if let Some(w) = r.worker().cloned() {
                self.retire(a, w, out);
            }
        }
    }

    /// Drains an old worker: no new requests reach it (the route moved); once
    /// its in-flight requests and streams are done, or the drain time is up, it stops.
    fn retire(&mut self, a: &mut Agent, w: crate::state::agent::Worker, out: &mut Out) {
        out.fx.push(Effect::StopProbe { worker: w.id });
        let sessions = if a.tracks_sessions() {
            a.spec.session_drain_timeout
        } else {
            Duration::ZERO
        };
        out.fx.push(Effect::Drain {
            worker: w.id,
            settle: Duration::from_millis(100),
            limit: self.cfg.drain_timeout,
            sessions,
        });
        a.retiring.push(w);
    }

    /// Events of a retiring worker: only its exit matters.
    pub(super) fn retiring_event(
        &mut self,
        a: &mut Agent,
        i: usize,
        event: WorkerEvent,
        out: &mut Out,
    ) {
        if let WorkerEvent::Exited { exit, .. } = event {
            let w = a.retiring.remove(i);
            self.release(w.id, out);
            let msg = format!(
                "old worker {} {} after the rollout",
                w.describe(),
                exit.describe()
            );
            out.log(&a.id, Level::Info, msg);
        }
    }

    /// The old worker died during a blue/green rollout and nothing else
    /// serves: the new generation, already on its way, takes over instead of
    /// a restart of the old spec.
    pub(super) fn take_over(&mut self, a: &mut Agent, i: usize, what: &str, out: &mut Out) -> bool {
        let ongoing = a
            .rollout
            .as_ref()
            .is_some_and(|r| r.blue_green && r.in_progress() && !r.taken_over);
        let others_serve = a
            .replicas
            .iter()
            .enumerate()
            .any(|(j, r)| j != i && r.life().serving());
        if !ongoing || others_serve || self.shutdown {
            return false;
        }
        let r = &mut a.replicas[i];
        set_life(
            &a.id,
            r,
            Life::Crashed,
            format!("worker {what} during a rollout"),
            out,
        );
        let old = std::mem::take(&mut a.replicas);
        for r in &old {
            if let Some(w) = r.worker().cloned() {
                self.retire(a, w, out);
            }
        }
        let Some(ro) = a.rollout.as_mut() else {
            return true;
        };
        ro.taken_over = true;
        a.spec = ro.spec.clone();
        a.package = ro.package.clone();
        a.replicas = std::mem::take(&mut ro.replicas);
        if a.replicas.is_empty() {
            // Still fetching: the new generation starts when the package is here.
            a.replicas = old
                .iter()
                .map(|r| Replica::new(r.index, out.clock.wall))
                .collect();
            for j in 0..a.replicas.len() {
                self.start_replica(a, j, out);
            }
        }
        let who = describe_all(a.replicas.iter().filter_map(|r| r.worker()));
        let who = if who.is_empty() {
            "the rollout's new version takes over".to_string()
        } else {
            format!("the rollout's worker {who} takes over")
        };
        out.log(&a.id, Level::Info, who);
        true
    }

    pub(super) fn rollout_failed(
        &mut self,
        a: &mut Agent,
        failure: Failure,
        retryable: bool,
        out: &mut Out,
    ) {
        let reason = failure.message.clone();
        let serving = a.serving();
        let Some(ro) = a.rollout.as_mut() else { return };
        let abandoned: Vec<_> = ro
            .replicas
            .drain(..)
            .filter_map(|r| r.worker().map(|w| w.id))
            .collect();
        ro.state = RolloutState::Failed { failure, retryable };
        ro.finished_at = Some(out.clock.wall);
        let msg = if ro.blue_green && serving {
            format!("rollout failed, the old worker keeps serving: {reason}")
        } else {
            format!("rollout failed: {reason}")
        };
        for w in abandoned {
            out.fx.push(Effect::Signal {
                worker: w,
                signal: Signal::Kill,
            });
            self.release(w, out);
        }
        out.log(&a.id, Level::Error, msg);
    }

    /// Stops a rollout in progress (its new workers are killed).
    pub(super) fn cancel_rollout(&mut self, a: &mut Agent, why: &str, out: &mut Out) {
        if a.rollout.as_ref().is_some_and(|r| r.in_progress()) {
            let failure = Failure::new(FailureClass::Cancelled, format!("cancelled: {why}"));
            self.rollout_failed(a, failure, false, out);
        }
    }

    /// Keeps `current_package` / `previous_package` up to date with what serves.
    pub(super) fn record_package(&self, a: &mut Agent, out: &mut Out) {
        let Some(w) = a.replicas.iter().find_map(|r| match r.life() {
            Life::Ready(w) => Some(w),
            _ => None,
        }) else {
            return;
        };
        let rec = PackageRecord {
            package: redacted(&a.spec.package),
            package_id: w.package_id.clone(),
            sha256: a
                .package
                .resolved()
                .map(|r| r.sha256.clone())
                .or_else(|| a.spec.sha256.clone()),
            since: w.ready_at.unwrap_or(out.clock.wall),
        };
        let same = a.current_package.as_ref().is_some_and(|c| {
            c.package == rec.package && c.package_id == rec.package_id && c.sha256 == rec.sha256
        });
        if !same {
            a.previous_package = a.current_package.replace(rec);
        }
    }
}

/// In-place rollouts (and taken-over ones) end with the agent: ready, or failed.
pub(super) fn settle_in_place(a: &mut Agent, out: &mut Out) {
    let Some(ro) = a
        .rollout
        .as_mut()
        .filter(|r| (!r.blue_green || r.taken_over) && r.in_progress())
    else {
        return;
    };
    if a.replicas.iter().all(|r| r.state() == State::Ready) {
        ro.state = RolloutState::RolledOut;
        ro.finished_at = Some(out.clock.wall);
    } else if let Some(r) = a.replicas.iter().find(|r| r.state() == State::Failed) {
        ro.state = RolloutState::Failed {
            failure: r
                .last_error
                .clone()
                .unwrap_or_else(|| Failure::new(FailureClass::Failed, "the agent failed")),
            retryable: false,
        };
        ro.finished_at = Some(out.clock.wall);
    }
}

fn describe_all<'a>(workers: impl Iterator<Item = &'a crate::state::agent::Worker>) -> String {
    workers.map(|w| w.describe()).collect::<Vec<_>>().join(", ")
}
