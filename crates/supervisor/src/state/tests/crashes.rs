//! Exits: restarts with backoff, policies, limits, package failures.

use super::*;

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
        v.last_error_class
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
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
        Some(RouteDecision::NotReady {
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

#[test]
fn a_port_taken_before_the_worker_bound_it_is_tried_again_elsewhere() {
    let mut h = H::new();
    let w = h.started("a");
    let code = par_contract::exit::PORT_IN_USE;
    let fx = h.exits(w, Some(code), None, 0.05);
    assert!(spawned(&fx).is_some(), "started again at once");
    assert!(restart_delay(&fx, h.clock.now).is_none(), "no backoff");
    let v = h.view("a");
    assert_eq!(
        (v.state, v.restarts, v.consecutive_failures),
        (State::Starting, 0, 0)
    );
}

#[test]
fn an_agent_whose_event_loop_stopped_answering_is_restarted_as_unresponsive() {
    let mut h = H::new();
    let w = h.ready("a");
    let fx = h.exits(w, Some(par_contract::exit::UNRESPONSIVE), None, 60.0);
    let v = h.view("a");
    assert_eq!(v.state, State::Backoff);
    assert_eq!(
        v.last_error_class
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("agent_unresponsive")
    );
    assert!(
        restart_delay(&fx, h.clock.now).is_some(),
        "restarted as after a crash"
    );
    assert!(spawned(&h.fire_restart()).is_some());
}

#[test]
fn a_failed_agent_stays_failed_as_time_passes() {
    let mut h = H::new();
    let w = h.started("a");
    let fx = h.exits(w, Some(78), None, 0.3);
    assert_eq!(h.state("a"), State::Failed);
    assert!(restart_delay(&fx, h.clock.now).is_none());
    assert!(!has(&h.log, |e| matches!(
        e,
        Effect::Timer {
            timer: Timer::Restart { .. },
            ..
        }
    )));
    // An hour on, a wake and a load sample later: still failed, never restarted.
    h.advance(Duration::from_secs(3600));
    let fx = h.input(Input::Wake { agent: id("a") });
    assert!(spawned(&fx).is_none());
    let fx = h.input(Input::Load {
        agent: id("a"),
        in_flight: 0,
        queued: 0,
        idle_for: Duration::from_secs(3600),
        with_sessions: Vec::new(),
    });
    assert!(spawned(&fx).is_none());
    let v = h.view("a");
    assert_eq!((v.state, v.restarts), (State::Failed, 0));
}
