//! Conversations stay with their process (issue: sessions survive replicas,
//! rollouts, autoscale, scale to zero). A pixell-sdk agent built by the real
//! `pixell build` (fixtures/agents/sdk-sessions) keeps each session's turns
//! and plan-mode clarifications in its process memory; pixell-sdk's own
//! `A2AClient` holds the conversations (crates/cli/tests/agents/sessions_drive.py).

mod supervisor_support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use supervisor_support::sessions::*;
use supervisor_support::*;

const READY: Duration = Duration::from_secs(600);

fn start(tag: &str, agent_toml: &str) -> Supervisor {
    let agents = format!(
        "[[agents]]\nid = \"talk\"\npackage = \"{}\"\n{agent_toml}\n",
        sessions_apkg().display()
    );
    let home = par_home();
    Supervisor::start_with(tag, "", &agents, &[("PAR_HOME", home.to_str().unwrap())])
}

fn wait_ready_replicas(sup: &Supervisor, n: u64) {
    wait_until(READY, &format!("{n} ready replicas"), || {
        (sup.agent_status("talk")["ready_replicas"] == n).then_some(())
    });
}

/// One A2A `message/send` turn of `session` (in the header, the body, or both).
fn turn(sup: &Supervisor, session: &str, text: &str, in_header: bool) -> Resp {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": {
            "message": {"role": "user", "parts": [{"type": "text", "text": text}]},
            "sessionId": session,
        }
    })
    .to_string();
    let mut headers = vec![("Content-Type", "application/json")];
    if in_header {
        headers.push(("x-par-session-id", session));
    }
    http(sup.port, "POST", "/agents/talk/", &headers, body.as_bytes()).unwrap()
}

fn data(r: &Resp) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["result"]["data"].clone()
}

fn pids(sup: &Supervisor) -> Vec<u64> {
    sup.processes()
        .iter()
        .filter(|p| p["state"] == "ready")
        .filter_map(|p| p["pid"].as_u64())
        .collect()
}

fn metric(sup: &Supervisor, line_prefix: &str) -> f64 {
    let text = get(sup.port, "/metrics").unwrap().text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix} in /metrics:\n{text}"))
}

#[test]
fn conversations_keep_their_process_across_two_and_three_replicas() {
    for replicas in [2u64, 3] {
        let sup = start(
            &format!("sessions-r{replicas}"),
            &format!("replicas = {replicas}"),
        );
        wait_ready_replicas(&sup, replicas);
        let url = agent_url(sup.port, "talk");
        let all = drive(&url, &[]);
        let (turns, clarify) = (&all["turns"], &all["clarify"]);
        eprintln!(
            "replicas = {replicas}: turns with history {}/{}, on one pid {}/20; clarifications answered by the asker {}/{}",
            turns["turns_with_history"], turns["turns_total"], turns["sessions_on_one_pid"],
            clarify["answered_by_asker"], clarify["clarifications"]
        );
        assert_eq!(turns["turns_total"], 100, "{turns}");
        assert_eq!(turns["turns_with_history"], 100, "{turns}");
        assert_eq!(turns["sessions_on_one_pid"], 20, "{turns}");
        assert_eq!(clarify["answered_by_asker"], 20, "{clarify}");
        // Every replica took sessions: they were spread, not piled on one.
        assert_eq!(
            turns["pids"].as_array().map(Vec::len),
            Some(replicas as usize),
            "{turns}"
        );
        // Conversations whose first turn names no session: the agent makes
        // one up in its events, and PAR binds it to the process that made it.
        let made = drive(&url, &["turns", "--agent-session"]);
        eprintln!(
            "replicas = {replicas}, sessions the agent made up: turns with history {}/{}",
            made["turns_with_history"], made["turns_total"]
        );
        assert_eq!(made["turns_with_history"], 100, "{made}");
        // A respond with only clarificationId (no sessionId), as the Pixell UI
        // may send: PAR knows the session from the agent's own events.
        let bare = drive(&url, &["clarify", "--respond-without-session"]);
        eprintln!(
            "replicas = {replicas}: answers without sessionId that reached the asker {}/{}",
            bare["answered_by_asker"], bare["clarifications"]
        );
        assert_eq!(bare["answered_by_asker"], 20, "{bare}");
        assert_eq!(bare["sdk_found_pending"], 20, "{bare}");

        // Seen from outside: live sessions per agent and per process, counters.
        let a = sup.agent_status("talk");
        assert_eq!(a["sessions_tracked"], true, "{a}");
        assert_eq!(a["sessions"], 80, "{a}");
        let per_process: u64 = sup
            .processes()
            .iter()
            .map(|p| p["sessions"].as_u64().unwrap())
            .sum();
        assert_eq!(per_process, 80);
        assert_eq!(
            metric(&sup, "par_agent_sessions_started_total{agent_id=\"talk\"}"),
            80.0
        );
    }
}

