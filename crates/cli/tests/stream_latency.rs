//! Streamed replies arrive when the agent sends them: ten SSE requests on one
//! keep-alive connection, through the supervisor and straight to the worker,
//! each first event timed from the request. A socket that waits for a delayed
//! ACK before sending a small write (Nagle) adds at least 40 ms to every
//! request after the first; without it each takes a few milliseconds.

mod supervisor_support;

use std::time::{Duration, Instant};

use supervisor_support::*;

const REQUESTS: usize = 10;

/// Sends `REQUESTS` streamed requests on one connection; returns the time to
/// the first event of each.
fn first_event_times(port: u16, path: &str) -> Vec<Duration> {
    let mut conn = Conn::open(port).expect("connect");
    let mut times = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let t = Instant::now();
        conn.send("GET", path, &[("Accept", "text/event-stream")], b"")
            .expect("send");
        let (status, _) = conn.read_head().expect("response head");
        assert_eq!(status, 200);
        let mut first = None;
        while let Some(chunk) = conn.read_chunk().expect("chunk") {
            if first.is_none() && String::from_utf8_lossy(&chunk).contains("event: tick") {
                first = Some(t.elapsed());
            }
        }
        times.push(first.expect("the stream carried an event"));
    }
    times
}

/// The fastest reused-connection request. A Nagle stall puts every one of
/// them at 40 ms or more, so the minimum is a bound that load cannot fake:
/// noise makes requests slower, never all nine of them slow by 30 ms.
fn fastest_reused(times: &[Duration]) -> Duration {
    times[1..].iter().copied().min().expect("several requests")
}

#[test]
fn streamed_events_are_not_held_back_on_reused_connections() {
    let agents = format!(
        "[[agents]]\nid = \"t\"\npackage = \"{}/examples/agents/ticker\"\n",
        repo_root().display()
    );
    let sup = Supervisor::start_with("latency", "", &agents, &[]);
    let p = sup.wait_ready("t", Duration::from_secs(120));
    let worker_port = p["port"].as_u64().expect("worker port") as u16;

    let path = "/events?n=2&delay_ms=5&pad=0";
    let proxied = first_event_times(sup.port, &format!("/agents/t{path}"));
    let direct = first_event_times(worker_port, path);
    eprintln!("first event through the supervisor: {proxied:?}");
    eprintln!("first event direct to the worker:   {direct:?}");
    let bound = Duration::from_millis(30);
    assert!(
        fastest_reused(&direct) < bound,
        "every reused-connection stream from the worker was {bound:?} or more late: {direct:?}"
    );
    assert!(
        fastest_reused(&proxied) < bound,
        "every reused-connection stream through the supervisor was {bound:?} or more late: {proxied:?}"
    );
}
