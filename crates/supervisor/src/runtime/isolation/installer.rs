//! The installer: `par install-env` run as the build uid (the first of
//! `PAR_AGENT_UIDS`), which no agent has. It reads the package from stdin
//! (an open file: it cannot read the agent's copy).
//!
//! A build step of a requirement (a PEP 517 backend, a `setup.py`) runs
//! code of the package's choosing as the build uid, so that uid is given
//! nothing that outlives its build: builds run one at a time; before and
//! after each, every process of the build uid is ended and its scratch
//! (HOME, TMPDIR, caches) made anew; it owns the one environment folder
//! being built (`envs/<hash>/`, made by the supervisor; never `envs/`
//! itself), built at its final path so the venv's absolute paths hold.
//! Once built, the supervisor seals it ([`files::seal`]): everything in it
//! becomes the supervisor's, writable by no one, before any agent runs it.
//! A failed build is removed. An environment that is not sealed is never
//! handed to an agent: it is removed and built again.
//!
//! Which environment a package needs is asked first, as the agent's own uid
//! (`--plan` only unpacks the package, the agent's own): an environment
//! already sealed waits for no build.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{Seek as _, SeekFrom};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, ReadBuf};

use super::files;
use super::privileges::{become_identity, Identity};
use super::{Failure, PerAgent};
use crate::logs::LogStore;

/// Who runs the installer and where it keeps its things.
pub struct Install<'a> {
    pub per: &'a PerAgent,
    pub logs: &'a Arc<LogStore>,
    pub agent: &'a str,
    pub process: &'a str,
}

/// One build at a time: the build uid owns one environment folder at once.
static BUILDS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The installer's failure text kept for the error: its last lines, within
/// this many lines and bytes.
const TAIL_LINES: usize = 40;
const TAIL_BYTES: usize = 8 * 1024;

/// Longest wait for the build uid's processes to be gone.
const END_WAIT: Duration = Duration::from_secs(5);

/// Kills the installer's whole group when the preparation is abandoned.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = crate::runtime::unix::signal_group(pid, Signal::SIGKILL);
        }
    }
}

/// What `par install-env` answers (see par-worker's `Installed`).
#[derive(serde::Deserialize)]
struct Installed {
    python: PathBuf,
    #[serde(default)]
    env_dir: Option<PathBuf>,
}

/// Prepares the Python environment of `package` and answers the
/// interpreter to use: the base one (no requirements), or a sealed
/// environment's.
pub async fn run(i: Install<'_>, package: std::fs::File) -> Result<PathBuf, Failure> {
    let per = i.per;
    let again = package
        .try_clone()
        .map_err(|e| Failure::environment(format!("the staged package: {e}")))?;
    // Where the environment is, asked as the agent's own uid (it only
    // unpacks the package, which is the agent's): an environment already
    // sealed waits for no build.
    let uid = per.uid_for(i.agent).map_err(Failure::environment)?;
    let planner = Runner {
        uid,
        scratch: per.home.join(files::AGENTS).join(i.agent).join("tmp"),
        umask: 0o077,
    };
    let plan = installer(&i, &planner, package, &[OsStr::new("--plan")]).await?;
    let Some(env) = plan.env_dir else {
        return Ok(plan.python);
    };
    let envs = per.home.join(files::ENVS);
    let named = env.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let valid = env.parent() == Some(envs.as_path())
        && named.len() == 32
        && named.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(Failure::environment(format!(
            "the installer planned the environment at {}, not in {}",
            env.display(),
            envs.display()
        )));
    }
    let python = env.join("bin").join("python");
    let sealer = nix::unistd::geteuid().as_raw();
    if files::is_sealed(&env, sealer) {
        return Ok(python);
    }
    let _one = BUILDS.lock().await;
    // Built and sealed by the build before this one.
    if files::is_sealed(&env, sealer) {
        return Ok(python);
    }
    blocking(per, fresh_scratch).await?;
    let builder = Runner {
        uid: per.installer,
        scratch: per.home.join(files::INSTALLER),
        umask: 0o022,
    };
    let into = env.clone();
    blocking(per, move |per| {
        files::fresh_dir(&into, per.installer, 0o755).map_err(|e| {
            Failure::environment(format!("making {} for its build: {e}", into.display()))
        })
    })
    .await?;
    let mut again = again;
    let built = match again.seek(SeekFrom::Start(0)) {
        Ok(_) => {
            let into = [OsStr::new("--into"), env.as_os_str()];
            installer(&i, &builder, again, &into).await
        }
        Err(e) => Err(Failure::environment(format!("the staged package: {e}"))),
    };
    let sealing = env.clone();
    let ok = built.is_ok();
    let sealed = blocking(per, move |per| {
        // Nothing of the build may run on while the folder is sealed, nor
        // be waiting for the next build.
        end_processes(per.installer)?;
        let started = Instant::now();
        let sealed = if ok {
            files::seal(&sealing)
                .map(|n| (n, started.elapsed()))
                .map_err(|e| {
                    Failure::package(format!(
                        "the built environment {} cannot be sealed: {e}",
                        sealing.display()
                    ))
                })
        } else {
            Ok((0, Duration::ZERO))
        };
        if !ok || sealed.is_err() {
            files::discard(&sealing)
                .map_err(|e| Failure::environment(format!("removing a failed environment: {e}")))?;
        }
        fresh_scratch(per)?;
        sealed
    })
    .await;
    built?;
    let (entries, took) = sealed?;
    tracing::info!(
        agent = i.agent,
        env = %env.display(),
        entries,
        seal_ms = took.as_millis() as u64,
        "environment built and sealed"
    );
    Ok(python)
}

