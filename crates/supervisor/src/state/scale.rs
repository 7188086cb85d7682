//! How many replicas an agent runs: a fixed count, or the autoscaler's
//! choice from the load (in-flight plus queued requests per replica, averaged
//! over a short window to scale up and a longer one to scale down, so it does
//! not flap); zero after `idle_timeout` without a request, and woken by the
//! next one.

use std::time::Duration;

use super::agent::{AfterStop, Agent, Goal, Life, Replica};
use super::load::Load;
use super::{set_life, Out, Supervisor};
use crate::model::{Effect, Level, MetricEvent, State};

/// Scale-up looks at this much recent load.
const UP_WINDOW: Duration = Duration::from_secs(2);

/// Replicas wanted for `concurrency` requests at `target` per replica.
pub fn wanted(concurrency: f64, target: f64) -> u32 {
    (concurrency / target).ceil().max(0.0) as u32
}

impl Supervisor {
    /// The load of an agent, sampled by the runtime: decides its size, and
    /// whether it has been idle long enough to scale to zero.
    pub(super) fn load(
        &mut self,
        a: &mut Agent,
        in_flight: usize,
        queued: usize,
        idle_for: Duration,
        out: &mut Out,
    ) {
        if a.goal != Goal::Run || a.rollout.as_ref().is_some_and(|r| r.in_progress()) {
            return;
        }
        let now = out.clock.now;
        if let Some(idle) = a.spec.idle_timeout {
            // A failed agent keeps showing its failure until it is restarted.
            let failed = a.state() == State::Failed;
            if in_flight == 0 && queued == 0 && idle_for >= idle && !a.is_idle() && !failed {
                return self.go_idle(a, idle_for, out);
            }
        }
        let (Some(target), true) = (a.spec.target_concurrency, a.spec.autoscaled()) else {
            return;
        };
        if a.is_idle() {
            return;
        }
        let window = a.spec.scale_down_window.max(UP_WINDOW);
        a.load.push(now, (in_flight + queued) as f64, window);
        let current = a.replicas.len() as u32;
        let (floor, ceiling) = (a.spec.floor(), a.spec.ceiling());
        let up = a
            .load
            .mean(now, UP_WINDOW)
            .map_or(current, |m| wanted(m, target));
        let settled = a
            .load
            .last_change
            .is_none_or(|t| now.saturating_duration_since(t) >= a.spec.scale_down_window);
        let down = a
            .load
            .mean(now, a.spec.scale_down_window)
            .filter(|_| settled)
            .map_or(current, |m| wanted(m, target));
        let next = if up > current {
            up
        } else if down < current {
            down
        } else {
            current
        }
        .clamp(floor, ceiling);
        if next != current {
            let per = a.load.mean(now, UP_WINDOW).unwrap_or(0.0);
            let why = format!(
                "autoscale: {current} -> {next} replicas (load {per:.1} in flight, target {target} per replica)"
            );
            out.log(&a.id, Level::Info, why);
            out.fx.push(Effect::Metric(MetricEvent::Autoscaled {
                agent: a.id.clone(),
                from: current,
                to: next,
            }));
            a.load.last_change = Some(now);
            self.scale_to(a, next, out);
        }
    }

    /// Adds or removes replicas to reach `n` (the highest indices go first).
    pub(super) fn scale_to(&mut self, a: &mut Agent, n: u32, out: &mut Out) {
        let n = n.max(1) as usize;
        // A replica on its way out (dropped, still stopping) is not one of the `n`.
        while a.replicas.iter().filter(|r| !dropping(r)).count() < n {
            let index = self.free_index(a, &[]);
            a.replicas.push(Replica::new(index, out.clock.wall));
            let i = a.replicas.len() - 1;
            self.start_replica(a, i, out);
        }
        // The highest indices go first, those with sessions bound last.
        while a.replicas.iter().filter(|r| !dropping(r)).count() > n {
            let has_sessions =
                |r: &Replica| r.worker().is_some_and(|w| a.with_sessions.contains(&w.id));
            let Some(i) = (1..a.replicas.len())
                .rev()
                .filter(|&i| !dropping(&a.replicas[i]))
                .min_by_key(|&i| has_sessions(&a.replicas[i]))
            else {
                break;
            };
            if a.replicas[i].worker().is_some() {
                self.begin_stop_keeping_sessions(a, i, out);
            } else {
                a.replicas[i].epoch += 1;
                a.replicas.remove(i);
            }
        }
    }

    /// The lowest replica index the agent does not use (nor `taken`) whose
    /// process id names no other agent (`par-a-2` of agent `a` against an
    /// agent `a-2`).
    pub(super) fn free_index(&self, a: &Agent, taken: &[u32]) -> u32 {
        (1..)
            .find(|n| {
                !a.replicas.iter().any(|r| r.index == *n)
                    && !taken.contains(n)
                    && !self
                        .agents
                        .keys()
                        .any(|other| other.as_str() == format!("{}-{n}", a.id))
            })
            .unwrap_or(u32::MAX)
    }

    /// No request for `idle_timeout`: every replica stops; the agent stays
    /// routable and the next request wakes it.
    fn go_idle(&mut self, a: &mut Agent, idle_for: Duration, out: &mut Out) {
        out.log(
            &a.id,
            Level::Info,
            format!(
                "no request for {} ms: scaling to zero",
                idle_for.as_millis()
            ),
        );
        a.load = Load::default();
        for i in (1..a.replicas.len()).rev() {
            if a.replicas[i].worker().is_some() {
                self.begin_stop(a, i, AfterStop::Drop, out);
            } else {
                a.replicas.remove(i);
            }
        }
        let r = &mut a.replicas[0];
        r.epoch += 1;
        if r.worker().is_some() {
            self.begin_stop(a, 0, AfterStop::Idle, out);
        } else if !matches!(r.life(), Life::Idle) {
            if matches!(r.state(), State::Backoff | State::Crashed | State::Fetching) {
                set_life(&a.id, r, Life::Stopped, "scaling to zero", out);
            }
            set_life(&a.id, r, Life::Idle, "scaled to zero", out);
        }
    }

    /// A request for an idle agent: start it again (the proxy holds the
    /// request until it is ready).
    pub(super) fn wake(&mut self, a: &mut Agent, out: &mut Out) {
        if a.goal != Goal::Run || !a.is_idle() {
            return;
        }
        out.log(&a.id, Level::Info, "woken by a request");
        out.fx.push(Effect::Metric(MetricEvent::Woken {
            agent: a.id.clone(),
        }));
        a.load = Load::default();
        self.start_replica(a, 0, out);
        let floor = a.spec.floor();
        self.scale_to(a, floor, out);
    }
}

fn dropping(r: &Replica) -> bool {
    matches!(r.life(), Life::Stopping(_, AfterStop::Drop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_rounds_up() {
        assert_eq!(wanted(0.0, 2.0), 0);
        assert_eq!(wanted(0.1, 2.0), 1);
        assert_eq!(wanted(6.0, 2.0), 3);
        assert_eq!(wanted(6.1, 2.0), 4);
    }
}
