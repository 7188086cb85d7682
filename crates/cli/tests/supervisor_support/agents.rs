//! Small stdlib Python agents written by the tests, calls to them, and the
//! root check of the tests that need per-agent uids.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{http, wait_until, Resp, Supervisor};

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}

/// Returns from the test, saying it is skipped and why, unless it runs as
/// root (by default: agents get uids of their own only under a root
/// supervisor).
#[macro_export]
macro_rules! needs_root {
    () => {
        $crate::needs_root!("agents get uids of their own only under a root supervisor")
    };
    ($why:expr) => {
        if !$crate::supervisor_support::is_root() {
            eprintln!("skipped: {}", $why);
            return;
        }
    };
}

/// A stdlib Python agent at `root` with `yaml` as its agent.yaml and `main`
/// as its `src/main.py`, with extra files (path, contents).
pub fn agent_package(root: &Path, yaml: &str, main: &str, extra: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("agent.yaml"), yaml).unwrap();
    std::fs::write(root.join("src/__init__.py"), "").unwrap();
    std::fs::write(root.join("src/main.py"), main).unwrap();
    for (path, text) in extra {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    root.to_path_buf()
}

/// A stdlib Python agent `dir/name` whose `src/main.py` is `main`, with
/// extra files (path, contents).
pub fn agent(dir: &Path, name: &str, main: &str, extra: &[(&str, &str)]) -> PathBuf {
    agent_package(
        &dir.join(name),
        &format!("name: {name}\nversion: '1.0'\nentrypoint: src.main:handler\nmetadata:\n  version: 0.1.0\n"),
        main,
        extra,
    )
}

/// A stdlib Python agent `dir/name-version` of version `version` whose
/// `src/main.py` is `main`, with extra files (path, contents).
pub fn versioned_agent(
    dir: &Path,
    name: &str,
    version: &str,
    main: &str,
    extra: &[(&str, &str)],
) -> PathBuf {
    agent_package(
        &dir.join(format!("{name}-{version}")),
        &format!(
            "name: {name}\nversion: '{version}'\nentrypoint: src.main:handler\nmetadata:\n  version: '{version}'\n"
        ),
        main,
        extra,
    )
}

/// A wheel of `tinydep` (VALUE = 42) at `path`, made with the stdlib (no
/// index needed).
pub fn tiny_wheel(path: &Path) {
    let script = r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("tinydep/__init__.py", "VALUE = 42\n")
    z.writestr("tinydep-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinydep\nVersion: 0.1\n")
    z.writestr("tinydep-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: par-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr("tinydep-0.1.dist-info/RECORD", "tinydep/__init__.py,,\ntinydep-0.1.dist-info/METADATA,,\ntinydep-0.1.dist-info/WHEEL,,\ntinydep-0.1.dist-info/RECORD,,\n")
"#;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let ok = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "building the test wheel");
}

/// An `[[agents]]` entry of `package`.
pub fn agent_toml(id: &str, package: &Path) -> String {
    format!(
        "[[agents]]\nid = \"{id}\"\npackage = \"{}\"\n",
        package.display()
    )
}

/// POSTs `body` to `/agents/{agent}/invoke` without the admin token, as any
/// client could.
pub fn try_invoke(port: u16, agent: &str, body: &str) -> std::io::Result<Resp> {
    http(
        port,
        "POST",
        &format!("/agents/{agent}/invoke"),
        &[("Content-Type", "application/json"), ("Authorization", "")],
        body.as_bytes(),
    )
}

/// [`try_invoke`], which must get an answer.
pub fn invoke(port: u16, agent: &str, body: &str) -> Resp {
    try_invoke(port, agent, body).unwrap()
}

/// POSTs `body` to `/agents/{agent}/invoke` with the admin token.
pub fn try_invoke_as_admin(port: u16, agent: &str, body: &str) -> std::io::Result<Resp> {
    http(
        port,
        "POST",
        &format!("/agents/{agent}/invoke"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// [`try_invoke_as_admin`], which must get an answer.
pub fn invoke_as_admin(port: u16, agent: &str, body: &str) -> Resp {
    try_invoke_as_admin(port, agent, body).unwrap()
}

/// A JSON request to the supervisor's `path` with its admin token.
pub fn admin(sup: &Supervisor, method: &str, path: &str, body: &str) -> Resp {
    http(
        sup.port,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap()
}

/// `VmRSS` of a process, in kB.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The cache of package environments shared by the whole test run.
pub fn par_home() -> PathBuf {
    let home = std::env::var_os("PAR_TEST_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("par-home"));
    std::fs::create_dir_all(&home).unwrap();
    home
}

/// A supervisor (`tag`, `supervisor_toml`) running the FastAPI WebSocket echo
/// agent of the tests (crates/cli/tests/agents/ws-echo) as `ws`, with the
/// shared environment cache; waits up to `ready` for it to be ready.
pub fn start_ws_echo(tag: &str, supervisor_toml: &str, ready: Duration) -> Supervisor {
    let agent = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/agents/ws-echo");
    let agents = format!(
        "[[agents]]\nid = \"ws\"\npackage = \"{}\"\n",
        agent.display()
    );
    let home = par_home();
    let sup = Supervisor::start_with(
        tag,
        supervisor_toml,
        &agents,
        &[("PAR_HOME", home.to_str().unwrap())],
    );
    let p = wait_until(ready, "agent ws ready or failed", || {
        sup.process("ws")
            .filter(|p| p["state"] == "ready" || p["state"] == "failed")
    });
    assert_eq!(p["state"], "ready", "{p}\n{}", sup.log_text());
    sup
}
