//! Conversations as users hold them: the sdk-sessions fixture (a pixell-sdk
//! `AgentServer` agent that keeps each session's turns and plan-mode
//! clarifications in process memory) and the driver that talks to it with
//! pixell-sdk's own `A2AClient` (crates/cli/tests/agents/sessions_drive.py;
//! its docstring says what each figure counts).
//!
//! The driver runs with the python of the venv `dev/build-fixtures` makes for
//! pixell-sdk 0.5.4 (the test tools venv has no `pixell` module, and
//! pixell-kit and pixell-sdk would both install one).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use serde_json::Value;

use super::repo_root;

/// The fixture package, built by `dev/build-fixtures` with pixell-sdk 0.5.4.
pub const SESSIONS_APKG: &str = "sdk-sessions-0.1.0.apkg";

/// The path of the built sdk-sessions APKG (panics with how to build it).
#[track_caller]
pub fn sessions_apkg() -> PathBuf {
    par_fixtures::apkg(SESSIONS_APKG)
}

/// The python of the pixell-sdk 0.5.4 venv `dev/build-fixtures` makes.
#[track_caller]
pub fn sdk_python() -> PathBuf {
    let python = repo_root().join("target/pixell-tools/pixell-sdk-0.5.4/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run ./dev/build-fixtures (it installs pixell-sdk 0.5.4 there)",
        python.display()
    );
    python
}

/// crates/cli/tests/agents/sessions_drive.py
pub fn driver_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agents/sessions_drive.py")
}

/// The A2A URL of agent `id` behind the supervisor on `port`.
pub fn agent_url(port: u16, id: &str) -> String {
    format!("http://127.0.0.1:{port}/agents/{id}")
}

fn driver(base_url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(sdk_python());
    cmd.arg(driver_script())
        .arg(base_url)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn last_json_line(stdout: &str, what: &str) -> Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("{what}: no output"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"))
}

/// Runs the driver to its end and returns its figures, e.g.
/// `drive(&url, &["turns", "--sessions", "20", "--turns", "6"])` or
/// `drive(&url, &["clarify", "--respond-without-session"])`; with no mode,
/// `{"turns": {...}, "clarify": {...}}`. Panics, with its stderr, when it fails.
pub fn drive(base_url: &str, args: &[&str]) -> Value {
    let out = driver(base_url, args)
        .stdin(Stdio::null())
        .output()
        .expect("run sessions_drive.py");
    let what = format!("sessions_drive.py {base_url} {}", args.join(" "));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    last_json_line(&String::from_utf8_lossy(&out.stdout), &what)
}

/// A `clarify --pause` run: the clarifications are asked and wait for their
/// answers (`state["pending"]`: sessionId, clarificationId, askedPid each)
/// until `answer` is called; a test does its rollout in between.
pub struct Paused {
    child: Child,
    stdout: BufReader<ChildStdout>,
    what: String,
    pub state: Value,
}

/// Starts `clarify --pause` with `args` (e.g. `["--clarifications", "5"]`) and
/// returns once every clarification was asked.
pub fn ask_and_pause(base_url: &str, args: &[&str]) -> Paused {
    let mut all = vec!["clarify", "--pause"];
    all.extend_from_slice(args);
    let what = format!("sessions_drive.py {base_url} {}", all.join(" "));
    let mut child = driver(base_url, &all)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run sessions_drive.py");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("read the driver's state");
    if line.trim().is_empty() {
        let _ = child.kill();
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        let _ = child.wait();
        panic!("{what}: ended before asking: {err}");
    }
    let state = last_json_line(&line, &what);
    Paused {
        child,
        stdout,
        what,
        state,
    }
}

impl Paused {
    /// Answers the waiting clarifications and returns the driver's figures.
    pub fn answer(mut self) -> Value {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"go\n").expect("resume the driver");
        drop(stdin);
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{}: {status}\n{err}", self.what);
        last_json_line(&rest, &self.what)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
