//! Reconcile, shutdown, and what views and routes show.

use super::*;

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
    let w = spawned(&h.log.clone()).unwrap();
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

#[test]
fn backoff_counts_down_in_views_and_retry_after() {
    let mut h = H::new();
    let mut spec = local("a");
    spec.restart_delay_seconds = 5.0;
    spec.max_restart_delay_seconds = 5.0;
    let (_, fx) = h.spawn_spec(spec, false);
    h.exits(spawned(&fx).unwrap(), Some(1), None, 0.1);
    // The view says when; the API counts the seconds left as it shows it.
    let at = h.view("a").restart_at.unwrap();
    let left = |h: &H| at.duration_since(h.clock.wall).unwrap().as_secs_f64();
    let first = left(&h);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.view("a").restart_at, Some(at));
    let later = left(&h);
    assert!((first - later - 2.0).abs() < 1e-6, "{first} {later}");
    assert!(
        matches!(h.route("a"), Some(RouteDecision::NotReady { state: State::Backoff, retry_after_secs, .. }) if retry_after_secs >= 2)
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
        (Some(1024), crate::model::LimitSource::Explicit)
    );
    assert_eq!(b.memory_limit_mb, Some((4096 - 64 - 1024) / 2));
    assert_eq!(b.cpu_limit, Some(2.0 / 3.0));
}
