//! APKG packages: the typed manifest, safe extraction into a content-addressed
//! cache, packing a source folder, and the agent's merged environment.
//!
//! This crate knows no HTTP and no async runtime: it is used by the worker,
//! the CLI (`par pack`, `par inspect`) and the package fetcher alike.
//!
//! CONTRACT (other crates rely on these names; the bodies are filled in by the
//! package work):
//!
//! ```ignore
//! let pkg = par_package::load(Path::new("x.apkg"), &LoadOptions::default())?;
//! pkg.root        // extracted folder: $PAR_HOME/packages/<sha256>/
//! pkg.sha256      // hex sha256 of the archive bytes
//! pkg.manifest    // Manifest
//! pkg.package_id()// "name@metadata.version"
//! pkg.environment()// .env merged with manifest `environment` (manifest wins)
//! ```

pub mod manifest;

pub use manifest::Manifest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Limits and locations used when loading a package.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Cache root; packages go to `<home>/packages/<sha256>/`. Default: `$PAR_HOME` or `/tmp/pixell-runtime`.
    pub home: PathBuf,
    /// Expected SHA-256 (hex) of the archive; refused on mismatch.
    pub sha256: Option<String>,
    pub max_entries: usize,
    pub max_total_bytes: u64,
    pub max_ratio: u64,
}

/// A package extracted into the cache with its parsed manifest.
#[derive(Debug, Clone)]
pub struct LoadedPackage {
    pub root: PathBuf,
    pub sha256: String,
    pub manifest: Manifest,
}

impl LoadedPackage {
    /// `name@version` (`metadata.version` when present, else top-level `version`).
    pub fn package_id(&self) -> String {
        self.manifest.package_id()
    }
}

/// Placeholder so dependants compile before the real implementation lands.
pub fn load(_source: &Path, _opts: &LoadOptions) -> Result<LoadedPackage, std::io::Error> {
    unimplemented!()
}

pub type Environment = BTreeMap<String, String>;
