//! Sealed Python environments, end to end as root with per-agent uids and a
//! supervisor dropped to its own uid (as in the image): a package whose
//! requirement is built from its own source by an in-tree PEP 517 backend
//! (no network) tries, in its build step, to write a `.pth` into every
//! other environment and into `envs/` itself, to rename them, and leaves a
//! process behind to try again later. No other environment changes, the
//! other agent restarts with its code as it was, the hostile package's own
//! environment is built and sealed, and no process of the build uid is
//! left. An environment of an older PAR (the installer's) is not reused. A
//! requirement whose build fails names the failure in the error the
//! supervisor reports, and leaves no environment. An agent that writes past
//! its disk limit is restarted with its tmp emptied.

mod supervisor_support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use supervisor_support::*;

const READY: Duration = Duration::from_secs(120);
/// Each test its own range: the build uid is ended between builds.
const UIDS: &str = supervisor_support::uid_ranges::SEALED_HOSTILE_BUILD;
const BUILDER: u32 = 26000;
const UIDS_2: &str = supervisor_support::uid_ranges::SEALED_FAILED_BUILD;
const BUILDER_2: u32 = 26500;
const SUPERVISOR_UID: u32 = 10778;

/// Why the tests skip when not run as root.
const NOT_ROOT: &str = "environments are sealed only under a root supervisor";

/// `pyproject.toml` of an in-tree PEP 517 backend (`backend.py` beside it).
/// A `.pth` line that marks every interpreter that starts with it.
const PTH_LINE: &str = "import os; os.environ['PWNED'] = 'by-a-build-step'\n";

const PYPROJECT: &str = "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n\n[project]\nname = \"evil\"\nversion = \"0.1\"\n";

/// The hostile build backend: while its wheel is built (as the build uid)
/// it tries to write a `.pth` into every environment's site-packages and
/// into `envs/`, to rename every environment, and leaves a process behind
/// that tries again for two minutes; the wheel it makes records what each
/// attempt got (`evil.ATTEMPTS`).
const BACKEND: &str = r#"
import glob, json, os, time, zipfile

PTH = "import os; os.environ['PWNED'] = 'by-a-build-step'\n"

def _envs():
    return os.path.join(os.path.dirname(os.environ["HOME"]), "envs")

def _try(attempts, name, f):
    try:
        f()
        attempts[name] = "allowed"
    except OSError as e:
        attempts[name] = "denied" if e.errno in (1, 13, 30) else "error %s" % e

def _attack(attempts):
    envs = _envs()
    for sp in glob.glob(os.path.join(envs, "*", "lib", "python*", "site-packages")):
        def write(sp=sp):
            with open(os.path.join(sp, "zz_evil.pth"), "w") as f:
                f.write(PTH)
        _try(attempts, "pth " + sp, write)
    def plant():
        with open(os.path.join(envs, "planted.pth"), "w") as f:
            f.write(PTH)
    _try(attempts, "plant in envs", plant)
    for env in glob.glob(os.path.join(envs, "*")):
        _try(attempts, "rename " + env, lambda env=env: os.rename(env, env + ".moved"))
        _try(attempts, "chmod " + env, lambda env=env: os.chmod(env, 0o777))

def _linger():
    if os.fork() != 0:
        return
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    # Let the build end: nothing of the build's pipes is held.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 4096)
    end = time.time() + 120
    while time.time() < end:
        try:
            _attack({})
        except Exception:
            pass
        time.sleep(0.1)
    os._exit(0)

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    attempts = {}
    _attack(attempts)
    _linger()
    name = "evil-0.1-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        z.writestr("evil/__init__.py", "ATTEMPTS = %s\nSECRET = %s\n" % (
            json.dumps(attempts), repr(os.environ.get("AWS_SECRET_ACCESS_KEY"))))
        z.writestr("evil-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: evil\nVersion: 0.1\n")
        z.writestr("evil-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: evil\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("evil-0.1.dist-info/RECORD", "evil/__init__.py,,\nevil-0.1.dist-info/METADATA,,\nevil-0.1.dist-info/WHEEL,,\nevil-0.1.dist-info/RECORD,,\n")
    return name

def get_requires_for_build_wheel(config_settings=None):
    return []
"#;

/// A build backend that fails with a message of its own.
const BROKEN_BACKEND: &str = r#"
def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("BROKEN-BUILD-7351: this requirement cannot be built")
"#;

/// Every entry under `root`: its contents (or link target), mode and owner.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let body = if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            Vec::new()
        } else if meta.file_type().is_symlink() {
            std::fs::read_link(&p)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else {
            std::fs::read(&p).unwrap()
        };
        out.insert(p, (body, meta.mode(), meta.uid()));
    }
    out
}

