//! `par pack DIR -o FILE.apkg`: build an APKG the way pixell-kit lays it out.

use std::path::PathBuf;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// Source folder holding agent.yaml.
    pub dir: PathBuf,
    /// Output file (default: `<name>-<version>.apkg` in the current folder).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

pub fn run(args: PackArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        anyhow::bail!("{} is not a folder", args.dir.display());
    }
    let output = match args.output {
        Some(o) => o,
        None => {
            // The default name needs the manifest; `pack` validates it again.
            let info = par_package::inspect(&args.dir)
                .with_context(|| format!("failed to read the package in {}", args.dir.display()))?;
            let m = &info.manifest;
            PathBuf::from(format!(
                "{}-{}.apkg",
                m.name,
                m.agent_version().unwrap_or("0.0.0")
            ))
        }
    };
    let summary = par_package::pack(&args.dir, &output)
        .with_context(|| format!("failed to pack {}", args.dir.display()))?;
    for w in &summary.manifest.warnings {
        eprintln!("par: warning: {w}");
    }
    println!(
        "packed {} into {} ({} entries, {} bytes, sha256 {})",
        summary.manifest.package_id(),
        output.display(),
        summary.entries,
        summary.bytes,
        summary.sha256
    );
    Ok(())
}
