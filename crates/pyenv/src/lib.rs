//! Per-package Python environments: the base interpreter for the manifest's
//! `runtime`, and the package's requirements installed into a virtual
//! environment cached under `$PAR_HOME/envs/<hash>/`.
//!
//! The hash covers the sorted, normalised requirement lines and the Python
//! version, so packages with the same requirements share one environment
//! (unless a requirement is built from the package's own files: then the
//! package's sha256 is in the hash too, and the environment is its own). A
//! package without requirements gets no environment at all (cold start stays
//! fast). Environments are built in place under an exclusive lock file
//! (`envs/<hash>.lock`) and marked complete with `.par-ready` last, so two
//! workers building the same environment wait for each other, a crash mid-build
//! is rebuilt from scratch, and a venv never moves after creation (its scripts
//! keep valid paths).
//!
//! A supervisor with per-agent uids does not use [`ensure_env`]: it asks for
//! the [`plan`], makes the folder for a build uid, has it [`build_into`] the
//! folder, then seals it (see the supervisor's `isolation::installer`).

mod error;
mod install;
mod interpreter;
mod requirements;

pub use error::EnvError;
pub use interpreter::{on_path, probe, Interpreter};
pub use requirements::{collect as collect_requirements, Requirements};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use par_package::LoadedPackage;

/// Marker written last into a finished environment.
pub const READY_MARKER: &str = ".par-ready";
/// Interpreter used when the runtime's own is missing.
const FALLBACK_PYTHON: &str = "python3";

/// Which tool builds environments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Installer {
    /// `uv` when it is on `PATH`, else `python -m venv` + pip.
    #[default]
    Auto,
    Uv,
    Pip,
}

#[derive(Debug, Clone)]
pub struct EnvOptions {
    /// Cache root; environments go to `<home>/envs/`. Default: `$PAR_HOME` or `/tmp/pixell-runtime`.
    pub home: PathBuf,
    pub installer: Installer,
    /// Longest one installer step may run. Default 15 minutes.
    pub step_timeout: Duration,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            home: par_package::LoadOptions::default().home,
            installer: Installer::Auto,
            step_timeout: Duration::from_secs(15 * 60),
        }
    }
}

impl EnvOptions {
    pub fn with_home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = home.into();
        self
    }
    pub fn with_installer(mut self, installer: Installer) -> Self {
        self.installer = installer;
        self
    }
    pub fn with_step_timeout(mut self, t: Duration) -> Self {
        self.step_timeout = t;
        self
    }
}

/// The interpreter to run a package's Python code with.
#[derive(Debug, Clone)]
pub struct PythonEnv {
    /// Interpreter to run: `<env_dir>/bin/python`, or the base interpreter when
    /// the package has no requirements.
    pub python: PathBuf,
    pub env_dir: Option<PathBuf>,
    /// Hex sha256 naming the environment (requirements + Python version).
    pub requirements_hash: Option<String>,
    /// Non-fatal findings (e.g. the runtime's interpreter was not found).
    pub warnings: Vec<String>,
}

/// Picks the base interpreter for `runtime` (`python3.X`): that program when it
/// runs, else `python3` with a warning.
pub fn base_interpreter(runtime: &str) -> Result<(Interpreter, Vec<String>), EnvError> {
    let Some(version) = runtime.strip_prefix("python") else {
        return Err(EnvError::UnsupportedRuntime(runtime.to_string()));
    };
    let wanted = format!("python{version}");
    if let Some(i) = probe(&wanted) {
        return Ok((i, Vec::new()));
    }
    match probe(FALLBACK_PYTHON) {
        Some(i) => {
            let warning = format!(
                "runtime {runtime} requested but {wanted} was not found on PATH; using {FALLBACK_PYTHON} (Python {})",
                i.version
            );
            tracing::warn!("{warning}");
            Ok((i, vec![warning]))
        }
        None => Err(EnvError::NoPython {
            tried: format!("{wanted}, {FALLBACK_PYTHON}"),
        }),
    }
}

/// Where a package's environment is, decided without building anything.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `<env_dir>/bin/python`, or the base interpreter without requirements.
    pub python: PathBuf,
    /// `<home>/envs/<first 32 hex digits of the hash>`.
    pub env_dir: Option<PathBuf>,
    pub requirements_hash: Option<String>,
    pub warnings: Vec<String>,
    base: Interpreter,
    reqs: Requirements,
}

impl Plan {
    fn env(&self) -> PythonEnv {
        PythonEnv {
            python: self.python.clone(),
            env_dir: self.env_dir.clone(),
            requirements_hash: self.requirements_hash.clone(),
            warnings: self.warnings.clone(),
        }
    }
}

