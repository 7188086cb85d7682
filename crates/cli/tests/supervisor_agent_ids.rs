//! `par-a` is never an agent id, at every entry point (the config file,
//! `PAR_AGENTS`, a registry index, spawn, `PUT`/`PATCH`/`DELETE`, `par ctl`),
//! so `a` and `par-a` cannot both mean something: `par-a` is always agent
//! `a`'s process.

mod supervisor_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use supervisor_support::*;

const READY: Duration = Duration::from_secs(120);

/// A stdlib Python agent `dir/name-version` answering `{}`.
fn agent(dir: &Path, name: &str, version: &str) -> PathBuf {
    versioned_agent(dir, name, version, "def handler(c):\n    return {}\n", &[])
}

const RULE: &str = "may not begin with \"par-\"";

fn par() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_par"));
    c.env_remove("PAR_AGENTS")
        .env_remove("PAR_CONFIG")
        .env_remove("PAR_ADMIN_TOKEN")
        .env_remove("PAR_REGISTRY_URL");
    c
}

#[test]
fn no_agent_id_begins_with_par_at_any_entry_point() {
    let dir = TempDir::new("tenancy-ids");
    let pkg = dir.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();

    // The config file and PAR_AGENTS, checked as at start.
    let cfg = dir.path().join("ids.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[agents]]\nid = \"par-a\"\npackage = \"{}\"\n",
            pkg.display()
        ),
    )
    .unwrap();
    let o = par()
        .args(["supervisor", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("\"par-a\"") && text.contains(RULE), "{text}");
    let agents = serde_json::json!([{ "id": "par-b", "package": pkg }]).to_string();
    let o = par()
        .args(["supervisor", "--check-config"])
        .env("PAR_AGENTS", &agents)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("\"par-b\"") && text.contains(RULE), "{text}");

    // The API, with an agent `a` running.
    let echo = agent(dir.path(), "echo", "1.0");
    let roots = dir.path().display().to_string();
    let sup = Supervisor::start_with(
        "tenancy-ids",
        "",
        &format!("[[agents]]\nid = \"a\"\npackage = \"{}\"\n", echo.display()),
        &[("PAR_PACKAGE_ROOTS", &roots)],
    );
    sup.wait_ready("a", READY);
    let a_pid = sup.process("a").unwrap()["pid"].clone();
    let spec = |id: &str| serde_json::json!({ "agent_id": id, "package": echo }).to_string();
    let refused = |r: Resp, what: &str| {
        assert_eq!(r.status, 422, "{what}: {}", r.text());
        let e = &r.json()["error"];
        let msg = e["message"].as_str().unwrap_or_default();
        assert!(
            e["field"] == "agent_id" && msg.contains(RULE),
            "{what}: {e}"
        );
    };
    refused(
        admin(&sup, "POST", "/supervisor/spawn", &spec("par-a")),
        "spawn",
    );
    refused(
        admin(&sup, "PUT", "/supervisor/agents/par-a", &spec("par-a")),
        "PUT",
    );
    refused(
        admin(&sup, "PUT", "/supervisor/agents/par-a", &spec("a")),
        "PUT to par-a",
    );
    refused(
        admin(
            &sup,
            "PATCH",
            "/supervisor/agents/par-a",
            r#"{"max_queue": 5}"#,
        ),
        "PATCH",
    );
    refused(
        admin(&sup, "DELETE", "/supervisor/agents/par-a", ""),
        "DELETE",
    );
    // None of them touched `a`, nor made a `par-a`.
    let a = sup.process("a").unwrap();
    assert_eq!(
        (a["state"].clone(), a["pid"].clone()),
        ("ready".into(), a_pid)
    );
    assert!(sup.process("par-a").is_none());

    // par ctl: a `par-` name is a process id, never an agent id.
    let ctl = |args: &[&str]| {
        par()
            .args(["ctl", "--url", &format!("http://127.0.0.1:{}", sup.port)])
            .args(["--token", &sup.token()])
            .args(args)
            .output()
            .unwrap()
    };
    let o = ctl(&["stop", "par-b"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("\"par-b\"") && err.contains(RULE), "{err}");
    assert_eq!(sup.process("a").unwrap()["state"], "ready");
    let o = ctl(&["stop", "par-a"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        sup.process("a").unwrap()["state"],
        "stopped",
        "par-a is a's process"
    );
}

/// Serves `body` as JSON to every request on a loopback port, for good.
fn serve_json(body: String) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn a_registry_index_naming_a_par_id_is_not_applied_and_says_why() {
    let dir = TempDir::new("tenancy-registry");
    let echo = agent(dir.path(), "echo", "1.0");
    let index = serde_json::json!([
        { "id": "a", "package": echo },
        { "id": "par-a", "package": echo },
    ]);
    let url = format!(
        "http://127.0.0.1:{}/index.json",
        serve_json(index.to_string())
    );
    let roots = dir.path().display().to_string();
    let sup = Supervisor::start_with(
        "tenancy-registry",
        "",
        "",
        &[
            ("PAR_REGISTRY_URL", &url),
            ("PAR_REGISTRY_POLL", "200ms"),
            ("PAR_PACKAGE_ROOTS", &roots),
        ],
    );
    let error = wait_until(Duration::from_secs(20), "the registry's error", || {
        let st = get(sup.port, "/supervisor/status").unwrap().json();
        let d = &st["desired"];
        let e = d["registry"]["last_error"]
            .as_str()
            .or_else(|| d["last_reload_error"].as_str())?;
        Some(e.to_string())
    });
    assert!(
        error.contains("\"par-a\"") && error.contains(RULE),
        "{error}"
    );
    assert!(sup.processes().is_empty(), "nothing of that index applied");
}

#[test]
fn a_registry_index_with_a_par_id_is_refused_naming_it() {
    let index = serde_json::json!([
        { "id": "ok", "package": "s3://bucket/ok.apkg" },
        { "id": "par-ok", "package": "s3://bucket/ok.apkg" },
    ]);
    let e =
        par_supervisor::runtime::desired::parse_index(index.to_string().as_bytes()).unwrap_err();
    assert!(e.contains("\"par-ok\"") && e.contains(RULE), "{e}");
}
