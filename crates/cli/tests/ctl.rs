//! `par ctl` end to end against a real supervisor running the example agents:
//! ls, logs (and `-f` ended by SIGINT), restart/stop/start/rm, rollout
//! --wait, set (replicas and sessions in place, env by a rollout, refusals
//! here and by the supervisor), status AGENT (every setting PATCH takes, set
//! and reset, read back there and from the API), reload, top; the exit codes
//! of a missing supervisor, a missing or wrong token, and an unknown agent.

mod supervisor_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use supervisor_support::*;

const LONG: Duration = Duration::from_secs(120);

/// `par ctl --url <sup> ARGS` with PAR_HOME `home` and no token in the
/// environment: the supervisor's own home holds its boot token file.
fn ctl_cmd(port: u16, home: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_par"));
    cmd.arg("ctl")
        .arg("--url")
        .arg(format!("http://127.0.0.1:{port}"))
        .args(args)
        .env_remove("PAR_ADMIN_TOKEN")
        .env_remove("SUPERVISOR_PORT")
        .env("PAR_HOME", home)
        .env("NO_COLOR", "1");
    cmd
}

fn ctl(port: u16, home: &std::path::Path, args: &[&str]) -> Output {
    ctl_cmd(port, home, args).output().expect("run par ctl")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn expect(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        out(o),
        err(o)
    );
}

fn start_examples(tag: &str) -> Supervisor {
    let sup = Supervisor::start_with(tag, "", &example_agents_toml(), &[]);
    for id in ["a", "b", "c"] {
        sup.wait_ready(id, LONG);
    }
    sup
}

/// A copy of the echo example with another version, as a new package to roll out.
fn echo_v2(dir: &std::path::Path) -> String {
    let src = repo_root().join("examples/agents/echo");
    let dst = dir.join("echo-v2");
    std::fs::create_dir_all(dst.join("src")).unwrap();
    let manifest = std::fs::read_to_string(src.join("agent.yaml")).unwrap();
    assert!(manifest.contains("version: 0.1.0"), "{manifest}");
    std::fs::write(
        dst.join("agent.yaml"),
        manifest.replace("version: 0.1.0", "version: 0.2.0"),
    )
    .unwrap();
    for f in ["__init__.py", "main.py"] {
        std::fs::copy(src.join("src").join(f), dst.join("src").join(f)).unwrap();
    }
    dst.display().to_string()
}

