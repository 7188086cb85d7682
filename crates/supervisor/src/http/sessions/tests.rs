use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::http::metrics::AgentMetrics;
use crate::model::WorkerId;

fn up(worker: u64) -> Arc<Upstream> {
    let m = Arc::new(AgentMetrics::default());
    Arc::new(Upstream::new(
        "a",
        &format!("par-a-{worker}"),
        8000 + worker as u16,
        WorkerId(worker),
        m,
    ))
}

fn settings(max: usize) -> SessionSettings {
    SessionSettings {
        idle_timeout: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(3600),
        drain_timeout: Duration::from_secs(60),
        max_sessions: max,
    }
}

fn place(
    s: &Sessions,
    c: &Counters,
    key: &str,
    ready: &[Arc<Upstream>],
    draining: &[Arc<Upstream>],
    now: Instant,
) -> Placed {
    s.place(key, ready, draining, &[], &settings(100), c, now)
        .expect("a worker")
}

#[test]
fn a_session_stays_with_its_worker_and_new_ones_spread() {
    let (s, c) = (Sessions::default(), Counters::default());
    let ready = [up(1), up(2)];
    let now = Instant::now();
    let mut on = std::collections::HashMap::new();
    for i in 0..20 {
        let p = place(&s, &c, &format!("s{i}"), &ready, &[], now);
        on.insert(i, p.upstream.worker);
    }
    // Ties go to the worker with fewer sessions: an even split.
    assert_eq!(ready[0].sessions.get(), 10);
    assert_eq!(ready[1].sessions.get(), 10);
    for turn in 1..5 {
        for i in 0..20 {
            let later = now + Duration::from_secs(turn);
            let p = place(&s, &c, &format!("s{i}"), &ready, &[], later);
            assert_eq!(p.upstream.worker, on[&i]);
            assert!(!p.rebound);
        }
    }
    assert_eq!(c.started.load(Ordering::Relaxed), 20);
    assert_eq!(s.live(), 20);
}

#[test]
fn a_draining_worker_keeps_its_sessions_but_takes_no_new_one() {
    let (s, c) = (Sessions::default(), Counters::default());
    let (old, new) = (up(1), up(2));
    let now = Instant::now();
    place(&s, &c, "kept", &[Arc::clone(&old)], &[], now);
    // The rollout: `old` only drains.
    let p = place(
        &s,
        &c,
        "kept",
        &[Arc::clone(&new)],
        &[Arc::clone(&old)],
        now,
    );
    assert_eq!(p.upstream.worker, old.worker);
    let p = place(
        &s,
        &c,
        "fresh",
        &[Arc::clone(&new)],
        &[Arc::clone(&old)],
        now,
    );
    assert_eq!(p.upstream.worker, new.worker);
    assert_eq!((old.sessions.get(), new.sessions.get()), (1, 1));
}

#[test]
fn a_gone_worker_loses_its_sessions_and_they_are_rebound() {
    let (s, c) = (Sessions::default(), Counters::default());
    let (a, b) = (up(1), up(2));
    let now = Instant::now();
    let first = place(&s, &c, "x", &[Arc::clone(&a)], &[], now);
    assert_eq!(first.upstream.worker, a.worker);
    let p = place(&s, &c, "x", &[Arc::clone(&b)], &[], now);
    assert!(p.rebound);
    assert_eq!(p.upstream.worker, b.worker);
    assert_eq!(c.lost_exited.load(Ordering::Relaxed), 1);
    assert_eq!(c.rebound.load(Ordering::Relaxed), 1);
    assert_eq!((a.sessions.get(), b.sessions.get()), (0, 1));
    // A worker stopped by its drain's timeout is counted apart.
    b.sessions.abandon();
    let p = place(&s, &c, "x", &[Arc::clone(&a)], &[], now);
    assert!(p.rebound);
    assert_eq!(c.lost_drained.load(Ordering::Relaxed), 1);
    // Avoided (it failed this request): the next ready one.
    let p = s
        .place(
            "x",
            &[Arc::clone(&a), Arc::clone(&b)],
            &[],
            &[a.worker],
            &settings(9),
            &c,
            now,
        )
        .unwrap();
    assert_eq!(p.upstream.worker, b.worker);
    assert!(s
        .place(
            "x",
            &[Arc::clone(&a)],
            &[],
            &[a.worker],
            &settings(9),
            &c,
            now
        )
        .is_none());
}

