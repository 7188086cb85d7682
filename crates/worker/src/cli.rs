//! Command-line entry points of the worker: `par worker` and `par run`.

use std::path::PathBuf;

/// `par worker --port P --agent-id ID --package PATH` (spawned by the supervisor).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    #[arg(long, env = "PAR_PORT")]
    pub port: u16,
    #[arg(long, env = "PAR_HOST", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "PAR_AGENT_ID")]
    pub agent_id: Option<String>,
    #[arg(long, env = "PAR_PACKAGE_PATH")]
    pub package: PathBuf,
    #[arg(long, env = "PAR_PACKAGE_SHA256")]
    pub sha256: Option<String>,
}

/// `par run PACKAGE`: one agent in the foreground, no supervisor.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    pub package: PathBuf,
    #[arg(long, env = "REST_PORT", default_value_t = 8080)]
    pub port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long)]
    pub sha256: Option<String>,
}

pub fn run_worker(_args: WorkerArgs) -> anyhow::Result<()> {
    anyhow::bail!("worker not implemented yet")
}

pub fn run_single(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("run not implemented yet")
}
