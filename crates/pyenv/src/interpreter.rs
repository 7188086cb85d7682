//! Choosing the base Python interpreter for a package's `runtime`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// A working interpreter: its real executable (not a shim) and `major.minor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    pub executable: PathBuf,
    pub version: String,
}

/// Runs `program` once to learn its real executable and version; `None` when it
/// is missing or broken (e.g. a pyenv shim for a version that is not installed).
/// Answers are remembered for the life of the process.
pub fn probe(program: &str) -> Option<Interpreter> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Interpreter>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(program).cloned()) {
        return hit;
    }
    let found = run_probe(program);
    if let Ok(mut c) = cache.lock() {
        c.insert(program.to_string(), found.clone());
    }
    found
}

fn run_probe(program: &str) -> Option<Interpreter> {
    let out = Command::new(program)
        .args([
            "-c",
            "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2])",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let executable = PathBuf::from(lines.next()?.trim());
    let version = lines.next()?.trim().to_string();
    if executable.as_os_str().is_empty() || !executable.is_file() {
        return None;
    }
    Some(Interpreter {
        executable,
        version,
    })
}

/// Whether `name` is an executable file somewhere on `$PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

#[cfg(unix)]
fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(p: &std::path::Path) -> bool {
    p.is_file()
}
