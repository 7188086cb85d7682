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

/// Loads the package and ensures its Python environment (or runs `python`,
/// prepared beforehand by the supervisor's installer). Blocking.
pub fn prepare(
    source: &Path,
    sha256: Option<&str>,
    home: &Path,
    python: Option<&Path>,
) -> Result<Prepared, PrepareError> {
    let opts = par_package::LoadOptions::default()
        .with_home(home)
        .with_sha256(sha256);
    let package = par_package::load(source, &opts).map_err(|e| {
        let message = par_telemetry::error_chain(&e);
        match e {
            // The disk, not the package, is at fault.
            par_package::PackageError::Write { .. } => PrepareError::Environment(message),
            _ => PrepareError::Package(message),
        }
    })?;
    let env = package
        .environment()
        .map_err(|e| PrepareError::Package(par_telemetry::error_chain(&e)))?;
    if let Some(python) = python {
        return Ok(Prepared {
            package,
            python: python.to_path_buf(),
            env,
        });
    }
    let python = environment(&package, home)?;
    Ok(Prepared {
        package,
        python: python.python,
        env,
    })
}

/// The package's Python environment under `home/envs`, built if missing.
fn environment(package: &LoadedPackage, home: &Path) -> Result<par_pyenv::PythonEnv, PrepareError> {
    let env_opts = par_pyenv::EnvOptions::default().with_home(home);
    let package_id = package.package_id();
    let mut progress = |line: &str| tracing::info!(package_id = %package_id, "deps: {line}");
    let python = par_pyenv::ensure_env(package, &env_opts, &mut progress).map_err(env_error)?;
    for w in &python.warnings {
        tracing::warn!("{w}");
    }
    Ok(python)
}

/// The package's faults (permanent) apart from the rest (retried).
fn env_error(e: par_pyenv::EnvError) -> PrepareError {
    use par_pyenv::EnvError as E;
    let message = par_telemetry::error_chain(&e);
    match e {
        E::UnsupportedRuntime(_) | E::BadPyproject { .. } | E::Read { .. } => {
            PrepareError::Package(message)
        }
        _ => PrepareError::Environment(message),
    }
}

/// What `par install-env` prints on stdout (one JSON line).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Installed {
    pub python: PathBuf,
    pub requirements_hash: Option<String>,
    /// The environment's folder (`None`: no requirements, no environment).
    #[serde(default)]
    pub env_dir: Option<PathBuf>,
}

/// What `par install-env` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallStep<'a> {
    /// Build (or reuse) the environment in place, under its lock.
    Ensure,
    /// Only say where the environment is: nothing is built or written.
    Plan,
    /// Build into this folder, which must be the planned one, exists and is
    /// empty (made by the supervisor for this build, sealed by it after).
    Into(&'a Path),
}

/// `par install-env`: reads a package from `input`, then plans or builds
/// its environment under `home/envs` and answers the interpreter to run it
/// with. The package is unpacked into `scratch` and removed again (it may
/// hold the agent's secrets; the environment does not). Run by the
/// supervisor as a build uid, which may write the one folder being built.
pub fn install_env(
    input: &mut dyn std::io::Read,
    home: &Path,
    scratch: &Path,
    step: InstallStep<'_>,
) -> Result<Installed, PrepareError> {
    let disk = |what: &str, e: std::io::Error| PrepareError::Environment(format!("{what}: {e}"));
    std::fs::create_dir_all(scratch).map_err(|e| disk("create the scratch folder", e))?;
    let mut file = tempfile::Builder::new()
        .prefix("package-")
        .suffix(".apkg")
        .tempfile_in(scratch)
        .map_err(|e| disk("create a scratch file", e))?;
    std::io::copy(input, &mut file).map_err(|e| disk("read the package from stdin", e))?;
    let unpacked = tempfile::Builder::new()
        .prefix("unpacked-")
        .tempdir_in(scratch)
        .map_err(|e| disk("create a scratch folder", e))?;
    let opts = par_package::LoadOptions::default().with_home(unpacked.path());
    let package = par_package::load(file.path(), &opts)
        .map_err(|e| PrepareError::Package(par_telemetry::error_chain(&e)))?;
    let (python, requirements_hash, env_dir) = match step {
        InstallStep::Ensure => {
            let env = environment(&package, home)?;
            (env.python, env.requirements_hash, env.env_dir)
        }
        InstallStep::Plan | InstallStep::Into(_) => {
            let env_opts = par_pyenv::EnvOptions::default().with_home(home);
            let plan = par_pyenv::plan(&package, &env_opts).map_err(env_error)?;
            if let InstallStep::Into(dir) = step {
                if plan.env_dir.as_deref() != Some(dir) {
                    return Err(PrepareError::Environment(format!(
                        "asked to build into {} but this package's environment is {}",
                        dir.display(),
                        plan.env_dir
                            .as_deref()
                            .map_or("none".into(), |d| d.display().to_string())
                    )));
                }
                let package_id = package.package_id();
                let mut progress =
                    |line: &str| tracing::info!(package_id = %package_id, "deps: {line}");
                par_pyenv::build_into(&package, &plan, &env_opts, &mut progress)
                    .map_err(env_error)?;
            }
            (plan.python, plan.requirements_hash, plan.env_dir)
        }
    };
    Ok(Installed {
        python,
        requirements_hash,
        env_dir,
    })
}
