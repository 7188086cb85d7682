//! Prometheus metrics of the worker: requests by route and status, latency, errors.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
}

/// Counters kept in memory and rendered as Prometheus text.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Records one answered request (latency = time to the response head).
    pub fn record(&self, route: &'static str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.requests.entry((route, status)).or_default() += 1;
        let h = m.latency.entry(route).or_default();
        h.count += 1;
        h.sum += secs;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            h.counts[i] += 1;
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self, agent_id: &str, up: bool, in_flight: usize) -> String {
        use par_telemetry::prometheus::{Kind, Text};
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut t = Text::new();
        t.family(
            "par_worker_requests_total",
            Kind::Counter,
            "HTTP requests answered, by route and status.",
        );
        for ((route, status), n) in &m.requests {
            let status = status.to_string();
            t.sample(
                "par_worker_requests_total",
                &[
                    ("agent_id", agent_id),
                    ("route", route),
                    ("status", &status),
                ],
                n,
            );
        }
        t.family(
            "par_worker_errors_total",
            Kind::Counter,
            "HTTP requests answered with a 5xx status, by route.",
        );
        let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
        for ((route, status), n) in &m.requests {
            if *status >= 500 {
                *errors.entry(route).or_default() += n;
            }
        }
        for (route, n) in errors {
            t.sample(
                "par_worker_errors_total",
                &[("agent_id", agent_id), ("route", route)],
                n,
            );
        }
        t.family(
            "par_worker_request_duration_seconds",
            Kind::Histogram,
            "Time to the response head, by route.",
        );
        for (route, h) in &m.latency {
            t.histogram(
                "par_worker_request_duration_seconds",
                &[("agent_id", agent_id), ("route", route)],
                &BUCKETS,
                &h.counts,
                h.sum,
                h.count,
            );
        }
        t.family(
            "par_worker_agent_up",
            Kind::Gauge,
            "1 when the agent is loaded and its host is running.",
        );
        t.sample(
            "par_worker_agent_up",
            &[("agent_id", agent_id)],
            u8::from(up),
        );
        t.family(
            "par_worker_host_requests_in_flight",
            Kind::Gauge,
            "Requests waiting on the agent host.",
        );
        t.sample(
            "par_worker_host_requests_in_flight",
            &[("agent_id", agent_id)],
            in_flight,
        );
        par_telemetry::trace::render_counters(&mut t, par_telemetry::trace::counters());
        t.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.record("/invoke", 200, Duration::from_micros(300));
        m.record("/invoke", 500, Duration::from_millis(30));
        let text = m.render("a", true, 0);
        assert!(text
            .contains(r#"par_worker_requests_total{agent_id="a",route="/invoke",status="200"} 1"#));
        assert!(text.contains(r#"par_worker_errors_total{agent_id="a",route="/invoke"} 1"#));
        assert!(text.contains(r#"route="/invoke",le="0.0005"} 1"#));
        assert!(text.contains(r#"route="/invoke",le="0.05"} 2"#));
        assert!(text.contains(r#"route="/invoke",le="+Inf"} 2"#));
    }
}
