//! A checkout in a private folder (root's home is 0700 on Debian, and so is
//! `mktemp -d`): the supervisor, started as root from a copy of `par` in a
//! 0700 folder, runs its agents under their own uids all the same (the
//! binary is run through a descriptor opened at start, so the agents' uids
//! never walk its folders), and a `PAR_HOME` under such a folder, which the
//! agents must reach by path, is refused with an error naming it. Needs
//! root, as per-agent uids do; elsewhere each test says so and passes.

mod supervisor_support;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use supervisor_support::*;

const READY: Duration = Duration::from_secs(120);

/// A 0700 folder (as `mktemp -d` makes) holding a copy of the `par` under
/// test at `checkout/target/release/par`, as a clone there would.
fn private_checkout(tag: &str) -> (TempDir, PathBuf) {
    let private = TempDir::new(tag);
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let bin = private.path().join("checkout/target/release/par");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_par"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (private, bin)
}

/// `par supervisor` from `bin` with `config`, output into `log`.
fn supervisor(bin: &Path, config: &Path, log: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("supervisor")
        .arg("--config")
        .arg(config)
        .env_remove("PAR_ADMIN_TOKEN")
        .env_remove("PAR_AGENTS")
        .env_remove("SUPERVISOR_PORT")
        .env_remove("PAR_WORKER_PORTS")
        .env_remove("PAR_HOME")
        .env_remove("PAR_MODE")
        .env_remove("PAR_SUPERVISOR_UID")
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::from(
            std::fs::File::options().append(true).open(log).unwrap(),
        ));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A copy of the echo example in `dir/echo`.
fn copy_of_echo(dir: &Path) -> PathBuf {
    let echo = dir.join("echo");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("examples/agents/echo"))
        .arg(&echo)
        .status()
        .unwrap();
    assert!(copied.success(), "cp -r examples/agents/echo");
    echo
}

fn config(dir: &Path, home: &Path) -> PathBuf {
    let (lo, hi) = port_block(40);
    // A copy beside the config: the repository itself may be in a private
    // folder too (a clone under `mktemp -d`), which a supervisor that
    // dropped root cannot read.
    let echo = copy_of_echo(dir);
    let cfg = dir.join("sup.toml");
    std::fs::write(
        &cfg,
        format!(
            "[supervisor]\nport = 0\nworker_ports = \"{lo}-{hi}\"\nhome = \"{}\"\n\
             [[agents]]\nid = \"a\"\npackage = \"{}\"\ndisk_limit_mb = 8\n",
            home.display(),
            echo.display()
        ),
    )
    .unwrap();
    cfg
}

/// The port of the "supervisor listening" line; panics with the log when it
/// exited or said nothing within `timeout`.
fn listening_port(child: &mut std::process::Child, log: &Path, timeout: Duration) -> u16 {
    supervisor_support::listening_port(child, log, timeout).unwrap_or_else(|why| {
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        panic!("the supervisor did not start listening ({why}); log:\n{text}");
    })
}

