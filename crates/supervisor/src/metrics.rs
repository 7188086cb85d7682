//! Per-agent request counters and latency histograms (lock-free), and the
//! Prometheus text rendering of `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// WebSockets upgraded through the proxy, and those open now.
    pub websockets: AtomicU64,
    pub websockets_open: AtomicU64,
    /// WebSocket messages relayed client → agent and agent → client.
    pub websocket_messages_in: AtomicU64,
    pub websocket_messages_out: AtomicU64,
}

impl AgentMetrics {
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

/// One agent's row of gauges, taken from the status snapshot.
pub struct AgentGauges<'a> {
    pub agent_id: &'a str,
    pub state: &'a str,
    pub restarts: u32,
    pub rss_bytes: Option<u64>,
    pub cpu_percent: Option<f64>,
    pub in_flight: usize,
}

/// Renders the Prometheus text format.
pub fn render(
    rows: &[(AgentGauges<'_>, &AgentMetrics)],
    uptime: Duration,
    unknown_agent: u64,
) -> String {
    let mut s = String::with_capacity(2048 + rows.len() * 1024);
    let _ = writeln!(
        s,
        "# HELP par_supervisor_uptime_seconds Seconds since the supervisor started."
    );
    let _ = writeln!(s, "# TYPE par_supervisor_uptime_seconds gauge");
    let _ = writeln!(
        s,
        "par_supervisor_uptime_seconds {:.3}",
        uptime.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "# HELP par_unknown_agent_requests_total Requests for agents that do not exist."
    );
    let _ = writeln!(s, "# TYPE par_unknown_agent_requests_total counter");
    let _ = writeln!(s, "par_unknown_agent_requests_total {unknown_agent}");
    let _ = writeln!(
        s,
        "# HELP par_agent_requests_total Proxied requests by status class."
    );
    let _ = writeln!(s, "# TYPE par_agent_requests_total counter");
    for (g, m) in rows {
        for (i, c) in m.by_class.iter().enumerate() {
            let _ = writeln!(
                s,
                "par_agent_requests_total{{agent=\"{}\",class=\"{}xx\"}} {}",
                g.agent_id,
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        s,
        "# HELP par_agent_proxy_errors_total Requests answered by the supervisor with 502/503/504."
    );
    let _ = writeln!(s, "# TYPE par_agent_proxy_errors_total counter");
    for (g, m) in rows {
        let _ = writeln!(
            s,
            "par_agent_proxy_errors_total{{agent=\"{}\"}} {}",
            g.agent_id,
            m.proxy_errors.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        s,
        "# HELP par_agent_request_duration_seconds Time to the response head."
    );
    let _ = writeln!(s, "# TYPE par_agent_request_duration_seconds histogram");
    for (g, m) in rows {
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += m.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                s,
                "par_agent_request_duration_seconds_bucket{{agent=\"{}\",le=\"{b}\"}} {cumulative}",
                g.agent_id
            );
        }
        let count = m.count.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "par_agent_request_duration_seconds_bucket{{agent=\"{}\",le=\"+Inf\"}} {count}",
            g.agent_id
        );
        let _ = writeln!(
            s,
            "par_agent_request_duration_seconds_sum{{agent=\"{}\"}} {:.6}",
            g.agent_id,
            m.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "par_agent_request_duration_seconds_count{{agent=\"{}\"}} {count}",
            g.agent_id
        );
    }
    let gauge = |s: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} {kind}");
    };
    gauge(
        &mut s,
        "par_agent_websockets_total",
        "WebSocket connections upgraded through the proxy.",
        "counter",
    );
    for (g, m) in rows {
        let _ = writeln!(
            s,
            "par_agent_websockets_total{{agent=\"{}\"}} {}",
            g.agent_id,
            m.websockets.load(Ordering::Relaxed)
        );
    }
    gauge(
        &mut s,
        "par_agent_websockets_open",
        "WebSocket connections open now.",
        "gauge",
    );
    for (g, m) in rows {
        let _ = writeln!(
            s,
            "par_agent_websockets_open{{agent=\"{}\"}} {}",
            g.agent_id,
            m.websockets_open.load(Ordering::Relaxed)
        );
    }
    gauge(
        &mut s,
        "par_agent_websocket_messages_total",
        "WebSocket messages relayed, by direction (in: client to agent).",
        "counter",
    );
    for (g, m) in rows {
        for (direction, c) in [
            ("in", &m.websocket_messages_in),
            ("out", &m.websocket_messages_out),
        ] {
            let _ = writeln!(
                s,
                "par_agent_websocket_messages_total{{agent=\"{}\",direction=\"{direction}\"}} {}",
                g.agent_id,
                c.load(Ordering::Relaxed)
            );
        }
    }
    gauge(
        &mut s,
        "par_agent_restarts_total",
        "Restarts of the agent's worker.",
        "counter",
    );
    for (g, _) in rows {
        let _ = writeln!(
            s,
            "par_agent_restarts_total{{agent=\"{}\"}} {}",
            g.agent_id, g.restarts
        );
    }
    gauge(
        &mut s,
        "par_agent_state",
        "1 for the agent's current lifecycle state.",
        "gauge",
    );
    for (g, _) in rows {
        let _ = writeln!(
            s,
            "par_agent_state{{agent=\"{}\",state=\"{}\"}} 1",
            g.agent_id, g.state
        );
    }
    gauge(
        &mut s,
        "par_agent_in_flight",
        "Requests and streams in flight.",
        "gauge",
    );
    for (g, _) in rows {
        let _ = writeln!(
            s,
            "par_agent_in_flight{{agent=\"{}\"}} {}",
            g.agent_id, g.in_flight
        );
    }
    gauge(
        &mut s,
        "par_agent_rss_bytes",
        "Resident memory of the worker's process group.",
        "gauge",
    );
    for (g, _) in rows {
        if let Some(v) = g.rss_bytes {
            let _ = writeln!(s, "par_agent_rss_bytes{{agent=\"{}\"}} {v}", g.agent_id);
        }
    }
    gauge(
        &mut s,
        "par_agent_cpu_percent",
        "CPU use of the worker's process group (100 = one core).",
        "gauge",
    );
    for (g, _) in rows {
        if let Some(v) = g.cpu_percent {
            let _ = writeln!(
                s,
                "par_agent_cpu_percent{{agent=\"{}\"}} {v:.2}",
                g.agent_id
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = AgentMetrics::default();
        m.observe(200, Duration::from_micros(500));
        m.observe(503, Duration::from_millis(30));
        let g = AgentGauges {
            agent_id: "a",
            state: "ready",
            restarts: 2,
            rss_bytes: Some(10),
            cpu_percent: None,
            in_flight: 0,
        };
        let text = render(&[(g, &m)], Duration::from_secs(1), 0);
        assert!(text.contains("par_agent_requests_total{agent=\"a\",class=\"2xx\"} 1"));
        assert!(text.contains("par_agent_requests_total{agent=\"a\",class=\"5xx\"} 1"));
        assert!(
            text.contains("par_agent_request_duration_seconds_bucket{agent=\"a\",le=\"0.001\"} 1")
        );
        assert!(
            text.contains("par_agent_request_duration_seconds_bucket{agent=\"a\",le=\"0.05\"} 2")
        );
        assert!(text.contains("par_agent_request_duration_seconds_count{agent=\"a\"} 2"));
        assert!(text.contains("par_agent_restarts_total{agent=\"a\"} 2"));
    }
}
