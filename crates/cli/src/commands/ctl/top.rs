//! `par ctl top`: a view of each agent's CPU, memory and requests, redrawn
//! every interval (plain ANSI; on a pipe, one frame after another). Request
//! rates and p95 latency come from the difference between `/metrics` samples.

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use super::client::Api;
use super::status::{cell, Process, Status};
use super::table::{duration, layout, mb, supervisor_line, Out};
use clap::Args;

#[derive(Args)]
pub struct TopArgs {
    /// Time between frames, e.g. 1s, 500ms.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop after this many frames (default: until Ctrl-C).
    #[arg(short = 'n', long)]
    iterations: Option<u64>,
}

/// One agent's counters in one `/metrics` sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub requests: f64,
    /// (upper bound, cumulative count), sorted by bound.
    pub buckets: Vec<(f64, f64)>,
}

/// The per-agent request counters and latency histogram of a Prometheus text.
pub fn parse_metrics(body: &str) -> HashMap<String, Counters> {
    let mut out: HashMap<String, Counters> = HashMap::new();
    for line in body.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => continue,
        };
        let label = |k: &str| {
            labels.split(',').find_map(|kv| {
                let (lk, lv) = kv.split_once('=')?;
                (lk.trim() == k).then(|| lv.trim().trim_matches('"').to_string())
            })
        };
        let Some(agent) = label("agent_id") else {
            continue;
        };
        match name {
            "par_agent_requests_total" => out.entry(agent).or_default().requests += value,
            "par_agent_request_duration_seconds_bucket" => {
                let le = label("le").and_then(|l| {
                    if l == "+Inf" {
                        Some(f64::INFINITY)
                    } else {
                        l.parse().ok()
                    }
                });
                if let Some(le) = le {
                    out.entry(agent).or_default().buckets.push((le, value));
                }
            }
            _ => {}
        }
    }
    for c in out.values_mut() {
        c.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// The q-quantile of the requests between two cumulative histograms
/// (linear within a bucket, as Prometheus' `histogram_quantile`).
pub fn quantile(q: f64, older: &[(f64, f64)], newer: &[(f64, f64)]) -> Option<f64> {
    let before: HashMap<u64, f64> = older.iter().map(|(le, c)| (le.to_bits(), *c)).collect();
    let deltas: Vec<(f64, f64)> = newer
        .iter()
        .map(|(le, c)| {
            (
                *le,
                (c - before.get(&le.to_bits()).copied().unwrap_or(0.0)).max(0.0),
            )
        })
        .collect();
    let total = deltas.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut prev_le, mut prev_count) = (0.0, 0.0);
    for (le, c) in deltas {
        if c >= rank {
            if le.is_infinite() {
                return Some(prev_le);
            }
            let in_bucket = c - prev_count;
            return Some(if in_bucket > 0.0 {
                prev_le + (le - prev_le) * (rank - prev_count) / in_bucket
            } else {
                le
            });
        }
        prev_le = le;
        prev_count = c;
    }
    Some(prev_le)
}

/// One `/metrics` sample: when, and each agent's counters.
type Sample = (Instant, HashMap<String, Counters>);

/// The samples of the last minute.
#[derive(Default)]
struct History {
    samples: VecDeque<Sample>,
}

impl History {
    fn add(&mut self, at: Instant, m: HashMap<String, Counters>) {
        self.samples.push_back((at, m));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > Duration::from_secs(60))
        {
            self.samples.pop_front();
        }
    }

    /// The newest sample and the newest one at least `window` older (else the oldest).
    fn pair(&self, window: Duration) -> Option<(&Sample, &Sample)> {
        let newest = self.samples.back()?;
        let older = self
            .samples
            .iter()
            .rev()
            .find(|(t, _)| newest.0.duration_since(*t) >= window)
            .or_else(|| self.samples.front())?;
        (newest.0 > older.0).then_some((older, newest))
    }

    fn rate(&self, agent: &str) -> Option<f64> {
        let (o, n) = self.pair(Duration::from_secs(5))?;
        let (a, b) = (o.1.get(agent)?, n.1.get(agent)?);
        (b.requests >= a.requests)
            .then(|| (b.requests - a.requests) / n.0.duration_since(o.0).as_secs_f64())
    }

    fn p95(&self, agent: &str) -> Option<f64> {
        let (o, n) = self.pair(Duration::from_secs(60))?;
        quantile(0.95, &o.1.get(agent)?.buckets, &n.1.get(agent)?.buckets)
    }
}

