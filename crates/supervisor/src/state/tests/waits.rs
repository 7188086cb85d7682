//! `?wait`: answered once the agent has settled, whatever it settled in.

use super::*;

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
