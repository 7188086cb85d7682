//! The Prometheus text exposition format (version 0.0.4), written by hand:
//! families with their HELP/TYPE lines, samples with escaped labels, and
//! cumulative histograms.

use std::fmt::{Display, Write as _};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A page of metrics being written.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    pub fn new() -> Text {
        Text {
            out: String::with_capacity(4096),
        }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// A histogram's samples from per-bucket (not cumulative) counts, one per
    /// bound in `bounds`; observations above the last bound count in `+Inf` only.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
        count: u64,
    ) {
        let mut cumulative = 0;
        for (bound, c) in bounds.iter().zip(counts) {
            cumulative += c;
            let le = bound.to_string();
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_bucket");
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.out, " {count}");
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {sum:.6}");
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {count}");
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_histograms() {
        let mut t = Text::new();
        t.family("x_total", Kind::Counter, "Things.");
        t.sample("x_total", &[("agent_id", "a\"b"), ("class", "2xx")], 3);
        t.sample("up", &[], 1);
        t.histogram(
            "lat",
            &[("agent_id", "a")],
            &[0.001, 0.01],
            &[1, 2],
            0.0123,
            4,
        );
        let s = t.finish();
        assert!(s.contains("# TYPE x_total counter\n"));
        assert!(s.contains("x_total{agent_id=\"a\\\"b\",class=\"2xx\"} 3\n"));
        assert!(s.contains("up 1\n"));
        assert!(s.contains("lat_bucket{agent_id=\"a\",le=\"0.001\"} 1\n"));
        assert!(s.contains("lat_bucket{agent_id=\"a\",le=\"0.01\"} 3\n"));
        assert!(s.contains("lat_bucket{agent_id=\"a\",le=\"+Inf\"} 4\n"));
        assert!(s.contains("lat_sum{agent_id=\"a\"} 0.012300\n"));
        assert!(s.contains("lat_count{agent_id=\"a\"} 4\n"));
    }
}
