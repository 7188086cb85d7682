//! Health: liveness probes, startup timeout, the memory watchdog.

use super::*;

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
    assert!(matches!(h.route("a"), Some(RouteDecision::NotReady { .. })));
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
        h.view("a")
            .last_error_class
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
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
    assert_eq!(
        v.last_error_class
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("memory_limit")
    );
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
