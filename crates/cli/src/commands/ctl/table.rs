//! How `par ctl` prints: aligned tables, state colours on a terminal only,
//! and a closed pipe (`| head`) ending the program quietly.

use std::io::{IsTerminal as _, Write as _};

use super::client::error_text;
use super::status::{cell, AgentSeen, Process, Status};
use par_supervisor::model::{AgentSettings, RolloutStatus, State};

/// Standard output, line by line.
pub struct Out {
    color: bool,
}

impl Out {
    pub fn stdout() -> Out {
        let color = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none()
            && std::env::var("TERM").map_or(true, |t| t != "dumb");
        Out { color }
    }

    pub fn color(&self) -> bool {
        self.color
    }

    pub fn line(&mut self, s: &str) -> std::io::Result<()> {
        self.raw(&format!("{s}\n"))
    }

    pub fn raw(&mut self, s: &str) -> std::io::Result<()> {
        let mut o = std::io::stdout().lock();
        match o.write_all(s.as_bytes()).and_then(|_| o.flush()) {
            // The reader went away (`par ctl logs -f | head`): that is the end, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
            r => r,
        }
    }
}

pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    let s = secs as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=172_799 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

pub fn mb(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 10240.0 => format!("{:.1} GB", v / 1024.0),
        Some(v) if v >= 100.0 => format!("{v:.0} MB"),
        Some(v) => format!("{v:.1} MB"),
        None => "-".into(),
    }
}

/// ANSI colour of a lifecycle state.
fn state_color(state: State) -> &'static str {
    match state {
        State::Ready => "32",
        State::Pending | State::Fetching | State::Starting | State::Idle => "36",
        State::Unhealthy | State::Backoff | State::Crashed => "33",
        State::Failed => "31",
        State::Stopping | State::Stopped => "2",
    }
}

pub fn paint(s: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// Seconds since an RFC 3339 time, by this machine's clock.
pub fn age(v: Option<&str>) -> Option<f64> {
    let t = humantime::parse_rfc3339_weak(v?).ok()?;
    std::time::SystemTime::now()
        .duration_since(t)
        .ok()
        .map(|d| d.as_secs_f64())
}

/// Lines of an aligned table; `colors[i]` paints cell `i` of a row (after padding).
pub fn layout(
    header: &[&str],
    rows: &[Vec<(String, Option<&'static str>)>],
    color: bool,
) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, (c, _)) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    let mut lines = vec![header
        .iter()
        .enumerate()
        .map(|(i, h)| paint(&pad(h, widths[i]), "1", color))
        .collect::<Vec<_>>()
        .join("  ")
        .trim_end()
        .to_string()];
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, (c, code))| {
                let padded = pad(c, widths.get(i).copied().unwrap_or(0));
                match code {
                    Some(code) => paint(&padded, code, color),
                    None => padded,
                }
            })
            .collect();
        lines.push(cells.join("  ").trim_end().to_string());
    }
    lines
}

/// `par ctl ls`: one row per process, like `pm2 ls`.
pub fn agents_table(procs: &[Process], color: bool) -> Vec<String> {
    let header = [
        "ID",
        "PROCESS",
        "STATE",
        "PACKAGE",
        "PORT",
        "PID",
        "RESTARTS",
        "UPTIME",
        "CPU",
        "MEM",
        "MEM LIMIT",
    ];
    let rows: Vec<Vec<(String, Option<&'static str>)>> = procs
        .iter()
        .map(|p| {
            let running = p.running();
            // A dead worker's last usage sample can linger in the status.
            let r = p.resources.as_ref().filter(|_| running);
            let uptime = if running {
                age(p.started_at.as_deref()).map_or("-".into(), duration)
            } else {
                "-".into()
            };
            let mem_limit = p.limits.as_ref().and_then(|l| {
                l.memory_limit_mb
                    .map(|m| format!("{} {}", mb(Some(m)), cell(l.memory_enforcement.as_deref())))
            });
            let mut state_cell = p.state.to_string();
            if p.state == State::Backoff {
                if let Some(s) = p.next_restart_in_seconds {
                    state_cell = format!("backoff ({s:.1}s)");
                }
            }
            if p.rollout
                .as_ref()
                .is_some_and(|r| r.state == RolloutStatus::Rolling)
            {
                state_cell.push_str(" +rollout");
            }
            vec![
                (p.agent_id.clone(), None),
                (p.process_id.clone(), None),
                (state_cell, Some(state_color(p.state))),
                (cell(p.package_id().filter(|s| !s.is_empty())), None),
                (cell(p.port), None),
                (cell(p.pid), None),
                (cell(p.restarts), None),
                (uptime, None),
                (
                    r.and_then(|r| r.cpu_percent)
                        .map_or("-".into(), |c| format!("{c:.1}%")),
                    None,
                ),
                (mb(r.and_then(|r| r.rss_mb)), None),
                (mem_limit.unwrap_or_else(|| "-".into()), None),
            ]
        })
        .collect();
    let mut lines = layout(&header, &rows, color);
    for p in procs {
        if matches!(p.state, State::Failed | State::Backoff) {
            let e = error_text(p.last_error.as_ref());
            if e != "-" {
                lines.push(format!("  {}: {e}", p.agent_id));
            }
        }
    }
    lines
}

/// The supervisor in one line: version, phase, uptime, agents ready, address.
pub fn supervisor_line(status: &Status, url: &str) -> String {
    let s = &status.supervisor;
    let phase = match s.state.as_deref() {
        Some("running") => "serving",
        Some(other) => other,
        None => "-",
    };
    format!(
        "par supervisor {} at {url}: {phase}, up {}, {} of {} agents ready",
        cell(s.version.as_deref().filter(|v| !v.is_empty())),
        s.uptime_seconds.map_or("-".into(), duration),
        cell(status.agents_ready),
        cell(status.agents_total),
    )
}

/// An agent as a whole in one line: state, replicas, load, sessions.
pub fn agent_line(a: &AgentSeen) -> String {
    let mut s = format!(
        "{}: {}, {} of {} replicas ready, {} in flight, {} queued",
        a.agent_id,
        a.state,
        cell(a.ready_replicas),
        cell(a.desired_replicas),
        cell(a.in_flight),
        cell(a.queued),
    );
    if let Some(au) = &a.autoscale {
        s.push_str(&format!(
            " (autoscale {}-{}, target {})",
            au.min_replicas, au.max_replicas, au.target_concurrency
        ));
    }
    match a.sessions_tracked {
        Some(true) => s.push_str(&format!("; sessions tracked, {} live", cell(a.sessions))),
        Some(false) => s.push_str("; sessions not tracked"),
        None => {}
    }
    s
}

/// One line per setting, `name  value`, by name: every field the supervisor
/// shows, each value as `par ctl set` and PATCH take it (`-`: unset).
pub fn settings_lines(s: &AgentSettings) -> Vec<String> {
    let serde_json::Value::Object(fields) = serde_json::to_value(s).unwrap_or_default() else {
        return Vec::new();
    };
    let width = fields.keys().map(|k| k.len()).max().unwrap_or(0);
    fields
        .iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::Null => "-".to_string(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{k:<width$}  {v}")
        })
        .collect()
}
