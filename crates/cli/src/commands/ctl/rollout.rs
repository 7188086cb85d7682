//! `par ctl rollout`: declares a new package for an agent (`PUT
//! /supervisor/agents/{id}`, rolled out blue/green) and, with `--wait`,
//! shows its progress until it is rolled out or has failed.

use std::io::IsTerminal as _;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Map, Value};

use super::client::{str_field, text, Api, CtlError};
use super::table::Out;

#[derive(Args)]
pub struct RolloutArgs {
    /// Agent id (or its process id, par-ID).
    agent: String,
    /// The new package: a folder or .apkg on the supervisor's machine, https:// or s3://.
    package: String,
    /// Expected SHA-256 of the package (64 hex digits).
    #[arg(long)]
    sha256: Option<String>,
    /// Wait until the rollout has ended, showing its progress.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, e.g. 90s, 5m.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// The spec sent: the fields the status shows, with the new package. The
/// status does not show env_vars or backoff settings, so those return to
/// their defaults.
fn spec(p: &Value, package: &str, sha256: Option<&str>) -> Value {
    let mut s = Map::new();
    s.insert("agent_id".into(), p["agent_id"].clone());
    s.insert("package".into(), json!(package));
    if let Some(h) = sha256 {
        s.insert("sha256".into(), json!(h));
    }
    if p["restart_policy"].is_string() {
        s.insert("restart_policy".into(), p["restart_policy"].clone());
    }
    if p["max_restarts"].is_u64() {
        s.insert("max_restarts".into(), p["max_restarts"].clone());
    }
    let l = &p["limits"];
    if l["memory_limit_source"] == "explicit" && l["memory_limit_mb"].is_u64() {
        s.insert("memory_limit_mb".into(), l["memory_limit_mb"].clone());
    }
    if l["cpu_limit_source"] == "explicit" && l["cpu_limit"].is_number() {
        s.insert("cpu_limit".into(), l["cpu_limit"].clone());
    }
    Value::Object(s)
}

/// A local path that exists is sent absolute: the supervisor resolves
/// relative paths against its own working directory, not ours.
fn package_arg(p: &str) -> String {
    if p.contains("://") {
        return p.to_string();
    }
    match Path::new(p).canonicalize() {
        Ok(abs) => abs.display().to_string(),
        Err(_) => p.to_string(),
    }
}

fn phase_of(r: &Value) -> String {
    match (r["state"].as_str(), r["phase"].as_str()) {
        (Some("rolling"), Some(phase)) => phase.to_string(),
        (Some(s), _) => s.to_string(),
        _ => "-".into(),
    }
}

pub async fn run(api: &Api, a: RolloutArgs) -> anyhow::Result<()> {
    if let Some(h) = &a.sha256 {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CtlError::Usage(format!("--sha256 {h:?} is not 64 hex digits")).into());
        }
    }
    let p = api.agent(&a.agent).await?;
    let id = str_field(&p, "agent_id");
    let from = text(p.get("package_id"));
    let package = package_arg(&a.package);
    let body = spec(&p, &package, a.sha256.as_deref());
    let resp = api
        .send("PUT", &format!("/supervisor/agents/{id}"), Some(&body))
        .await?;
    let mut out = Out::stdout();
    let outcome = str_field(&resp, "outcome");
    if outcome == "unchanged" {
        out.line(&format!("{id} already runs {package}; nothing to roll out"))?;
        return Ok(());
    }
    out.line(&format!("rolling out {id}: {from} -> {package}"))?;
    if !a.wait {
        return Ok(());
    }
    let ours = resp["rollout"]["started_at"].clone();
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let deadline = started + a.timeout;
    let mut last_phase = String::new();
    const SPIN: [char; 4] = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    loop {
        let p = api.get_json(&format!("/supervisor/agents/{id}")).await?;
        let r = &p["rollout"];
        let mine = ours.is_null() || r["started_at"] == ours;
        let phase = if mine { phase_of(r) } else { "-".into() };
        let elapsed = started.elapsed().as_secs_f64();
        if tty {
            tick += 1;
            let worker = match (r["worker_pid"].as_u64(), r["worker_port"].as_u64()) {
                (Some(pid), Some(port)) => format!(" (new worker pid {pid}, port {port})"),
                _ => String::new(),
            };
            out.raw(&format!(
                "\r\x1b[2K{} {phase}{worker} {elapsed:.1}s",
                SPIN[tick % SPIN.len()]
            ))?;
        } else if phase != last_phase {
            out.line(&format!("  {phase} ({elapsed:.1}s)"))?;
        }
        last_phase = phase.clone();
        if mine && matches!(phase.as_str(), "rolled_out" | "rollout_failed") {
            if tty {
                out.raw("\r\x1b[2K")?;
            }
            let took = r["duration_ms"]
                .as_u64()
                .map_or_else(|| format!("{elapsed:.1}s"), |ms| format!("{ms} ms"));
            if phase == "rollout_failed" {
                return Err(CtlError::Failed(format!(
                    "rollout of {id} failed after {took}: {}; it still runs {}",
                    text(r.get("reason")),
                    text(p.get("package_id"))
                ))
                .into());
            }
            out.line(&format!(
                "rolled out {id}: {from} -> {} in {took} ({})",
                text(p.get("package_id")),
                text(r.get("strategy"))
            ))?;
            return Ok(());
        }
        if Instant::now() >= deadline {
            if tty {
                out.raw("\n")?;
            }
            return Err(CtlError::Failed(format!(
                "rollout of {id} still {phase} after {}",
                humantime::format_duration(a.timeout)
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_keeps_what_the_status_shows() {
        let p = json!({
            "agent_id": "a", "restart_policy": "always", "max_restarts": 3,
            "limits": {"memory_limit_mb": 256, "memory_limit_source": "explicit",
                       "cpu_limit": 0.5, "cpu_limit_source": "fair-share"},
        });
        let s = spec(&p, "https://x/a.apkg", Some("ab"));
        assert_eq!(
            s,
            json!({"agent_id": "a", "package": "https://x/a.apkg", "sha256": "ab",
                   "restart_policy": "always", "max_restarts": 3, "memory_limit_mb": 256})
        );
    }
}
