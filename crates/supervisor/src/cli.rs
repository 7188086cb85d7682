//! Command-line entry point of the supervisor: `par supervisor`.

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct SupervisorArgs {
    #[arg(long, env = "PAR_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "SUPERVISOR_PORT")]
    pub port: Option<u16>,
    #[arg(long)]
    pub check_config: bool,
}

pub fn run(_args: SupervisorArgs) -> anyhow::Result<()> {
    anyhow::bail!("supervisor not implemented yet")
}
