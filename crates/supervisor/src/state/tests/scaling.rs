//! Replicas: fixed counts, rollouts of every replica, scaling to zero and
//! waking, the autoscaler's decisions, and process ids that never clash.

use super::*;

fn with(agent: &str, f: impl FnOnce(&mut AgentSpec)) -> AgentSpec {
    let mut s = local(agent);
    f(&mut s);
    s
}

/// Starts every Spawn in `fx` and makes it ready; returns the workers.
fn ready_all(h: &mut H, fx: &[Effect]) -> Vec<WorkerId> {
    let ws: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn(l) => Some(l.worker),
            _ => None,
        })
        .collect();
    for (i, w) in ws.iter().enumerate() {
        h.ev(
            *w,
            WorkerEvent::Spawned {
                pid: 100 + i as u32,
                port: 9100 + i as u16,
            },
        );
        h.ev(*w, ready());
    }
    ws
}

fn load(h: &mut H, agent: &str, in_flight: usize, idle_ms: u64) -> Vec<Effect> {
    h.input(Input::Load {
        agent: id(agent),
        in_flight,
        queued: 0,
        idle_for: Duration::from_millis(idle_ms),
        with_sessions: Vec::new(),
    })
}

fn summary(h: &H, agent: &str) -> crate::model::AgentView {
    h.s.agent_views()
        .into_iter()
        .find(|a| a.agent_id == agent)
        .unwrap()
}

#[test]
fn a_fixed_count_starts_every_replica_with_its_own_process_id() {
    let mut h = H::new();
    let (_, fx) = h.spawn_spec(with("a", |s| s.replicas = 3), false);
    let ws = ready_all(&mut h, &fx);
    assert_eq!(ws.len(), 3);
    let ids: Vec<_> =
        h.s.views(h.clock)
            .into_iter()
            .map(|v| v.process_id)
            .collect();
    assert_eq!(ids, ["par-a", "par-a-1", "par-a-2"]);
    assert!(matches!(h.route("a"), Some(RouteDecision::Ready(u)) if u.len() == 3));
    let a = summary(&h, "a");
    assert_eq!((a.desired_replicas, a.ready_replicas), (3, 3));
    // One replica's crash restarts that replica only.
    let fx = h.exits(ws[1], Some(1), None, 1.0);
    assert!(restart_delay(&fx, h.clock.now).is_some());
    assert!(matches!(h.route("a"), Some(RouteDecision::Ready(u)) if u.len() == 2));
    assert_eq!(summary(&h, "a").ready_replicas, 2);
}

#[test]
fn a_rollout_replaces_every_replica_at_once() {
    let mut h = H::new();
    let (_, fx) = h.spawn_spec(with("a", |s| s.replicas = 2), false);
    let old = ready_all(&mut h, &fx);
    let (_, fx) = put(
        &mut h,
        with("a", |s| {
            s.replicas = 2;
            s.package = "/pkgs/a-v2".into();
        }),
        false,
    );
    let new: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn(l) => Some(l.worker),
            _ => None,
        })
        .collect();
    assert_eq!(new.len(), 2);
    h.ev(new[0], WorkerEvent::Spawned { pid: 7, port: 9200 });
    h.ev(new[0], ready());
    // Half ready: the old generation still serves.
    assert!(
        matches!(h.route("a"), Some(RouteDecision::Ready(u)) if u.iter().all(|x| old.contains(&x.worker)))
    );
    h.ev(new[1], WorkerEvent::Spawned { pid: 8, port: 9201 });
    let fx = h.ev(new[1], ready());
    assert!(
        matches!(h.route("a"), Some(RouteDecision::Ready(u)) if u.iter().all(|x| new.contains(&x.worker)) && u.len() == 2)
    );
    for w in old {
        assert!(has(
            &fx,
            |e| matches!(e, Effect::Drain { worker, .. } if *worker == w)
        ));
    }
}