/// The package's interpreter and, when it has requirements, the folder its
/// environment is (or will be) built in. Reads the package only.
pub fn plan(pkg: &LoadedPackage, opts: &EnvOptions) -> Result<Plan, EnvError> {
    let (base, warnings) = base_interpreter(&pkg.manifest.runtime)?;
    let reqs = requirements::collect(pkg)?;
    if reqs.is_empty() {
        return Ok(Plan {
            python: base.executable.clone(),
            env_dir: None,
            requirements_hash: None,
            warnings,
            base,
            reqs,
        });
    }
    let hash = reqs.hash(&base.version, &pkg.sha256);
    let dir = opts.home.join("envs").join(&hash[..32]);
    Ok(Plan {
        python: dir.join("bin").join("python"),
        env_dir: Some(dir),
        requirements_hash: Some(hash),
        warnings,
        base,
        reqs,
    })
}

/// Builds the planned environment into its folder, which exists and is
/// empty. Nothing else is done: no lock, no ready marker, nothing removed
/// on failure (the caller, which made the folder, decides what becomes of
/// it).
pub fn build_into(
    pkg: &LoadedPackage,
    plan: &Plan,
    opts: &EnvOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(), EnvError> {
    let Some(dir) = &plan.env_dir else {
        return Ok(());
    };
    let started = Instant::now();
    build(&pkg.root, dir, &plan.base, &plan.reqs, opts, progress)?;
    progress(&format!(
        "environment built in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Makes sure the package's Python environment exists and returns the
/// interpreter to run. Installer output goes to `progress`, one line at a time.
pub fn ensure_env(
    pkg: &LoadedPackage,
    opts: &EnvOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<PythonEnv, EnvError> {
    let plan = plan(pkg, opts)?;
    let Some(dir) = plan.env_dir.clone() else {
        return Ok(plan.env());
    };
    if is_ready(&dir) {
        return Ok(plan.env());
    }
    let envs = opts.home.join("envs");
    fs::create_dir_all(&envs).map_err(|source| EnvError::Write {
        path: envs.clone(),
        source,
    })?;
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let lock_path = envs.join(format!("{name}.lock"));
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| EnvError::Write {
            path: lock_path.clone(),
            source,
        })?;
    let _lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((file, _)) => {
            progress("another process is building the same environment; waiting");
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| EnvError::Write {
                path: lock_path.clone(),
                source: errno.into(),
            })?
        }
    };
    if is_ready(&dir) {
        return Ok(plan.env());
    }
    if dir.exists() {
        progress("removing an unfinished environment left by an earlier attempt");
        remove(&dir)?;
    }
    fs::create_dir(&dir).map_err(|source| EnvError::Write {
        path: dir.clone(),
        source,
    })?;
    if let Err(e) = build_into(pkg, &plan, opts, progress) {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    let marker = dir.join(READY_MARKER);
    fs::write(&marker, plan.reqs.normalized.join("\n") + "\n").map_err(|source| {
        let _ = fs::remove_dir_all(&dir);
        EnvError::Write {
            path: marker.clone(),
            source,
        }
    })?;
    Ok(plan.env())
}

/// Whether `dir` holds a finished environment (its marker and interpreter).
pub fn is_ready(dir: &Path) -> bool {
    dir.join(READY_MARKER).is_file() && dir.join("bin").join("python").exists()
}

fn remove(dir: &Path) -> Result<(), EnvError> {
    fs::remove_dir_all(dir).map_err(|source| EnvError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

fn build(
    root: &Path,
    dir: &Path,
    base: &Interpreter,
    reqs: &Requirements,
    opts: &EnvOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<(), EnvError> {
    let uv = match opts.installer {
        Installer::Pip => None,
        Installer::Uv => Some(on_path("uv").unwrap_or_else(|| PathBuf::from("uv"))),
        Installer::Auto => on_path("uv"),
    };
    let uv = uv.as_deref();
    progress(&format!(
        "creating Python {} environment {} for {} requirement(s) from {} with {}",
        base.version,
        dir.file_name().unwrap_or_default().to_string_lossy(),
        reqs.normalized.len(),
        reqs.source,
        if uv.is_some() { "uv" } else { "venv + pip" }
    ));
    let python = dir.join("bin").join("python");
    let t = opts.step_timeout;
    let mut install_args: Vec<String> = Vec::new();
    if let Some(file) = &reqs.file {
        install_args.push("-r".into());
        install_args.push(file.display().to_string());
    }
    install_args.extend(reqs.args.iter().cloned());
    match uv {
        Some(uv) => {
            let mut venv = Command::new(uv);
            venv.arg("venv")
                .arg("--python")
                .arg(&base.executable)
                .arg("--no-project")
                .arg(dir);
            install::run_step("uv venv", venv, root, t, progress)?;
            let mut pip = Command::new(uv);
            pip.args(["pip", "install", "--python"])
                .arg(&python)
                .args(&install_args);
            install::run_step("uv pip install", pip, root, t, progress)
        }
        None => {
            let mut venv = Command::new(&base.executable);
            venv.args(["-m", "venv"]).arg(dir);
            install::run_step("python -m venv", venv, root, t, progress)?;
            let mut pip = Command::new(&python);
            pip.args(["-m", "pip", "install", "--no-input"])
                .args(&install_args);
            install::run_step("pip install", pip, root, t, progress)
        }
    }
}
