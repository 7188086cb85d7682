//! `par ctl set`: every setting has a flag, and what it sends reads back as the spec.

use super::*;
use clap::Parser;
use par_supervisor::model::spec::merge_patch;
use par_supervisor::model::AgentSpec;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    set: SetArgs,
}

fn parse(args: &[&str]) -> Result<SetArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("set").chain(args.iter().copied())).map(|c| c.set)
}

fn patched(p: Map<String, Value>) -> AgentSpec {
    let base = serde_json::to_value(AgentSpec::new("a", "/pkgs/a")).unwrap();
    serde_json::from_value(merge_patch(base, p)).unwrap()
}

#[test]
fn every_setting_has_a_flag_and_its_value_is_what_the_spec_takes() {
    let a = parse(&[
        "a",
        "--replicas=3",
        "--min-replicas=2",
        "--max-replicas=5",
        "--target-concurrency=2.5",
        "--scale-down-window=45s",
        "--max-concurrency=8",
        "--max-queue=50",
        "--queue-timeout=5s",
        "--idle-timeout=10m",
        "--sessions=off",
        "--session-idle-timeout=20m",
        "--session-max-lifetime=2h",
        "--session-drain-timeout=90s",
        "--max-sessions=5000",
        "--memory-limit-mb=512",
        "--disk-limit-mb=2048",
        "--cpu-limit=0.5",
        "--restart-policy=on_failure",
        "--max-restarts=4",
        "--restart-delay-seconds=0.5",
        "--backoff-multiplier=3",
        "--max-restart-delay-seconds=20",
        "--stable-period-seconds=15",
        "--env=K=v=w",
        "--unset-env=OLD",
        "--task-role=true",
    ])
    .unwrap();
    let p = a.patch().unwrap();
    for s in Setting::value_variants() {
        assert!(p.contains_key(&s.key()), "no flag gives {}", s.key());
    }
    let spec = patched(p.clone());
    assert_eq!(
        (spec.replicas, spec.min_replicas, spec.max_replicas),
        (3, Some(2), Some(5))
    );
    assert_eq!(spec.target_concurrency, Some(2.5));
    assert_eq!(spec.scale_down_window, Duration::from_secs(45));
    assert_eq!((spec.max_concurrency, spec.max_queue), (Some(8), 50));
    assert_eq!(spec.queue_timeout, Duration::from_secs(5));
    assert_eq!(spec.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(spec.sessions, SessionMode::Off);
    assert_eq!(spec.session_idle_timeout, Duration::from_secs(1200));
    assert_eq!(spec.session_max_lifetime, Duration::from_secs(7200));
    assert_eq!(spec.session_drain_timeout, Duration::from_secs(90));
    assert_eq!(spec.max_sessions, 5000);
    assert_eq!(
        (spec.memory_limit_mb, spec.disk_limit_mb, spec.cpu_limit),
        (Some(512), Some(2048), Some(0.5))
    );
    assert_eq!(spec.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(spec.max_restarts, Some(4));
    assert_eq!(
        (
            spec.restart_delay_seconds,
            spec.backoff_multiplier,
            spec.max_restart_delay_seconds,
            spec.stable_period_seconds
        ),
        (0.5, 3.0, 20.0, 15.0)
    );
    assert_eq!(spec.env_vars.get("K").map(String::as_str), Some("v=w"));
    assert!(spec.task_role);
    let line = summary(&p);
    assert!(
        line.contains("env K set") && line.contains("env OLD unset") && !line.contains("v=w"),
        "{line}"
    );
    assert!(line.contains("session_idle_timeout=20m") && line.contains("sessions=off"));
}

#[test]
fn a_reset_is_null_and_returns_the_default() {
    let p = parse(&[
        "a",
        "--reset",
        "max_replicas,min_replicas",
        "--reset=idle_timeout",
    ])
    .unwrap()
    .patch()
    .unwrap();
    assert_eq!(
        Value::Object(p.clone()),
        serde_json::json!({"max_replicas": null, "min_replicas": null, "idle_timeout": null})
    );
    let mut base = AgentSpec::new("a", "/p");
    base.max_replicas = Some(3);
    base.min_replicas = Some(2);
    base.idle_timeout = Some(Duration::from_secs(1));
    let v = merge_patch(serde_json::to_value(&base).unwrap(), p);
    let spec: AgentSpec = serde_json::from_value(v).unwrap();
    assert_eq!(
        (spec.max_replicas, spec.min_replicas, spec.idle_timeout),
        (None, None, None)
    );
}

#[test]
fn a_patch_is_shown_once_status_has_its_values() {
    let seen = |v: Value| -> AgentSeen { serde_json::from_value(v).unwrap() };
    let before = seen(serde_json::json!({"agent_id": "a", "state": "ready",
        "desired_replicas": 1, "ready_replicas": 1, "sessions_tracked": true}));
    let after = seen(serde_json::json!({"agent_id": "a", "state": "ready",
        "desired_replicas": 3, "ready_replicas": 1, "sessions_tracked": false,
        "idle_timeout": "10m", "max_concurrency": 4}));
    let a = parse(&[
        "a",
        "--replicas=3",
        "--sessions=off",
        "--idle-timeout=10m",
        "--max-concurrency=4",
        "--max-sessions=9",
    ])
    .unwrap();
    assert!(!a.shown_in(&before) && a.shown_in(&after));
    let reset = parse(&["a", "--reset=replicas,idle_timeout,max_concurrency"]).unwrap();
    assert!(reset.shown_in(&before) && !reset.shown_in(&after));
    let autoscaled = seen(serde_json::json!({"agent_id": "a", "state": "ready",
        "desired_replicas": 2, "ready_replicas": 2,
        "autoscale": {"min_replicas": 1, "max_replicas": 4, "target_concurrency": 2.0}}));
    let a = parse(&["a", "--max-replicas=4", "--target-concurrency=2"]).unwrap();
    assert!(a.shown_in(&autoscaled) && !a.shown_in(&before));
    let off = parse(&["a", "--reset=max_replicas,min_replicas,target_concurrency"]).unwrap();
    assert!(!off.shown_in(&autoscaled) && off.shown_in(&before));
}

#[test]
fn bad_values_and_contradictions_are_refused_here() {
    for bad in [
        &["a", "--replicas", "three"][..],
        &["a", "--replicas", "-1"],
        &["a", "--session-idle-timeout", "soon"],
        &["a", "--session-idle-timeout", "20"],
        &["a", "--sessions", "maybe"],
        &["a", "--restart-policy", "sometimes"],
        &["a", "--target-concurrency", "NaN"],
        &["a", "--cpu-limit", "inf"],
        &["a", "--env", "NOVALUE"],
        &["a", "--env", "=x"],
        &["a", "--unset-env", "A=B"],
        &["a", "--task-role", "maybe"],
        &["a", "--reset", "colour"],
        &["a", "--colour", "blue"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?} was accepted");
    }
    for contradictory in [
        &["a"][..],
        &["a", "--replicas", "2", "--reset", "replicas"],
        &["a", "--env", "K=1", "--unset-env", "K"],
        &["a", "--env", "K=1", "--env", "K=2"],
        &["a", "--env", "K=1", "--reset", "env_vars"],
    ] {
        let e = parse(contradictory).unwrap().patch().unwrap_err();
        assert_eq!(e.exit_code(), 2, "{contradictory:?}: {e}");
    }
}
