//! `par ctl rollout`: declares a new package for an agent (`PATCH
//! /supervisor/agents/{id}`, rolled out blue/green; the rest of its spec,
//! env_vars included, is kept by the supervisor) and, with `--wait`,
//! shows its progress until it is rolled out or has failed.

use std::io::IsTerminal as _;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Map, Value};

use super::client::{typed, Api, CtlError};
use super::status::{cell, words, PatchAnswer, Process, RolloutSeen};
use super::table::Out;
use par_supervisor::model::{PutOutcome, RolloutStatus};

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

/// The merge patch sent: the new package (and its checksum) only.
fn patch(package: &str, sha256: Option<&str>) -> Value {
    let mut s = Map::new();
    s.insert("package".into(), json!(package));
    if let Some(h) = sha256 {
        s.insert("sha256".into(), json!(h));
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

fn phase_of(r: Option<&RolloutSeen>) -> String {
    match r {
        Some(RolloutSeen {
            state: RolloutStatus::Rolling,
            phase: Some(phase),
            ..
        }) => words(phase),
        Some(r) => words(&r.state),
        None => "-".into(),
    }
}

pub async fn run(api: &Api, a: RolloutArgs) -> anyhow::Result<()> {
    if let Some(h) = &a.sha256 {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CtlError::Usage(format!("--sha256 {h:?} is not 64 hex digits")).into());
        }
    }
    let p = api.agent(&a.agent).await?;
    let id = p.agent_id.clone();
    let from = cell(p.package_id.as_deref());
    let package = package_arg(&a.package);
    let body = patch(&package, a.sha256.as_deref());
    let resp = api
        .send("PATCH", &format!("/supervisor/agents/{id}"), Some(&body))
        .await?;
    let answer: PatchAnswer = typed(resp, &format!("PATCH /supervisor/agents/{id}"))?;
    let mut out = Out::stdout();
    if answer.outcome == PutOutcome::Unchanged {
        out.line(&format!("{id} already runs {package}; nothing to roll out"))?;
        return Ok(());
    }
    out.line(&format!("rolling out {id}: {from} -> {package}"))?;
    if !a.wait {
        return Ok(());
    }
    let done = follow(api, &id, &answer.process, a.timeout, &mut out).await?;
    out.line(&format!(
        "rolled out {id}: {from} -> {} in {} ({})",
        cell(done.process.package_id.as_deref()),
        done.took,
        done.strategy
    ))?;
    Ok(())
}

/// A rollout that ended well: the agent then, how long it took, and how
/// (`blue-green`, `in-place`).
pub struct Followed {
    pub process: Process,
    pub took: String,
    pub strategy: String,
}

/// Shows the progress of the rollout a PATCH answered with (`answered`),
/// until it is rolled out (Ok), has failed, or `timeout` ran out (Err).
pub async fn follow(
    api: &Api,
    id: &str,
    answered: &Process,
    timeout: Duration,
    out: &mut Out,
) -> anyhow::Result<Followed> {
    let path = format!("/supervisor/agents/{id}");
    let ours = answered.rollout.as_ref().and_then(|r| r.started_at.clone());
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let deadline = started + timeout;
    let mut last_phase = String::new();
    const SPIN: [char; 4] = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    loop {
        let p: Process = typed(api.get_json(&path).await?, &path)?;
        let r = p.rollout.as_ref();
        let mine = ours.is_none() || r.and_then(|r| r.started_at.as_ref()) == ours.as_ref();
        let phase = if mine { phase_of(r) } else { "-".into() };
        let elapsed = started.elapsed().as_secs_f64();
        if tty {
            tick += 1;
            let worker = match (r.and_then(|r| r.worker_pid), r.and_then(|r| r.worker_port)) {
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
            let took = r
                .and_then(|r| r.duration_ms)
                .map_or_else(|| format!("{elapsed:.1}s"), |ms| format!("{ms} ms"));
            if phase == "rollout_failed" {
                return Err(CtlError::Failed(format!(
                    "rollout of {id} failed after {took}: {}; it still runs {}",
                    cell(r.and_then(|r| r.reason.as_deref())),
                    cell(p.package_id.as_deref())
                ))
                .into());
            }
            let strategy = cell(r.and_then(|r| r.strategy.as_ref()).map(words));
            return Ok(Followed {
                process: p,
                took,
                strategy,
            });
        }
        if Instant::now() >= deadline {
            if tty {
                out.raw("\n")?;
            }
            return Err(CtlError::Failed(format!(
                "rollout of {id} still {phase} after {}",
                humantime::format_duration(timeout)
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
    fn the_patch_holds_the_package_only() {
        assert_eq!(
            patch("https://x/a.apkg", Some("ab")),
            json!({"package": "https://x/a.apkg", "sha256": "ab"})
        );
        assert_eq!(patch("/p", None), json!({"package": "/p"}));
    }
}
