//! `par ctl set`: changes an agent's settings through `PATCH
//! /supervisor/agents/{id}`, a JSON merge patch naming only the settings
//! given, each under its spec key (the names of `[[agents]]`, `PAR_AGENTS`,
//! the registry index and PUT/PATCH). The supervisor keeps the rest of the
//! spec; it applies a change of size or routing (replicas, autoscale,
//! admission, idling, sessions) to the running processes (`scaled`) and
//! rolls anything else out blue/green (`rolling`). Values are typed here,
//! so a malformed one is refused before the supervisor is asked; the
//! supervisor's own refusals (ranges, combinations) are shown as it words
//! them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::{ArgAction, Args, ValueEnum};
use serde_json::{Map, Value};

use super::client::{typed, Api, CtlError};
use super::rollout::follow;
use super::status::{cell, AgentSeen, PatchAnswer};
use super::table::Out;
use par_supervisor::model::{PutOutcome, RestartPolicy, RolloutStrategy, SessionMode, State};

const SCALING: &str = "Replicas and autoscale";
const ADMISSION: &str = "Admission and idling";
const SESSIONS: &str = "Sessions";
const LIMITS: &str = "Limits";
const RESTARTS: &str = "Restarts";
const ENVIRONMENT: &str = "Environment";

#[derive(Args)]
#[command(
    after_help = "Applied in place (outcome: scaled): replicas, min/max_replicas, \
target_concurrency, scale_down_window, max_concurrency, max_queue, queue_timeout, idle_timeout \
and the session settings. Anything else (limits, restarts, env_vars, task_role) starts a \
blue/green rollout (outcome: rolling). Durations as in the config: 500ms, 20m, 1h30m."
)]
pub struct SetArgs {
    /// Agent id (or its process id, par-ID).
    agent: String,

    /// Worker processes (fixed; see --max-replicas to autoscale).
    #[arg(long, value_name = "N", help_heading = SCALING)]
    replicas: Option<u32>,
    /// Autoscale: the fewest replicas.
    #[arg(long, value_name = "N", help_heading = SCALING)]
    min_replicas: Option<u32>,
    /// Autoscale: the most replicas (autoscale is on while it is set).
    #[arg(long, value_name = "N", help_heading = SCALING)]
    max_replicas: Option<u32>,
    /// Autoscale: requests in flight per replica to keep near.
    #[arg(long, value_name = "X", value_parser = finite, help_heading = SCALING)]
    target_concurrency: Option<f64>,
    /// Autoscale: how long the load stays low before a replica goes.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = SCALING)]
    scale_down_window: Option<Duration>,

    /// Requests in flight one replica accepts; more wait in the queue.
    #[arg(long, value_name = "N", help_heading = ADMISSION)]
    max_concurrency: Option<u32>,
    /// Bound of the agent's queue.
    #[arg(long, value_name = "N", help_heading = ADMISSION)]
    max_queue: Option<u32>,
    /// Longest wait in the queue.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = ADMISSION)]
    queue_timeout: Option<Duration>,
    /// No request for this long: scale to zero.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = ADMISSION)]
    idle_timeout: Option<Duration>,

    /// Pin conversations to the process that holds them (auto) or not (off).
    #[arg(long, value_name = "MODE", help_heading = SESSIONS)]
    sessions: Option<SessionsArg>,
    /// A session's binding ends after this long without a request.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = SESSIONS)]
    session_idle_timeout: Option<Duration>,
    /// ... and this long after it began.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = SESSIONS)]
    session_max_lifetime: Option<Duration>,
    /// Longest a process kept only for its sessions waits for them.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = SESSIONS)]
    session_drain_timeout: Option<Duration>,
    /// Session bindings kept per agent.
    #[arg(long, value_name = "N", help_heading = SESSIONS)]
    max_sessions: Option<u32>,

    #[arg(long, value_name = "MB", help_heading = LIMITS)]
    memory_limit_mb: Option<u64>,
    #[arg(long, value_name = "MB", help_heading = LIMITS)]
    disk_limit_mb: Option<u64>,
    /// CPUs, e.g. 0.5.
    #[arg(long, value_name = "CPUS", value_parser = finite, help_heading = LIMITS)]
    cpu_limit: Option<f64>,

    #[arg(long, value_name = "POLICY", help_heading = RESTARTS)]
    restart_policy: Option<RestartArg>,
    #[arg(long, value_name = "N", help_heading = RESTARTS)]
    max_restarts: Option<u32>,
    #[arg(long, value_name = "SECONDS", value_parser = finite, help_heading = RESTARTS)]
    restart_delay_seconds: Option<f64>,
    #[arg(long, value_name = "X", value_parser = finite, help_heading = RESTARTS)]
    backoff_multiplier: Option<f64>,
    #[arg(long, value_name = "SECONDS", value_parser = finite, help_heading = RESTARTS)]
    max_restart_delay_seconds: Option<f64>,
    #[arg(long, value_name = "SECONDS", value_parser = finite, help_heading = RESTARTS)]
    stable_period_seconds: Option<f64>,