/// Runs `f` off the async threads with the installer's settings.
async fn blocking<T: Send + 'static>(
    per: &PerAgent,
    f: impl FnOnce(&Settings) -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    let settings = Settings {
        home: per.home.clone(),
        installer: per.installer,
    };
    tokio::task::spawn_blocking(move || f(&settings))
        .await
        .map_err(|e| Failure::environment(format!("the installer's files: {e}")))?
}

/// What the blocking steps need of [`PerAgent`].
struct Settings {
    home: PathBuf,
    installer: u32,
}

/// The build uid's scratch, empty and new, with no process of the build uid
/// left: nothing one build leaves (a `.pth` in its user site, a pip or uv
/// configuration in its HOME, a poisoned cache, a waiting process) reaches
/// the next.
fn fresh_scratch(s: &Settings) -> Result<(), Failure> {
    end_processes(s.installer)?;
    let scratch = s.home.join(files::INSTALLER);
    files::fresh_dir(&scratch, s.installer, 0o700)
        .map_err(|e| Failure::environment(format!("the installer's scratch: {e}")))
}

/// Ends every process of `uid` (SIGKILL, again until none is left).
fn end_processes(uid: u32) -> Result<(), Failure> {
    let deadline = Instant::now() + END_WAIT;
    loop {
        let left = processes_of(uid);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Failure::environment(format!(
                "processes of the build uid {uid} outlived SIGKILL: {left:?}"
            )));
        }
        for pid in left {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Live processes (not zombies) whose real or effective uid is `uid`.
fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                return false;
            };
            let field = |name: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(name))
                    .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            let zombie = field("State:").first().is_some_and(|s| *s == "Z");
            let ids = field("Uid:");
            let theirs = ids.iter().take(2).any(|u| u.parse() == Ok(uid));
            theirs && !zombie
        })
        .collect()
}

/// Who runs `par install-env`, with which HOME, TMPDIR and caches.
struct Runner {
    uid: u32,
    scratch: PathBuf,
    /// 0o022 for the build (environments are for every agent to read).
    umask: u32,
}