#[test]
fn ctl_lists_reads_logs_and_controls_agents() {
    let sup = start_examples("ctl");
    // On the supervisor's machine, par ctl finds the boot token in its home.
    let home = sup.dir.path().join("home");
    let port = sup.port;

    let o = ctl(port, &home, &["ls"]);
    expect(&o, 0, "ls");
    let text = out(&o);
    assert!(text.contains("3 of 3 agents ready"), "{text}");
    for (id, pkg) in [
        ("a", "echo@0.1.0"),
        ("b", "multi@0.1.0"),
        ("c", "flaky@0.1.0"),
    ] {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no row for {id}:\n{text}"));
        assert!(
            row.contains(&format!("par-{id}")) && row.contains("ready") && row.contains(pkg),
            "{row}"
        );
    }
    let o = ctl(port, &home, &["ls", "--json"]);
    expect(&o, 0, "ls --json");
    let list: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<&str> = list.iter().filter_map(|p| p["agent_id"].as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(list.iter().all(|p| p["state"] == "ready"));

    // Logs: a line the agent prints is there at its level, not above it.
    let marker = format!("ctl-log-line-{}", std::process::id());
    let r = invoke_as_admin(
        port,
        "c",
        &format!(r#"{{"action":"log","message":"{marker}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let o = wait_until(
        Duration::from_secs(10),
        "the printed line in par ctl logs",
        || {
            let o = ctl(port, &home, &["logs", "c"]);
            out(&o).contains(&marker).then_some(o)
        },
    );
    expect(&o, 0, "logs c");
    let line = out(&o)
        .lines()
        .find(|l| l.contains(&marker))
        .unwrap()
        .to_string();
    assert!(
        line.contains("INFO") && line.contains("par-c") && line.contains("stdout"),
        "{line}"
    );
    let o = ctl(port, &home, &["logs", "--level", "error", "c"]);
    expect(&o, 0, "logs --level error");
    assert!(!out(&o).contains(&marker), "{}", out(&o));
    let o = ctl(port, &home, &["logs", "--json", "-n", "5", "par-c"]);
    expect(&o, 0, "logs --json");
    let lines: Vec<Value> = out(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty() && lines.len() <= 5 && lines.iter().all(|e| e["agent_id"] == "c"));
    let o = ctl(port, &home, &["logs", "nobody"]);
    expect(&o, 5, "logs of an unknown agent");
    assert!(
        err(&o).contains("unknown agent \"nobody\"") && err(&o).contains("a, b, c"),
        "{}",
        err(&o)
    );
    let o = ctl(port, &home, &["logs", "--level", "loud", "c"]);
    expect(&o, 2, "a level that does not exist");

    // restart --wait: a new worker, ready.
    let pid_a = sup.process("a").unwrap()["pid"].clone();
    let o = ctl(port, &home, &["restart", "a", "--wait"]);
    expect(&o, 0, "restart a --wait");
    assert!(out(&o).contains("par-a ready"), "{}", out(&o));
    let a = sup.process("a").unwrap();
    assert_eq!(a["state"], "ready");
    assert_ne!(a["pid"], pid_a);

    // stop, start, start again (nothing to do).
    let o = ctl(port, &home, &["stop", "b"]);
    expect(&o, 0, "stop b");
    assert!(out(&o).contains("par-b stopped"), "{}", out(&o));
    assert_eq!(sup.process("b").unwrap()["state"], "stopped");
    let o = ctl(port, &home, &["start", "par-b", "--wait"]);
    expect(&o, 0, "start b");
    assert_eq!(sup.process("b").unwrap()["state"], "ready");
    let o = ctl(port, &home, &["start", "b"]);
    expect(&o, 0, "start a ready agent");
    assert!(out(&o).contains("already ready"), "{}", out(&o));

    // rm, then the agent is unknown; reload brings the declared one back.
    let o = ctl(port, &home, &["rm", "c"]);
    expect(&o, 0, "rm c");
    assert!(
        out(&o).contains("agent c deleted") && out(&o).contains("next reload"),
        "{}",
        out(&o)
    );
    assert!(sup.process("c").is_none());
    expect(
        &ctl(port, &home, &["restart", "c"]),
        5,
        "restart of a deleted agent",
    );
    let o = ctl(port, &home, &["reload"]);
    expect(&o, 0, "reload");
    let started = out(&o)
        .lines()
        .find(|l| l.starts_with("started"))
        .unwrap_or_default()
        .to_string();
    assert!(started.contains('c'), "{}", out(&o));
    sup.wait_ready("c", LONG);

    // rollout --wait: the new version serves; a bad package fails with 1 and leaves the old one.
    let v2 = echo_v2(sup.dir.path());
    let o = ctl(port, &home, &["rollout", "a", &v2, "--wait"]);
    expect(&o, 0, "rollout a --wait");
    assert!(
        out(&o).contains("rolled out a: echo@0.1.0 -> echo@0.2.0"),
        "{}",
        out(&o)
    );
    assert_eq!(sup.process("a").unwrap()["package_id"], "echo@0.2.0");
    assert_eq!(invoke_as_admin(port, "a", r#"{"x":1}"#).status, 200);
    let broken = sup.dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("agent.yaml"),
        "name: broken\nentrypoint: [not, a, string]\n",
    )
    .unwrap();
    let o = ctl(
        port,
        &home,
        &[
            "rollout",
            "a",
            broken.to_str().unwrap(),
            "--wait",
            "--timeout",
            "60s",
        ],
    );
    expect(&o, 1, "rollout of a broken package");
    assert!(err(&o).contains("rollout of a failed"), "{}", err(&o));
    assert_eq!(sup.process("a").unwrap()["package_id"], "echo@0.2.0");
    assert_eq!(sup.process("a").unwrap()["state"], "ready");
    let o = ctl(port, &home, &["rollout", "a", &v2, "--sha256", "xyz"]);
    expect(&o, 2, "a malformed --sha256");

    // top: frames with the agents and request rates.
    for _ in 0..5 {
        invoke_as_admin(port, "b", "{}");
    }
    let o = ctl(port, &home, &["top", "-n", "2", "--interval", "300ms"]);
    expect(&o, 0, "top -n 2");
    let text = out(&o);
    assert_eq!(text.matches("REQ/S").count(), 2, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("b ") && l.contains("ready")),
        "{text}"
    );
}

#[test]
fn ctl_logs_follow_ends_cleanly_on_sigint() {
    let sup = start_examples("ctl-follow");
    let home = sup.dir.path().join("home");
    let mut child = ctl_cmd(sup.port, &home, &["logs", "-f", "-n", "1", "c"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The backlog line shows the stream is open; then a live line.
    rx.recv_timeout(Duration::from_secs(30))
        .expect("a backlog line");
    let marker = format!("followed-{}", std::process::id());
    invoke_as_admin(
        sup.port,
        "c",
        &format!(r#"{{"action":"log","message":"{marker}"}}"#),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the live line in par ctl logs -f");
        if line.contains(&marker) {
            break;
        }
    }
    unsafe_free_kill(child.id() as i32, 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "par ctl logs -f did not end on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "exit after SIGINT: {status:?}");
}

#[test]
fn ctl_names_a_supervisor_that_is_not_there() {
    let dir = TempDir::new("ctl-down");
    let port = free_port();
    let o = ctl(port, dir.path(), &["ls"]);
    expect(&o, 3, "ls with no supervisor");
    assert!(
        err(&o).contains(&format!(
            "supervisor not reachable at http://127.0.0.1:{port}"
        )),
        "{}",
        err(&o)
    );
    let o = ctl(port, dir.path(), &["logs", "-f", "a"]);
    expect(&o, 3, "logs -f with no supervisor");
    let mut cmd = ctl_cmd(port, dir.path(), &["ls"]);
    let o = cmd.args(["--url", "not a url"]).output().unwrap();
    expect(&o, 2, "a bad --url");
    assert!(err(&o).contains("is not a URL"), "{}", err(&o));
    let o = ctl(port, dir.path(), &["frobnicate"]);
    expect(&o, 2, "an unknown subcommand");
}

#[test]
fn ctl_needs_the_admin_token_when_one_is_set() {
    let token = "ctl-token-for-tests";
    let sup = Supervisor::start(
        "ctl-token",
        "",
        "[[agents]]\nid = \"a\"\npackage = \"pkg\"\n",
        &[("PAR_ADMIN_TOKEN", token)],
    );
    sup.wait_ready("a", Duration::from_secs(30));
    let home = sup.dir.path().join("ctl-home");
    let port = sup.port;
    // Reading the status is public.
    expect(&ctl(port, &home, &["ls"]), 0, "ls without a token");
    let o = ctl(port, &home, &["restart", "a"]);
    expect(&o, 4, "restart without a token");
    assert!(
        err(&o).contains("needs the admin token") && err(&o).contains("--token"),
        "{}",
        err(&o)
    );
    expect(&ctl(port, &home, &["logs", "a"]), 4, "logs without a token");
    let o = ctl(port, &home, &["--token", "not-the-token", "restart", "a"]);
    expect(&o, 4, "restart with a wrong token");
    assert!(
        err(&o).contains("refused the admin token from --token"),
        "{}",
        err(&o)
    );
    assert_eq!(sup.process("a").unwrap()["restarts"], 0);

    let o = ctl(port, &home, &["--token", token, "restart", "a", "--wait"]);
    expect(&o, 0, "restart with --token");
    let o = ctl_cmd(port, &home, &["logs", "a"])
        .env("PAR_ADMIN_TOKEN", token)
        .output()
        .unwrap();
    expect(&o, 0, "logs with PAR_ADMIN_TOKEN");
    // The supervisor's per-boot token file, when neither is given.
    std::fs::create_dir_all(home.join("run")).unwrap();
    let file = home.join(format!("run/supervisor-{port}.token"));
    std::fs::write(&file, format!("{token}\n")).unwrap();
    expect(
        &ctl(port, &home, &["stop", "a"]),
        0,
        "stop with the token file",
    );
    assert_eq!(sup.process("a").unwrap()["state"], "stopped");
    std::fs::write(&file, "stale\n").unwrap();
    let o = ctl(port, &home, &["start", "a"]);
    expect(&o, 4, "a stale token file");
    assert!(err(&o).contains(".token"), "{}", err(&o));
}

/// One agent `a` on the fake worker (fast to start, echoes every request).
fn start_fake(tag: &str) -> Supervisor {
    let sup = Supervisor::start(tag, "", "[[agents]]\nid = \"a\"\npackage = \"pkg\"\n", &[]);
    sup.wait_ready("a", LONG);
    sup
}

/// The pid of `process_id` (`par-a`, `par-a-2`, ...).
fn pid_of(sup: &Supervisor, process_id: &str) -> Value {
    sup.processes()
        .into_iter()
        .find(|p| p["process_id"] == process_id)
        .map(|p| p["pid"].clone())
        .unwrap_or(Value::Null)
}

/// A request to `a` carrying a session key; the key the response echoes.
fn keyed(port: u16, key: &str) -> Option<String> {
    let r = http(
        port,
        "GET",
        "/agents/a/hello",
        &[("x-par-session-id", key)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-par-session-id").map(str::to_string)
}

fn metric(port: u16, line_prefix: &str) -> f64 {
    let text = get(port, "/metrics").unwrap().text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix} in /metrics:\n{text}"))
}

#[test]
fn ctl_set_changes_replicas_and_sessions_in_place_and_env_by_a_rollout() {
    let sup = start_fake("ctl-set");
    let home = sup.dir.path().join("home");
    let port = sup.port;
    let first = pid_of(&sup, "par-a");
    assert_eq!(sup.agent_status("a")["sessions_tracked"], false);

    // Two replicas, sessions bounded to 5: applied to the running process.
    let o = ctl(
        port,
        &home,
        &[
            "set",
            "a",
            "--replicas",
            "2",
            "--max-sessions",
            "5",
            "--wait",
        ],
    );
    expect(&o, 0, "set --replicas 2 --max-sessions 5 --wait");
    let text = out(&o);
    assert!(
        text.contains("replicas=2")
            && text.contains("max_sessions=5")
            && text.contains("outcome: scaled")
            && text.contains("a: ready, 2 of 2 replicas ready; sessions tracked"),
        "{text}"
    );
    let a = sup.agent_status("a");
    assert_eq!(
        (
            &a["desired_replicas"],
            &a["ready_replicas"],
            &a["sessions_tracked"]
        ),
        (&Value::from(2), &Value::from(2), &Value::Bool(true)),
        "{a}"
    );
    assert_eq!(
        pid_of(&sup, "par-a"),
        first,
        "no rollout: par-a kept its process"
    );
    assert!(pid_of(&sup, "par-a-1").is_u64());
    // max_sessions holds: 12 keys, 5 bound, 7 evicted.
    for i in 0..12 {
        assert_eq!(keyed(port, &format!("k{i}")), Some(format!("k{i}")));
    }
    assert_eq!(sup.agent_status("a")["sessions"], 5);
    assert_eq!(
        metric(port, "par_agent_sessions_evicted_total{agent_id=\"a\"}"),
        7.0
    );

    // A short session_idle_timeout ends the bindings made under the default (15m).
    let o = ctl(port, &home, &["set", "a", "--session-idle-timeout", "1s"]);
    expect(&o, 0, "set --session-idle-timeout 1s");
    assert!(out(&o).contains("outcome: scaled"), "{}", out(&o));
    wait_until(
        Duration::from_secs(60),
        "the sessions to expire after 1s idle",
        || (sup.agent_status("a")["sessions"] == 0).then_some(()),
    );

    // sessions = off: not tracked, no key echoed; the same again changes nothing.
    let o = ctl(port, &home, &["set", "a", "--sessions", "off"]);
    expect(&o, 0, "set --sessions off");
    assert!(
        out(&o).contains("outcome: scaled") && out(&o).contains("sessions not tracked"),
        "{}",
        out(&o)
    );
    assert_eq!(sup.agent_status("a")["sessions_tracked"], false);
    assert_eq!(keyed(port, "after-off"), None);
    let o = ctl(port, &home, &["set", "a", "--sessions", "off"]);
    expect(&o, 0, "set --sessions off again");
    assert!(out(&o).contains("outcome: unchanged"), "{}", out(&o));
    assert_eq!(pid_of(&sup, "par-a"), first);

    // An environment variable is a new deployment: blue/green, followed with
    // --wait; the value is not printed; the other settings are kept.
    let o = ctl(
        port,
        &home,
        &["set", "a", "--env", "CTL_SET_MARK=secret-value", "--wait"],
    );
    expect(&o, 0, "set --env --wait");
    let text = out(&o);
    assert!(
        text.contains("env CTL_SET_MARK set")
            && text.contains("outcome: rolling (blue/green")
            && text.contains("rolled out a in"),
        "{text}"
    );
    assert!(!text.contains("secret-value"), "{text}");
    assert_ne!(pid_of(&sup, "par-a"), first, "a new generation serves");
    let a = sup.agent_status("a");
    assert_eq!(
        (&a["desired_replicas"], &a["sessions_tracked"]),
        (&Value::from(2), &Value::Bool(false)),
        "{a}"
    );

    // --reset returns replicas to the default, one.
    let o = ctl(
        port,
        &home,
        &["set", "par-a", "--reset", "replicas", "--wait"],
    );
    expect(&o, 0, "set --reset replicas");
    assert!(
        out(&o).contains("replicas reset") && out(&o).contains("outcome: scaled"),
        "{}",
        out(&o)
    );
    assert_eq!(sup.agent_status("a")["desired_replicas"], 1);
}

#[test]
fn ctl_set_refuses_a_bad_value_without_asking_the_supervisor() {
    // A listener no request may reach: every refusal is made before one is sent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = TempDir::new("ctl-set-local");
    for (args, named) in [
        (&["set", "a", "--replicas", "three"][..], "--replicas"),
        (
            &["set", "a", "--session-idle-timeout", "soon"],
            "--session-idle-timeout",
        ),
        (&["set", "a", "--session-drain-timeout", "20"], "time unit"),
        (&["set", "a", "--sessions", "maybe"], "maybe"),
        (&["set", "a", "--max-sessions=-5"], "--max-sessions"),
        (&["set", "a", "--target-concurrency", "NaN"], "finite"),
        (&["set", "a", "--env", "NOVALUE"], "KEY=VALUE"),
        (&["set", "a", "--reset", "colour"], "colour"),
        (&["set", "a", "--colour", "blue"], "--colour"),
        (&["set", "a"], "nothing to set"),
        (
            &["set", "a", "--replicas", "2", "--reset", "replicas"],
            "both name replicas",
        ),
        (
            &["set", "a", "--env", "K=1", "--unset-env", "K"],
            "K is named by both",
        ),
        (&["set", "Not An Id", "--replicas", "2"], "Not An Id"),
    ] {
        let o = ctl(port, dir.path(), args);
        expect(&o, 2, &format!("{args:?}"));
        assert!(err(&o).contains(named), "{args:?}: {}", err(&o));
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("par ctl set connected to the supervisor: {other:?}"),
    }
}

#[test]
fn ctl_set_shows_the_supervisors_refusal() {
    let sup = start_fake("ctl-set-refused");
    let home = sup.dir.path().join("home");
    let port = sup.port;
    let first = pid_of(&sup, "par-a");
    for (args, says) in [
        (
            &["set", "a", "--replicas", "2", "--max-replicas", "4"][..],
            &[
                "replicas: is chosen by the autoscaler when max_replicas is set; leave it out",
                "target_concurrency: is required to autoscale",
            ][..],
        ),
        (
            &["set", "a", "--replicas", "0"],
            &["replicas: must be between 1 and 64"],
        ),
        (
            &["set", "a", "--session-idle-timeout", "50ms"],
            &["session_idle_timeout: must be at least 100ms and at most 24h"],
        ),
        (
            &["set", "a", "--env", "PAR_PORT=1"],
            &["env_vars.PAR_PORT: is set by the supervisor and cannot be overridden"],
        ),
    ] {
        let o = ctl(port, &home, args);
        expect(&o, 1, &format!("{args:?}"));
        let e = err(&o);
        assert!(e.contains("(422 invalid_request)"), "{args:?}: {e}");
        for s in says {
            assert!(e.contains(s), "{args:?}: {e}");
        }
        assert!(out(&o).is_empty(), "{args:?}: {}", out(&o));
    }
    let a = sup.agent_status("a");
    assert_eq!(a["desired_replicas"], 1, "{a}");
    assert!(a["autoscale"].is_null(), "{a}");
    assert_eq!(pid_of(&sup, "par-a"), first);
    let o = ctl(port, &home, &["set", "nobody", "--replicas", "2"]);
    expect(&o, 5, "set of an unknown agent");
}

/// What a PATCH answered is what the next read of status shows: the
/// supervisor publishes a batch's views before it answers its commands.
#[test]
fn status_read_right_after_a_patch_shows_it() {
    let sup = start_fake("patch-read");
    for round in 0..20u64 {
        let (replicas, tracked) = (1 + round % 2 + 1, round % 3 != 0);
        let body = format!(
            r#"{{"replicas":{replicas},"sessions":"{}"}}"#,
            if tracked { "auto" } else { "off" }
        );
        let r = http(
            sup.port,
            "PATCH",
            "/supervisor/agents/a",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        // Settled, so the change is applied in place (no rollout).
        assert_eq!(r.json()["outcome"], "scaled", "{}", r.text());
        let a = sup.agent_status("a");
        assert_eq!(
            (&a["desired_replicas"], &a["sessions_tracked"]),
            (&Value::from(replicas), &Value::Bool(tracked)),
            "round {round}, after {body}: {a}"
        );
        wait_until(LONG, "the agent settled", || {
            let a = sup.agent_status("a");
            (a["ready_replicas"] == a["desired_replicas"]).then_some(())
        });
    }
}

/// The echo example as agent `a`, under the real worker.
fn start_echo(tag: &str) -> Supervisor {
    let agents = format!(
        "[[agents]]\nid = \"a\"\npackage = \"{}/examples/agents/echo\"\n",
        repo_root().display()
    );
    let sup = Supervisor::start_with(tag, "", &agents, &[]);
    let p = sup.wait_ready("a", LONG);
    // The worker loaded the package (the fake one has none).
    assert_eq!(p["meta"]["name"], "echo", "{p}");
    sup
}

/// Every setting an agent's view shows: the spec fields PUT/PATCH and
/// `par ctl set` take, less the ones shown beside them or not at all.
const SETTINGS: [&str; 24] = [
    "replicas",
    "min_replicas",
    "max_replicas",
    "target_concurrency",
    "scale_down_window",
    "max_concurrency",
    "max_queue",
    "queue_timeout",
    "idle_timeout",
    "sessions",
    "session_idle_timeout",
    "session_max_lifetime",
    "session_drain_timeout",
    "max_sessions",
    "memory_limit_mb",
    "disk_limit_mb",
    "cpu_limit",
    "restart_policy",
    "max_restarts",
    "restart_delay_seconds",
    "backoff_multiplier",
    "max_restart_delay_seconds",
    "stable_period_seconds",
    "task_role",
];

/// Spec fields that are not in `settings`: the agent's id and package are
/// shown beside it (under these keys of the process view), `env_vars` is not
/// shown (its values are the agent's secrets); and the other names of
/// fields the parser also takes.
const BESIDE: [(&str, &str); 4] = [
    ("id", "agent_id"),
    ("package", "package_path"),
    ("package_id", "package_id"),
    ("sha256", "sha256"),
];
const NOT_SHOWN: [&str; 4] = ["env_vars", "agent_id", "package_path", "env"];

/// The settings of `a` as GET /supervisor/agents/a shows them, after
/// checking the agent entry of /supervisor/status shows the same.
fn settings_of(port: u16) -> serde_json::Map<String, Value> {
    let p = get(port, "/supervisor/agents/a").unwrap().json();
    let st = get(port, "/supervisor/status").unwrap().json();
    let a = st["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == "a")
        .cloned()
        .unwrap();
    assert_eq!(p["settings"], a["settings"], "agent view and process view");
    p["settings"].as_object().cloned().unwrap()
}

/// `par ctl status a`'s settings block as name -> value.
fn ctl_settings(port: u16, home: &std::path::Path) -> Vec<(String, String)> {
    let o = ctl(port, home, &["status", "a"]);
    expect(&o, 0, "par ctl status a");
    let text = out(&o);
    assert!(text.starts_with("a: ready, "), "{text}");
    let block = text
        .split_once("settings (as `par ctl set` and PATCH take them; - is unset):\n")
        .unwrap_or_else(|| panic!("no settings block:\n{text}"))
        .1;
    block
        .lines()
        .map(|l| {
            let (k, v) = l.trim().split_once("  ").unwrap_or((l.trim(), ""));
            (k.to_string(), v.trim().to_string())
        })
        .collect()
}

/// A value as `par ctl status` prints it.
fn cell_of(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What GET and `par ctl status` show is `want` for every key of it.
fn shows(port: u16, home: &std::path::Path, want: &serde_json::Map<String, Value>, when: &str) {
    let got = settings_of(port);
    for (k, v) in want {
        assert_eq!(got.get(k), Some(v), "{when}: {k} in GET settings {got:?}");
    }
    let printed = ctl_settings(port, home);
    for (k, v) in want {
        let line = printed.iter().find(|(n, _)| n == k);
        assert_eq!(
            line.map(|(_, v)| v.as_str()),
            Some(cell_of(v).as_str()),
            "{when}: {k} in par ctl status {printed:?}"
        );
    }
}

/// The names PATCH's parser takes, from its own refusal of an unknown one.
fn names_patch_takes(port: u16) -> Vec<String> {
    let r = http(
        port,
        "PATCH",
        "/supervisor/agents/a",
        &[("Content-Type", "application/json")],
        br#"{"no_such_setting":1}"#,
    )
    .unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    let list = msg
        .split_once("is not a known field (a spec takes: ")
        .and_then(|(_, l)| l.split_once(')'))
        .unwrap_or_else(|| panic!("no list of names in {msg:?}"))
        .0;
    list.split(", ").map(str::to_string).collect()
}

#[test]
fn every_setting_patch_takes_is_shown_by_get_status_and_ctl_status() {
    let sup = start_echo("ctl-settings-shown");
    let home = sup.dir.path().join("home");
    let port = sup.port;
    let names = names_patch_takes(port);
    // Every name the parser takes is a setting, shown beside them, or not shown on purpose...
    for n in &names {
        assert!(
            SETTINGS.contains(&n.as_str())
                || BESIDE.iter().any(|(f, _)| f == n)
                || NOT_SHOWN.contains(&n.as_str()),
            "PATCH takes {n:?}, which no list of this test has (parser's names: {names:?})"
        );
    }
    // ... and every setting is a name the parser takes.
    for s in SETTINGS {
        assert!(names.iter().any(|n| n == s), "{s} not in {names:?}");
    }
    let settings = settings_of(port);
    let keys: Vec<&str> = settings.keys().map(String::as_str).collect();
    let mut want = SETTINGS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "the settings block has exactly the settings");
    let process = get(port, "/supervisor/agents/a").unwrap().json();
    for (_, key) in BESIDE {
        assert!(
            process.get(key).is_some(),
            "{key} beside the settings: {process}"
        );
    }
    assert!(process["settings"].get("env_vars").is_none());
    // par ctl status prints each one.
    let printed: Vec<String> = ctl_settings(port, &home)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(printed, want, "par ctl status prints every setting");
    // The block given back as a PATCH is taken, and changes nothing.
    let r = http(
        port,
        "PATCH",
        "/supervisor/agents/a",
        &[("Content-Type", "application/json")],
        Value::Object(settings.clone()).to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outcome"], "unchanged", "{}", r.text());
    // And `par ctl set --reset` takes each name: reset to what it is, nothing changes.
    let o = ctl(port, &home, &["set", "a", "--reset", &SETTINGS.join(",")]);
    expect(&o, 0, "set --reset every setting of an agent on defaults");
    assert!(out(&o).contains("outcome: unchanged"), "{}", out(&o));
}

#[test]
fn each_setting_set_reads_back_and_a_reset_reads_the_default() {
    let sup = start_echo("ctl-settings-round-trip");
    let home = sup.dir.path().join("home");
    let port = sup.port;
    let defaults = settings_of(port);
    // The defaults as the spec documents them.
    for (k, v) in [
        ("replicas", serde_json::json!(1)),
        ("max_queue", serde_json::json!(1000)),
        ("queue_timeout", serde_json::json!("30s")),
        ("sessions", serde_json::json!("auto")),
        ("session_idle_timeout", serde_json::json!("15m")),
        ("session_max_lifetime", serde_json::json!("8h")),
        ("session_drain_timeout", serde_json::json!("15m")),
        ("max_sessions", serde_json::json!(10000)),
        ("restart_policy", serde_json::json!("on-failure")),
        ("max_restarts", Value::Null),
        ("idle_timeout", Value::Null),
        ("max_replicas", Value::Null),
    ] {
        assert_eq!(defaults[k], v, "default {k}: {defaults:?}");
    }
    let pid = pid_of(&sup, "par-a");

    // Everything but autoscale (it excludes `replicas`) in one PATCH: the
    // limits and restart settings roll out blue/green, the rest in place.
    let fixed = serde_json::json!({
        "replicas": 2,
        "scale_down_window": "45s",
        "max_concurrency": 3,
        "max_queue": 5,
        "queue_timeout": "2s",
        "idle_timeout": "1h",
        "sessions": "off",
        "session_idle_timeout": "20m",
        "session_max_lifetime": "2h",
        "session_drain_timeout": "5m",
        "max_sessions": 42,
        "memory_limit_mb": 512,
        "disk_limit_mb": 2048,
        "cpu_limit": 0.5,
        "restart_policy": "always",
        "max_restarts": 7,
        "restart_delay_seconds": 0.5,
        "backoff_multiplier": 3.0,
        "max_restart_delay_seconds": 12.0,
        "stable_period_seconds": 5.0,
        "task_role": true,
    });
    let mut conn = Conn::open(port).unwrap();
    conn.socket()
        .set_read_timeout(Some(Duration::from_secs(130)))
        .unwrap();
    let r = conn
        .request(
            "PATCH",
            "/supervisor/agents/a?wait=true&timeout=120",
            &[("Content-Type", "application/json")],
            fixed.to_string().as_bytes(),
        )
        .unwrap();
    assert!(matches!(r.status, 200 | 202), "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["outcome"], "rolling", "{answer}");
    assert_eq!(answer["rollout"]["state"], "rolled_out", "{answer}");
    let fixed = fixed.as_object().unwrap().clone();
    for (k, v) in &fixed {
        assert_eq!(&answer["settings"][k], v, "{k} in the PATCH answer");
    }
    wait_until(LONG, "two replicas ready", || {
        let a = sup.agent_status("a");
        (a["ready_replicas"] == 2).then_some(())
    });
    assert_ne!(pid_of(&sup, "par-a"), pid, "a new generation serves");
    shows(port, &home, &fixed, "after the PATCH");
    // What was not named kept its default.
    let mut autoscale = serde_json::Map::new();
    for k in ["min_replicas", "max_replicas", "target_concurrency"] {
        autoscale.insert(k.into(), defaults[k].clone());
    }
    shows(port, &home, &autoscale, "after the PATCH, autoscale");

    // Autoscale through par ctl set (replicas back to its default first).
    let o = ctl(
        port,
        &home,
        &[
            "set",
            "a",
            "--reset",
            "replicas",
            "--min-replicas",
            "2",
            "--max-replicas",
            "3",
            "--target-concurrency",
            "2.5",
            "--wait",
        ],
    );
    expect(&o, 0, "set autoscale");
    assert!(out(&o).contains("outcome: scaled"), "{}", out(&o));
    let mut scaled = serde_json::Map::new();
    for (k, v) in [
        ("replicas", defaults["replicas"].clone()),
        ("min_replicas", serde_json::json!(2)),
        ("max_replicas", serde_json::json!(3)),
        ("target_concurrency", serde_json::json!(2.5)),
        ("max_queue", serde_json::json!(5)),
    ] {
        scaled.insert(k.into(), v);
    }
    shows(port, &home, &scaled, "after par ctl set autoscale");

    // --reset every one: each reads its default again.
    let o = ctl(
        port,
        &home,
        &["set", "a", "--reset", &SETTINGS.join(","), "--wait"],
    );
    expect(&o, 0, "set --reset every setting");
    assert!(out(&o).contains("outcome: rolling"), "{}", out(&o));
    wait_until(LONG, "the defaults in force", || {
        let a = sup.agent_status("a");
        (a["ready_replicas"] == 1 && a["desired_replicas"] == 1).then_some(())
    });
    shows(port, &home, &defaults, "after --reset");
    assert_eq!(settings_of(port), defaults);
}
