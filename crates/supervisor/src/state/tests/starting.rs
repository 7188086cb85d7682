//! Starting: local and remote agents, fetches, conflicts, ports.

use super::*;

#[test]
fn a_local_agent_starts_then_gets_ready_and_routable() {
    let mut h = H::new();
    let (_, fx) = h.spawn_spec(local("a"), false);
    assert_eq!(h.state("a"), State::Starting);
    let w = spawned(&fx).unwrap();
    assert!(matches!(
        h.route("a"),
        Some(RouteDecision::NotReady {
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
        matches!(h.route("a"), Some(RouteDecision::Ready(u)) if u[0].port == 9001 && u[0].process_id == "par-a")
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
    assert_eq!(launch.unwrap().package, "/srv/par/downloads/abc.apkg");
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
        h.view("r")
            .last_error_class
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
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
        h.view("a")
            .last_error_class
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
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
