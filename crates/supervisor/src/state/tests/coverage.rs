//! The transition table: forbidden moves, and every allowed one taken by a scenario.

use super::*;
use crate::state::lifecycle::ALLOWED_TRANSITIONS;

#[test]
fn forbidden_transitions_are_not_in_the_table() {
    use crate::state::lifecycle::allowed;
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
    let mut r = crate::state::agent::Replica::new(0, SystemTime::UNIX_EPOCH);
    let mut out = crate::state::Out::new(Clock::now());
    crate::state::set_life(
        &id("a"),
        &mut r,
        crate::state::agent::Life::Ready(crate::state::agent::Worker::new(
            WorkerId(1),
            Instant::now(),
            SystemTime::UNIX_EPOCH,
        )),
        "test",
        &mut out,
    );
}

/// Every allowed transition is taken by at least one scenario below.
#[test]
fn the_scenarios_cover_every_allowed_transition() {
    let scenarios: &[fn(&mut H)] = &[
        lifecycle_of_a_crash_then_stop,
        fetch_failures,
        package_failures,
        exits_while_unhealthy_or_stopping,
        limits_policies_and_restarts,
        remote_specs_replaced,
        failed_fetch_then_shutdown,
        scaled_to_zero_and_woken,
    ];
    let mut seen = HashSet::new();
    for s in scenarios {
        let mut h = H::new();
        s(&mut h);
        seen.extend(h.seen);
    }
    let missing: Vec<_> = ALLOWED_TRANSITIONS
        .iter()
        .filter(|t| !seen.contains(t))
        .collect();
    assert!(
        missing.is_empty(),
        "transitions no scenario takes: {missing:?}"
    );
}

// The scenarios, each a walk through part of the table.

fn lifecycle_of_a_crash_then_stop(h: &mut H) {
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
}

fn fetch_failures(h: &mut H) {
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
}

fn package_failures(h: &mut H) {
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
}

fn exits_while_unhealthy_or_stopping(h: &mut H) {
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
}

fn limits_policies_and_restarts(h: &mut H) {
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
}

fn remote_specs_replaced(h: &mut H) {
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
}

fn failed_fetch_then_shutdown(h: &mut H) {
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
}

fn scaled_to_zero_and_woken(h: &mut H) {
    let idles = |mut spec: AgentSpec| {
        spec.idle_timeout = Some(Duration::from_secs(1));
        spec
    };
    let idle_load = |h: &mut H, agent: &str| {
        h.input(Input::Load {
            agent: id(agent),
            in_flight: 0,
            queued: 0,
            idle_for: Duration::from_secs(2),
            with_sessions: Vec::new(),
        })
    };
    // A ready worker drains and stops, then a request wakes it.
    let (_, fx) = h.spawn_spec(idles(local("i")), false);
    let w = spawned(&fx).unwrap();
    h.ev(w, ready());
    idle_load(h, "i");
    h.input(Input::Drained {
        worker: w,
        in_flight: 0,
    });
    h.exits(w, Some(0), None, 5.0);
    assert_eq!(h.state("i"), State::Idle);
    h.input(Input::Wake { agent: id("i") });
    assert_eq!(h.state("i"), State::Starting);
    // Crashed and waiting to restart: idle through `stopped`; then stopped.
    let (_, fx) = h.spawn_spec(idles(local("b")), false);
    h.exits(spawned(&fx).unwrap(), Some(1), None, 1.0);
    assert_eq!(h.state("b"), State::Backoff);
    idle_load(h, "b");
    assert_eq!(h.state("b"), State::Idle);
    h.cmd(Command::Stop { agent: id("b") });
    assert_eq!(h.state("b"), State::Stopped);
    // A remote spec replaced while idle is fetched first.
    let (_, fx) = h.spawn_spec(idles(remote("r")), false);
    let fx = h.input(Input::Fetched {
        agent: id("r"),
        fetch: fetch_of(&fx).unwrap(),
        result: Ok(resolved()),
    });
    let w = spawned(&fx).unwrap();
    h.ev(w, ready());
    idle_load(h, "r");
    h.input(Input::Drained {
        worker: w,
        in_flight: 0,
    });
    h.exits(w, Some(0), None, 5.0);
    assert_eq!(h.state("r"), State::Idle);
    let mut spec = idles(remote("r"));
    spec.package.push_str("?v=2");
    put(h, spec, false);
    assert_eq!(h.state("r"), State::Fetching);
}