#[test]
fn bindings_expire_idle_or_old_and_the_table_empties() {
    let (s, c) = (Sessions::default(), Counters::default());
    let ready = [up(1), up(2)];
    let now = Instant::now();
    let set = SessionSettings {
        idle_timeout: Duration::from_secs(10),
        max_lifetime: Duration::from_secs(100),
        drain_timeout: Duration::from_secs(1),
        max_sessions: 20_000,
    };
    for i in 0..10_000 {
        s.place(&format!("s{i}"), &ready, &[], &[], &set, &c, now)
            .unwrap();
        s.remember_interaction(&format!("s{i}"), &format!("c{i}"));
    }
    assert_eq!((s.live(), s.interactions()), (10_000, 10_000));
    // Half are used again later: only the others expire.
    for i in 0..5_000 {
        s.place(
            &format!("s{i}"),
            &ready,
            &[],
            &[],
            &set,
            &c,
            now + Duration::from_secs(8),
        )
        .unwrap();
    }
    s.sweep(&set, &c, now + Duration::from_secs(11));
    assert_eq!(s.live(), 5_000);
    assert_eq!(s.interactions(), 5_000);
    assert_eq!(s.session_of("c1").as_deref(), Some("s1"));
    assert_eq!(s.session_of("c9999"), None);
    s.sweep(&set, &c, now + Duration::from_secs(19));
    assert_eq!((s.live(), s.interactions()), (0, 0));
    assert_eq!(c.expired.load(Ordering::Relaxed), 10_000);
    assert_eq!(ready[0].sessions.get() + ready[1].sessions.get(), 0);
    // Past its lifetime, however busy.
    s.place("busy", &ready, &[], &[], &set, &c, now).unwrap();
    for t in (5..100).step_by(5) {
        s.place(
            "busy",
            &ready,
            &[],
            &[],
            &set,
            &c,
            now + Duration::from_secs(t),
        )
        .unwrap();
    }
    s.sweep(&set, &c, now + Duration::from_secs(100));
    assert_eq!(s.live(), 0);
}

#[test]
fn the_table_is_bounded_least_recently_used_first() {
    let (s, c) = (Sessions::default(), Counters::default());
    let ready = [up(1)];
    let now = Instant::now();
    let set = settings(3);
    for (i, k) in ["a", "b", "c"].iter().enumerate() {
        s.place(
            k,
            &ready,
            &[],
            &[],
            &set,
            &c,
            now + Duration::from_secs(i as u64),
        )
        .unwrap();
    }
    // `a` used again (seconds later: uses are ordered to the second): `b`
    // is now the least recently used.
    s.place(
        "a",
        &ready,
        &[],
        &[],
        &set,
        &c,
        now + Duration::from_secs(5),
    )
    .unwrap();
    s.place(
        "d",
        &ready,
        &[],
        &[],
        &set,
        &c,
        now + Duration::from_secs(6),
    )
    .unwrap();
    assert_eq!(s.live(), 3);
    assert_eq!(c.evicted.load(Ordering::Relaxed), 1);
    assert_eq!(ready[0].sessions.get(), 3);
    // `b` comes back as a new session, evicting `c`.
    s.place(
        "b",
        &ready,
        &[],
        &[],
        &set,
        &c,
        now + Duration::from_secs(7),
    )
    .unwrap();
    assert_eq!(c.started.load(Ordering::Relaxed), 5);
    assert_eq!(c.evicted.load(Ordering::Relaxed), 2);
}

#[test]
fn interaction_ids_are_bounded_per_session() {
    let (s, c) = (Sessions::default(), Counters::default());
    let ready = [up(1)];
    place(&s, &c, "k", &ready, &[], Instant::now());
    for i in 0..1000 {
        s.remember_interaction("k", &format!("i{i}"));
    }
    assert_eq!(s.interactions(), MAX_INTERACTIONS_PER_SESSION);
    assert_eq!(s.session_of("i999").as_deref(), Some("k"));
    assert_eq!(s.session_of("i0"), None);
    // Unknown sessions record nothing; an id moves with the session that names it.
    s.remember_interaction("nobody", "z");
    assert_eq!(s.session_of("z"), None);
    place(&s, &c, "k2", &ready, &[], Instant::now());
    s.remember_interaction("k2", "i999");
    assert_eq!(s.session_of("i999").as_deref(), Some("k2"));
    s.clear();
    assert_eq!((s.live(), s.interactions()), (0, 0));
}