fn frame(status: &Status, hist: &History, url: &str) -> Vec<String> {
    let s = &status.supervisor;
    let res = &s.resources;
    let procs = &status.processes;
    let usage = |p: &Process| p.resources.clone().unwrap_or_default();
    let cpu_sum: f64 = procs.iter().filter_map(|p| usage(p).cpu_percent).sum();
    let rss_sum: f64 = procs.iter().filter_map(|p| usage(p).rss_mb).sum();
    let words = |v: &Option<String>| cell(v.as_deref().filter(|v| !v.is_empty()));
    let mut lines = vec![
        supervisor_line(status, url),
        format!(
            "task: {} CPU ({}), {} ({}); agents use {:.2} CPU, {}; supervisor {}",
            res.cpus
                .as_ref()
                .filter(|v| !v.is_null())
                .map_or("-".into(), |v| v
                    .as_str()
                    .map_or_else(|| v.to_string(), str::to_string)),
            words(&res.cpu_source),
            mb(res.memory_bytes.map(|b| b / 1048576.0)),
            words(&res.memory_source),
            cpu_sum / 100.0,
            mb(Some(rss_sum)),
            mb(s.rss_mb),
        ),
        String::new(),
    ];
    let header = [
        "ID",
        "STATE",
        "PID",
        "CPU",
        "MEM",
        "REQ/S",
        "P95",
        "IN FLIGHT",
        "RESTARTS",
        "UPTIME",
    ];
    let rows: Vec<Vec<(String, Option<&'static str>)>> = procs
        .iter()
        .map(|p| {
            let id = p.agent_id.clone();
            let running = p.running();
            let r = if running {
                usage(p)
            } else {
                Default::default()
            };
            vec![
                (id.clone(), None),
                (p.state.to_string(), None),
                (cell(p.pid), None),
                (
                    r.cpu_percent.map_or("-".into(), |c| format!("{c:.1}%")),
                    None,
                ),
                (mb(r.rss_mb), None),
                (
                    hist.rate(&id).map_or("-".into(), |v| format!("{v:.1}")),
                    None,
                ),
                (
                    hist.p95(&id)
                        .map_or("-".into(), |v| format!("{:.1} ms", v * 1000.0)),
                    None,
                ),
                (cell(r.in_flight), None),
                (cell(p.restarts), None),
                (
                    if running {
                        super::table::age(p.started_at.as_deref()).map_or("-".into(), duration)
                    } else {
                        "-".into()
                    },
                    None,
                ),
            ]
        })
        .collect();
    lines.extend(layout(&header, &rows, false));
    lines
}

pub async fn run(api: &Api, a: TopArgs) -> anyhow::Result<()> {
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let tty = std::io::stdout().is_terminal();
    let mut out = Out::stdout();
    let mut hist = History::default();
    if tty {
        // The alternate screen, cursor hidden; both restored on the way out.
        out.raw("\x1b[?1049h\x1b[?25l")?;
    }
    let result = async {
        let mut n = 0u64;
        loop {
            let status = api.status().await?;
            if let Ok(m) = api.get_text("/metrics").await {
                hist.add(Instant::now(), parse_metrics(&m));
            }
            let lines = frame(&status, &hist, api.base());
            if tty {
                out.raw(&format!("\x1b[H\x1b[2J{}\n", lines.join("\n")))?;
            } else {
                out.line(&lines.join("\n"))?;
                out.line("")?;
            }
            n += 1;
            if a.iterations.is_some_and(|max| n >= max) {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(a.interval) => {}
                _ = sigint.recv() => return Ok(()),
            }
        }
    }
    .await;
    if tty {
        out.raw("\x1b[?25h\x1b[?1049l")?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE x counter\n\
        par_agent_requests_total{agent_id=\"a\",class=\"2xx\"} 7\n\
        par_agent_requests_total{agent_id=\"a\",class=\"5xx\"} 3\n\
        par_agent_request_duration_seconds_bucket{agent_id=\"a\",le=\"0.01\"} 5\n\
        par_agent_request_duration_seconds_bucket{agent_id=\"a\",le=\"0.1\"} 9\n\
        par_agent_request_duration_seconds_bucket{agent_id=\"a\",le=\"+Inf\"} 10\n\
        par_supervisor_uptime_seconds 3.0\n";

    #[test]
    fn metrics_are_read_per_agent() {
        let m = parse_metrics(TEXT);
        let a = &m["a"];
        assert_eq!(a.requests, 10.0);
        assert_eq!(
            a.buckets,
            vec![(0.01, 5.0), (0.1, 9.0), (f64::INFINITY, 10.0)]
        );
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let newer = [(0.01, 5.0), (0.1, 9.0), (f64::INFINITY, 10.0)];
        // median: rank 5 of 10 is the top of the first bucket
        assert!((quantile(0.5, &[], &newer).unwrap() - 0.01).abs() < 1e-9);
        // p80: rank 8, 3 of the 4 in (0.01, 0.1]
        assert!((quantile(0.8, &[], &newer).unwrap() - (0.01 + 0.09 * 0.75)).abs() < 1e-9);
        // p99 falls in +Inf: the last finite bound
        assert_eq!(quantile(0.99, &[], &newer), Some(0.1));
        // nothing new between two samples: no quantile
        assert_eq!(quantile(0.95, &newer, &newer), None);
    }
}