#[test]
fn a_rollout_keeps_waiting_clarifications_on_the_old_process_until_they_end() {
    let sup = start(
        "sessions-rollout",
        "session_idle_timeout = \"20s\"\nsession_drain_timeout = \"5m\"",
    );
    wait_ready_replicas(&sup, 1);
    // The worker's pid, and its agent's (what the agent reports).
    let old_worker = pids(&sup)[0];
    let old_pid = data(&turn(&sup, "before", "hello", false))["pid"].clone();
    let url = agent_url(sup.port, "talk");
    let paused = ask_and_pause(&url, &["--clarifications", "5"]);
    let pending = paused.state["pending"].as_array().unwrap().clone();
    assert_eq!(pending.len(), 5, "{}", paused.state);
    assert!(pending.iter().all(|p| p["askedPid"] == old_pid));

    // A blue/green rollout (a changed env var) while the 5 wait.
    let r = admin(
        &sup,
        "PATCH",
        "/supervisor/agents/talk?wait=true&timeout=300",
        r#"{"env_vars":{"VERSION":"2"}}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["rollout"]["state"], "rolled_out", "{}", r.text());
    assert_ne!(pids(&sup)[0], old_worker);
    let p = sup.process("talk").unwrap();
    let draining = p["draining"].as_array().unwrap();
    assert_eq!(draining.len(), 1, "{p}");
    assert_eq!(draining[0]["pid"], old_worker, "{p}");
    // The 5 clarifications and the session of the turn before.
    assert_eq!(draining[0]["sessions"], 6, "{p}");

    // A new session goes to the new version at once.
    let fresh = data(&turn(&sup, "after-the-rollout", "hello", false));
    assert_ne!(fresh["pid"], old_pid, "{fresh}");

    // The 5 answers reach the process that asked.
    let answered = paused.answer();
    eprintln!(
        "rollout: answers that reached the old process {}/5",
        answered["answered_by_asker"]
    );
    assert_eq!(answered["answered_by_asker"], 5, "{answered}");
    assert!(answered["answered_pids"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| *p == old_pid));

    // Once its sessions end (20 s idle), the old process stops.
    let since = Instant::now();
    wait_until(Duration::from_secs(90), "the old process to stop", || {
        let p = sup.process("talk")?;
        (p["draining"].as_array()?.is_empty() && !pid_alive(old_worker as u32)).then_some(())
    });
    eprintln!(
        "rollout: the old process stopped {} ms after its last answer",
        since.elapsed().as_millis()
    );
    assert!(sup.log_text().contains("drained"));
}

#[test]
fn a_killed_replica_loses_its_sessions_and_the_next_turn_says_so() {
    let sup = start("sessions-kill", "replicas = 2");
    wait_ready_replicas(&sup, 2);
    let first = turn(&sup, "k1", "one", true);
    assert_eq!(first.header("x-par-session-id"), Some("k1"));
    assert_eq!(first.header("x-par-session-rebound"), None);
    let bound = data(&first)["pid"].as_u64().unwrap();
    let second = data(&turn(&sup, "k1", "two", false));
    assert_eq!(
        (second["pid"].as_u64(), &second["earlierTurns"]),
        (Some(bound), &json!(1))
    );

    // kill -9 of the replica's whole process group (worker and agent).
    let replica = first.header("x-par-process").unwrap().to_string();
    let worker = sup
        .processes()
        .into_iter()
        .find(|p| p["process_id"] == replica.as_str())
        .and_then(|p| p["pid"].as_u64())
        .unwrap();
    kill_group(worker as u32);
    // The next turn: served by the other replica, marked rebound, counted lost.
    let third = wait_until(Duration::from_secs(30), "a turn served elsewhere", || {
        let r = turn(&sup, "k1", "three", false);
        (r.status == 200).then_some(r)
    });
    assert_eq!(
        third.header("x-par-session-rebound"),
        Some("1"),
        "{:?}",
        third.headers
    );
    let d = data(&third);
    assert_ne!(d["pid"].as_u64(), Some(bound));
    // The conversation starts over there: nothing was kept.
    assert_eq!(d["earlierTurns"], 0, "{d}");
    assert_eq!(
        metric(
            &sup,
            "par_agent_sessions_lost_total{agent_id=\"talk\",reason=\"process_exited\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&sup, "par_agent_sessions_rebound_total{agent_id=\"talk\"}"),
        1.0
    );
    // And it stays there.
    let fourth = turn(&sup, "k1", "four", false);
    assert_eq!(fourth.header("x-par-session-rebound"), None);
    assert_eq!(data(&fourth)["pid"], d["pid"]);
}

/// The Python pids that new sessions reach (each a new key, so each goes to
/// the least loaded ready replica): every ready replica's, after enough.
fn serving_pids(sup: &Supervisor, tag: &str, n: usize) -> std::collections::BTreeSet<String> {
    (0..n)
        .map(|i| data(&turn(sup, &format!("{tag}-{i}"), "hi", false))["pid"].to_string())
        .collect()
}

#[test]
fn scaling_down_and_scaling_to_zero_wait_for_a_live_session() {
    let sup = start(
        "sessions-scale",
        "replicas = 3\nidle_timeout = \"2s\"\nsession_idle_timeout = \"8s\"",
    );
    let url = agent_url(sup.port, "talk");
    // One clarification waits on its user on one replica (the request waits
    // for the agent to be ready, or wakes it).
    let paused = ask_and_pause(&url, &["--clarifications", "1"]);
    wait_ready_replicas(&sup, 3);
    let asked = paused.state["pending"][0]["askedPid"].to_string();
    // 3 -> 2 replicas: one without a session goes, the asker serves on.
    let r = admin(
        &sup,
        "PATCH",
        "/supervisor/agents/talk",
        r#"{"replicas":2}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outcome"], "scaled", "{}", r.text());
    wait_until(Duration::from_secs(60), "two replicas left", || {
        (pids(&sup).len() == 2).then_some(())
    });
    let serving = serving_pids(&sup, "probe", 6);
    assert_eq!(serving.len(), 2, "{serving:?}");
    assert!(serving.contains(&asked), "{asked} not in {serving:?}");
    // 2 -> 1: the first replica always stays; if the asker is the other, it
    // is kept for its session (draining) rather than stopped.
    let r = admin(
        &sup,
        "PATCH",
        "/supervisor/agents/talk",
        r#"{"replicas":1}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // idle_timeout (2 s) is shorter than the wait: the agent is not idle
    // while the session lives.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(sup.agent_status("talk")["state"], "ready");
    let answered = paused.answer();
    assert_eq!(answered["answered_by_asker"], 1, "{answered}");
    // Once the sessions end, the agent idles as it should.
    wait_until(Duration::from_secs(90), "scaled to zero", || {
        (sup.agent_status("talk")["state"] == "idle").then_some(())
    });
}

#[test]
fn ten_thousand_sessions_bound_then_expired_leave_an_empty_table() {
    let sup = start(
        "sessions-many",
        "session_idle_timeout = \"15s\"\nmax_sessions = 20000",
    );
    wait_ready_replicas(&sup, 1);
    let sup_pid = sup.child.id();
    let mut conn = Conn::open(sup.port).unwrap();
    let mut bind = |from: u32| {
        for i in from..from + 10_000 {
            let key = format!("many-{i}");
            let r = conn
                .request(
                    "GET",
                    "/agents/talk/.well-known/agent.json",
                    &[("x-par-session-id", &key)],
                    b"",
                )
                .unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-par-session-id"), Some(key.as_str()));
        }
    };
    let started = Instant::now();
    bind(0);
    // Every key was bound once; on a slow machine the first may have
    // expired already (15 s idle), and are counted so.
    let expired = |sup: &Supervisor| {
        metric(sup, "par_agent_sessions_expired_total{agent_id=\"talk\"}") as u64
    };
    assert_eq!(
        metric(&sup, "par_agent_sessions_started_total{agent_id=\"talk\"}"),
        10_000.0
    );
    let live = sup.agent_status("talk")["sessions"].as_u64().unwrap();
    assert_eq!(live + expired(&sup), 10_000);
    eprintln!(
        "10,000 sessions bound in {} ms",
        started.elapsed().as_millis()
    );
    let bound = rss_kb(sup_pid);
    wait_until(Duration::from_secs(60), "the table to empty", || {
        (sup.agent_status("talk")["sessions"] == 0).then_some(())
    });
    let after_first = rss_kb(sup_pid);
    // A second round costs no more memory than the first left behind.
    bind(10_000);
    wait_until(Duration::from_secs(60), "the table to empty again", || {
        (sup.agent_status("talk")["sessions"] == 0).then_some(())
    });
    let after_second = rss_kb(sup_pid);
    eprintln!("supervisor RSS: {bound} kB with 10,000 sessions bound, {after_first} kB once they expired, {after_second} kB after 10,000 more bound and expired");
    assert_eq!(
        metric(&sup, "par_agent_sessions_expired_total{agent_id=\"talk\"}"),
        20_000.0
    );
    assert!(
        after_second < after_first + 8 * 1024,
        "RSS grew from {after_first} kB to {after_second} kB"
    );
}

#[test]
fn hostile_session_keys_route_as_if_there_were_none() {
    let sup = start("sessions-hostile", "replicas = 2\nmax_sessions = 50");
    wait_ready_replicas(&sup, 2);
    // A key that would split the response head, and one too long.
    let long = "k".repeat(300);
    for key in ["a\tb", long.as_str()] {
        let r = http(
            sup.port,
            "GET",
            "/agents/talk/.well-known/agent.json",
            &[("x-par-session-id", key)],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-par-session-id"), None);
    }
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"sessionId":"x\r\nset-cookie: a=b","message":{"role":"user","parts":[{"type":"text","text":"hi"}]}}}"#;
    let r = http(
        sup.port,
        "POST",
        "/agents/talk/",
        &[("Content-Type", "application/json")],
        body,
    )
    .unwrap();
    assert_eq!(r.header("set-cookie"), None);
    assert_eq!(r.header("x-par-session-id"), None);
    assert_eq!(sup.agent_status("talk")["sessions"], 0);
    // A flood of new keys is held to max_sessions, the oldest evicted and counted.
    for i in 0..200 {
        let key = format!("flood-{i}");
        get_with(sup.port, &key);
    }
    assert_eq!(sup.agent_status("talk")["sessions"], 50);
    assert_eq!(
        metric(&sup, "par_agent_sessions_evicted_total{agent_id=\"talk\"}"),
        150.0
    );
    // A key in the body is echoed once.
    let r = turn(&sup, "mine", "hello", false);
    assert_eq!(r.header_count("x-par-session-id"), 1);
    assert_eq!(r.header("x-par-session-id"), Some("mine"));
}

fn get_with(port: u16, key: &str) {
    let r = http(
        port,
        "GET",
        "/agents/talk/.well-known/agent.json",
        &[("x-par-session-id", key)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
}
