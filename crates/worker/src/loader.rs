//! Preparing the agent: the package loaded into the cache and its Python environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use par_package::LoadedPackage;

/// A package ready to run: extracted, parsed, with its interpreter and environment.
pub struct Prepared {
    pub package: LoadedPackage,
    pub python: PathBuf,
    /// Variables for the agent host: the package's `.env` merged with the manifest's
    /// `environment` (manifest wins).
    pub env: BTreeMap<String, String>,
}

/// Why the agent could not be prepared. `package` failures are permanent (exit 78).
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{0}")]
    Package(String),
    #[error("{0}")]
    Environment(String),
}

impl PrepareError {
    /// True when the package itself is at fault (the supervisor should not restart it).
    pub fn is_package_fault(&self) -> bool {
        matches!(self, PrepareError::Package(_))
    }
}

/// Loads the package and ensures its Python environment. Blocking.
pub fn prepare(source: &Path, sha256: Option<&str>, home: &Path) -> Result<Prepared, PrepareError> {
    let opts = par_package::LoadOptions::default()
        .with_home(home)
        .with_sha256(sha256);
    let package = par_package::load(source, &opts).map_err(|e| {
        let message = chain(&e);
        match e {
            // The disk, not the package, is at fault.
            par_package::PackageError::Write { .. } => PrepareError::Environment(message),
            _ => PrepareError::Package(message),
        }
    })?;
    let env = package
        .environment()
        .map_err(|e| PrepareError::Package(chain(&e)))?;
    let python = pyenv::ensure(&package, home)?;
    Ok(Prepared {
        package,
        python,
        env,
    })
}

/// An error with its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Stand-in until par_pyenv::ensure_env lands: a venv per requirements file.
mod pyenv {
    use super::*;
    use std::process::Command;

    pub fn ensure(package: &LoadedPackage, home: &Path) -> Result<PathBuf, PrepareError> {
        let root = &package.root;
        let mut reqs = std::fs::read_to_string(root.join("requirements.txt")).unwrap_or_default();
        if reqs.trim().is_empty() {
            reqs = package.manifest.dependencies.join("\n");
        }
        if reqs.trim().is_empty() {
            return Ok(PathBuf::from("python3"));
        }
        let h = format!(
            "{:x}",
            reqs.bytes()
                .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64))
        );
        let venv = home.join("shim-envs").join(h);
        let py = venv.join("bin/python");
        if py.exists() {
            return Ok(py);
        }
        let tmp = venv.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let req_file = tmp.with_extension("txt");
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&tmp)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
            && std::fs::write(&req_file, &reqs).is_ok()
            && Command::new(tmp.join("bin/python"))
                .args(["-m", "pip", "install", "-q", "-r"])
                .arg(&req_file)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if !ok {
            return Err(PrepareError::Environment("pip install failed".into()));
        }
        if std::fs::rename(&tmp, &venv).is_err() && !py.exists() {
            return Err(PrepareError::Environment(
                "failed to move the environment into place".into(),
            ));
        }
        Ok(py)
    }
}
