//! Stop, restart, remove.

use super::*;

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
        Some(RouteDecision::NotReady {
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