fn status_field(pid: u64, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[test]
fn a_supervisor_run_from_a_private_folder_starts_agents_under_their_own_uids() {
    needs_root!();
    runs_from_a_private_folder("private-checkout", uid_ranges::PRIVATE_CHECKOUT, None);
}

/// With `PAR_SUPERVISOR_UID` the supervisor itself can no longer walk to
/// its binary once it dropped root: what it starts after that (restarts,
/// the disk count) runs from the descriptor it opened before.
#[test]
fn a_supervisor_that_drops_root_runs_from_a_private_folder_too() {
    needs_root!();
    runs_from_a_private_folder(
        "private-checkout-drop",
        uid_ranges::PRIVATE_CHECKOUT_DROP,
        Some(10779),
    );
}

/// Runs the supervisor from a copy of `par` in a 0700 folder, as root (then
/// as `supervisor_uid`, if given), with agent `a` (the echo example) and
/// agent uids `uids`; checks `a` runs under its own uid from that copy,
/// answers, and is restarted over its disk limit (`par disk-usage`).
fn runs_from_a_private_folder(tag: &str, uids: (u32, u32), supervisor_uid: Option<u32>) {
    let (private, bin) = private_checkout(tag);
    // Outside the private folder: the agents' own folders are under it.
    let outside = TempDir::new(&format!("{tag}-home"));
    let home = outside.path().join("home");
    let log = outside.path().join("supervisor.log");
    let cfg = config(outside.path(), &home);
    let mode = std::fs::metadata(private.path()).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700, "the folder the binary is in is private");

    let range = format!("{}-{}", uids.0, uids.1);
    let mut env = vec![("PAR_AGENT_UIDS", range.clone())];
    if let Some(u) = supervisor_uid {
        env.push(("PAR_SUPERVISOR_UID", u.to_string()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut child = supervisor(&bin, &cfg, &log, &env).spawn().unwrap();
    let port = listening_port(&mut child, &log, Duration::from_secs(60));
    let sup = Supervisor {
        child,
        port,
        dir: outside,
        log,
    };
    let status = get(port, "/supervisor/status").unwrap().json();
    assert_eq!(
        status["supervisor"]["isolation"],
        "per-agent-uid",
        "{status}\n{}",
        sup.log_text()
    );
    if let Some(u) = supervisor_uid {
        assert_eq!(status["supervisor"]["uid"], u, "{status}");
        let own = status_field(u64::from(sup.child.id()), "Uid");
        assert!(own.split_whitespace().all(|x| x == u.to_string()), "{own}");
    }
    let a = wait_until(READY, "agent a ready (or failed)", || {
        sup.process("a")
            .filter(|p| p["state"] == "ready" || p["state"] == "failed")
    });
    assert_eq!(a["state"], "ready", "{a}\nlog:\n{}", sup.log_text());
    let pid = a["pid"].as_u64().unwrap();
    // Real, effective, saved and filesystem uid: the agent's, not root.
    let worker_uids = status_field(pid, "Uid");
    let uid: u32 = worker_uids
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (uids.0 + 1..=uids.1).contains(&uid),
        "worker uids: {worker_uids}"
    );
    assert!(
        worker_uids.split_whitespace().all(|u| u == uid.to_string()),
        "worker uids: {worker_uids}"
    );
    // It runs the copy in the private folder, which its uid cannot walk to.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, bin.canonicalize().unwrap());
    assert_eq!(
        std::fs::metadata(private.path()).unwrap().mode() & 0o777,
        0o700
    );
    // The descriptor it ran from was closed by its exec: nothing the agent
    // starts inherits the supervisor's binary.
    let fds: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .collect();
    assert!(
        !fds.iter().any(|f| f.starts_with(private.path())),
        "the worker holds {fds:?}"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap();
    assert_eq!(
        argv0,
        bin.as_os_str().as_encoded_bytes(),
        "argv[0] names the binary"
    );

    let r = http(
        port,
        "POST",
        "/agents/a/invoke",
        &[("Content-Type", "application/json")],
        br#"{"text":"from a private checkout"}"#,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("from a private checkout"), "{}", r.text());
    // The disk watchdog's count (`par disk-usage` as the agent's uid, the
    // same binary) works too: over the limit, the worker is restarted.
    let folder = sup.dir.path().join("home/agents/a");
    std::fs::write(folder.join("tmp/blob"), vec![1u8; 16 << 20]).unwrap();
    let p = wait_until(
        Duration::from_secs(60),
        "a restarted over its disk limit",
        || {
            sup.process("a")
                .filter(|p| p["state"] == "ready" && p["pid"].as_u64() != Some(pid))
        },
    );
    assert_eq!(p["last_error_class"], "disk_limit", "{p}");
    assert!(!folder.join("tmp/blob").exists(), "tmp is emptied");
}

/// Runs the supervisor until it refuses to start (exit code 1); its log.
fn refused(bin: &Path, cfg: &Path, log: &Path) -> String {
    let out = supervisor(
        bin,
        cfg,
        log,
        &[("PAR_AGENT_UIDS", uid_ranges::PRIVATE_CHECKOUT_REFUSED)],
    )
    .status()
    .unwrap();
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(out.code(), Some(1), "{text}");
    text
}

#[test]
fn a_par_home_under_a_private_folder_is_refused_naming_it() {
    needs_root!();
    let (private, bin) = private_checkout("private-home");
    let home = private.path().join("home");
    let log = private.path().join("supervisor.log");
    let cfg = config(private.path(), &home);
    let text = refused(&bin, &cfg, &log);
    let expected = format!(
        "PAR_HOME {} is out of the agents' reach: {} is mode 0700",
        home.display(),
        private.path().display()
    );
    assert!(text.contains(&expected), "wanted {expected:?} in:\n{text}");
    assert!(
        text.contains("set PAR_HOME to a folder others can search"),
        "{text}"
    );
}

#[test]
fn a_binary_the_agents_cannot_execute_is_refused_at_start_naming_it() {
    needs_root!();
    let (_private, bin) = private_checkout("private-noexec");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o700)).unwrap();
    let outside = TempDir::new("private-noexec-home");
    let log = outside.path().join("supervisor.log");
    let cfg = config(outside.path(), &outside.path().join("home"));
    let text = refused(&bin, &cfg, &log);
    let expected = format!(
        "the worker program {} is mode 0700: agents run as uids {} and must be able to execute it",
        bin.display(),
        uid_ranges::PRIVATE_CHECKOUT_REFUSED
    );
    assert!(text.contains(&expected), "wanted {expected:?} in:\n{text}");
}

/// A package in a folder the supervisor (after it dropped root) cannot read
/// fails at once, naming the package and the uid, instead of a restart loop.
#[test]
fn a_package_the_supervisor_cannot_read_fails_naming_it() {
    needs_root!();
    let private = TempDir::new("unreadable-package");
    let echo = copy_of_echo(private.path());
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let agents = format!("[[agents]]\nid = \"a\"\npackage = \"{}\"\n", echo.display());
    let sup = Supervisor::start_with(
        "unreadable-package",
        "",
        &agents,
        &[
            ("PAR_AGENT_UIDS", uid_ranges::UNREADABLE_PACKAGE),
            ("PAR_SUPERVISOR_UID", "10779"),
        ],
    );
    let p = wait_until(Duration::from_secs(60), "agent a failed", || {
        sup.process("a").filter(|p| p["state"] == "failed")
    });
    let expected = format!(
        "the package {} cannot be read by the supervisor (uid 10779)",
        echo.display()
    );
    assert!(
        p["last_error"].as_str().unwrap_or("").contains(&expected),
        "wanted {expected:?} in {p}"
    );
    assert_eq!(p["restarts"], 0, "{p}");
}
