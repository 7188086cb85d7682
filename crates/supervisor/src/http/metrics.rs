//! Per-agent request counters and latency histograms (lock-free, updated by
//! the proxy), and `GET /metrics` in the Prometheus text format.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use par_telemetry::prometheus::{Kind, Text};

/// Upper bounds of the latency buckets, in seconds (time to response head).
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// By status class: 1xx..5xx.
    pub by_class: [AtomicU64; 5],
    /// Requests the supervisor answered itself (502/503/504).
    pub proxy_errors: AtomicU64,
    pub buckets: [AtomicU64; BUCKETS.len()],
    pub count: AtomicU64,
    pub sum_micros: AtomicU64,
    /// Requests answered 503 at once because the queue was full or timed out.
    pub rejected: AtomicU64,
    /// Wake-ups from zero, and how long held requests waited for them.
    pub wakes: AtomicU64,
    pub wake_buckets: [AtomicU64; WAKE_BUCKETS.len()],
    pub wake_count: AtomicU64,
    pub wake_sum_micros: AtomicU64,
    pub autoscale_decisions: AtomicU64,
    /// WebSockets upgraded through the proxy, and those open now.
    pub websockets: AtomicU64,
    pub websockets_open: AtomicU64,
    /// WebSocket messages relayed client → agent and agent → client.
    pub websocket_messages_in: AtomicU64,
    pub websocket_messages_out: AtomicU64,
    /// What happened to its sessions.
    pub sessions: crate::http::sessions::Counters,
}

type SessionCounter = fn(&crate::http::sessions::Counters) -> &AtomicU64;

/// The session counters with one series per agent.
const SESSION_COUNTERS: [(&str, &str, SessionCounter); 4] = [
    (
        "par_agent_sessions_started_total",
        "Sessions bound to a process for the first time.",
        |s| &s.started,
    ),
    (
        "par_agent_sessions_expired_total",
        "Session bindings ended by session_idle_timeout or session_max_lifetime.",
        |s| &s.expired,
    ),
    (
        "par_agent_sessions_evicted_total",
        "Session bindings dropped, least recently used first, to stay within max_sessions.",
        |s| &s.evicted,
    ),
    (
        "par_agent_sessions_rebound_total",
        "Sessions moved to another process because theirs was gone (x-par-session-rebound).",
        |s| &s.rebound,
    ),
];

/// Upper bounds of the wake-latency buckets, in seconds.
pub const WAKE_BUCKETS: [f64; 8] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

impl AgentMetrics {
    pub fn count_wake(&self) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_autoscale(&self) {
        self.autoscale_decisions.fetch_add(1, Ordering::Relaxed);
    }