#[test]
fn an_idle_agent_stops_every_replica_and_a_request_wakes_it() {
    let mut h = H::new();
    let spec = with("z", |s| {
        s.replicas = 2;
        s.idle_timeout = Some(Duration::from_secs(5));
    });
    let (_, fx) = h.spawn_spec(spec, false);
    let ws = ready_all(&mut h, &fx);
    // Busy, or not idle long enough: nothing happens.
    assert!(load(&mut h, "z", 1, 0).is_empty());
    let fx = load(&mut h, "z", 0, 4_000);
    assert!(!has(&fx, |e| matches!(e, Effect::Drain { .. })));
    let fx = load(&mut h, "z", 0, 5_000);
    for w in &ws {
        assert!(has(
            &fx,
            |e| matches!(e, Effect::Drain { worker, .. } if worker == w)
        ));
    }
    for w in &ws {
        h.input(Input::Drained {
            worker: *w,
            in_flight: 0,
        });
        h.exits(*w, Some(0), None, 60.0);
    }
    let v = h.view("z");
    assert_eq!((v.state, v.pid), (State::Idle, None));
    assert_eq!(summary(&h, "z").desired_replicas, 0);
    assert_eq!(h.s.views(h.clock).len(), 1, "one idle process stays listed");
    assert!(matches!(
        h.route("z"),
        Some(RouteDecision::Waking(State::Idle))
    ));
    // A request wakes it: both replicas start, requests wait meanwhile.
    let fx = h.input(Input::Wake { agent: id("z") });
    assert_eq!(
        fx.iter().filter(|e| matches!(e, Effect::Spawn(_))).count(),
        2
    );
    assert!(has(&fx, |e| matches!(
        e,
        Effect::Metric(crate::model::MetricEvent::Woken { .. })
    )));
    assert!(matches!(
        h.route("z"),
        Some(RouteDecision::Waking(State::Starting))
    ));
    // A second wake while it starts changes nothing.
    assert!(!has(
        &h.input(Input::Wake { agent: id("z") }),
        |e| matches!(e, Effect::Spawn(_))
    ));
    ready_all(&mut h, &fx);
    assert!(matches!(h.route("z"), Some(RouteDecision::Ready(u)) if u.len() == 2));
}

#[test]
fn a_failed_wake_is_a_failure_the_held_requests_see() {
    let mut h = H::new();
    let spec = with("z", |s| s.idle_timeout = Some(Duration::from_secs(1)));
    let (_, fx) = h.spawn_spec(spec, false);
    let w = ready_all(&mut h, &fx)[0];
    load(&mut h, "z", 0, 2_000);
    h.input(Input::Drained {
        worker: w,
        in_flight: 0,
    });
    h.exits(w, Some(0), None, 9.0);
    let fx = h.input(Input::Wake { agent: id("z") });
    h.exits(spawned(&fx).unwrap(), Some(78), None, 0.2);
    assert!(matches!(
        h.route("z"),
        Some(RouteDecision::NotReady {
            state: State::Failed,
            ..
        })
    ));
}

#[test]
fn the_autoscaler_scales_up_fast_and_down_after_its_window() {
    let mut h = H::new();
    let spec = with("s", |s| {
        s.min_replicas = Some(1);
        s.max_replicas = Some(3);
        s.target_concurrency = Some(2.0);
        s.scale_down_window = Duration::from_secs(10);
    });
    let (_, fx) = h.spawn_spec(spec, false);
    ready_all(&mut h, &fx);
    // 6 in flight for 2 s (sampled every 250 ms): 3 replicas.
    let mut spawns = Vec::new();
    for _ in 0..9 {
        spawns.extend(load(&mut h, "s", 6, 0));
        h.advance(Duration::from_millis(250));
    }
    assert_eq!(summary(&h, "s").desired_replicas, 3);
    let started = ready_all(&mut h, &spawns);
    assert_eq!(started.len(), 2);
    assert!(has(&spawns, |e| matches!(
        e,
        Effect::Metric(crate::model::MetricEvent::Autoscaled { from: 1, to: 3, .. })
    )));
    // The load drops: nothing changes before the scale-down window has passed.
    for _ in 0..20 {
        load(&mut h, "s", 1, 0);
        h.advance(Duration::from_millis(250));
    }
    assert_eq!(
        summary(&h, "s").desired_replicas,
        3,
        "no flapping inside the window"
    );
    let mut fx = Vec::new();
    for _ in 0..40 {
        fx.extend(load(&mut h, "s", 1, 0));
        h.advance(Duration::from_millis(250));
    }
    assert_eq!(summary(&h, "s").desired_replicas, 1);
    // The removed replicas drain before they stop, then are forgotten.
    for w in started {
        assert!(has(
            &fx,
            |e| matches!(e, Effect::Drain { worker, .. } if *worker == w)
        ));
        h.input(Input::Drained {
            worker: w,
            in_flight: 0,
        });
        h.exits(w, Some(0), None, 20.0);
    }
    assert_eq!(h.s.views(h.clock).len(), 1);
}

