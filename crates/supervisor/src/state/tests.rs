//! The state machine's decisions, tested without processes, sockets or
//! sleeps: inputs in, effects out, time moved by hand.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use super::lifecycle::ALLOWED_TRANSITIONS;
use super::{Budget, Config, Route, Supervisor};
use crate::model::{
    AgentId, AgentSpec, Answer, Clock, Command, CommandError, Effect, ErrorKind, ExitInfo,
    FetchFailure, FetchId, Health, Input, Origin, PutOutcome, Reply, Resolved, RestartPolicy,
    Signal, SpawnFailure, State, Timer, WaiterId, WorkerEvent, WorkerId,
};

/// A supervisor under test with a hand-moved clock.
struct H {
    s: Supervisor,
    clock: Clock,
    waiter: u64,
    /// Every effect so far.
    log: Vec<Effect>,
    /// Transitions seen, for the coverage check.
    seen: HashSet<(State, State)>,
}

fn cfg() -> Config {
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

fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn local(agent: &str) -> AgentSpec {
    AgentSpec::new(agent, format!("/pkgs/{agent}"))
}

fn remote(agent: &str) -> AgentSpec {
    AgentSpec::new(agent, format!("https://example.com/{agent}.apkg"))
}

fn exit(code: Option<i32>, signal: Option<i32>, ran: f64) -> ExitInfo {
    ExitInfo {
        code,
        signal,
        at: SystemTime::UNIX_EPOCH,
        ran_seconds: ran,
    }
}

impl H {
    fn new() -> H {
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

    fn input(&mut self, i: Input) -> Vec<Effect> {
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
        self.log.extend(fx.iter().map(clone_effect));
        fx
    }

    /// Sends a command; returns its waiter and the effects.
    fn cmd(&mut self, command: Command) -> (WaiterId, Vec<Effect>) {
        self.waiter += 1;
        let waiter = WaiterId(self.waiter);
        let fx = self.input(Input::Command { command, waiter });
        (waiter, fx)
    }

    fn ev(&mut self, worker: WorkerId, event: WorkerEvent) -> Vec<Effect> {
        self.input(Input::Worker { worker, event })
    }

    fn advance(&mut self, d: Duration) {
        self.clock = self.clock.after(d);
    }

    fn spawn_spec(&mut self, spec: AgentSpec, wait: bool) -> (WaiterId, Vec<Effect>) {
        let agent = id(&spec.id);
        self.cmd(Command::Spawn {
            agent,
            spec,
            origin: Origin::Api,
            wait,
        })
    }

    /// Spawns a local agent and starts its worker (pid, port); returns the worker.
    fn started(&mut self, agent: &str) -> WorkerId {
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
    fn ready(&mut self, agent: &str) -> WorkerId {
        let w = self.started(agent);
        self.ev(w, ready());
        assert_eq!(self.state(agent), State::Ready);
        w
    }

    fn state(&self, agent: &str) -> State {
        self.view(agent).state
    }

    fn view(&self, agent: &str) -> crate::model::ProcessView {
        self.s
            .views(self.clock)
            .into_iter()
            .find(|v| v.agent_id == agent)
            .unwrap_or_else(|| panic!("no agent {agent}"))
    }

    fn exists(&self, agent: &str) -> bool {
        self.s.views(self.clock).iter().any(|v| v.agent_id == agent)
    }

    fn route(&self, agent: &str) -> Option<Route> {
        self.s
            .routes(self.clock)
            .into_iter()
            .find(|r| r.agent.as_str() == agent)
            .map(|r| r.route)
    }

    fn exits(
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
    fn fire_restart(&mut self) -> Vec<Effect> {
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

fn clone_effect(e: &Effect) -> Effect {
    match e {
        Effect::Spawn(l) => Effect::Spawn(l.clone()),
        Effect::Signal { worker, signal } => Effect::Signal {
            worker: *worker,
            signal: *signal,
        },
        Effect::Release { worker } => Effect::Release { worker: *worker },
        Effect::StopProbe { worker } => Effect::StopProbe { worker: *worker },
        Effect::Drain {
            worker,
            settle,
            limit,
        } => Effect::Drain {
            worker: *worker,
            settle: *settle,
            limit: *limit,
        },
        Effect::Fetch {
            agent,
            fetch,
            package,
            sha256,
        } => Effect::Fetch {
            agent: agent.clone(),
            fetch: *fetch,
            package: package.clone(),
            sha256: sha256.clone(),
        },
        Effect::Timer { at, timer } => Effect::Timer {
            at: *at,
            timer: timer.clone(),
        },
        Effect::Log(r) => Effect::Log(r.clone()),
        Effect::Reply { waiter, reply } => Effect::Reply {
            waiter: *waiter,
            reply: reply.clone(),
        },
        Effect::Forget { agent } => Effect::Forget {
            agent: agent.clone(),
        },
    }
}

fn ready() -> WorkerEvent {
    WorkerEvent::Ready(Health {
        package_id: Some("pkg@1".into()),
        meta: None,
    })
}

fn spawned(fx: &[Effect]) -> Option<WorkerId> {
    fx.iter().find_map(|e| match e {
        Effect::Spawn(l) => Some(l.worker),
        _ => None,
    })
}

fn reply_to(fx: &[Effect], w: WaiterId) -> Option<&Reply> {
    fx.iter().find_map(|e| match e {
        Effect::Reply { waiter, reply } if *waiter == w => Some(reply),
        _ => None,
    })
}

fn replied_state(fx: &[Effect], w: WaiterId) -> Option<State> {
    match reply_to(fx, w)? {
        Ok(Answer::Agent(v)) | Ok(Answer::Put(v, _)) => Some(v.state),
        _ => None,
    }
}

fn signals(fx: &[Effect], w: WorkerId) -> Vec<Signal> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Signal { worker, signal } if *worker == w => Some(*signal),
            _ => None,
        })
        .collect()
}

fn has(fx: &[Effect], f: impl Fn(&Effect) -> bool) -> bool {
    fx.iter().any(f)
}

fn restart_delay(fx: &[Effect], now: Instant) -> Option<Duration> {
    fx.iter().find_map(|e| match e {
        Effect::Timer {
            at,
            timer: Timer::Restart { .. },
        } => Some(at.saturating_duration_since(now)),
        _ => None,
    })
}

fn fetch_of(fx: &[Effect]) -> Option<FetchId> {
    fx.iter().find_map(|e| match e {
        Effect::Fetch { fetch, .. } => Some(*fetch),
        _ => None,
    })
}

fn resolved() -> Resolved {
    Resolved {
        path: "/home/downloads/abc.apkg".into(),
        sha256: "ab".repeat(32),
        downloaded: true,
        bytes: 1234,
    }
}

// ---- starting ----------------------------------------------------------

#[test]
fn a_local_agent_starts_then_gets_ready_and_routable() {
    let mut h = H::new();
    let (_, fx) = h.spawn_spec(local("a"), false);
    assert_eq!(h.state("a"), State::Starting);
    let w = spawned(&fx).unwrap();
    assert!(matches!(
        h.route("a"),
        Some(Route::NotReady {
            state: State::Starting,
            retry_after_secs: 1,
            ..
        })
    ));
    h.ev(
        w,
        WorkerEvent::Spawned {
            pid: 42,
            port: 9001,
        },
    );
    h.ev(w, ready());
    let v = h.view("a");
    assert_eq!(
        (v.state, v.pid, v.port),
        (State::Ready, Some(42), Some(9001))
    );
    assert_eq!(v.package_id.as_deref(), Some("pkg@1"));
    assert!(
        matches!(h.route("a"), Some(Route::Ready(u)) if u[0].port == 9001 && u[0].process_id == "par-a")
    );
}

#[test]
fn a_remote_agent_is_fetched_first() {
    let mut h = H::new();
    let (_, fx) = h.spawn_spec(remote("r"), false);
    assert_eq!(h.state("r"), State::Fetching);
    assert!(spawned(&fx).is_none());
    let f = fetch_of(&fx).unwrap();
    let fx = h.input(Input::Fetched {
        agent: id("r"),
        fetch: f,
        result: Ok(resolved()),
    });
    let launch = fx.iter().find_map(|e| match e {
        Effect::Spawn(l) => Some(l.clone()),
        _ => None,
    });
    assert_eq!(launch.unwrap().package, "/home/downloads/abc.apkg");
    assert_eq!(h.state("r"), State::Starting);
    assert_eq!(h.view("r").sha256.as_deref(), Some(&*"ab".repeat(32)));
}

#[test]
fn a_transient_fetch_failure_backs_off_and_fetches_again() {
    let mut h = H::new();
    let (_, fx) = h.spawn_spec(remote("r"), false);
    let f = fetch_of(&fx).unwrap();
    let fx = h.input(Input::Fetched {
        agent: id("r"),
        fetch: f,
        result: Err(FetchFailure {
            message: "HTTP 503".into(),
            transient: true,
        }),
    });
    assert_eq!(h.state("r"), State::Backoff);
    assert!(restart_delay(&fx, h.clock.now).is_some());
    assert!(h.view("r").last_error.unwrap().contains("HTTP 503"));
    let fx = h.fire_restart();
    assert_eq!(h.state("r"), State::Fetching);
    assert_ne!(fetch_of(&fx), Some(f), "a new fetch");
}

#[test]
fn a_lasting_fetch_failure_fails_the_agent() {
    let mut h = H::new();
    let (_, fx) = h.spawn_spec(remote("r"), false);
    let f = fetch_of(&fx).unwrap();
    h.input(Input::Fetched {
        agent: id("r"),
        fetch: f,
        result: Err(FetchFailure {
            message: "sha256 mismatch".into(),
            transient: false,
        }),
    });
    assert_eq!(h.state("r"), State::Failed);
    assert_eq!(
        h.view("r").last_error_class.as_deref(),
        Some("fetch_failed")
    );
}

#[test]
fn a_stale_fetch_result_is_ignored() {
    let mut h = H::new();
    h.spawn_spec(remote("r"), false);
    let fx = h.input(Input::Fetched {
        agent: id("r"),
        fetch: FetchId(999),
        result: Ok(resolved()),
    });
    assert!(spawned(&fx).is_none());
    assert_eq!(h.state("r"), State::Fetching);
}

#[test]
fn spawning_an_existing_agent_is_a_conflict() {
    let mut h = H::new();
    h.started("a");
    let (w, fx) = h.spawn_spec(local("a"), false);
    assert!(matches!(
        reply_to(&fx, w),
        Some(Err(CommandError {
            kind: ErrorKind::Conflict,
            ..
        }))
    ));
}

#[test]
fn no_free_port_backs_off_instead_of_failing() {
    let mut h = H::new();
    let (_, fx) = h.spawn_spec(local("a"), false);
    let w = spawned(&fx).unwrap();
    let fx = h.ev(
        w,
        WorkerEvent::SpawnFailed {
            reason: "no free port in the worker range 8001-8001".into(),
            kind: SpawnFailure::NoPort,
        },
    );
    assert!(has(
        &fx,
        |e| matches!(e, Effect::Release { worker } if *worker == w)
    ));
    assert_eq!(h.state("a"), State::Backoff);
    assert_eq!(
        h.view("a").last_error_class.as_deref(),
        Some("no_free_port")
    );
    let fx = h.fire_restart();
    assert!(spawned(&fx).is_some());
}

#[test]
fn a_worker_program_that_cannot_start_fails_the_agent() {
    let mut h = H::new();
    let (_, fx) = h.spawn_spec(local("a"), false);
    let w = spawned(&fx).unwrap();
    h.ev(
        w,
        WorkerEvent::SpawnFailed {
            reason: "failed to start the worker (/nope worker): not found".into(),
            kind: SpawnFailure::Exec,
        },
    );
    assert_eq!(h.state("a"), State::Failed);
}

// ---- crashes, restarts and backoff --------------------------------------

#[test]
fn a_crash_restarts_after_the_first_delay() {
    let mut h = H::new();
    let w = h.ready("a");
    let fx = h.exits(w, None, Some(9), 5.0);
    assert!(has(
        &fx,
        |e| matches!(e, Effect::Release { worker } if *worker == w)
    ));
    let v = h.view("a");
    assert_eq!(v.state, State::Backoff);
    assert!(
        v.last_error.as_deref().unwrap().contains("SIGKILL"),
        "{:?}",
        v.last_error
    );
    assert_eq!(
        v.last_error_class.as_deref(),
        Some("killed by signal SIGKILL")
    );
    let d = restart_delay(&fx, h.clock.now).unwrap();
    assert!(
        d >= Duration::from_millis(160) && d <= Duration::from_millis(240),
        "{d:?}"
    );
    let fx = h.fire_restart();
    assert!(spawned(&fx).is_some());
    assert_eq!(h.state("a"), State::Starting);
    assert_eq!(h.view("a").restarts, 1);
}

#[test]
fn crashes_in_a_row_double_the_delay_up_to_the_cap() {
    let mut h = H::new();
    let mut spec = local("a");
    spec.max_restart_delay_seconds = 1.0;
    let (_, fx) = h.spawn_spec(spec, false);
    let mut w = spawned(&fx).unwrap();
    let mut delays = Vec::new();
    for _ in 0..6 {
        h.ev(w, WorkerEvent::Spawned { pid: 7, port: 9000 });
        let fx = h.exits(w, Some(1), None, 0.1);
        delays.push(restart_delay(&fx, h.clock.now).unwrap().as_secs_f64());
        w = spawned(&h.fire_restart()).unwrap();
    }
    for (d, expect) in delays.iter().zip([0.2, 0.4, 0.8, 1.0, 1.0, 1.0]) {
        assert!((d / expect - 1.0).abs() <= 0.2 + 1e-9, "{delays:?}");
    }
    assert_eq!(h.view("a").consecutive_failures, 6);
}

#[test]
fn a_stable_run_resets_the_failure_count() {
    let mut h = H::new();
    let (_, fx) = h.spawn_spec(local("a"), false);
    let mut w = spawned(&fx).unwrap();
    for _ in 0..3 {
        let fx = h.exits(w, Some(1), None, 0.5);
        assert!(restart_delay(&fx, h.clock.now).is_some());
        w = spawned(&h.fire_restart()).unwrap();
    }
    assert_eq!(h.view("a").consecutive_failures, 3);
    // This one ran past the stable period (30 s): the next delay is the first again.
    let fx = h.exits(w, Some(1), None, 31.0);
    let d = restart_delay(&fx, h.clock.now).unwrap();
    assert!(d <= Duration::from_millis(240), "{d:?}");
    assert_eq!(h.view("a").consecutive_failures, 1);
}

#[test]
fn a_clean_exit_under_on_failure_stays_stopped() {
    let mut h = H::new();
    let w = h.ready("a");
    let fx = h.exits(w, Some(0), None, 3.0);
    assert_eq!(h.state("a"), State::Stopped);
    assert!(restart_delay(&fx, h.clock.now).is_none());
    assert!(h.view("a").last_error.is_none());
}

#[test]
fn a_clean_exit_under_always_restarts() {
    let mut h = H::new();
    let mut spec = local("a");
    spec.restart_policy = RestartPolicy::Always;
    let (_, fx) = h.spawn_spec(spec, false);
    let w = spawned(&fx).unwrap();
    let fx = h.exits(w, Some(0), None, 3.0);
    assert_eq!(h.state("a"), State::Backoff);
    assert!(restart_delay(&fx, h.clock.now).is_some());
}

#[test]
fn never_leaves_a_crashed_agent_crashed() {
    let mut h = H::new();
    let mut spec = local("a");
    spec.restart_policy = RestartPolicy::Never;
    let (_, fx) = h.spawn_spec(spec, false);
    let w = spawned(&fx).unwrap();
    let fx = h.exits(w, Some(3), None, 1.0);
    assert_eq!(h.state("a"), State::Crashed);
    assert!(restart_delay(&fx, h.clock.now).is_none());
    assert!(h.view("a").last_error.unwrap().contains("code 3"));
}

#[test]
fn max_restarts_gives_up() {
    let mut h = H::new();
    let mut spec = local("a");
    spec.max_restarts = Some(2);
    let (_, fx) = h.spawn_spec(spec, false);
    let mut w = spawned(&fx).unwrap();
    for _ in 0..2 {
        h.exits(w, Some(1), None, 0.1);
        w = spawned(&h.fire_restart()).unwrap();
    }
    let fx = h.exits(w, Some(1), None, 0.1);
    assert_eq!(h.state("a"), State::Failed);
    assert!(restart_delay(&fx, h.clock.now).is_none());
    assert!(h
        .view("a")
        .last_error
        .unwrap()
        .starts_with("gave up after 2 restarts"));
}

#[test]
fn a_package_failure_while_starting_fails_at_once() {
    let mut h = H::new();
    let w = h.started("a");
    h.ev(
        w,
        WorkerEvent::HealthError("agent.yaml: name is required".into()),
    );
    let fx = h.exits(w, Some(78), None, 0.3);
    assert_eq!(h.state("a"), State::Failed);
    assert!(restart_delay(&fx, h.clock.now).is_none());
    let err = h.view("a").last_error.unwrap();
    assert!(err.starts_with("package failure (exit 78)"), "{err}");
    assert!(
        err.contains("name is required") && err.contains("Traceback: boom"),
        "{err}"
    );
    assert!(!h.seen.contains(&(State::Starting, State::Crashed)));
    assert!(matches!(
        h.route("a"),
        Some(Route::NotReady {
            reason: Some(_),
            retry_after_secs: 30,
            ..
        })
    ));
}

#[test]
fn a_package_failure_after_ready_goes_through_crashed() {
    let mut h = H::new();
    let w = h.ready("a");
    h.exits(w, Some(78), None, 9.0);
    assert_eq!(h.state("a"), State::Failed);
    assert!(h.seen.contains(&(State::Ready, State::Crashed)));
    assert!(h.seen.contains(&(State::Crashed, State::Failed)));
}

#[test]
fn a_stale_backoff_timer_does_nothing() {
    let mut h = H::new();
    let w = h.ready("a");
    h.exits(w, Some(1), None, 1.0);
    // A restart by hand moves the epoch on: the old timer is stale.
    h.cmd(Command::Restart {
        agent: id("a"),
        wait: false,
    });
    assert_eq!(h.state("a"), State::Starting);
    let before = h.log.len();
    let fx = h.input(Input::Timer(Timer::Restart {
        agent: id("a"),
        replica: 0,
        epoch: 1,
    }));
    assert!(spawned(&fx).is_none(), "{:?}", &h.log[before..]);
}

// ---- health ---------------------------------------------------------------

#[test]
fn liveness_failures_make_it_unhealthy_then_restart_it() {
    let mut h = H::new();
    let w = h.ready("a");
    h.ev(
        w,
        WorkerEvent::Probe {
            ok: false,
            failures: 1,
        },
    );
    assert_eq!(h.state("a"), State::Unhealthy);
    assert!(matches!(h.route("a"), Some(Route::NotReady { .. })));
    h.ev(
        w,
        WorkerEvent::Probe {
            ok: true,
            failures: 0,
        },
    );
    assert_eq!(h.state("a"), State::Ready);
    h.ev(
        w,
        WorkerEvent::Probe {
            ok: false,
            failures: 1,
        },
    );
    h.ev(
        w,
        WorkerEvent::Probe {
            ok: false,
            failures: 2,
        },
    );
    let fx = h.ev(
        w,
        WorkerEvent::Probe {
            ok: false,
            failures: 3,
        },
    );
    assert_eq!(signals(&fx, w), [Signal::Term]);
    assert_eq!(h.state("a"), State::Stopping);
    let fx = h.exits(w, None, Some(15), 60.0);
    assert_eq!(h.state("a"), State::Backoff);
    assert!(restart_delay(&fx, h.clock.now).is_some());
    assert_eq!(
        h.view("a").last_error_class.as_deref(),
        Some("liveness_probe_failed")
    );
}

#[test]
fn a_startup_timeout_kills_and_names_the_reason() {
    let mut h = H::new();
    let w = h.started("a");
    let fx = h.ev(w, WorkerEvent::StartupTimeout);
    assert_eq!(signals(&fx, w), [Signal::Kill]);
    h.exits(w, None, Some(9), 600.0);
    let v = h.view("a");
    assert!(v.last_error.unwrap().contains("not ready within 600 s"));
    assert_eq!(v.state, State::Backoff);
}

#[test]
fn the_memory_watchdog_restarts_with_its_reason() {
    let mut h = H::new();
    let w = h.ready("a");
    let fx = h.input(Input::OverMemory {
        worker: w,
        rss_mb: 300,
        limit_mb: 256,
    });
    assert_eq!(signals(&fx, w), [Signal::Kill]);
    h.exits(w, None, Some(9), 40.0);
    let v = h.view("a");
    assert_eq!(v.last_error_class.as_deref(), Some("memory_limit"));
    assert!(v
        .last_error
        .unwrap()
        .contains("300 MB stayed over the limit of 256 MB"));
}

#[test]
fn a_health_error_while_starting_is_shown() {
    let mut h = H::new();
    let w = h.started("a");
    h.ev(w, WorkerEvent::HealthError("import failed".into()));
    assert_eq!(h.view("a").last_error.as_deref(), Some("import failed"));
    assert_eq!(h.state("a"), State::Starting);
}

// ---- stop, restart, remove --------------------------------------------------

#[test]
fn stop_drains_then_terminates_and_answers_at_the_exit() {
    let mut h = H::new();
    let w = h.ready("a");
    let (waiter, fx) = h.cmd(Command::Stop { agent: id("a") });
    assert_eq!(h.state("a"), State::Stopping);
    assert!(has(
        &fx,
        |e| matches!(e, Effect::Drain { worker, .. } if *worker == w)
    ));
    assert!(reply_to(&fx, waiter).is_none(), "answered before the exit");
    assert!(matches!(
        h.route("a"),
        Some(Route::NotReady {
            state: State::Stopping,
            ..
        })
    ));
    let fx = h.input(Input::Drained {
        worker: w,
        in_flight: 0,
    });
    assert_eq!(signals(&fx, w), [Signal::Term]);
    assert!(has(
        &fx,
        |e| matches!(e, Effect::Timer { timer: Timer::Kill { worker }, .. } if *worker == w)
    ));
    let fx = h.exits(w, Some(0), None, 10.0);
    assert_eq!(h.state("a"), State::Stopped);
    assert_eq!(replied_state(&fx, waiter), Some(State::Stopped));
}

#[test]
fn a_worker_that_ignores_sigterm_is_killed_after_the_grace() {
    let mut h = H::new();
    let w = h.ready("a");
    h.cmd(Command::Stop { agent: id("a") });
    h.input(Input::Drained {
        worker: w,
        in_flight: 0,
    });
    h.advance(Duration::from_secs(10));
    let fx = h.input(Input::Timer(Timer::Kill { worker: w }));
    assert_eq!(signals(&fx, w), [Signal::Kill]);
    h.exits(w, None, Some(9), 20.0);
    // Once gone, a late kill timer does nothing.
    let fx = h.input(Input::Timer(Timer::Kill { worker: w }));
    assert!(signals(&fx, w).is_empty());
}

#[test]
fn stopping_an_agent_in_backoff_answers_at_once() {
    let mut h = H::new();
    let w = h.ready("a");
    h.exits(w, Some(1), None, 1.0);
    let (waiter, fx) = h.cmd(Command::Stop { agent: id("a") });
    assert_eq!(replied_state(&fx, waiter), Some(State::Stopped));
    // Its restart timer is stale now.
    let fx = h.fire_restart();
    assert!(spawned(&fx).is_none());
}

#[test]
fn unknown_agents_are_not_found() {
    let mut h = H::new();
    for command in [
        Command::Stop { agent: id("nope") },
        Command::Restart {
            agent: id("nope"),
            wait: false,
        },
        Command::Remove { agent: id("nope") },
    ] {
        let (w, fx) = h.cmd(command);
        assert!(matches!(
            reply_to(&fx, w),
            Some(Err(CommandError {
                kind: ErrorKind::NotFound,
                ..
            }))
        ));
    }
}

#[test]
fn restart_stops_then_starts_and_counts() {
    let mut h = H::new();
    let w = h.ready("a");
    let (waiter, fx) = h.cmd(Command::Restart {
        agent: id("a"),
        wait: false,
    });
    assert_eq!(replied_state(&fx, waiter), Some(State::Stopping));
    h.input(Input::Drained {
        worker: w,
        in_flight: 0,
    });
    let fx = h.exits(w, Some(0), None, 5.0);
    assert!(spawned(&fx).is_some());
    let v = h.view("a");
    assert_eq!((v.state, v.restarts), (State::Starting, 1));
}

#[test]
fn restart_of_a_crashed_agent_goes_through_stopped() {
    let mut h = H::new();
    let mut spec = local("a");
    spec.restart_policy = RestartPolicy::Never;
    let (_, fx) = h.spawn_spec(spec, false);
    let w = spawned(&fx).unwrap();
    h.exits(w, Some(1), None, 1.0);
    let (_, fx) = h.cmd(Command::Restart {
        agent: id("a"),
        wait: false,
    });
    assert!(spawned(&fx).is_some());
    assert!(h.seen.contains(&(State::Crashed, State::Stopped)));
    assert!(h.seen.contains(&(State::Stopped, State::Starting)));
}

#[test]
fn restart_with_wait_answers_once_ready() {
    let mut h = H::new();
    let w = h.ready("a");
    let (waiter, _) = h.cmd(Command::Restart {
        agent: id("a"),
        wait: true,
    });
    h.input(Input::Drained {
        worker: w,
        in_flight: 0,
    });
    let fx = h.exits(w, Some(0), None, 5.0);
    assert!(reply_to(&fx, waiter).is_none());
    let w2 = spawned(&fx).unwrap();
    h.ev(w2, WorkerEvent::Spawned { pid: 2, port: 9002 });
    let fx = h.ev(w2, ready());
    assert_eq!(replied_state(&fx, waiter), Some(State::Ready));
}

#[test]
fn remove_drains_stops_and_forgets() {
    let mut h = H::new();
    let w = h.ready("a");
    let (waiter, _) = h.cmd(Command::Remove { agent: id("a") });
    assert!(h.exists("a"));
    h.input(Input::Drained {
        worker: w,
        in_flight: 0,
    });
    let fx = h.exits(w, Some(0), None, 5.0);
    assert!(!h.exists("a"));
    assert!(has(
        &fx,
        |e| matches!(e, Effect::Forget { agent } if agent.as_str() == "a")
    ));
    assert!(matches!(reply_to(&fx, waiter), Some(Ok(Answer::Agent(_)))));
    assert!(h.route("a").is_none());
}

#[test]
fn remove_without_a_worker_forgets_at_once() {
    let mut h = H::new();
    let mut spec = local("a");
    spec.restart_policy = RestartPolicy::Never;
    let (_, fx) = h.spawn_spec(spec, false);
    h.exits(spawned(&fx).unwrap(), Some(1), None, 1.0);
    let (waiter, fx) = h.cmd(Command::Remove { agent: id("a") });
    assert!(!h.exists("a"));
    assert!(reply_to(&fx, waiter).is_some());
}

// ---- ?wait ---------------------------------------------------------------------

#[test]
fn spawn_wait_answers_when_ready() {
    let mut h = H::new();
    let (waiter, fx) = h.spawn_spec(local("a"), true);
    assert!(reply_to(&fx, waiter).is_none());
    let w = spawned(&fx).unwrap();
    h.ev(w, WorkerEvent::Spawned { pid: 1, port: 9000 });
    let fx = h.ev(w, ready());
    assert_eq!(replied_state(&fx, waiter), Some(State::Ready));
}

#[test]
fn spawn_wait_answers_a_package_failure() {
    let mut h = H::new();
    let (waiter, fx) = h.spawn_spec(local("a"), true);
    let fx = h.exits(spawned(&fx).unwrap(), Some(78), None, 0.2);
    assert_eq!(replied_state(&fx, waiter), Some(State::Failed));
}

#[test]
fn spawn_wait_answers_a_crash_with_no_restart_coming() {
    // This wait used to hang: it waited for ready or failed only.
    let mut h = H::new();
    let mut spec = local("a");
    spec.restart_policy = RestartPolicy::Never;
    let (waiter, fx) = h.spawn_spec(spec, true);
    let fx = h.exits(spawned(&fx).unwrap(), Some(1), None, 0.2);
    assert_eq!(replied_state(&fx, waiter), Some(State::Crashed));
}

#[test]
fn spawn_wait_does_not_answer_during_backoff() {
    let mut h = H::new();
    let (waiter, fx) = h.spawn_spec(local("a"), true);
    let fx = h.exits(spawned(&fx).unwrap(), Some(1), None, 0.2);
    assert!(reply_to(&fx, waiter).is_none());
    assert_eq!(h.state("a"), State::Backoff);
    let fx = h.fire_restart();
    let w = spawned(&fx).unwrap();
    h.ev(w, WorkerEvent::Spawned { pid: 3, port: 9003 });
    let fx = h.ev(w, ready());
    assert_eq!(replied_state(&fx, waiter), Some(State::Ready));
}

#[test]
fn spawn_wait_answers_a_clean_exit_as_stopped() {
    let mut h = H::new();
    let (waiter, fx) = h.spawn_spec(local("a"), true);
    let fx = h.exits(spawned(&fx).unwrap(), Some(0), None, 0.2);
    assert_eq!(replied_state(&fx, waiter), Some(State::Stopped));
}

// ---- rollouts -------------------------------------------------------------------

fn put(h: &mut H, spec: AgentSpec, wait: bool) -> (WaiterId, Vec<Effect>) {
    let agent = id(&spec.id);
    h.cmd(Command::Put { agent, spec, wait })
}

fn v2(agent: &str) -> AgentSpec {
    let mut s = local(agent);
    s.package = format!("/pkgs/{agent}-v2");
    s
}

#[test]
fn a_rollout_switches_only_when_the_new_worker_is_ready() {
    let mut h = H::new();
    let old = h.ready("a");
    let (waiter, fx) = put(&mut h, v2("a"), true);
    assert!(matches!(reply_to(&fx, waiter), None));
    let new = spawned(&fx).unwrap();
    h.ev(
        new,
        WorkerEvent::Spawned {
            pid: 2000,
            port: 9100,
        },
    );
    // Still routed to the old worker while the new one starts.
    assert!(matches!(h.route("a"), Some(Route::Ready(u)) if u[0].worker == old));
    assert_eq!(h.view("a").rollout.unwrap().worker_port, Some(9100));
    let fx = h.ev(new, ready());
    assert!(matches!(h.route("a"), Some(Route::Ready(u)) if u[0].worker == new));
    assert!(has(
        &fx,
        |e| matches!(e, Effect::StopProbe { worker } if *worker == old)
    ));
    assert!(has(
        &fx,
        |e| matches!(e, Effect::Drain { worker, settle, .. } if *worker == old && !settle.is_zero())
    ));
    assert!(matches!(
        reply_to(&fx, waiter),
        Some(Ok(Answer::Put(_, PutOutcome::Rolling)))
    ));
    let v = h.view("a");
    assert_eq!(v.package_path, "/pkgs/a-v2");
    assert_eq!(v.draining.len(), 1);
    // The old worker drains, then stops; its exit is not a crash.
    let fx = h.input(Input::Drained {
        worker: old,
        in_flight: 0,
    });
    assert_eq!(signals(&fx, old), [Signal::Term]);
    let fx = h.exits(old, Some(0), None, 100.0);
    assert!(has(
        &fx,
        |e| matches!(e, Effect::Release { worker } if *worker == old)
    ));
    let v = h.view("a");
    assert!(v.draining.is_empty());
    assert_eq!(v.state, State::Ready);
    assert_eq!(
        v.rollout.unwrap().state,
        crate::model::RolloutStatus::RolledOut
    );
}

#[test]
fn a_broken_new_version_keeps_the_old_one_serving() {
    let mut h = H::new();
    let old = h.ready("a");
    let (waiter, fx) = put(&mut h, v2("a"), true);
    let new = spawned(&fx).unwrap();
    h.ev(
        new,
        WorkerEvent::Spawned {
            pid: 2000,
            port: 9100,
        },
    );
    let fx = h.input(Input::Worker {
        worker: new,
        event: WorkerEvent::Exited {
            exit: exit(Some(78), None, 0.5),
            errors: vec!["ImportError: no module named x".into()],
        },
    });
    assert!(matches!(h.route("a"), Some(Route::Ready(u)) if u[0].worker == old));
    let v = h.view("a");
    assert_eq!(v.state, State::Ready);
    assert_eq!(v.package_path, "/pkgs/a");
    let r = v.rollout.unwrap();
    assert_eq!(r.state, crate::model::RolloutStatus::RolloutFailed);
    assert!(r.reason.unwrap().contains("ImportError"));
    assert!(replied_state(&fx, waiter).is_some());
}

#[test]
fn the_same_spec_again_changes_nothing() {
    let mut h = H::new();
    h.ready("a");
    let (waiter, fx) = put(&mut h, local("a"), true);
    assert!(spawned(&fx).is_none());
    assert!(matches!(
        reply_to(&fx, waiter),
        Some(Ok(Answer::Put(_, PutOutcome::Unchanged)))
    ));
}

#[test]
fn a_newer_spec_supersedes_a_rollout_and_its_waiter_is_told() {
    let mut h = H::new();
    h.ready("a");
    let (first, fx) = put(&mut h, v2("a"), true);
    let new = spawned(&fx).unwrap();
    let mut v3 = local("a");
    v3.package = "/pkgs/a-v3".into();
    let (_, fx) = put(&mut h, v3, true);
    assert_eq!(
        signals(&fx, new),
        [Signal::Kill],
        "the superseded worker is killed"
    );
    assert!(matches!(
        reply_to(&fx, first),
        Some(Ok(Answer::Put(_, PutOutcome::Superseded)))
    ));
}

#[test]
fn nothing_serving_means_the_spec_is_replaced_in_place() {
    let mut h = H::new();
    let w = h.ready("a");
    h.exits(w, Some(1), None, 1.0);
    assert_eq!(h.state("a"), State::Backoff);
    let (_, fx) = put(&mut h, v2("a"), false);
    let launch = fx.iter().find_map(|e| match e {
        Effect::Spawn(l) => Some(l.clone()),
        _ => None,
    });
    assert_eq!(launch.unwrap().package, "/pkgs/a-v2");
    assert!(h.seen.contains(&(State::Backoff, State::Stopped)));
    let r = h.view("a").rollout.unwrap();
    assert_eq!(r.strategy, "in-place");
}

#[test]
fn a_starting_worker_is_replaced_after_it_stops() {
    let mut h = H::new();
    let w = h.started("a");
    put(&mut h, v2("a"), false);
    assert_eq!(h.state("a"), State::Stopping);
    h.input(Input::Drained {
        worker: w,
        in_flight: 0,
    });
    let fx = h.exits(w, None, Some(15), 1.0);
    let launch = fx.iter().find_map(|e| match e {
        Effect::Spawn(l) => Some(l.clone()),
        _ => None,
    });
    assert_eq!(launch.unwrap().package, "/pkgs/a-v2");
    assert_eq!(h.view("a").restarts, 0, "a replacement is not a restart");
}

#[test]
fn when_the_old_worker_dies_mid_rollout_the_new_one_takes_over() {
    let mut h = H::new();
    let old = h.ready("a");
    let (_, fx) = put(&mut h, v2("a"), false);
    let new = spawned(&fx).unwrap();
    h.ev(
        new,
        WorkerEvent::Spawned {
            pid: 2000,
            port: 9100,
        },
    );
    let fx = h.exits(old, None, Some(9), 50.0);
    assert!(spawned(&fx).is_none(), "no restart of the old spec");
    let v = h.view("a");
    assert_eq!((v.state, v.pid), (State::Starting, Some(2000)));
    h.ev(new, ready());
    let v = h.view("a");
    assert_eq!(v.state, State::Ready);
    assert_eq!(
        v.rollout.unwrap().state,
        crate::model::RolloutStatus::RolledOut
    );
}

#[test]
fn a_remote_rollout_fetches_then_starts_next_to_the_old_worker() {
    let mut h = H::new();
    let old = h.ready("a");
    let (_, fx) = put(&mut h, remote("a"), false);
    assert!(spawned(&fx).is_none());
    assert_eq!(h.view("a").rollout.unwrap().phase, Some("fetching"));
    let f = fetch_of(&fx).unwrap();
    let fx = h.input(Input::Fetched {
        agent: id("a"),
        fetch: f,
        result: Ok(resolved()),
    });
    assert!(spawned(&fx).is_some());
    assert!(matches!(h.route("a"), Some(Route::Ready(u)) if u[0].worker == old));
}

#[test]
fn a_rollout_fetch_failure_keeps_the_old_version() {
    let mut h = H::new();
    h.ready("a");
    let (_, fx) = put(&mut h, remote("a"), false);
    h.input(Input::Fetched {
        agent: id("a"),
        fetch: fetch_of(&fx).unwrap(),
        result: Err(FetchFailure {
            message: "HTTP 404".into(),
            transient: false,
        }),
    });
    let v = h.view("a");
    assert_eq!(v.state, State::Ready);
    assert!(v.rollout.unwrap().reason.unwrap().contains("HTTP 404"));
}

#[test]
fn put_creates_an_unknown_agent() {
    let mut h = H::new();
    let (waiter, fx) = put(&mut h, local("n"), false);
    assert!(matches!(
        reply_to(&fx, waiter),
        Some(Ok(Answer::Put(_, PutOutcome::Created)))
    ));
    assert!(spawned(&fx).is_some());
}

// ---- reconcile ------------------------------------------------------------------

fn reconcile(h: &mut H, specs: &[AgentSpec]) -> crate::model::ReconcileReport {
    let declared = specs.iter().map(|s| (id(&s.id), s.clone())).collect();
    let (w, fx) = h.cmd(Command::Reconcile {
        declared,
        trigger: "api".into(),
    });
    match reply_to(&fx, w) {
        Some(Ok(Answer::Reconciled(r))) => r.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reconcile_starts_rolls_keeps_and_stops() {
    let mut h = H::new();
    let r = reconcile(&mut h, &[local("a"), local("b"), local("c")]);
    assert_eq!(r.started, ["a", "b", "c"]);
    h.started("api-only");
    let r = reconcile(&mut h, &[local("a"), v2("b")]);
    assert_eq!(
        (r.unchanged.as_slice(), r.rolled.as_slice()),
        (&["a".to_string()][..], &["b".to_string()][..])
    );
    assert_eq!(r.stopped, ["c"]);
    assert_eq!(h.state("c"), State::Stopping);
    assert!(
        h.exists("api-only"),
        "agents spawned through the API are left alone"
    );
}

#[test]
fn a_declaration_adopts_an_api_agent() {
    let mut h = H::new();
    h.started("a");
    assert_eq!(h.view("a").origin, Origin::Api);
    let r = reconcile(&mut h, &[local("a")]);
    assert_eq!(r.unchanged, ["a"]);
    assert_eq!(h.view("a").origin, Origin::Declared);
    let r = reconcile(&mut h, &[]);
    assert_eq!(r.stopped, ["a"]);
}

#[test]
fn a_lasting_rollout_failure_is_not_retried_for_the_same_spec() {
    let mut h = H::new();
    reconcile(&mut h, &[local("a")]);
    let w = spawned(&h.log.iter().map(clone_effect).collect::<Vec<_>>()).unwrap();
    h.ev(w, WorkerEvent::Spawned { pid: 1, port: 9000 });
    h.ev(w, ready());
    let r = reconcile(&mut h, &[v2("a")]);
    assert_eq!(r.rolled, ["a"]);
    let new = h
        .log
        .iter()
        .rev()
        .find_map(|e| match e {
            Effect::Spawn(l) => Some(l.worker),
            _ => None,
        })
        .unwrap();
    h.exits(new, Some(78), None, 0.2);
    let r = reconcile(&mut h, &[v2("a")]);
    assert_eq!(
        r.unchanged,
        ["a"],
        "the same broken spec is not rolled again"
    );
}

// ---- shutdown --------------------------------------------------------------------

#[test]
fn shutdown_terminates_everything_and_answers_when_all_are_gone() {
    let mut h = H::new();
    let a = h.ready("a");
    let b = h.ready("b");
    let c = h.ready("c");
    h.exits(c, Some(1), None, 1.0);
    let (waiter, fx) = h.cmd(Command::Shutdown {
        grace: Duration::from_secs(5),
    });
    assert_eq!(signals(&fx, a), [Signal::Term]);
    assert_eq!(signals(&fx, b), [Signal::Term]);
    assert_eq!(h.state("c"), State::Stopped);
    assert!(reply_to(&fx, waiter).is_none());
    h.exits(a, Some(0), None, 1.0);
    assert!(!h.s.finished());
    let fx = h.exits(b, None, Some(15), 1.0);
    assert!(matches!(reply_to(&fx, waiter), Some(Ok(Answer::Done))));
    assert!(h.s.finished());
    let (w, fx) = h.spawn_spec(local("late"), false);
    assert!(matches!(
        reply_to(&fx, w),
        Some(Err(CommandError {
            kind: ErrorKind::ShuttingDown,
            ..
        }))
    ));
}

#[test]
fn during_shutdown_a_crash_is_not_restarted() {
    let mut h = H::new();
    let a = h.ready("a");
    h.cmd(Command::Shutdown {
        grace: Duration::from_secs(5),
    });
    let fx = h.exits(a, Some(1), None, 1.0);
    assert!(restart_delay(&fx, h.clock.now).is_none());
}

// ---- views and routes -------------------------------------------------------------

#[test]
fn backoff_counts_down_in_views_and_retry_after() {
    let mut h = H::new();
    let mut spec = local("a");
    spec.restart_delay_seconds = 5.0;
    spec.max_restart_delay_seconds = 5.0;
    let (_, fx) = h.spawn_spec(spec, false);
    h.exits(spawned(&fx).unwrap(), Some(1), None, 0.1);
    let first = h.view("a").next_restart_in_seconds.unwrap();
    h.advance(Duration::from_secs(2));
    let later = h.view("a").next_restart_in_seconds.unwrap();
    assert!((first - later - 2.0).abs() < 1e-6, "{first} {later}");
    assert!(
        matches!(h.route("a"), Some(Route::NotReady { state: State::Backoff, retry_after_secs, .. }) if retry_after_secs >= 2)
    );
}

#[test]
fn limits_are_explicit_or_a_fair_share() {
    let mut h = H::new();
    let mut spec = local("a");
    spec.memory_limit_mb = Some(1024);
    h.spawn_spec(spec, false);
    h.started("b");
    h.started("c");
    let (a, b) = (h.view("a").limits, h.view("b").limits);
    assert_eq!(
        (a.memory_limit_mb, a.memory_limit_source),
        (Some(1024), "explicit")
    );
    assert_eq!(b.memory_limit_mb, Some((4096 - 64 - 1024) / 2));
    assert_eq!(b.cpu_limit, Some(2.0 / 3.0));
}

// ---- the transition table ---------------------------------------------------------

#[test]
fn forbidden_transitions_are_not_in_the_table() {
    use super::lifecycle::allowed;
    for (from, to) in [
        (State::Ready, State::Backoff),
        (State::Ready, State::Stopped),
        (State::Starting, State::Backoff),
        (State::Pending, State::Ready),
        (State::Stopped, State::Ready),
        (State::Failed, State::Ready),
        (State::Backoff, State::Ready),
        (State::Idle, State::Ready),
    ] {
        assert!(!allowed(from, to), "{from} -> {to}");
    }
}

#[test]
#[should_panic(expected = "not in the table")]
fn an_illegal_move_is_refused_loudly() {
    let mut r = super::agent::Replica::new(0, SystemTime::UNIX_EPOCH);
    let mut out = super::Out::new(Clock::now());
    super::set_life(
        &id("a"),
        &mut r,
        super::agent::Life::Ready(super::agent::Worker::new(
            WorkerId(1),
            Instant::now(),
            SystemTime::UNIX_EPOCH,
        )),
        "test",
        &mut out,
    );
}

/// Every allowed transition is taken by at least one scenario above (the
/// ones scale to zero will add are listed apart until then).
#[test]
fn the_scenarios_cover_every_allowed_transition() {
    let scenarios: &[fn(&mut H)] = &[
        |h| {
            let w = h.ready("a");
            h.ev(
                w,
                WorkerEvent::Probe {
                    ok: false,
                    failures: 1,
                },
            );
            h.ev(
                w,
                WorkerEvent::Probe {
                    ok: true,
                    failures: 0,
                },
            );
            h.exits(w, Some(1), None, 1.0);
            let w = spawned(&h.fire_restart()).unwrap();
            h.ev(w, WorkerEvent::Spawned { pid: 1, port: 1 });
            h.ev(w, ready());
            h.cmd(Command::Stop { agent: id("a") });
            h.input(Input::Drained {
                worker: w,
                in_flight: 0,
            });
            h.exits(w, Some(0), None, 1.0);
            h.cmd(Command::Restart {
                agent: id("a"),
                wait: false,
            });
        },
        |h| {
            let (_, fx) = h.spawn_spec(remote("r"), false);
            h.input(Input::Fetched {
                agent: id("r"),
                fetch: fetch_of(&fx).unwrap(),
                result: Err(FetchFailure {
                    message: "x".into(),
                    transient: true,
                }),
            });
            let fx = h.fire_restart();
            h.input(Input::Fetched {
                agent: id("r"),
                fetch: fetch_of(&fx).unwrap(),
                result: Err(FetchFailure {
                    message: "x".into(),
                    transient: false,
                }),
            });
            let (_, fx) = h.cmd(Command::Restart {
                agent: id("r"),
                wait: false,
            });
            h.input(Input::Fetched {
                agent: id("r"),
                fetch: fetch_of(&fx).unwrap(),
                result: Ok(resolved()),
            });
        },
        |h| {
            let w = h.started("p");
            h.exits(w, Some(78), None, 0.1);
            let (_, fx) = h.cmd(Command::Restart {
                agent: id("p"),
                wait: false,
            });
            let w = spawned(&fx).unwrap();
            h.ev(w, ready());
            h.exits(w, Some(78), None, 5.0);
            h.cmd(Command::Stop { agent: id("p") });
        },
        |h| {
            let w = h.ready("u");
            h.ev(
                w,
                WorkerEvent::Probe {
                    ok: false,
                    failures: 1,
                },
            );
            h.exits(w, Some(78), None, 1.0);
            let w = h.ready("v");
            h.ev(
                w,
                WorkerEvent::Probe {
                    ok: false,
                    failures: 1,
                },
            );
            h.exits(w, Some(1), None, 1.0);
            let w = h.ready("k");
            for failures in 1..=3 {
                h.ev(
                    w,
                    WorkerEvent::Probe {
                        ok: false,
                        failures,
                    },
                );
            }
            h.exits(w, None, Some(15), 1.0);
            let w = h.ready("x");
            h.ev(
                w,
                WorkerEvent::Probe {
                    ok: false,
                    failures: 1,
                },
            );
            h.cmd(Command::Stop { agent: id("x") });
            h.input(Input::Drained {
                worker: w,
                in_flight: 0,
            });
            h.exits(w, Some(78), None, 1.0);
        },
        |h| {
            let mut spec = local("m");
            spec.max_restarts = Some(0);
            let (_, fx) = h.spawn_spec(spec, false);
            h.exits(spawned(&fx).unwrap(), Some(1), None, 1.0);
            let mut spec = local("n");
            spec.restart_policy = RestartPolicy::Never;
            let (_, fx) = h.spawn_spec(spec, false);
            h.exits(spawned(&fx).unwrap(), Some(1), None, 1.0);
            h.cmd(Command::Restart {
                agent: id("n"),
                wait: false,
            });
            let (_, fx) = h.spawn_spec(local("o"), false);
            let w = spawned(&fx).unwrap();
            h.exits(w, Some(1), None, 1.0);
            h.cmd(Command::Stop { agent: id("o") });
            let w = h.started("q");
            h.cmd(Command::Stop { agent: id("q") });
            h.input(Input::Drained {
                worker: w,
                in_flight: 0,
            });
            h.exits(w, None, Some(9), 1.0);
            let (_, fx) = h.cmd(Command::Restart {
                agent: id("q"),
                wait: false,
            });
            let w = spawned(&fx).unwrap();
            h.cmd(Command::Restart {
                agent: id("q"),
                wait: false,
            });
            h.input(Input::Drained {
                worker: w,
                in_flight: 0,
            });
            h.exits(w, Some(0), None, 1.0);
        },
        |h| {
            let (_, fx) = h.spawn_spec(remote("s"), false);
            h.input(Input::Fetched {
                agent: id("s"),
                fetch: fetch_of(&fx).unwrap(),
                result: Err(FetchFailure {
                    message: "x".into(),
                    transient: true,
                }),
            });
            let mut spec = remote("s");
            spec.package.push_str("?v=2");
            put(h, spec, false);
            let w = h.started("t");
            let mut spec = remote("t");
            spec.sha256 = Some("cd".repeat(32));
            put(h, spec, false);
            h.input(Input::Drained {
                worker: w,
                in_flight: 0,
            });
            h.exits(w, Some(0), None, 1.0);
            let (_, fx) = h.spawn_spec(remote("y"), false);
            h.input(Input::Fetched {
                agent: id("y"),
                fetch: fetch_of(&fx).unwrap(),
                result: Err(FetchFailure {
                    message: "x".into(),
                    transient: true,
                }),
            });
            h.cmd(Command::Stop { agent: id("y") });
            let (_, fx) = h.spawn_spec(remote("z"), false);
            let _ = fx;
            h.cmd(Command::Stop { agent: id("z") });
            let (_, fx) = h.spawn_spec(local("f"), false);
            h.ev(
                spawned(&fx).unwrap(),
                WorkerEvent::SpawnFailed {
                    reason: "x".into(),
                    kind: SpawnFailure::Exec,
                },
            );
            put(h, v2("f"), false);
            h.cmd(Command::Stop { agent: id("f") });
            let (_, fx) = h.cmd(Command::Restart {
                agent: id("f"),
                wait: false,
            });
            let _ = fx;
        },
        |h| {
            let (_, fx) = h.spawn_spec(remote("g"), false);
            h.input(Input::Fetched {
                agent: id("g"),
                fetch: fetch_of(&fx).unwrap(),
                result: Err(FetchFailure {
                    message: "x".into(),
                    transient: false,
                }),
            });
            h.cmd(Command::Stop { agent: id("g") });
            h.cmd(Command::Shutdown {
                grace: Duration::from_secs(1),
            });
        },
    ];
    let mut seen = HashSet::new();
    for s in scenarios {
        let mut h = H::new();
        s(&mut h);
        seen.extend(h.seen);
    }
    // Reached only by scaling to zero and waking, which come with replicas.
    let later = [
        (State::Pending, State::Idle),
        (State::Stopping, State::Idle),
        (State::Idle, State::Starting),
        (State::Idle, State::Fetching),
        (State::Idle, State::Stopped),
    ];
    let missing: Vec<_> = ALLOWED_TRANSITIONS
        .iter()
        .filter(|t| !seen.contains(t) && !later.contains(t))
        .collect();
    assert!(
        missing.is_empty(),
        "transitions no scenario takes: {missing:?}"
    );
}
