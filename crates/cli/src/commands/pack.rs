//! `par pack DIR -o FILE.apkg`: build an APKG the way pixell-kit lays it out.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// Source folder holding agent.yaml.
    pub dir: PathBuf,
    /// Output file.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

pub fn run(_args: PackArgs) -> anyhow::Result<()> {
    anyhow::bail!("pack not implemented yet")
}
