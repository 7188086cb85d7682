//! The connection table's rules: who is evicted, when heads are due.

use super::*;

fn conns(max: usize) -> Arc<Connections> {
    Connections::new(Limits {
        max_connections: max,
        client_header_timeout: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(75),
    })
}

fn full(a: Admitted) -> Conn {
    match a {
        Admitted::Full(c) => c,
        _ => panic!("not admitted in full"),
    }
}

fn evicted(c: &Conn) -> bool {
    c.entry.busy.load(Ordering::Acquire) & EVICTED != 0
}

/// Its deadline, from the start of its wait.
fn due(c: &Conn) -> Duration {
    c.deadline() - c.conns.at(c.entry.since.load(Ordering::Acquire))
}

fn tick() {
    std::thread::sleep(Duration::from_millis(3));
}

#[test]
fn at_the_cap_the_longest_waiting_connection_makes_room_never_a_busy_one() {
    let c = conns(3);
    let busy = full(c.admit(false));
    tick();
    let partial = full(c.admit(false));
    partial.head_started();
    tick();
    let fresh = full(c.admit(false));
    // The oldest has a request in flight: the partial head goes.
    assert!(busy.begin_request());
    let newest = full(c.admit(false));
    assert!(evicted(&partial) && !evicted(&busy) && !evicted(&fresh));
    assert!(
        !partial.begin_request(),
        "an evicted connection starts nothing"
    );
    drop(partial);
    // An idle keep-alive connection waits from its last response's end.
    tick();
    busy.end_request();
    let _another = full(c.admit(false));
    assert!(evicted(&fresh) && !evicted(&busy) && !evicted(&newest));
}

#[test]
fn a_connection_accepted_with_its_whole_head_is_never_evicted_before_it_is_served() {
    let c = conns(2);
    let health = full(c.admit(true));
    tick();
    let young = full(c.admit(false));
    let newcomer = full(c.admit(false));
    assert!(evicted(&young) && !evicted(&health));
    // Served, then waiting like any other (from the end of its reply).
    assert!(health.begin_request());
    tick();
    health.end_request();
    let _next = full(c.admit(false));
    assert!(evicted(&newcomer) && !evicted(&health));
}

#[test]
fn with_every_connection_busy_the_health_reserve_serves_evicting_its_oldest() {
    let c = conns(1);
    let busy = full(c.admit(false));
    assert!(busy.begin_request());
    let mut reserve = Vec::new();
    for i in 0..HEALTH_ONLY {
        match c.admit(false) {
            Admitted::HealthOnly(h) => reserve.push(h),
            _ => panic!("the health reserve"),
        }
        if i == 0 {
            tick();
        }
    }
    // Full: its oldest waiting one makes room.
    let Admitted::HealthOnly(extra) = c.admit(false) else {
        panic!("room made in the reserve")
    };
    assert!(evicted(&reserve[0]) && !evicted(&reserve[1]));
    drop(reserve.remove(0));
    // Every one answering: refused.
    for h in reserve.iter().chain([&extra]) {
        assert!(h.begin_request());
    }
    assert!(matches!(c.admit(false), Admitted::Refused));
}

#[test]
fn heads_are_due_within_the_header_timeout_and_sooner_under_pressure() {
    let c = conns(8);
    // The first head, from the accept, whether it began or not.
    let first = full(c.admit(false));
    assert_eq!(due(&first), Duration::from_secs(10));
    first.head_started();
    assert_eq!(due(&first), Duration::from_secs(10));
    // Keep-alive: idle for keepalive_timeout, then a head within the header timeout.
    assert!(first.begin_request());
    first.end_request();
    assert_eq!(due(&first), Duration::from_secs(75));
    tick();
    first.head_started();
    let head_at = first
        .conns
        .at(first.entry.head_at.load(Ordering::Relaxed) - 1);
    assert_eq!(first.deadline() - head_at, Duration::from_secs(10));
    // The health reserve: short, always.
    let c = conns(1);
    let busy = full(c.admit(false));
    assert!(busy.begin_request());
    let Admitted::HealthOnly(h) = c.admit(false) else {
        panic!("every connection busy: the reserve")
    };
    assert_eq!(due(&h), PRESSED_HEAD_TIMEOUT);
}

#[test]
fn a_head_read_ahead_during_a_request_is_due_from_that_requests_end() {
    let c = conns(8);
    // Preloaded: its first head's bytes are no read-ahead.
    let p = full(c.admit(true));
    p.head_started();
    assert!(p.begin_request());
    p.end_request();
    assert_eq!(
        due(&p),
        Duration::from_secs(75),
        "idle: the keep-alive time"
    );
    // Bytes of the next head read while a request is in flight.
    assert!(p.begin_request());
    p.head_started();
    p.end_request();
    assert_eq!(
        due(&p),
        Duration::from_secs(10),
        "a head begun: the header timeout"
    );
}

#[tokio::test]
async fn a_wait_under_way_shortens_when_the_pressure_rises() {
    let c = conns(8);
    let slow = Arc::new(full(c.admit(false)));
    assert_eq!(due(&slow), Duration::from_secs(10));
    let waiting = tokio::spawn({
        let slow = Arc::clone(&slow);
        async move { slow.expired().await }
    });
    tokio::task::yield_now().await;
    let more: Vec<_> = (0..5).map(|_| full(c.admit(false))).collect();
    assert!(c.pressed());
    assert_eq!(due(&slow), PRESSED_HEAD_TIMEOUT);
    // Woken to shorten its wait: it ends within the short deadline.
    tokio::time::timeout(Duration::from_secs(8), waiting)
        .await
        .expect("the short deadline")
        .unwrap();
    drop(more);
    drop(slow);
    assert!(!c.pressed(), "below the low-water mark");
}

#[test]
fn slots_come_back() {
    let c = conns(1);
    let first = c.admit(false);
    assert_eq!(c.open(), 1);
    drop(first);
    assert_eq!(c.open(), 0);
    assert!(matches!(c.admit(false), Admitted::Full(..)));
}

#[test]
fn the_reserve_is_kept() {
    assert_eq!(default_max_connections(20_000), 18_976);
    assert_eq!(default_max_connections(1024), 256);
}
