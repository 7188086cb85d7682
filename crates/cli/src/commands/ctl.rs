//! `par ctl`: the supervisor's management API from a terminal (list, logs,
//! restart/stop/start/rm, rollout, set, reload, top), with exit codes a
//! script can rely on.
//!
//! Exit codes: 0 done (also `logs -f` and `top` ended by Ctrl-C), 1 the
//! operation failed (refused by the supervisor, a rollout or start that
//! failed, a timeout), 2 usage, 3 supervisor not reachable, 4 authentication
//! (a token is needed or was refused), 5 unknown agent.

mod client;
mod logs;
mod rollout;
mod set;
mod status;
mod table;
mod top;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use par_supervisor::model::State;
use serde_json::Value;

pub use client::CtlError;
use client::{Api, Token};

#[derive(Args)]
#[command(
    after_help = "Exit codes: 0 done (also logs -f and top ended by Ctrl-C), 1 the operation \
failed, 2 usage, 3 supervisor not reachable, 4 admin token needed or refused, 5 unknown agent."
)]
pub struct CtlArgs {
    /// The supervisor's address [default: http://127.0.0.1:$SUPERVISOR_PORT, port 8000].
    #[arg(long, global = true)]
    url: Option<String>,
    /// The admin token (else PAR_ADMIN_TOKEN, else the supervisor's boot token
    /// file $PAR_HOME/run/supervisor-<port>.token if present).
    #[arg(long, env = "PAR_ADMIN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// List the agents (like `pm2 ls`); with AGENT, that agent and every
    /// setting in force (`par ctl status AGENT`).
    #[command(alias = "list", alias = "status")]
    Ls {
        /// Agent id (or its process id, par-ID).
        agent: Option<String>,
        /// Print the processes as JSON (the `processes` of /supervisor/status);
        /// with AGENT, its entry of `agents` and its processes.
        #[arg(long)]
        json: bool,
    },
    /// Print an agent's logs; -f follows until Ctrl-C.
    Logs(logs::LogsArgs),
    /// Restart an agent's worker.
    Restart(ActArgs),
    /// Stop an agent (it stays listed as stopped).
    Stop(ActArgs),
    /// Start a stopped or failed agent.
    Start(ActArgs),
    /// Delete an agent: drain, stop and forget it.
    #[command(alias = "delete")]
    Rm(ActArgs),
    /// Roll out a new package to an agent (blue/green).
    ///
    /// Only the package changes (PATCH): the supervisor keeps the rest of the
    /// agent's spec, env_vars, restart, replica and limit settings included.
    Rollout(rollout::RolloutArgs),
    /// Change an agent's settings: replicas, autoscale, sessions, limits, env...
    ///
    /// Only the settings named change (PATCH, under their spec keys); the
    /// supervisor keeps the rest of the spec. Replicas, autoscale, admission,
    /// idling and sessions are applied to the running processes (outcome:
    /// scaled); limits, restarts, env_vars and task_role start a blue/green
    /// rollout (outcome: rolling). E.g. `par ctl set AGENT --replicas 3
    /// --sessions off --session-idle-timeout 20m --max-sessions 5000`.
    Set(Box<set::SetArgs>),
    /// Re-read the declared agents and reconcile.
    Reload,
    /// A refreshing view of CPU, memory and requests (Ctrl-C ends it).
    Top(top::TopArgs),
}

#[derive(Args)]
struct ActArgs {
    /// Agent id (or its process id, par-ID).
    agent: String,
    /// Wait until the agent is ready (restart, start) or gone (rm).
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, e.g. 30s, 2m.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LevelArg {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LevelArg {
    fn as_str(self) -> &'static str {
        match self {
            LevelArg::Trace => "trace",
            LevelArg::Debug => "debug",
            LevelArg::Info => "info",
            LevelArg::Warn => "warn",
            LevelArg::Error => "error",
        }
    }
}

fn default_url() -> String {
    let port = std::env::var("SUPERVISOR_PORT")
        .ok()
        .filter(|p| p.trim().parse::<u16>().is_ok())
        .unwrap_or_else(|| "8000".into());
    format!("http://127.0.0.1:{}", port.trim())
}

/// `--token`/`PAR_ADMIN_TOKEN`, else the boot token file of the supervisor at `url`.
fn token(arg: Option<String>, url: &str) -> Option<Token> {
    if let Some(t) = arg.filter(|t| !t.trim().is_empty()) {
        return Some(Token {
            value: t.trim().to_string(),
            source: "--token / PAR_ADMIN_TOKEN".into(),
        });
    }
    let home = std::env::var_os("PAR_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/pixell-runtime"));
    let port = reqwest::Url::parse(url).ok()?.port_or_known_default()?;
    let file = par_supervisor::supervisor::token_file(&home, port);
    let value = std::fs::read_to_string(&file).ok()?;
    let value = value.trim();
    (!value.is_empty()).then(|| Token {
        value: value.to_string(),
        source: file.display().to_string(),
    })
}

pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    let url = args.url.unwrap_or_else(default_url);
    let token = token(args.token, &url);
    let api = Api::new(&url, token)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(dispatch(api, args.command))
}

async fn dispatch(api: Api, command: CtlCommand) -> anyhow::Result<()> {
    match command {
        CtlCommand::Ls {
            agent: Some(name),
            json,
        } => status::one(&api, &name, json).await,
        CtlCommand::Ls { agent: None, json } => ls(&api, json).await,
        CtlCommand::Logs(a) => logs::run(&api, a).await,
        CtlCommand::Restart(a) => act(&api, Action::Restart, a).await,
        CtlCommand::Stop(a) => act(&api, Action::Stop, a).await,
        CtlCommand::Start(a) => act(&api, Action::Start, a).await,
        CtlCommand::Rm(a) => act(&api, Action::Remove, a).await,
        CtlCommand::Rollout(a) => rollout::run(&api, a).await,
        CtlCommand::Set(a) => set::run(&api, *a).await,
        CtlCommand::Reload => reload(&api).await,
        CtlCommand::Top(a) => top::run(&api, a).await,
    }
}

async fn ls(api: &Api, json: bool) -> anyhow::Result<()> {
    let mut out = table::Out::stdout();
    if json {
        // Passed on as the supervisor wrote it, every field.
        let status = api.get_json("/supervisor/status").await?;
        let procs = status
            .get("processes")
            .cloned()
            .unwrap_or(Value::Array(vec![]));
        out.line(&serde_json::to_string_pretty(&procs)?)?;
        return Ok(());
    }
    let status = api.status().await?;
    out.line(&table::supervisor_line(&status, api.base()))?;
    let procs = &status.processes;
    if procs.is_empty() {
        out.line("no agents (declare [[agents]] in the config and `par ctl reload`, or POST /supervisor/spawn)")?;
        return Ok(());
    }
    for l in table::agents_table(procs, out.color()) {
        out.line(&l)?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Action {
    Restart,
    Stop,
    Start,
    Remove,
}

async fn act(api: &Api, action: Action, a: ActArgs) -> anyhow::Result<()> {
    let p = api.agent(&a.agent).await?;
    let (id, pid, state) = (p.agent_id.clone(), p.process_id.clone(), p.state);
    let mut out = table::Out::stdout();
    let resp = match action {
        Action::Start
            if !matches!(
                state,
                State::Stopped | State::Failed | State::Crashed | State::Backoff
            ) =>
        {
            out.line(&format!("{pid} is already {state}; nothing to start"))?;
            return Ok(());
        }
        Action::Restart | Action::Start => {
            api.send("POST", &format!("/supervisor/restart/{pid}"), None)
                .await?
        }
        Action::Stop => {
            api.send("POST", &format!("/supervisor/stop/{pid}"), None)
                .await?
        }
        Action::Remove => {
            api.send("DELETE", &format!("/supervisor/agents/{id}"), None)
                .await?
        }
    };
    let now = client::str_field(&resp, "state");
    match action {
        Action::Remove => {
            out.line(&format!("agent {id} deleted"))?;
            if p.origin.as_deref() == Some("declared") {
                out.line(
                    "  (it is declared in the configuration: the next reload starts it again)",
                )?;
            }
        }
        Action::Stop => out.line(&format!("{pid} {now}"))?,
        Action::Restart => out.line(&format!("{pid} restarting ({now})"))?,
        Action::Start => out.line(&format!("{pid} starting ({now})"))?,
    }
    if a.wait && matches!(action, Action::Restart | Action::Start) {
        let before = p.pid;
        let p = client::wait_for(api, &id, a.timeout, |p| {
            let s = p.state;
            (s == State::Failed || (s == State::Ready && p.pid != before)).then_some(s)
        })
        .await?;
        if p.state == State::Failed {
            return Err(CtlError::Failed(format!(
                "{pid} failed to start: {}",
                client::error_text(p.last_error.as_ref())
            ))
            .into());
        }
        out.line(&format!(
            "{pid} ready (pid {}, port {})",
            status::cell(p.pid),
            status::cell(p.port)
        ))?;
    }
    Ok(())
}

async fn reload(api: &Api) -> anyhow::Result<()> {
    let report = api.send("POST", "/supervisor/reload", None).await?;
    let list = |k: &str| -> Vec<String> {
        report
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other
                            .get("agent_id")
                            .or_else(|| other.get("id"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .unwrap_or_else(|| other.to_string()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = table::Out::stdout();
    for k in ["started", "stopped", "rolled", "unchanged"] {
        let l = list(k);
        out.line(&format!(
            "{k:<10} {}",
            if l.is_empty() {
                "-".into()
            } else {
                l.join(", ")
            }
        ))?;
    }
    let failed = report
        .get("failed")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(e) = report.get("registry_error").filter(|e| !e.is_null()) {
        out.line(&format!("registry   {}", client::error_text(Some(e))))?;
    }
    if failed.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = failed.iter().map(|f| f.to_string()).collect();
    Err(CtlError::Failed(format!("reload left agents failed: {}", names.join("; "))).into())
}
