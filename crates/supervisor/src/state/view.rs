//! What the outside sees of the state: one view per process for the API, and
//! the routing decision per agent for the proxy.

use super::agent::{Agent, Life, Replica, Rollout, RolloutState};
use super::limits::{self, Shares};
use super::Supervisor;
use crate::model::spec::redacted;
use crate::model::{
    AgentId, AgentSettings, AgentView, AutoscaleView, Clock, DrainingView, ProcessView,
    RolloutPhase, RolloutStatus, RolloutStrategy, RolloutView, SessionSettings, State, WorkerId,
};

/// One ready worker as the proxy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedWorker {
    pub worker: WorkerId,
    pub port: u16,
    pub process_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteDecision {
    /// Requests go to these workers.
    Ready(Vec<RoutedWorker>),
    /// Scaled to zero or starting after a wake: requests wait for it.
    Waking(State),
    /// Known but not routable: 503 with `Retry-After`.
    NotReady {
        state: State,
        retry_after_secs: u32,
        /// Why it failed (state `failed` only).
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteEntry {
    pub agent: AgentId,
    pub route: RouteDecision,
    /// In flight per replica (`None`: no limit).
    pub max_concurrency: Option<u32>,
    pub max_queue: u32,
    pub queue_timeout: std::time::Duration,
    /// Scales to zero and wakes on a request.
    pub wakes: bool,
    /// Its load is sampled (it autoscales, idles or keeps sessions).
    pub sampled: bool,
    /// How its sessions are kept, when they are tracked.
    pub sessions: Option<SessionSettings>,
    /// Workers kept only for the sessions bound to them (tracked agents).
    pub draining: Vec<RoutedWorker>,
}

impl Supervisor {
    /// Every process of every agent, in agent order.
    pub fn views(&self, clock: Clock) -> Vec<ProcessView> {
        let shares = self.shares();
        self.agents
            .values()
            .flat_map(|a| a.replicas.iter().map(move |r| (a, r)))
            .map(|(a, r)| self.view_with(a, r, &shares, clock))
            .collect()
    }

    /// Every agent as a whole.
    pub fn agent_views(&self) -> Vec<AgentView> {
        self.agents.values().map(agent_view).collect()
    }

    /// The routing table's content.
    pub fn routes(&self, clock: Clock) -> Vec<RouteEntry> {
        self.agents
            .values()
            .map(|a| {
                let tracked = a.tracks_sessions();
                RouteEntry {
                    agent: a.id.clone(),
                    route: route(a, clock),
                    max_concurrency: a.spec.max_concurrency,
                    max_queue: a.spec.max_queue,
                    queue_timeout: a.spec.queue_timeout,
                    wakes: a.spec.idle_timeout.is_some(),
                    sampled: a.spec.idle_timeout.is_some() || a.spec.autoscaled() || tracked,
                    sessions: tracked.then(|| a.spec.session_settings()),
                    draining: if tracked { draining(a) } else { Vec::new() },
                }
            })
            .collect()
    }

    pub(super) fn view_of(&self, a: &Agent, r: &Replica, clock: Clock) -> ProcessView {
        let mut shares = self.shares();
        // An agent being answered may be out of the map right now.
        if !self.agents.contains_key(&a.id) {
            add_agent(&mut shares, a);
        }
        self.view_with(a, r, &shares, clock)
    }

    fn shares(&self) -> Shares {
        let mut shares = Shares::default();
        for a in self.agents.values() {
            add_agent(&mut shares, a);
        }
        shares
    }

    fn view_with(&self, a: &Agent, r: &Replica, shares: &Shares, clock: Clock) -> ProcessView {
        let w = r.worker();
        ProcessView {
            process_id: a.id.process_id(r.index),
            agent_id: a.id.to_string(),
            replica: r.index,
            state: r.state(),
            port: w.and_then(|w| w.port),
            pid: w.and_then(|w| w.pid),
            worker: w.map(|w| w.id),
            url: format!("/agents/{}", a.id),
            package_path: redacted(&a.spec.package),
            package_id: w
                .and_then(|w| w.package_id.clone())
                .or_else(|| a.spec.package_id.clone()),
            sha256: a
                .package
                .resolved()
                .map(|r| r.sha256.clone())
                .or_else(|| a.spec.sha256.clone()),
            restart_policy: a.spec.restart_policy,
            max_restarts: a.spec.max_restarts,
            restarts: r.restarts,
            consecutive_failures: r.failures,
            last_error: r.last_error.as_ref().map(|f| f.message.clone()),
            last_error_class: r.last_error.as_ref().map(|f| f.class.clone()),
            last_exit: r.last_exit.clone(),
            state_since: r.since(),
            started_at: w.map(|w| w.started_at),
            ready_at: w.and_then(|w| w.ready_at),
            restart_at: match r.life() {
                Life::Backoff { until } => {
                    Some(clock.wall + until.saturating_duration_since(clock.now))
                }
                _ => None,
            },
            stable_at: match r.life() {
                Life::Ready(w) | Life::Unhealthy(w) => Some(w.started_at + a.spec.stable_period()),
                _ => None,
            },
            limits: limits::limits(&a.spec, shares, &self.cfg.budget),
            meta: w.and_then(|w| w.meta.clone()),
            origin: a.origin,
            package_file: a
                .package
                .resolved()
                .map(|r| r.path.clone())
                .or_else(|| (!a.spec.is_remote()).then(|| a.spec.package.clone())),
            current_package: a.current_package.clone(),
            previous_package: a.previous_package.clone(),
            rollout: a.rollout.as_ref().map(rollout_view),
            draining: a
                .retiring
                .iter()
                .map(|w| DrainingView {
                    pid: w.pid.unwrap_or(0),
                    port: w.port.unwrap_or(0),
                    term_sent: w.term_sent,
                    worker: w.id,
                })
                .collect(),
            settings: AgentSettings::of(&a.spec),
        }
    }
}

fn agent_view(a: &Agent) -> AgentView {
    let ready = a
        .replicas
        .iter()
        .filter(|r| r.state() == State::Ready)
        .count() as u32;
    let dropping = a
        .replicas
        .iter()
        .filter(|r| matches!(r.life(), Life::Stopping(_, super::agent::AfterStop::Drop)))
        .count() as u32;
    let idle = a.is_idle();
    AgentView {
        agent_id: a.id.to_string(),
        state: if ready > 0 {
            State::Ready
        } else if idle {
            State::Idle
        } else {
            a.state()
        },
        desired_replicas: if idle {
            0
        } else {
            a.replicas.len() as u32 - dropping
        },
        ready_replicas: ready,
        sessions_tracked: a.tracks_sessions(),
        autoscale: a.spec.autoscaled().then(|| AutoscaleView {
            min_replicas: a.spec.floor(),
            max_replicas: a.spec.ceiling(),
            target_concurrency: a.spec.target_concurrency.unwrap_or(1.0),
        }),
        idle_timeout: a.spec.idle_timeout,
        max_concurrency: a.spec.max_concurrency,
        processes: a
            .replicas
            .iter()
            .map(|r| a.id.process_id(r.index))
            .collect(),
        settings: AgentSettings::of(&a.spec),
    }
}

fn add_agent(shares: &mut Shares, a: &Agent) {
    let n = a
        .replicas
        .iter()
        .filter(|r| limits::counts(r.state()))
        .count();
    if n > 0 {
        shares.add(&a.spec, n as u32);
    }
}

/// Workers on their way out that still serve their sessions: the old
/// version's after a rollout, replicas scaled away, until SIGTERM.
fn draining(a: &Agent) -> Vec<RoutedWorker> {
    let retiring = a.retiring.iter().map(|w| (w, None));
    let stopping = a.replicas.iter().filter_map(|r| match r.life() {
        Life::Stopping(w, super::agent::AfterStop::Drop) => Some((w, Some(r.index))),
        _ => None,
    });
    retiring
        .chain(stopping)
        .filter(|(w, _)| !w.term_sent)
        .filter_map(|(w, index)| {
            let port = w.port?;
            let process_id = match index {
                Some(i) => a.id.process_id(i),
                None => a.id.process_id(0),
            };
            Some(RoutedWorker {
                worker: w.id,
                port,
                process_id,
            })
        })
        .collect()
}

fn route(a: &Agent, clock: Clock) -> RouteDecision {
    let ready: Vec<_> = a
        .replicas
        .iter()
        .filter_map(|r| match r.life() {
            Life::Ready(w) => w.port.map(|port| RoutedWorker {
                worker: w.id,
                port,
                process_id: a.id.process_id(r.index),
            }),
            _ => None,
        })
        .collect();
    if !ready.is_empty() {
        return RouteDecision::Ready(ready);
    }
    let first = &a.replicas[0];
    let state = first.state();
    let waking = matches!(
        state,
        State::Idle | State::Pending | State::Fetching | State::Starting
    );
    if a.spec.idle_timeout.is_some() && a.goal == super::agent::Goal::Run && waking {
        return RouteDecision::Waking(state);
    }
    RouteDecision::NotReady {
        state,
        retry_after_secs: match (first.life(), state) {
            (Life::Backoff { until }, _) => {
                until.saturating_duration_since(clock.now).as_secs().max(1) as u32
            }
            (_, State::Failed | State::Stopped | State::Crashed) => 30,
            _ => 1,
        },
        // Only the kind of failure: this reaches anyone who calls the agent.
        reason: first
            .last_error
            .as_ref()
            .filter(|_| state == State::Failed)
            .map(|f| f.class.to_string()),
    }
}

fn rollout_view(r: &Rollout) -> RolloutView {
    let (state, phase, failure) = match &r.state {
        RolloutState::Fetching => (RolloutStatus::Rolling, Some(RolloutPhase::Fetching), None),
        RolloutState::Starting => (RolloutStatus::Rolling, Some(RolloutPhase::Starting), None),
        RolloutState::RolledOut => (RolloutStatus::RolledOut, None, None),
        RolloutState::Failed { failure, .. } => (RolloutStatus::RolloutFailed, None, Some(failure)),
    };
    let next = r.replicas.first().and_then(|x| x.worker());
    RolloutView {
        state,
        phase,
        reason: failure.map(|f| f.message.clone()),
        reason_class: failure.map(|f| f.class.clone()),
        strategy: if r.blue_green {
            RolloutStrategy::BlueGreen
        } else {
            RolloutStrategy::InPlace
        },
        to_package: redacted(&r.spec.package),
        to_sha256: r
            .package
            .resolved()
            .map(|x| x.sha256.clone())
            .or_else(|| r.spec.sha256.clone()),
        started_at: r.started_at,
        finished_at: r.finished_at,
        duration_ms: r
            .finished_at
            .and_then(|f| f.duration_since(r.started_at).ok())
            .map(|d| d.as_millis() as u64),
        worker_pid: next.and_then(|w| w.pid),
        worker_port: next.and_then(|w| w.port),
    }
}