#[test]
fn the_autoscaler_stays_within_its_bounds() {
    let mut h = H::new();
    let spec = with("s", |s| {
        s.min_replicas = Some(2);
        s.max_replicas = Some(4);
        s.target_concurrency = Some(1.0);
        s.scale_down_window = Duration::from_secs(1);
    });
    let (_, fx) = h.spawn_spec(spec, false);
    ready_all(&mut h, &fx);
    assert_eq!(
        summary(&h, "s").desired_replicas,
        2,
        "starts at min_replicas"
    );
    for _ in 0..20 {
        load(&mut h, "s", 100, 0);
        h.advance(Duration::from_millis(250));
    }
    assert_eq!(summary(&h, "s").desired_replicas, 4);
    for _ in 0..40 {
        load(&mut h, "s", 0, 0);
        h.advance(Duration::from_millis(250));
    }
    assert_eq!(summary(&h, "s").desired_replicas, 2);
}

#[test]
fn process_ids_never_clash_between_agents() {
    let mut h = H::new();
    h.spawn_spec(with("a-1", |_| {}), false);
    // Agent a's second replica would be par-a-1: it takes the next free index.
    h.spawn_spec(with("a", |s| s.replicas = 2), false);
    let ids: Vec<_> =
        h.s.views(h.clock)
            .into_iter()
            .map(|v| v.process_id)
            .collect();
    assert!(ids.contains(&"par-a-2".to_string()), "{ids:?}");
    assert_eq!(ids.iter().filter(|p| *p == "par-a-1").count(), 1, "{ids:?}");
    // An agent whose process id a replica already has is refused.
    let (w, fx) = h.spawn_spec(with("a-2", |_| {}), false);
    assert!(matches!(
        reply_to(&fx, w),
        Some(Err(CommandError {
            kind: ErrorKind::Conflict,
            ..
        }))
    ));
}

fn entry(h: &H, agent: &str) -> crate::state::view::RouteEntry {
    h.s.routes(h.clock)
        .into_iter()
        .find(|r| r.agent.as_str() == agent)
        .unwrap()
}

#[test]
fn a_lower_replica_count_is_applied_in_place_and_spares_the_replica_with_sessions() {
    let mut h = H::new();
    let (_, fx) = h.spawn_spec(with("s", |s| s.replicas = 3), false);
    let ws = ready_all(&mut h, &fx);
    assert!(entry(&h, "s").sessions.is_some(), "3 replicas: tracked");
    // The highest replica holds a session, the middle one none.
    h.input(Input::Sessions {
        agent: id("s"),
        with_sessions: vec![ws[2]],
    });
    let (_, fx) = put(&mut h, with("s", |s| s.replicas = 2), false);
    assert!(
        !has(&fx, |e| matches!(e, Effect::Spawn(_))),
        "no rollout: {fx:?}"
    );
    let drains: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Drain {
                worker, sessions, ..
            } => Some((*worker, *sessions)),
            _ => None,
        })
        .collect();
    assert_eq!(drains, vec![(ws[1], Duration::from_secs(15 * 60))]);
    // Until SIGTERM it still serves the sessions bound to it.
    let e = entry(&h, "s");
    assert_eq!(
        e.draining.iter().map(|u| u.worker).collect::<Vec<_>>(),
        vec![ws[1]]
    );
    assert!(matches!(e.route, RouteDecision::Ready(u) if u.len() == 2));
    let fx = h.input(Input::Drained {
        worker: ws[1],
        in_flight: 0,
    });
    assert_eq!(signals(&fx, ws[1]), vec![Signal::Term]);
    assert!(entry(&h, "s").draining.is_empty());
}