/// Runs `par install-env` as `who` with `args`, the package on its stdin;
/// its output goes to the agent's log and its last lines into the error
/// when it fails.
async fn installer(
    i: &Install<'_>,
    who: &Runner,
    package: std::fs::File,
    args: &[&OsStr],
) -> Result<Installed, Failure> {
    let per = i.per;
    let mut cmd = per.program.command();
    let scratch = &who.scratch;
    cmd.arg("install-env")
        .arg("--home")
        .arg(&per.home)
        .arg("--scratch")
        .arg(scratch.join("work"))
        .args(args)
        .stdin(Stdio::from(package))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // What an installer needs of the supervisor's environment (the locale,
    // the index, TLS trust, the proxy, the package limits) and nothing else:
    // a build step runs code of the package's choosing.
    let inherit = super::environment::Inherit {
        task_role: false,
        installs: true,
    };
    cmd.env_clear()
        .envs(inherit.filter(std::env::vars_os()))
        .env("PATH", &per.path)
        .env("HOME", scratch)
        .env("TMPDIR", scratch)
        .env("XDG_CACHE_HOME", scratch.join("cache"))
        .env("XDG_CONFIG_HOME", scratch.join("config"))
        // Its own, whatever the supervisor was given, and new for each
        // build: a cache another build could write is a way into every
        // environment built after it.
        .env("UV_CACHE_DIR", scratch.join("cache").join("uv"))
        .env("PIP_CACHE_DIR", scratch.join("cache").join("pip"))
        .env(par_contract::env::LOG_FORMAT, "json");
    become_identity(
        &mut cmd,
        Identity {
            uid: who.uid,
            nproc: per.nproc,
            nofile: per.nofile,
            umask: who.umask,
        },
        Some(scratch),
    );
    crate::runtime::unix::isolate(&mut cmd);
    let mut child = crate::runtime::unix::spawn_tracked(|| {
        let child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        Ok((child, pid))
    })
    .map_err(|e| Failure::environment(format!("failed to start the installer: {e}")))?;
    let pid = child.id();
    let _guard = GroupGuard(pid);
    // Its log (one JSON line each, on stdout, the answer last) and anything
    // else it or a build step prints (stderr) go to the agent's log; the
    // last of each is kept for the error.
    let (out_tail, err_tail) = (Arc::<Mutex<Tail>>::default(), Arc::<Mutex<Tail>>::default());
    let capture = |stream: &'static str, pipe, tail: &Arc<Mutex<Tail>>| {
        tokio::spawn(crate::logs::capture(
            Arc::clone(i.logs),
            i.agent.to_string(),
            i.process.to_string(),
            stream,
            Tee {
                inner: pipe,
                tail: Arc::clone(tail),
            },
        ))
    };
    let mut readers = Vec::new();
    if let Some(p) = child.stdout.take() {
        readers.push(capture(
            "stdout",
            Box::new(p) as Box<dyn AsyncRead + Unpin + Send>,
            &out_tail,
        ));
    }
    if let Some(p) = child.stderr.take() {
        readers.push(capture("stderr", Box::new(p), &err_tail));
    }
    let status = child.wait().await;
    if let Some(pid) = pid {
        crate::runtime::unix::untrack(pid);
    }
    for r in readers {
        let _ = r.await;
    }
    let status =
        status.map_err(|e| Failure::environment(format!("waiting for the installer: {e}")))?;
    let lock = |t: &Arc<Mutex<Tail>>| t.lock().unwrap_or_else(|e| e.into_inner()).text();
    let (out, err) = (lock(&out_tail), lock(&err_tail));
    let why = || reason(&out, &err);
    match status.code() {
        Some(0) => out
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Installed>(l).ok())
            .ok_or_else(|| {
                Failure::environment(format!("the installer gave no answer: {}", why()))
            }),
        Some(par_contract::exit::PACKAGE_FAILURE) => Err(Failure::package(format!(
            "the package's Python environment cannot be built: {}",
            why()
        ))),
        _ => Err(Failure::environment(format!(
            "the installer failed ({status}): {}",
            why()
        ))),
    }
}

/// What went wrong, in the installer's words: its last error's text (a
/// failed step's error carries that step's last output), else the last
/// lines of its stderr, else of its stdout; at most [`TAIL_LINES`] lines
/// and [`TAIL_BYTES`] bytes, the end kept.
fn reason(stdout: &str, stderr: &str) -> String {
    let lines = |text: &str| -> Vec<String> { text.lines().filter_map(readable).collect() };
    let (out, err) = (lines(stdout), lines(stderr));
    let error = out
        .iter()
        .chain(err.iter())
        .rev()
        .find_map(|l| l.strip_prefix("ERROR "));
    let text = match error {
        Some(e) => e.to_string(),
        None if !err.is_empty() => err.join("\n"),
        None => out.join("\n"),
    };
    let text = text.trim();
    if text.is_empty() {
        return "it printed nothing".into();
    }
    let kept: Vec<&str> = text.lines().collect();
    let mut out = kept[kept.len().saturating_sub(TAIL_LINES)..].join("\n");
    if out.len() > TAIL_BYTES {
        let mut cut = out.len() - TAIL_BYTES;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = format!("…{}", &out[cut..]);
    }
    out
}

