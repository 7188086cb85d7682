//! Rollouts: blue/green, broken versions, supersession, in place, take-over.

use super::*;

#[test]
fn a_rollout_switches_only_when_the_new_worker_is_ready() {
    let mut h = H::new();
    let old = h.ready("a");
    let (waiter, fx) = put(&mut h, v2("a"), true);
    assert!(reply_to(&fx, waiter).is_none());
    let new = spawned(&fx).unwrap();
    h.ev(
        new,
        WorkerEvent::Spawned {
            pid: 2000,
            port: 9100,
        },
    );
    // Still routed to the old worker while the new one starts.
    assert!(matches!(h.route("a"), Some(RouteDecision::Ready(u)) if u[0].worker == old));
    assert_eq!(h.view("a").rollout.unwrap().worker_port, Some(9100));
    let fx = h.ev(new, ready());
    assert!(matches!(h.route("a"), Some(RouteDecision::Ready(u)) if u[0].worker == new));
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
    assert!(matches!(h.route("a"), Some(RouteDecision::Ready(u)) if u[0].worker == old));
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
    assert_eq!(r.strategy, crate::model::RolloutStrategy::InPlace);
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
    assert_eq!(
        h.view("a").rollout.unwrap().phase,
        Some(crate::model::RolloutPhase::Fetching)
    );
    let f = fetch_of(&fx).unwrap();
    let fx = h.input(Input::Fetched {
        agent: id("a"),
        fetch: f,
        result: Ok(resolved()),
    });
    assert!(spawned(&fx).is_some());
    assert!(matches!(h.route("a"), Some(RouteDecision::Ready(u)) if u[0].worker == old));
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

#[test]
fn a_patch_is_made_on_the_spec_the_agent_heads_for_and_refused_if_it_changed() {
    let mut h = H::new();
    h.ready("a");
    let spec_of = |h: &mut H| {
        let (w, fx) = h.cmd(Command::Spec { agent: id("a") });
        match reply_to(&fx, w) {
            Some(Ok(Answer::Spec(s))) => *s.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(spec_of(&mut h), local("a"));
    // While a rollout is on its way, the spec it rolls to is the one shown.
    put(&mut h, v2("a"), false);
    assert_eq!(spec_of(&mut h).package, "/pkgs/a-v2");
    // A write based on the old spec is refused: something changed since.
    let mut v3 = v2("a");
    v3.package = "/pkgs/a-v3".into();
    let (w, fx) = h.cmd(Command::Put {
        agent: id("a"),
        spec: v3.clone(),
        wait: false,
        base: Some(Box::new(local("a"))),
    });
    assert!(matches!(
        reply_to(&fx, w),
        Some(Err(CommandError {
            kind: ErrorKind::Conflict,
            ..
        }))
    ));
    assert_eq!(spec_of(&mut h).package, "/pkgs/a-v2");
    // Based on the current one, it goes through.
    let (w, fx) = h.cmd(Command::Put {
        agent: id("a"),
        spec: v3,
        wait: false,
        base: Some(Box::new(v2("a"))),
    });
    assert!(matches!(
        reply_to(&fx, w),
        Some(Ok(Answer::Put(_, PutOutcome::Rolling)))
    ));
    assert_eq!(spec_of(&mut h).package, "/pkgs/a-v3");
    let (w, fx) = h.cmd(Command::Spec { agent: id("nope") });
    assert!(matches!(
        reply_to(&fx, w),
        Some(Err(CommandError {
            kind: ErrorKind::NotFound,
            ..
        }))
    ));
}