#[test]
fn a_rollout_keeps_the_old_workers_for_their_sessions_unless_they_are_off() {
    for (mode, kept) in [
        (crate::model::SessionMode::Auto, Duration::from_secs(60)),
        (crate::model::SessionMode::Off, Duration::ZERO),
    ] {
        let mut h = H::new();
        let spec = with("r", |s| {
            s.replicas = 2;
            s.sessions = mode;
            s.session_drain_timeout = Duration::from_secs(60);
        });
        let (_, fx) = h.spawn_spec(spec.clone(), false);
        let old = ready_all(&mut h, &fx);
        let mut next = spec;
        next.package = "/pkgs/r-v2".into();
        let (_, fx) = put(&mut h, next, false);
        let new: Vec<_> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Spawn(l) => Some(l.worker),
                _ => None,
            })
            .collect();
        let mut switched = Vec::new();
        for (i, w) in new.iter().enumerate() {
            h.ev(
                *w,
                WorkerEvent::Spawned {
                    pid: 300 + i as u32,
                    port: 9300 + i as u16,
                },
            );
            switched.extend(h.ev(*w, ready()));
        }
        // The old workers drain, waiting for their sessions as long as the spec says.
        for w in &old {
            assert!(has(&switched, |e| matches!(
                e,
                Effect::Drain { worker, sessions, .. } if worker == w && *sessions == kept
            )));
        }
        let e = entry(&h, "r");
        assert!(
            matches!(&e.route, RouteDecision::Ready(u) if u.iter().all(|x| new.contains(&x.worker)))
        );
        let mut draining: Vec<_> = e.draining.iter().map(|u| u.worker).collect();
        draining.sort();
        if mode == crate::model::SessionMode::Auto {
            assert_eq!(draining, old, "they still serve their sessions");
        } else {
            assert!(e.sessions.is_none() && draining.is_empty());
        }
    }
}

#[test]
fn a_live_session_keeps_an_idle_agent_up_through_its_load() {
    // The proxy reports idle_for = 0 while a session lives; the state
    // machine only ever sees that, so a sample with 0 does not idle it.
    let mut h = H::new();
    let spec = with("i", |s| s.idle_timeout = Some(Duration::from_secs(1)));
    let (_, fx) = h.spawn_spec(spec, false);
    ready_all(&mut h, &fx);
    let fx = load(&mut h, "i", 0, 0);
    assert!(!has(&fx, |e| matches!(e, Effect::Drain { .. })));
    let fx = load(&mut h, "i", 0, 1_000);
    assert!(has(&fx, |e| matches!(e, Effect::Drain { .. })));
}

#[test]
fn an_idle_timeout_scales_a_crashed_agent_to_zero_but_leaves_a_failed_one_failed() {
    let mut h = H::new();
    let spec = with("c", |s| s.idle_timeout = Some(Duration::from_secs(1)));
    let (_, fx) = h.spawn_spec(spec, false);
    h.exits(spawned(&fx).unwrap(), Some(1), None, 1.0);
    assert_eq!(h.state("c"), State::Backoff);
    load(&mut h, "c", 0, 2_000);
    assert_eq!(h.state("c"), State::Idle);
    // Woken, it starts afresh.
    let fx = h.input(Input::Wake { agent: id("c") });
    assert!(spawned(&fx).is_some());

    let spec = with("f", |s| s.idle_timeout = Some(Duration::from_secs(1)));
    let (_, fx) = h.spawn_spec(spec, false);
    h.exits(spawned(&fx).unwrap(), Some(78), None, 0.1);
    assert_eq!(h.state("f"), State::Failed);
    assert!(load(&mut h, "f", 0, 2_000).is_empty());
    assert_eq!(h.state("f"), State::Failed);
}

#[test]
fn scaling_up_again_while_a_removed_replica_stops_starts_a_new_one() {
    let mut h = H::new();
    let (_, fx) = h.spawn_spec(with("u", |s| s.replicas = 3), false);
    let ws = ready_all(&mut h, &fx);
    // 3 -> 2: the highest replica is stopping, not gone yet.
    let (_, fx) = put(&mut h, with("u", |s| s.replicas = 2), false);
    assert!(!has(&fx, |e| matches!(e, Effect::Spawn(_))), "{fx:?}");
    assert_eq!(summary(&h, "u").desired_replicas, 2);
    // 2 -> 3 before it has stopped: a third replica starts all the same.
    let (_, fx) = put(&mut h, with("u", |s| s.replicas = 3), false);
    let started = ready_all(&mut h, &fx);
    assert_eq!(started.len(), 1, "one new replica: {fx:?}");
    assert!(!ws.contains(&started[0]));
    assert_eq!(summary(&h, "u").desired_replicas, 3);
    assert_eq!(summary(&h, "u").ready_replicas, 3);
}
