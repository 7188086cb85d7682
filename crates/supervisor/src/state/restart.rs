//! After a worker exits: stopped as asked, started again as asked, a package
//! failure (no restart storm), or a crash — restarted with a capped, jittered
//! backoff as the restart policy says, the failure count reset after a
//! stable run. Fetch failures back off the same way.

use std::time::Duration;

use super::agent::{AfterStop, Agent, Failure, Goal, Life, Package};
use super::lifecycle::Replica;
use super::{set_life, Out, Supervisor};
use crate::model::{AgentId, ExitInfo, FailureClass, FetchFailure, Level, Resolved, State, Timer};

impl Supervisor {
    pub(super) fn exited(
        &mut self,
        a: &mut Agent,
        i: usize,
        mut exit: ExitInfo,
        errors: Vec<String>,
        out: &mut Out,
    ) {
        let Some(w) = a.replicas[i].worker().cloned() else {
            return;
        };
        // A run is counted from when the worker was started here, as the
        // API's `stable_at` is (the process itself may start later, after
        // its package is staged): once the API shows a stable run, its exit
        // is one.
        if let Ok(d) = exit.at.duration_since(w.started_at) {
            exit.ran_seconds = exit.ran_seconds.max(d.as_secs_f64());
        }
        self.release(w.id, out);
        let r = &mut a.replicas[i];
        r.last_exit = Some(exit.clone());
        let what = exit.describe();
        let after = match *r.life() {
            Life::Stopping(_, after) => Some(after),
            _ => None,
        };
        match after {
            Some(AfterStop::Rest) => {
                set_life(&a.id, r, Life::Stopped, format!("worker {what}"), out);
                return;
            }
            Some(AfterStop::Start { count }) => {
                if count {
                    r.restarts += 1;
                    r.failures = 0;
                }
                return self.start_replica(a, i, out);
            }
            Some(AfterStop::Drop) => {
                set_life(
                    &a.id,
                    r,
                    Life::Stopped,
                    format!("worker {what}; scaled down"),
                    out,
                );
                a.replicas.remove(i);
                return;
            }
            Some(AfterStop::Idle) => {
                set_life(&a.id, r, Life::Idle, format!("worker {what}; idle"), out);
                return;
            }
            Some(AfterStop::Decide) | None => {}
        }
        if a.goal != Goal::Run {
            set_life(&a.id, r, Life::Crashed, format!("worker {what}"), out);
            set_life(&a.id, r, Life::Stopped, "the agent is being stopped", out);
            return;
        }
        if self.take_over(a, i, &what, out) {
            return;
        }
        if exit.code == Some(par_contract::exit::PORT_IN_USE) && still_starting(a, i) {
            // Someone took the port between its choice and the bind: another
            // port, at once; no failure of the agent's.
            out.log(
                &a.id,
                Level::Warn,
                format!("worker {what}: its port was taken; starting on another"),
            );
            return self.start_replica(a, i, out);
        }
        if exit.is_package_failure() {
            return package_failure(a, i, &w.health_error, &errors, out);
        }
        self.crashed(a, i, &exit, w.kill_reason.clone(), &errors, out);
    }

    /// An exit that is not a package failure: `crashed`, then a restart
    /// after a backoff, `stopped` (policy), or `failed` (too many in a row).
    fn crashed(
        &mut self,
        a: &mut Agent,
        i: usize,
        exit: &ExitInfo,
        kill_reason: Option<Failure>,
        errors: &[String],
        out: &mut Out,
    ) {
        let failed = !exit.success() || kill_reason.is_some();
        let mut failure = kill_reason.unwrap_or_else(|| {
            Failure::new(
                FailureClass::of_exit(exit),
                format!("worker {}", exit.describe()),
            )
        });
        let r = &mut a.replicas[i];
        if failed {
            let lines = &errors[errors.len().saturating_sub(3)..];
            if !lines.is_empty() {
                failure.message = format!("{}: {}", failure.message, lines.join(" | "));
            }
            r.last_error = Some(failure.clone());
        }
        set_life(&a.id, r, Life::Crashed, failure.message.clone(), out);
        if exit.ran_seconds >= a.spec.stable_period().as_secs_f64() {
            r.failures = 0;
        }
        if !a.spec.restart_policy.restarts_after(!failed) || self.shutdown {
            if !failed {
                let why = "exited cleanly; restart policy does not restart it";
                set_life(&a.id, r, Life::Stopped, why, out);
            }
            return;
        }
        if let Some(max) = a.spec.max_restarts {
            if r.failures >= max {
                let msg = format!(
                    "gave up after {} restarts in a row; last: {}",
                    r.failures, failure.message
                );
                r.last_error = Some(Failure::new(FailureClass::GaveUp, msg.clone()));
                set_life(&a.id, r, Life::Failed, msg, out);
                return;
            }
        }
        self.schedule_restart(a, i, out);
    }