    /// Set an environment variable of the agent (repeatable; values are not printed).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = env_pair, help_heading = ENVIRONMENT)]
    env: Vec<(String, String)>,
    /// Remove an environment variable of the agent (repeatable).
    #[arg(long = "unset-env", value_name = "KEY", value_parser = env_key, help_heading = ENVIRONMENT)]
    unset_env: Vec<String>,
    /// Whether the ECS task role's credentials reach the agent.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, help_heading = ENVIRONMENT)]
    task_role: Option<bool>,

    /// Return settings to their defaults, e.g. --reset idle_timeout; autoscale
    /// off: --reset max_replicas,min_replicas,target_concurrency.
    #[arg(long, value_name = "SETTING", value_delimiter = ',')]
    reset: Vec<Setting>,
    /// Wait until the replicas asked for are ready, or the rollout has ended.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, e.g. 90s, 5m.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// `sessions` of a spec.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum SessionsArg {
    Auto,
    Off,
}

impl From<SessionsArg> for SessionMode {
    fn from(a: SessionsArg) -> SessionMode {
        match a {
            SessionsArg::Auto => SessionMode::Auto,
            SessionsArg::Off => SessionMode::Off,
        }
    }
}

/// `restart_policy` of a spec.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum RestartArg {
    Always,
    #[value(alias = "on_failure")]
    OnFailure,
    Never,
}

impl From<RestartArg> for RestartPolicy {
    fn from(a: RestartArg) -> RestartPolicy {
        match a {
            RestartArg::Always => RestartPolicy::Always,
            RestartArg::OnFailure => RestartPolicy::OnFailure,
            RestartArg::Never => RestartPolicy::Never,
        }
    }
}

/// The settings `par ctl set` changes, by their spec keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Setting {
    Replicas,
    MinReplicas,
    MaxReplicas,
    TargetConcurrency,
    ScaleDownWindow,
    MaxConcurrency,
    MaxQueue,
    QueueTimeout,
    IdleTimeout,
    Sessions,
    SessionIdleTimeout,
    SessionMaxLifetime,
    SessionDrainTimeout,
    MaxSessions,
    MemoryLimitMb,
    DiskLimitMb,
    CpuLimit,
    RestartPolicy,
    MaxRestarts,
    RestartDelaySeconds,
    BackoffMultiplier,
    MaxRestartDelaySeconds,
    StablePeriodSeconds,
    EnvVars,
    TaskRole,
}

