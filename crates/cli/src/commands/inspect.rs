//! `par inspect FILE.apkg`: print the manifest and the surfaces it declares.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// An .apkg file or a source folder.
    pub package: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: InspectArgs) -> anyhow::Result<()> {
    anyhow::bail!("inspect not implemented yet")
}
