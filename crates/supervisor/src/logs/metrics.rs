//! The log bounds' counters in the Prometheus text format (for `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

use par_telemetry::prometheus::{Kind, Text};

use super::store::LogStore;

impl LogStore {
    /// The bounds' counters in the Prometheus text format (for `/metrics`).
    pub fn metrics_text(&self) -> String {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.counters;
        let mut t = Text::new();
        for (name, kind, help, value) in [
            (
                "par_log_lines_cut_total",
                Kind::Counter,
                "Agent log lines cut at log_line_max.",
                n(&c.lines_cut),
            ),
            (
                "par_log_fields_dropped_total",
                Kind::Counter,
                "Fields of JSON log lines dropped or cut (log_fields_max, log_field_max).",
                n(&c.fields_dropped),
            ),
            (
                "par_log_entries_evicted_for_bytes_total",
                Kind::Counter,
                "Log entries pushed out of the rings by their byte bounds.",
                n(&c.evicted_for_bytes),
            ),
            (
                "par_log_lines_not_emitted_total",
                Kind::Counter,
                "Agent log lines not re-emitted on the supervisor's stdout (it could not keep up).",
                n(&self.dropped),
            ),
            (
                "par_log_ring_bytes",
                Kind::Gauge,
                "Bytes the log rings hold (estimated).",
                self.bytes() as u64,
            ),
        ] {
            t.family(name, kind, help);
            t.sample(name, &[], value);
        }
        t.finish()
    }
}