impl Setting {
    /// Its key in a spec.
    fn key(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// A number JSON can carry (NaN and infinities cannot be sent).
fn finite(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err("must be a finite number".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn env_key(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains(['=', '\0']) {
        return Err("a variable name is not empty and has no '=' or NUL".into());
    }
    Ok(s.to_string())
}

fn env_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if v.contains('\0') {
        return Err("the value contains a NUL byte".into());
    }
    Ok((env_key(k)?, v.to_string()))
}

fn duration(d: Duration) -> Value {
    Value::from(humantime::format_duration(d).to_string())
}

fn spec_value<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl SetArgs {
    /// What the flags give `s`, as the spec takes it; None when not given.
    fn value(&self, s: Setting) -> Option<Value> {
        let n = |v: Option<u32>| v.map(Value::from);
        let x = |v: Option<f64>| v.map(Value::from);
        let d = |v: Option<Duration>| v.map(duration);
        match s {
            Setting::Replicas => n(self.replicas),
            Setting::MinReplicas => n(self.min_replicas),
            Setting::MaxReplicas => n(self.max_replicas),
            Setting::TargetConcurrency => x(self.target_concurrency),
            Setting::ScaleDownWindow => d(self.scale_down_window),
            Setting::MaxConcurrency => n(self.max_concurrency),
            Setting::MaxQueue => n(self.max_queue),
            Setting::QueueTimeout => d(self.queue_timeout),
            Setting::IdleTimeout => d(self.idle_timeout),
            Setting::Sessions => self.sessions.map(|m| spec_value(SessionMode::from(m))),
            Setting::SessionIdleTimeout => d(self.session_idle_timeout),
            Setting::SessionMaxLifetime => d(self.session_max_lifetime),
            Setting::SessionDrainTimeout => d(self.session_drain_timeout),
            Setting::MaxSessions => n(self.max_sessions),
            Setting::MemoryLimitMb => self.memory_limit_mb.map(Value::from),
            Setting::DiskLimitMb => self.disk_limit_mb.map(Value::from),
            Setting::CpuLimit => x(self.cpu_limit),
            Setting::RestartPolicy => self
                .restart_policy
                .map(|p| spec_value(RestartPolicy::from(p))),
            Setting::MaxRestarts => n(self.max_restarts),
            Setting::RestartDelaySeconds => x(self.restart_delay_seconds),
            Setting::BackoffMultiplier => x(self.backoff_multiplier),
            Setting::MaxRestartDelaySeconds => x(self.max_restart_delay_seconds),
            Setting::StablePeriodSeconds => x(self.stable_period_seconds),
            Setting::EnvVars => {
                // Merged key by key by the supervisor: null removes one.
                let mut env: BTreeMap<&str, Value> = BTreeMap::new();
                for (k, v) in &self.env {
                    env.insert(k, Value::from(v.as_str()));
                }
                for k in &self.unset_env {
                    env.insert(k, Value::Null);
                }
                (!env.is_empty()).then(|| spec_value(env))
            }
            Setting::TaskRole => self.task_role.map(Value::from),
        }
    }

    /// The merge patch: each setting given under its spec key, a reset one
    /// as null. Contradictions and an empty patch are refused.
    fn patch(&self) -> Result<Map<String, Value>, CtlError> {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, _) in &self.env {
            if seen.insert(k, "--env").is_some() {
                return Err(CtlError::Usage(format!("--env {k}=... is given twice")));
            }
        }
        for k in &self.unset_env {
            if let Some(other) = seen.insert(k, "--unset-env") {
                return Err(CtlError::Usage(format!(
                    "{k} is named by both {other} and --unset-env"
                )));
            }
        }
        let mut m = Map::new();
        for s in Setting::value_variants() {
            if let Some(v) = self.value(*s) {
                m.insert(s.key(), v);
            }
        }
        for s in &self.reset {
            if m.contains_key(&s.key()) {
                let flag = match s {
                    Setting::EnvVars => "--env/--unset-env".to_string(),
                    _ => format!("--{}", s.key().replace('_', "-")),
                };
                return Err(CtlError::Usage(format!(
                    "{flag} and --reset {} both name {}",
                    s.key(),
                    s.key()
                )));
            }
            m.insert(s.key(), Value::Null);
        }
        if m.is_empty() {
            return Err(CtlError::Usage(
                "nothing to set: name a setting, e.g. --replicas 3, --sessions off, \
                 --session-idle-timeout 20m, --env KEY=VALUE, --reset max_replicas \
                 (par ctl set --help lists them)"
                    .into(),
            ));
        }
        Ok(m)
    }
}

impl SetArgs {
    fn resets(&self, s: Setting) -> bool {
        self.reset.contains(&s)
    }

    /// Whether the agent as status shows it has what this patch set there.
    /// The supervisor answers a PATCH before it publishes the agents for
    /// status, so a status read at once can still show them as they were.
    /// Settings status does not show count as shown.
    fn shown_in(&self, a: &AgentSeen) -> bool {
        let auto = a.autoscale.as_ref();
        let replicas = match (self.replicas, self.resets(Setting::Replicas)) {
            (Some(n), _) => Some(n),
            (None, true) => Some(1),
            (None, false) => None,
        };
        let replicas_shown = replicas.is_none_or(|n| {
            auto.is_some() || a.state == State::Idle || a.desired_replicas == Some(n)
        });
        let autoscale_shown = if self.resets(Setting::MaxReplicas) {
            auto.is_none()
        } else {
            self.max_replicas
                .is_none_or(|n| auto.is_some_and(|s| s.max_replicas >= n))
                && self
                    .min_replicas
                    .is_none_or(|n| auto.is_some_and(|s| s.min_replicas == n.max(1)))
                && self
                    .target_concurrency
                    .is_none_or(|t| auto.is_some_and(|s| s.target_concurrency == t))
        };
        let concurrency_shown = if self.resets(Setting::MaxConcurrency) {
            a.max_concurrency.is_none()
        } else {
            self.max_concurrency
                .is_none_or(|n| a.max_concurrency == Some(n))
        };
        let shown_idle = a
            .idle_timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok());
        let idle_shown = if self.resets(Setting::IdleTimeout) {
            shown_idle.is_none()
        } else {
            self.idle_timeout.is_none_or(|d| shown_idle == Some(d))
        };
        let sessions_shown =
            !matches!(self.sessions, Some(SessionsArg::Off)) || a.sessions_tracked == Some(false);
        replicas_shown && autoscale_shown && concurrency_shown && idle_shown && sessions_shown
    }
}

/// The patch in a line, environment values left out.
fn summary(patch: &Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for (k, v) in patch {
        match (k.as_str(), v) {
            (_, Value::Null) => parts.push(format!("{k} reset")),
            ("env_vars", Value::Object(env)) => {
                for (name, v) in env {
                    let what = if v.is_null() { "unset" } else { "set" };
                    parts.push(format!("env {name} {what}"));
                }
            }
            (_, Value::String(s)) => parts.push(format!("{k}={s}")),
            _ => parts.push(format!("{k}={v}")),
        }
    }
    parts.join(", ")
}

/// The agent's replicas and sessions as status shows them.
fn agent_line(a: &AgentSeen) -> String {
    let mut s = format!(
        "{}: {}, {} of {} replicas ready",
        a.agent_id,
        a.state,
        cell(a.ready_replicas),
        cell(a.desired_replicas)
    );
    if let Some(au) = &a.autoscale {
        s.push_str(&format!(
            " (autoscale {}-{}, target {})",
            au.min_replicas, au.max_replicas, au.target_concurrency
        ));
    }
    if let Some(n) = a.max_concurrency {
        s.push_str(&format!(", max_concurrency {n}"));
    }
    if let Some(t) = &a.idle_timeout {
        s.push_str(&format!(", idle_timeout {t}"));
    }
    match a.sessions_tracked {
        Some(true) => s.push_str(&format!("; sessions tracked, {} live", cell(a.sessions))),
        Some(false) => s.push_str("; sessions not tracked"),
        None => {}
    }
    s
}

async fn agent_seen(api: &Api, id: &str) -> Result<(AgentSeen, Vec<String>), CtlError> {
    let status = api.status().await?;
    let failed: Vec<String> = status
        .processes
        .iter()
        .filter(|p| p.agent_id == id && p.state == State::Failed)
        .map(|p| {
            format!(
                "{} failed: {}",
                p.process_id,
                super::client::error_text(p.last_error.as_ref())
            )
        })
        .collect();
    let a = status
        .agents
        .into_iter()
        .find(|a| a.agent_id == id)
        .ok_or_else(|| CtlError::UnknownAgent(format!("agent {id} is no longer listed")))?;
    Ok((a, failed))
}

/// The agent as status shows it once it shows the patch (or after a short
/// while: some changes do not show, e.g. a replica kept for its sessions);
/// with `wait`, once it also runs the replicas it is to run (or idles).
async fn after(api: &Api, id: &str, a: &SetArgs) -> Result<AgentSeen, CtlError> {
    let started = Instant::now();
    let deadline = started + a.timeout;
    loop {
        let (seen, failed) = agent_seen(api, id).await?;
        let shown = a.shown_in(&seen);
        if !a.wait && (shown || started.elapsed() >= Duration::from_secs(2)) {
            return Ok(seen);
        }
        if a.wait && !failed.is_empty() {
            return Err(CtlError::Failed(failed.join("; ")));
        }
        let ready = seen.ready_replicas.unwrap_or(0);
        let wanted = seen.desired_replicas.unwrap_or(1);
        let settled = seen.state == State::Idle || (seen.state == State::Ready && ready >= wanted);
        if shown && settled {
            return Ok(seen);
        }
        if Instant::now() >= deadline {
            return Err(CtlError::Failed(format!(
                "{} after {}",
                agent_line(&seen),
                humantime::format_duration(a.timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(api: &Api, a: SetArgs) -> anyhow::Result<()> {
    let patch = a.patch()?;
    let id = api.agent(&a.agent).await?.agent_id;
    let path = format!("/supervisor/agents/{id}");
    let resp = api
        .send("PATCH", &path, Some(&Value::Object(patch.clone())))
        .await?;
    let answer: PatchAnswer = typed(resp, &format!("PATCH {path}"))?;
    let mut out = Out::stdout();
    out.line(&format!("set {id}: {}", summary(&patch)))?;
    match answer.outcome {
        PutOutcome::Unchanged => {
            out.line("outcome: unchanged (the agent has these settings already)")?;
        }
        PutOutcome::Scaled => {
            out.line("outcome: scaled (applied to the running processes, no rollout)")?;
            out.line(&agent_line(&after(api, &id, &a).await?))?;
        }
        PutOutcome::Rolling => {
            let rollout = answer.process.rollout.as_ref();
            let how = match rollout.and_then(|r| r.strategy) {
                Some(RolloutStrategy::InPlace) => "in place: nothing was serving",
                _ => "blue/green: a new generation starts next to the serving one",
            };
            out.line(&format!("outcome: rolling ({how})"))?;
            if a.wait {
                let done = follow(api, &id, &answer.process, a.timeout, &mut out).await?;
                out.line(&format!(
                    "rolled out {id} in {} ({}); it runs {}",
                    done.took,
                    done.strategy,
                    cell(done.process.package_id())
                ))?;
            }
        }
        other @ (PutOutcome::Created | PutOutcome::Superseded) => {
            out.line(&format!("outcome: {}", other.as_str()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