/// Live processes whose real uid is `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                return false;
            };
            let field = |f: &str| {
                s.lines()
                    .find(|l| l.starts_with(f))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .map(str::to_string)
            };
            field("Uid:") == Some(uid.to_string()) && field("State:").as_deref() != Some("Z")
        })
        .collect()
}

/// The environment an agent's interpreter belongs to.
fn env_of(python: &str) -> PathBuf {
    PathBuf::from(python)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn a_build_step_cannot_change_another_environment() {
    needs_root!(NOT_ROOT);
    let dir = TempDir::new("sealed-envs");
    let victim = agent(
        dir.path(),
        "victim",
        "import os, sys, tinydep\n\
         def handler(c):\n    return {'value': tinydep.VALUE, 'pwned': os.environ.get('PWNED'), \
         'python': sys.executable}\n",
        &[(
            "requirements.txt",
            "./wheels/tinydep-0.1-py3-none-any.whl\n",
        )],
    );
    tiny_wheel(&victim.join("wheels/tinydep-0.1-py3-none-any.whl"));
    // Packed once: the same package (and so the same environment) for both
    // supervisors below.
    let victim_apkg = dir.path().join("victim.apkg");
    let packed = std::process::Command::new(env!("CARGO_BIN_EXE_par"))
        .arg("pack")
        .arg(&victim)
        .arg("-o")
        .arg(&victim_apkg)
        .status()
        .unwrap();
    assert!(packed.success());
    let hostile = agent(
        dir.path(),
        "hostile",
        "import os, sys, evil\n\
         def handler(c):\n    return {'attempts': evil.ATTEMPTS, 'secret': evil.SECRET, \
         'pwned': os.environ.get('PWNED'), \
         'python': sys.executable}\n",
        &[
            ("requirements.txt", "./evil\n"),
            ("evil/pyproject.toml", PYPROJECT),
            ("evil/backend.py", BACKEND),
        ],
    );
    let home = dir.path().join("home");

    let agents = format!(
        "[[agents]]\nid = \"victim\"\npackage = \"{}\"\n",
        victim_apkg.display()
    );
    let uid = SUPERVISOR_UID.to_string();
    let sup = Supervisor::start_with(
        "sealed-envs",
        "",
        &agents,
        &[
            ("PAR_AGENT_UIDS", UIDS),
            ("PAR_SUPERVISOR_UID", &uid),
            ("PAR_PACKAGE_ROOTS", dir.path().to_str().unwrap()),
            ("PAR_HOME", home.to_str().unwrap()),
            ("AWS_SECRET_ACCESS_KEY", "sk-supervisor-secret-991"),
        ],
    );
    let v = sup.wait_ready("victim", READY);
    let r = invoke(sup.port, "victim", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let data = r.json()["data"].clone();
    assert_eq!(data["value"], 42, "{data}");
    assert_eq!(data["pwned"], serde_json::Value::Null);
    let victim_env = env_of(data["python"].as_str().unwrap());
    assert!(victim_env.starts_with(home.join("envs")), "{victim_env:?}");
    let envs = home.join("envs");
    for (p, owner, mode) in [
        (&home, SUPERVISOR_UID, 0o711),
        (&envs, SUPERVISOR_UID, 0o755),
    ] {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (owner, mode), "{p:?}");
    }
    let before = snapshot(&envs);
    assert!(before.len() > 10, "{}", before.len());
    let sealed = |what: &BTreeMap<PathBuf, (Vec<u8>, u32, u32)>, env: &Path| {
        for (p, (_, mode, owner)) in what.iter().filter(|(p, _)| p.starts_with(env)) {
            assert_eq!(*owner, SUPERVISOR_UID, "{p:?} owned by the supervisor");
            let link = std::fs::symlink_metadata(p)
                .unwrap()
                .file_type()
                .is_symlink();
            assert!(link || mode & 0o222 == 0, "{p:?} writable: {mode:o}");
        }
    };
    sealed(&before, &victim_env);

    // The hostile package: its requirement's build step attacks.
    let body = format!(
        r#"{{"agent_id":"hostile","package_path":"{}","restart_policy":"never"}}"#,
        hostile.display()
    );
    let r = sup.spawn_wait(&body);
    assert_eq!(r.status, 201, "{}\n{}", r.text(), sup.log_text());
    let r = invoke(sup.port, "hostile", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let data = r.json()["data"].clone();
    let hostile_env = env_of(data["python"].as_str().unwrap());
    assert_ne!(hostile_env, victim_env);
    assert_eq!(
        data["secret"],
        serde_json::Value::Null,
        "the build step saw the supervisor's secret"
    );
    let attempts = data["attempts"].as_object().unwrap().clone();
    eprintln!("the build step's attempts: {attempts:#?}");
    // Each attempt on what is not its own was made and refused.
    let victim_pth = format!("pth {}", victim_env.display());
    let on_victim: Vec<_> = attempts
        .iter()
        .filter(|(k, _)| k.starts_with(&victim_pth))
        .collect();
    assert_eq!(on_victim.len(), 1, "{attempts:?}");
    let others: Vec<_> = attempts
        .iter()
        .filter(|(k, _)| !k.contains(hostile_env.to_str().unwrap()))
        .collect();
    assert!(others.len() >= 4, "{attempts:?}");
    for (k, v) in &others {
        assert_eq!(v.as_str(), Some("denied"), "{k}: {v}");
    }
    // Its own environment it could write while it was being built (that is
    // what a build does), and the result is sealed like any other.
    assert_eq!(data["pwned"], "by-a-build-step", "{data}");
    let after = snapshot(&envs);
    sealed(&after, &hostile_env);

    // Nothing of the build runs on.
    let left = processes_of(BUILDER);
    assert!(left.is_empty(), "processes of the build uid: {left:?}");

    // The victim's environment and envs/ are as they were: only the hostile
    // package's own environment was added.
    let changed: Vec<_> = after
        .iter()
        .filter(|(p, _)| !p.starts_with(&hostile_env))
        .filter(|(p, x)| before.get(*p) != Some(x))
        .map(|(p, _)| p)
        .chain(before.keys().filter(|p| !after.contains_key(*p)))
        .collect();
    assert!(changed.is_empty(), "changed by the build step: {changed:?}");
    let names: Vec<_> = std::fs::read_dir(&envs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // The victim, started again, runs its own code in its own environment.
    let pid = v["pid"].as_u64().unwrap();
    let r = http(sup.port, "POST", "/supervisor/restart/par-victim", &[], b"").unwrap();
    assert!(r.status < 300, "{}", r.text());
    wait_until(READY, "the victim restarted", || {
        sup.process("victim")
            .filter(|p| p["state"] == "ready" && p["pid"].as_u64() != Some(pid))
    });
    let r = invoke(sup.port, "victim", "{}");
    let data = r.json()["data"].clone();
    assert_eq!(data["value"], 42, "{data}");
    assert_eq!(data["pwned"], serde_json::Value::Null, "{data}");
    assert_eq!(snapshot(&victim_env), {
        let mut b = before.clone();
        b.retain(|p, _| p.starts_with(&victim_env));
        b
    });

    // The victim's environment as an older PAR left it: the installer's (a
    // build uid's), with what a build step planted. The next supervisor does
    // not run it: it builds the environment again and seals it.
    let victim_sp = victim_env.join("lib/python3.11/site-packages");
    let victim_sp = if victim_sp.is_dir() {
        victim_sp
    } else {
        std::fs::read_dir(victim_env.join("lib"))
            .unwrap()
            .map(|e| e.unwrap().path().join("site-packages"))
            .next()
            .unwrap()
    };
    drop(sup);
    std::fs::write(victim_sp.join("zz_evil.pth"), PTH_LINE).unwrap();
    for p in snapshot(&victim_env).keys() {
        std::os::unix::fs::lchown(p, Some(BUILDER), Some(BUILDER)).unwrap();
    }
    let sup = Supervisor::start_with(
        "sealed-envs-again",
        "",
        &agents,
        &[
            ("PAR_AGENT_UIDS", UIDS),
            ("PAR_SUPERVISOR_UID", &uid),
            ("PAR_PACKAGE_ROOTS", dir.path().to_str().unwrap()),
            ("PAR_HOME", home.to_str().unwrap()),
        ],
    );
    sup.wait_ready("victim", READY);
    let r = invoke(sup.port, "victim", "{}");
    let data = r.json()["data"].clone();
    assert_eq!(data["value"], 42, "{data}");
    assert_eq!(data["pwned"], serde_json::Value::Null, "{data}");
    assert_eq!(env_of(data["python"].as_str().unwrap()), victim_env);
    assert!(!victim_sp.join("zz_evil.pth").exists());
    sealed(&snapshot(&victim_env), &victim_env);
}

#[test]
fn a_requirement_that_cannot_be_built_is_named_in_the_error_and_leaves_nothing() {
    needs_root!(NOT_ROOT);
    let dir = TempDir::new("sealed-broken");
    let broken = agent(
        dir.path(),
        "broken",
        "import broken\ndef handler(c):\n    return {}\n",
        &[
            ("requirements.txt", "./broken\n"),
            (
                "broken/pyproject.toml",
                &PYPROJECT.replace("\"evil\"", "\"broken\""),
            ),
            ("broken/backend.py", BROKEN_BACKEND),
        ],
    );
    let uid = SUPERVISOR_UID.to_string();
    let sup = Supervisor::start_with(
        "sealed-broken",
        "",
        "",
        &[
            ("PAR_AGENT_UIDS", UIDS_2),
            ("PAR_SUPERVISOR_UID", &uid),
            ("PAR_PACKAGE_ROOTS", dir.path().to_str().unwrap()),
        ],
    );
    let body = format!(
        r#"{{"agent_id":"broken","package_path":"{}","restart_policy":"never"}}"#,
        broken.display()
    );
    let r = sup.spawn_wait(&body);
    assert!(r.status >= 400, "{}", r.text());
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("BROKEN-BUILD-7351"),
        "the spawn error: {}",
        r.text()
    );
    let p = sup.process("broken").unwrap();
    let last = p["last_error"].as_str().unwrap_or_default();
    assert!(last.contains("BROKEN-BUILD-7351"), "{p}");
    assert!(last.len() <= 9 * 1024, "{}", last.len());
    let log = sup.log_text();
    assert!(!log.contains("see the lines above"), "{log}");
    // No environment is kept of a failed build.
    let envs = sup.dir.path().join("home/envs");
    let kept: Vec<_> = std::fs::read_dir(&envs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(kept.is_empty(), "{kept:?}");
    assert!(processes_of(BUILDER_2).is_empty());
}

/// A supervisor `tag` dropped to its own uid, running the package `pkg`
/// from `dir` as `id` with a disk limit of 8 MB, agents under `uids`; and
/// the agent's status once ready.
fn disk_limited(
    tag: &str,
    dir: &TempDir,
    id: &str,
    pkg: &Path,
    uids: &str,
) -> (Supervisor, serde_json::Value) {
    let agents = format!(
        "[[agents]]\nid = \"{id}\"\npackage = \"{}\"\ndisk_limit_mb = 8\n",
        pkg.display()
    );
    let uid = SUPERVISOR_UID.to_string();
    let sup = Supervisor::start_with(
        tag,
        "",
        &agents,
        &[
            ("PAR_AGENT_UIDS", uids),
            ("PAR_SUPERVISOR_UID", &uid),
            ("PAR_PACKAGE_ROOTS", dir.path().to_str().unwrap()),
        ],
    );
    let p = sup.wait_ready(id, READY);
    (sup, p)
}

/// An agent that writes past its disk limit into its TMPDIR is restarted by
/// the disk watchdog with its tmp emptied (its HOME kept), the reason in
/// its status and its log.
#[test]
fn an_agent_over_its_disk_limit_is_restarted_with_its_tmp_cleared() {
    needs_root!(NOT_ROOT);
    let dir = TempDir::new("disk-budget");
    let hog = agent(
        dir.path(),
        "hog",
        "import os\n\
         def handler(c):\n    \
             with open(os.path.join(os.environ['HOME'], 'kept'), 'w') as f:\n        f.write('1')\n    \
             hidden = os.path.join(os.environ['TMPDIR'], 'hidden')\n    \
             os.makedirs(hidden, exist_ok=True)\n    \
             with open(os.path.join(hidden, 'blob'), 'wb') as f:\n        \
                 for _ in range(int(c.get('mb', 0))):\n            f.write(b'x' * 1048576)\n    \
             os.chmod(hidden, 0)\n    \
             return {'pid': os.getpid()}\n",
        &[],
    );
    let (sup, p) = disk_limited(
        "disk-budget",
        &dir,
        "hog",
        &hog,
        supervisor_support::uid_ranges::SEALED_DISK,
    );
    assert_eq!(p["limits"]["disk_limit_mb"], 8, "{p}");
    let first = p["pid"].as_u64().unwrap();
    let folder = sup.dir.path().join("home/agents/hog");
    let r = invoke(sup.port, "hog", r#"{"mb": 24}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    // Written into a folder it then closed to itself (mode 000): counted all
    // the same.
    assert!(folder.join("tmp/hidden/blob").exists());
    let p = wait_until(Duration::from_secs(60), "the hog restarted", || {
        sup.process("hog")
            .filter(|p| p["state"] == "ready" && p["pid"].as_u64() != Some(first))
    });
    let why = p["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("over its disk limit of 8 MB"), "{p}");
    assert_eq!(p["last_error_class"], "disk_limit", "{p}");
    assert!(!folder.join("tmp/hidden").exists(), "tmp is emptied");
    assert!(folder.join("home/kept").exists(), "HOME is kept");
    let tmp = std::fs::metadata(folder.join("tmp")).unwrap();
    let agent_uid = std::fs::metadata(&folder).unwrap().uid();
    assert_eq!((tmp.uid(), tmp.mode() & 0o777), (agent_uid, 0o700));
    let logs = get(sup.port, "/supervisor/logs?process_id=par-hog&limit=500")
        .unwrap()
        .text();
    assert!(logs.contains("over its disk limit"), "{logs}");
    // Back under its limit, it serves.
    let r = invoke(sup.port, "hog", r#"{"mb": 1}"#);
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A build that takes long (its requirement's backend sleeps) holds up no
/// agent whose environment is already sealed: another package with the
/// same requirements starts while the build still runs. Needs PyPI (`six`).
#[test]
fn a_slow_build_holds_up_no_agent_whose_environment_is_sealed() {
    needs_root!(NOT_ROOT);
    const BUILDER_3: u32 = 27500;
    let dir = TempDir::new("sealed-slow");
    let main = "import six\ndef handler(c):\n    return {'six': six.__version__}\n";
    let a = agent(dir.path(), "a", main, &[("requirements.txt", "six\n")]);
    let b = agent(dir.path(), "b", main, &[("requirements.txt", "six\n")]);
    let slow = agent(
        dir.path(),
        "slow",
        "def handler(c):\n    return {}\n",
        &[
            ("requirements.txt", "./slow\n"),
            (
                "slow/pyproject.toml",
                &PYPROJECT.replace("\"evil\"", "\"slow\""),
            ),
            (
                "slow/backend.py",
                "import time\n\
                 def get_requires_for_build_wheel(config_settings=None):\n    return []\n\
                 def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n    \
                     time.sleep(120)\n    raise RuntimeError('too slow')\n",
            ),
        ],
    );
    let agents = format!("[[agents]]\nid = \"a\"\npackage = \"{}\"\n", a.display());
    let uid = SUPERVISOR_UID.to_string();
    let sup = Supervisor::start_with(
        "sealed-slow",
        "",
        &agents,
        &[
            (
                "PAR_AGENT_UIDS",
                supervisor_support::uid_ranges::SEALED_SLOW_BUILD,
            ),
            ("PAR_SUPERVISOR_UID", &uid),
            ("PAR_PACKAGE_ROOTS", dir.path().to_str().unwrap()),
        ],
    );
    sup.wait_ready("a", READY);
    let body = format!(
        r#"{{"agent_id":"slow","package_path":"{}","restart_policy":"never"}}"#,
        slow.display()
    );
    let r = http(sup.port, "POST", "/supervisor/spawn", &[], body.as_bytes()).unwrap();
    assert!(r.status < 300, "{}", r.text());
    // The slow requirement is being built.
    wait_until(Duration::from_secs(60), "the slow build", || {
        processes_of(BUILDER_3).into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("install-env"))
        })
    });
    let body = format!(
        r#"{{"agent_id":"b","package_path":"{}","restart_policy":"never"}}"#,
        b.display()
    );
    let r = sup.spawn_wait(&body);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        !processes_of(BUILDER_3).is_empty(),
        "b started while the slow build still runs"
    );
    let r = http(
        sup.port,
        "POST",
        "/agents/b/invoke",
        &[("Content-Type", "application/json"), ("Authorization", "")],
        b"{}",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    drop(sup);
    for pid in processes_of(BUILDER_3) {
        unsafe_free_kill(pid as i32, 9);
    }
}

/// An agent that kills every other process of its uid as soon as it sees
/// one (the disk count runs as its uid) does not escape the disk watchdog:
/// the count wins the race, or three failed counts in a row restart it as
/// one over its limit.
#[test]
fn killing_the_disk_count_does_not_escape_the_disk_limit() {
    needs_root!(NOT_ROOT);
    let dir = TempDir::new("disk-reaper");
    let reaper = agent(
        dir.path(),
        "reaper",
        "import os, threading\n\
         def _reap():\n    \
             me, parent, uid = os.getpid(), os.getppid(), str(os.getuid())\n    \
             while True:\n        \
                 for d in os.listdir('/proc'):\n            \
                     if not d.isdigit() or int(d) in (me, parent):\n                continue\n            \
                     try:\n                \
                         with open('/proc/%s/status' % d) as f:\n                    \
                             uids = [l.split()[1] for l in f if l.startswith('Uid:')]\n                \
                         if uids == [uid]:\n                    os.kill(int(d), 9)\n            \
                     except Exception:\n                pass\n\
         threading.Thread(target=_reap, daemon=True).start()\n\
         def handler(c):\n    \
             with open(os.path.join(os.environ['TMPDIR'], 'blob'), 'wb') as f:\n        \
                 f.write(b'x' * 1048576 * int(c.get('mb', 0)))\n    \
             return {'pid': os.getpid()}\n",
        &[],
    );
    let (sup, p) = disk_limited(
        "disk-reaper",
        &dir,
        "reaper",
        &reaper,
        supervisor_support::uid_ranges::SEALED_DISK_REAPER,
    );
    let first = p["pid"].as_u64().unwrap();
    let r = invoke(sup.port, "reaper", r#"{"mb": 24}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let p = wait_until(Duration::from_secs(90), "the reaper restarted", || {
        sup.process("reaper")
            .filter(|p| p["pid"].as_u64().is_some_and(|pid| pid != first))
    });
    eprintln!("restarted: {}", p["last_error"]);
    assert_eq!(p["last_error_class"], "disk_limit", "{p}");
    let folder = sup.dir.path().join("home/agents/reaper");
    wait_until(Duration::from_secs(30), "tmp emptied", || {
        (!folder.join("tmp/blob").exists()).then_some(())
    });
}