/// The last bytes of one of the installer's streams.
#[derive(Default)]
struct Tail {
    bytes: VecDeque<u8>,
}

impl Tail {
    /// Keeps more than the error needs: lines are cut from it at the end.
    const KEEP: usize = 4 * TAIL_BYTES;

    fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(Self::KEEP)..];
        let over = (self.bytes.len() + data.len()).saturating_sub(Self::KEEP);
        self.bytes.drain(..over);
        self.bytes.extend(data);
    }

    fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }
}

/// A line of the installer's output as text: `LEVEL message: error` for
/// its JSON log lines, the line itself otherwise.
fn readable(line: &str) -> Option<String> {
    let line = line.trim_end();
    if line.is_empty() {
        return None;
    }
    let Ok(serde_json::Value::Object(v)) = serde_json::from_str::<serde_json::Value>(line) else {
        return Some(line.to_string());
    };
    let level = v
        .get("level")
        .and_then(|l| l.as_str())
        .unwrap_or("info")
        .to_ascii_uppercase();
    let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
    let message = message.strip_prefix("deps: ").unwrap_or(message);
    // The log schema keeps `error` in `fields`.
    let error = v
        .get("fields")
        .and_then(|f| f.get("error"))
        .or_else(|| v.get("error"))
        .and_then(|e| e.as_str());
    Some(match error {
        Some(e) if level == "ERROR" => format!("ERROR {e}"),
        Some(e) => format!("{level} {message}: {e}"),
        None => format!("{level} {message}"),
    })
}

/// Passes a stream through, keeping its last bytes in a [`Tail`].
struct Tee<R> {
    inner: R,
    tail: Arc<Mutex<Tail>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Tee<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let fresh = &buf.filled()[before..];
            if !fresh.is_empty() {
                self.tail
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(fresh);
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(text: &str) -> String {
        let mut t = Tail::default();
        t.push(text.as_bytes());
        reason(&t.text(), "")
    }

    #[test]
    fn the_error_is_the_installers_last_error_with_its_output() {
        let stderr = concat!(
            r#"{"level":"INFO","message":"deps: uv pip install: starting"}"#,
            "\n",
            r#"{"level":"ERROR","message":"the environment could not be prepared","error":"installing dependencies failed (uv pip install, exit status: 1); last output:\nerror: No solution found\n  cause: nope-zzz was not found"}"#,
            "\n"
        );
        let why = tail_of(stderr);
        assert!(why.starts_with("installing dependencies failed"), "{why}");
        assert!(why.contains("nope-zzz was not found"), "{why}");
        assert!(!why.contains("starting"), "{why}");
    }

    #[test]
    fn the_error_is_found_in_a_line_of_the_log_schema() {
        let stdout = concat!(
            r#"{"timestamp":"2025-01-01T00:00:00.000Z","level":"info","source":"worker","agent_id":null,"process_id":null,"message":"deps: uv pip install: starting","fields":{}}"#,
            "\n",
            r#"{"timestamp":"2025-01-01T00:00:01.000Z","level":"error","source":"worker","agent_id":null,"process_id":null,"message":"the environment could not be prepared","fields":{"error":"installing dependencies failed: nope-zzz was not found"}}"#,
            "\n"
        );
        let why = tail_of(stdout);
        assert_eq!(
            why,
            "installing dependencies failed: nope-zzz was not found"
        );
    }

    #[test]
    fn without_an_error_line_the_last_lines_are_kept_within_bounds() {
        let stderr: String = (0..500).map(|i| format!("line {i}\n")).collect();
        let why = tail_of(&stderr);
        assert_eq!(why.lines().count(), TAIL_LINES);
        assert!(why.ends_with("line 499"), "{why}");
        let long = "x".repeat(3 * TAIL_BYTES) + "\nend";
        let why = tail_of(&long);
        assert!(why.len() <= TAIL_BYTES + '…'.len_utf8(), "{}", why.len());
        assert!(why.ends_with("end"));
        let mut t = Tail::default();
        for _ in 0..100 {
            t.push(&[b'y'; 1000]);
        }
        assert!(t.bytes.len() <= Tail::KEEP);
        assert_eq!(tail_of(""), "it printed nothing");
        assert_eq!(
            reason("{\"level\":\"INFO\",\"message\":\"x\"}", "boom"),
            "boom"
        );
    }
}