    /// A held request got its worker after `waited`.
    pub fn observe_wake(&self, waited: Duration) {
        let secs = waited.as_secs_f64();
        if let Some(i) = WAKE_BUCKETS.iter().position(|b| secs <= *b) {
            self.wake_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.wake_count.fetch_add(1, Ordering::Relaxed);
        self.wake_sum_micros
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    /// A request the proxy answered itself because the worker failed it
    /// (`status`: 502, 503, 504): counted as a proxy error and observed.
    pub fn observe_failed(&self, status: u16, latency: Duration) {
        self.proxy_errors.fetch_add(1, Ordering::Relaxed);
        self.observe(status, latency);
    }

    pub fn observe(&self, status: u16, latency: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Every agent's counters, kept across its restarts and rollouts.
#[derive(Debug, Default)]
pub struct Registry {
    agents: RwLock<HashMap<String, Arc<AgentMetrics>>>,
}

impl Registry {
    /// The agent's counters (made on first use).
    pub fn agent(&self, agent_id: &str) -> Arc<AgentMetrics> {
        if let Some(m) = self.get(agent_id) {
            return m;
        }
        let mut map = self.agents.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(agent_id.to_string()).or_default())
    }

    pub fn get(&self, agent_id: &str) -> Option<Arc<AgentMetrics>> {
        self.agents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(agent_id)
            .cloned()
    }

    pub fn forget(&self, agent_id: &str) {
        self.agents
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(agent_id);
    }
}

/// One process's gauges, taken from the status snapshot.
pub struct Gauges<'a> {
    pub agent_id: &'a str,
    pub process_id: &'a str,
    pub state: &'a str,
    pub restarts: u32,
    pub rss_bytes: Option<u64>,
    pub cpu_percent: Option<f64>,
    pub in_flight: usize,
    /// Sessions bound to it.
    pub sessions: usize,
}

/// The whole page: supervisor, per-agent counters, per-process gauges.
pub fn render(
    agents: &[(&str, Arc<AgentMetrics>)],
    views: &[crate::http::api::view::AgentStatus<'_>],
    processes: &[Gauges<'_>],
    uptime: Duration,
    unknown_agent: u64,
) -> String {
    let mut t = Text::new();
    t.family(
        "par_supervisor_uptime_seconds",
        Kind::Gauge,
        "Seconds since the supervisor started.",
    );
    t.sample(
        "par_supervisor_uptime_seconds",
        &[],
        format!("{:.3}", uptime.as_secs_f64()),
    );
    t.family(
        "par_unknown_agent_requests_total",
        Kind::Counter,
        "Requests for agents that do not exist.",
    );
    t.sample("par_unknown_agent_requests_total", &[], unknown_agent);
    requests(&mut t, agents);
    scaling(&mut t, agents, views);
    process_gauges(&mut t, processes);
    par_telemetry::trace::render_counters(&mut t, par_telemetry::trace::counters());
    t.finish()
}

fn requests(t: &mut Text, agents: &[(&str, Arc<AgentMetrics>)]) {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    t.family(
        "par_agent_requests_total",
        Kind::Counter,
        "Proxied requests by status class.",
    );
    for (id, m) in agents {
        for (i, c) in m.by_class.iter().enumerate() {
            let class = format!("{}xx", i + 1);
            t.sample(
                "par_agent_requests_total",
                &[("agent_id", id), ("class", &class)],
                n(c),
            );
        }
    }
    t.family(
        "par_agent_proxy_errors_total",
        Kind::Counter,
        "Requests answered by the supervisor with 502/503/504.",
    );
    for (id, m) in agents {
        t.sample(
            "par_agent_proxy_errors_total",
            &[("agent_id", id)],
            n(&m.proxy_errors),
        );
    }
    t.family(
        "par_agent_request_duration_seconds",
        Kind::Histogram,
        "Time to the response head.",
    );
    for (id, m) in agents {
        let counts: Vec<u64> = m.buckets.iter().map(n).collect();
        t.histogram(
            "par_agent_request_duration_seconds",
            &[("agent_id", id)],
            &BUCKETS,
            &counts,
            n(&m.sum_micros) as f64 / 1e6,
            n(&m.count),
        );
    }
}

fn labels<'a>(g: &Gauges<'a>) -> [(&'static str, &'a str); 2] {
    [("agent_id", g.agent_id), ("process_id", g.process_id)]
}

fn scaling(
    t: &mut Text,
    agents: &[(&str, Arc<AgentMetrics>)],
    views: &[crate::http::api::view::AgentStatus<'_>],
) {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    t.family(
        "par_agent_queue_rejected_total",
        Kind::Counter,
        "Requests answered 503 at once: the agent's queue was full or its wait ran out.",
    );
    for (id, m) in agents {
        t.sample(
            "par_agent_queue_rejected_total",
            &[("agent_id", id)],
            n(&m.rejected),
        );
    }
    for (name, help, get) in SESSION_COUNTERS {
        t.family(name, Kind::Counter, help);
        for (id, m) in agents {
            t.sample(name, &[("agent_id", id)], n(get(&m.sessions)));
        }
    }
    t.family(
        "par_agent_sessions_lost_total",
        Kind::Counter,
        "Sessions whose process was gone when their next request came: it exited \
         (crash, restart, stop), or it was stopped when its drain time for sessions ran out.",
    );
    for (id, m) in agents {
        let s = &m.sessions;
        t.sample(
            "par_agent_sessions_lost_total",
            &[("agent_id", id), ("reason", "process_exited")],
            n(&s.lost_exited),
        );
        t.sample(
            "par_agent_sessions_lost_total",
            &[("agent_id", id), ("reason", "drain_timeout")],
            n(&s.lost_drained),
        );
    }
    t.family(
        "par_agent_wakeups_total",
        Kind::Counter,
        "Wake-ups of the agent from zero replicas.",
    );
    for (id, m) in agents {
        t.sample("par_agent_wakeups_total", &[("agent_id", id)], n(&m.wakes));
    }
    t.family(
        "par_agent_wake_wait_seconds",
        Kind::Histogram,
        "How long requests held for a wake waited for a ready replica.",
    );
    for (id, m) in agents {
        let counts: Vec<u64> = m.wake_buckets.iter().map(n).collect();
        t.histogram(
            "par_agent_wake_wait_seconds",
            &[("agent_id", id)],
            &WAKE_BUCKETS,
            &counts,
            n(&m.wake_sum_micros) as f64 / 1e6,
            n(&m.wake_count),
        );
    }
    t.family(
        "par_agent_autoscale_decisions_total",
        Kind::Counter,
        "Changes of the agent's replica count made by the autoscaler.",
    );
    for (id, m) in agents {
        t.sample(
            "par_agent_autoscale_decisions_total",
            &[("agent_id", id)],
            n(&m.autoscale_decisions),
        );
    }
    websockets(t, agents);
    t.family(
        "par_agent_replicas",
        Kind::Gauge,
        "Replicas wanted and ready.",
    );
    for v in views {
        let desired = v.desired_replicas.to_string();
        t.sample(
            "par_agent_replicas",
            &[("agent_id", v.agent_id), ("kind", "desired")],
            desired,
        );
        let ready = v.ready_replicas.to_string();
        t.sample(
            "par_agent_replicas",
            &[("agent_id", v.agent_id), ("kind", "ready")],
            ready,
        );
    }
    t.family(
        "par_agent_queue_depth",
        Kind::Gauge,
        "Requests waiting in the agent's queue (for a slot or a wake).",
    );
    for v in views {
        t.sample(
            "par_agent_queue_depth",
            &[("agent_id", v.agent_id)],
            v.queued,
        );
    }
}

fn websockets(t: &mut Text, agents: &[(&str, Arc<AgentMetrics>)]) {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    t.family(
        "par_agent_websockets_total",
        Kind::Counter,
        "WebSocket connections upgraded through the proxy.",
    );
    for (id, m) in agents {
        t.sample(
            "par_agent_websockets_total",
            &[("agent_id", id)],
            n(&m.websockets),
        );
    }
    t.family(
        "par_agent_websockets_open",
        Kind::Gauge,
        "WebSocket connections open now.",
    );
    for (id, m) in agents {
        t.sample(
            "par_agent_websockets_open",
            &[("agent_id", id)],
            n(&m.websockets_open),
        );
    }
    t.family(
        "par_agent_websocket_messages_total",
        Kind::Counter,
        "WebSocket messages relayed, by direction (in: client to agent).",
    );
    for (id, m) in agents {
        for (direction, c) in [
            ("in", &m.websocket_messages_in),
            ("out", &m.websocket_messages_out),
        ] {
            t.sample(
                "par_agent_websocket_messages_total",
                &[("agent_id", id), ("direction", direction)],
                n(c),
            );
        }
    }
}

fn process_gauges(t: &mut Text, processes: &[Gauges<'_>]) {
    t.family(
        "par_agent_restarts_total",
        Kind::Counter,
        "Restarts of the process.",
    );
    for g in processes {
        t.sample("par_agent_restarts_total", &labels(g), g.restarts);
    }
    t.family(
        "par_agent_state",
        Kind::Gauge,
        "1 for the process's current lifecycle state.",
    );
    for g in processes {
        let [a, p] = labels(g);
        t.sample("par_agent_state", &[a, p, ("state", g.state)], 1);
    }
    t.family(
        "par_agent_in_flight",
        Kind::Gauge,
        "Requests and streams in flight.",
    );
    for g in processes {
        t.sample("par_agent_in_flight", &labels(g), g.in_flight);
    }
    t.family(
        "par_agent_sessions",
        Kind::Gauge,
        "Sessions bound to the process (tracked agents).",
    );
    for g in processes {
        t.sample("par_agent_sessions", &labels(g), g.sessions);
    }
    t.family(
        "par_agent_rss_bytes",
        Kind::Gauge,
        "Resident memory of the worker's process group.",
    );
    for g in processes {
        if let Some(v) = g.rss_bytes {
            t.sample("par_agent_rss_bytes", &labels(g), v);
        }
    }
    t.family(
        "par_agent_cpu_percent",
        Kind::Gauge,
        "CPU use of the worker's process group (100 = one core).",
    );
    for g in processes {
        if let Some(v) = g.cpu_percent {
            t.sample("par_agent_cpu_percent", &labels(g), format!("{v:.2}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histogram_and_gauges() {
        let m = Arc::new(AgentMetrics::default());
        m.observe(200, Duration::from_micros(500));
        m.observe(503, Duration::from_millis(30));
        let g = Gauges {
            agent_id: "a",
            process_id: "par-a",
            state: "ready",
            restarts: 2,
            rss_bytes: Some(10),
            cpu_percent: None,
            in_flight: 0,
            sessions: 3,
        };
        let text = render(&[("a", m)], &[], &[g], Duration::from_secs(1), 0);
        assert!(text.contains("par_agent_requests_total{agent_id=\"a\",class=\"2xx\"} 1"));
        assert!(text.contains("par_agent_requests_total{agent_id=\"a\",class=\"5xx\"} 1"));
        assert!(text
            .contains("par_agent_request_duration_seconds_bucket{agent_id=\"a\",le=\"0.001\"} 1"));
        assert!(text
            .contains("par_agent_request_duration_seconds_bucket{agent_id=\"a\",le=\"0.05\"} 2"));
        assert!(text.contains("par_agent_request_duration_seconds_count{agent_id=\"a\"} 2"));
        assert!(text.contains("par_agent_restarts_total{agent_id=\"a\",process_id=\"par-a\"} 2"));
        assert!(
            text.contains("par_agent_state{agent_id=\"a\",process_id=\"par-a\",state=\"ready\"} 1")
        );
    }
}
