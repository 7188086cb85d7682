//! The state machine's decisions, tested without processes, sockets or
//! sleeps: inputs in, effects out, time moved by hand. This module is the
//! harness; the scenarios are grouped by subject.

mod commands;
mod coverage;
mod crashes;
mod health;
mod reconcile;
mod rollouts;
mod scaling;
mod starting;
mod waits;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use super::{Budget, Config, RouteDecision, Supervisor};
use crate::model::{
    AgentId, AgentSpec, Answer, Clock, Command, CommandError, Effect, ErrorKind, ExitInfo,
    FetchFailure, FetchId, Health, Input, Origin, PutOutcome, Reply, Resolved, RestartPolicy,
    Signal, SpawnFailure, State, Timer, WaiterId, WorkerEvent, WorkerId,
};

/// A supervisor under test with a hand-moved clock.
pub(super) struct H {
    pub(super) s: Supervisor,
    pub(super) clock: Clock,
    pub(super) waiter: u64,
    /// Every effect so far.
    pub(super) log: Vec<Effect>,
    /// Transitions seen, for the coverage check.
    pub(super) seen: HashSet<(State, State)>,
}

pub(super) fn cfg() -> Config {
    Config {
        stop_grace: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(30),
        startup_timeout: Duration::from_secs(600),
        probe_failures: 3,
        budget: Budget {
            cpus: 2.0,
            memory_mb: 4096,
        },
    }
}

pub(super) fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

pub(super) fn local(agent: &str) -> AgentSpec {
    AgentSpec::new(agent, format!("/pkgs/{agent}"))
}

pub(super) fn remote(agent: &str) -> AgentSpec {
    AgentSpec::new(agent, format!("https://example.com/{agent}.apkg"))
}

pub(super) fn exit(code: Option<i32>, signal: Option<i32>, ran: f64) -> ExitInfo {
    ExitInfo {
        code,
        signal,
        at: SystemTime::UNIX_EPOCH,
        ran_seconds: ran,
    }
}

impl H {
    pub(super) fn new() -> H {
        H {
            s: Supervisor::new(cfg(), 7),
            clock: Clock {
                now: Instant::now(),
                wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            },
            waiter: 100,
            log: Vec::new(),
            seen: HashSet::new(),
        }
    }

    pub(super) fn input(&mut self, i: Input) -> Vec<Effect> {
        let fx = self.s.handle(i, self.clock);
        for e in &fx {
            if let Effect::Log(r) = e {
                assert!(
                    !r.message.starts_with("refused transition"),
                    "{}",
                    r.message
                );
                if let Some(t) = r.transition {
                    self.seen.insert(t);
                }
            }
        }
        self.log.extend(fx.iter().cloned());
        fx
    }

    /// Sends a command; returns its waiter and the effects.
    pub(super) fn cmd(&mut self, command: Command) -> (WaiterId, Vec<Effect>) {
        self.waiter += 1;
        let waiter = WaiterId(self.waiter);
        let fx = self.input(Input::Command { command, waiter });
        (waiter, fx)
    }

    pub(super) fn ev(&mut self, worker: WorkerId, event: WorkerEvent) -> Vec<Effect> {
        self.input(Input::Worker { worker, event })
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.clock = self.clock.after(d);
    }

    pub(super) fn spawn_spec(&mut self, spec: AgentSpec, wait: bool) -> (WaiterId, Vec<Effect>) {
        let agent = id(&spec.id);
        self.cmd(Command::Spawn {
            agent,
            spec,
            origin: Origin::Api,
            wait,
        })
    }

    /// Spawns a local agent and starts its worker (pid, port); returns the worker.
    pub(super) fn started(&mut self, agent: &str) -> WorkerId {
        let (_, fx) = self.spawn_spec(local(agent), false);
        let w = spawned(&fx).expect("a worker to start");
        self.ev(
            w,
            WorkerEvent::Spawned {
                pid: 1000,
                port: 9000,
            },
        );
        w
    }

    /// A ready agent; returns its worker.
    pub(super) fn ready(&mut self, agent: &str) -> WorkerId {
        let w = self.started(agent);
        self.ev(w, ready());
        assert_eq!(self.state(agent), State::Ready);
        w
    }