    /// Every replica of `a` starts again from a clean slate (a restart, a
    /// replaced spec): a running worker is stopped first and started at its
    /// exit (`count`: as a restart); one in backoff or crashed goes through
    /// `stopped` (`why`), so the transition table holds.
    pub(super) fn start_all_again(&mut self, a: &mut Agent, count: bool, why: &str, out: &mut Out) {
        a.goal = Goal::Run;
        for i in 0..a.replicas.len() {
            let r = &mut a.replicas[i];
            r.failures = 0;
            r.epoch += 1;
            let (state, has_worker) = (r.state(), r.worker().is_some());
            if let Some(then) = r.after_stop_mut() {
                *then = AfterStop::Start { count };
            } else if has_worker {
                self.begin_stop(a, i, AfterStop::Start { count }, out);
            } else {
                if matches!(state, State::Backoff | State::Crashed) {
                    set_life(&a.id, r, Life::Stopped, why, out);
                }
                self.start_replica(a, i, out);
            }
        }
    }

    /// `backoff`, and a timer to start the replica again.
    pub(super) fn schedule_restart(&mut self, a: &mut Agent, i: usize, out: &mut Out) {
        let r = &mut a.replicas[i];
        let delay = a.spec.backoff().delay(r.failures, self.rng.f64());
        r.restarts += 1;
        let why = format!("restart #{} in {} ms", r.restarts, delay.as_millis());
        back_off(&a.id, r, delay, why, out);
    }

    /// A fetch of the agent's package ended (a rollout's fetch goes to the rollout).
    pub(super) fn fetched(
        &mut self,
        a: &mut Agent,
        fetch: crate::model::FetchId,
        result: Result<Resolved, FetchFailure>,
        out: &mut Out,
    ) {
        if a.package != Package::Fetching(fetch) {
            return self.rollout_fetched(a, fetch, result, out);
        }
        let waiting: Vec<usize> = (0..a.replicas.len())
            .filter(|&i| a.replicas[i].state() == State::Fetching)
            .collect();
        match result {
            Ok(r) => {
                out.log(&a.id, Level::Info, fetched_message(&a.spec.package, &r));
                a.package = Package::Resolved(r);
                if a.goal == Goal::Run {
                    for i in waiting {
                        self.start_replica(a, i, out);
                    }
                }
            }
            Err(f) => {
                a.package = Package::Unresolved;
                let failure = Failure::new(
                    FailureClass::FetchFailed,
                    format!("fetch failed: {}", f.message),
                );
                for i in waiting {
                    a.replicas[i].last_error = Some(failure.clone());
                    if f.transient && a.goal == Goal::Run {
                        self.fetch_backoff(a, i, &f.message, out);
                    } else {
                        set_life(
                            &a.id,
                            &mut a.replicas[i],
                            Life::Failed,
                            failure.message.clone(),
                            out,
                        );
                    }
                }
            }
        }
    }

    /// A transient fetch failure: `backoff`, then fetch again.
    fn fetch_backoff(&mut self, a: &mut Agent, i: usize, message: &str, out: &mut Out) {
        let r = &mut a.replicas[i];
        let delay = a.spec.backoff().delay(r.failures, self.rng.f64());
        let why = format!(
            "fetch failed (will retry in {} ms): {message}",
            delay.as_millis()
        );
        back_off(&a.id, r, delay, why, out);
    }
}

/// One more failure: `backoff` for `delay`, and a timer to start the replica
/// again (a fresh epoch, so an older timer finds nothing to do).
fn back_off(agent: &AgentId, r: &mut Replica, delay: Duration, why: String, out: &mut Out) {
    r.failures += 1;
    r.epoch += 1;
    let until = out.clock.now + delay;
    if set_life(agent, r, Life::Backoff { until }, why, out) {
        out.timer(
            delay,
            Timer::Restart {
                agent: agent.clone(),
                replica: r.index,
                epoch: r.epoch,
            },
        );
    }
}

fn still_starting(a: &Agent, i: usize) -> bool {
    a.replicas[i].state() == State::Starting
}

/// Exit 78: the package cannot load. `failed` at once, with the worker's own
/// report and its last error lines as the reason.
fn package_failure(
    a: &mut Agent,
    i: usize,
    health_error: &Option<String>,
    errors: &[String],
    out: &mut Out,
) {
    let mut detail: Vec<&str> = health_error.iter().map(String::as_str).collect();
    detail.extend(errors.iter().map(String::as_str));
    let reason = if detail.is_empty() {
        "the package could not be loaded".to_string()
    } else {
        detail.join(" | ")
    };
    let code = par_contract::exit::PACKAGE_FAILURE;
    let msg = format!("package failure (exit {code}): {reason}");
    let r = &mut a.replicas[i];
    r.last_error = Some(Failure::new(FailureClass::PackageFailure, msg.clone()));
    // Through `crashed` unless the worker never got past starting.
    if r.state() != State::Starting {
        let what = r
            .last_exit
            .as_ref()
            .map_or_else(|| "exited".to_string(), ExitInfo::describe);
        set_life(&a.id, r, Life::Crashed, what, out);
    }
    set_life(&a.id, r, Life::Failed, msg, out);
}

pub(super) fn fetched_message(package: &str, r: &Resolved) -> String {
    format!(
        "package {} {} ({} bytes, sha256 {})",
        crate::model::spec::redacted(package),
        if r.downloaded {
            "downloaded"
        } else {
            "found in the cache"
        },
        r.bytes,
        r.sha256
    )
}