    pub(super) fn state(&self, agent: &str) -> State {
        self.view(agent).state
    }

    pub(super) fn view(&self, agent: &str) -> crate::model::ProcessView {
        self.s
            .views(self.clock)
            .into_iter()
            .find(|v| v.agent_id == agent)
            .unwrap_or_else(|| panic!("no agent {agent}"))
    }

    pub(super) fn exists(&self, agent: &str) -> bool {
        self.s.views(self.clock).iter().any(|v| v.agent_id == agent)
    }

    pub(super) fn route(&self, agent: &str) -> Option<RouteDecision> {
        self.s
            .routes(self.clock)
            .into_iter()
            .find(|r| r.agent.as_str() == agent)
            .map(|r| r.route)
    }

    pub(super) fn exits(
        &mut self,
        w: WorkerId,
        code: Option<i32>,
        signal: Option<i32>,
        ran: f64,
    ) -> Vec<Effect> {
        self.ev(
            w,
            WorkerEvent::Exited {
                exit: exit(code, signal, ran),
                errors: vec!["Traceback: boom".into()],
            },
        )
    }

    /// Fires the restart timer the last backoff set.
    pub(super) fn fire_restart(&mut self) -> Vec<Effect> {
        let (at, t) = self
            .log
            .iter()
            .rev()
            .find_map(|e| match e {
                Effect::Timer {
                    at,
                    timer: t @ Timer::Restart { .. },
                } => Some((*at, t.clone())),
                _ => None,
            })
            .expect("a restart timer");
        self.clock.now = at;
        self.input(Input::Timer(t))
    }
}

pub(super) fn ready() -> WorkerEvent {
    WorkerEvent::Ready(Health {
        package_id: Some("pkg@1".into()),
        meta: None,
    })
}

pub(super) fn spawned(fx: &[Effect]) -> Option<WorkerId> {
    fx.iter().find_map(|e| match e {
        Effect::Spawn(l) => Some(l.worker),
        _ => None,
    })
}

pub(super) fn reply_to(fx: &[Effect], w: WaiterId) -> Option<&Reply> {
    fx.iter().find_map(|e| match e {
        Effect::Reply { waiter, reply } if *waiter == w => Some(reply),
        _ => None,
    })
}

pub(super) fn replied_state(fx: &[Effect], w: WaiterId) -> Option<State> {
    match reply_to(fx, w)? {
        Ok(Answer::Agent(v)) | Ok(Answer::Put(v, _)) => Some(v.state),
        _ => None,
    }
}

pub(super) fn signals(fx: &[Effect], w: WorkerId) -> Vec<Signal> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Signal { worker, signal } if *worker == w => Some(*signal),
            _ => None,
        })
        .collect()
}

pub(super) fn has(fx: &[Effect], f: impl Fn(&Effect) -> bool) -> bool {
    fx.iter().any(f)
}

pub(super) fn restart_delay(fx: &[Effect], now: Instant) -> Option<Duration> {
    fx.iter().find_map(|e| match e {
        Effect::Timer {
            at,
            timer: Timer::Restart { .. },
        } => Some(at.saturating_duration_since(now)),
        _ => None,
    })
}

pub(super) fn fetch_of(fx: &[Effect]) -> Option<FetchId> {
    fx.iter().find_map(|e| match e {
        Effect::Fetch { fetch, .. } => Some(*fetch),
        _ => None,
    })
}

pub(super) fn resolved() -> Resolved {
    Resolved {
        path: "/srv/par/downloads/abc.apkg".into(),
        sha256: "ab".repeat(32),
        downloaded: true,
        bytes: 1234,
    }
}

pub(super) fn put(h: &mut H, spec: AgentSpec, wait: bool) -> (WaiterId, Vec<Effect>) {
    let agent = id(&spec.id);
    h.cmd(Command::Put {
        agent,
        spec,
        wait,
        base: None,
    })
}

pub(super) fn v2(agent: &str) -> AgentSpec {
    let mut s = local(agent);
    s.package = format!("/pkgs/{agent}-v2");
    s
}
