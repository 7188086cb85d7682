//! What the API shows of a process or an agent, composed in one place: the
//! state machine's view (as of its last change, no live counters), the live
//! counters of the workers and admission pools (read now), the resource
//! usage sampled by the runtime, and who asks (agent output only for the
//! admin).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::http::route_table::{Pool, Upstream};
use crate::model::view::{ser_opt_time, ser_time};
use crate::model::{
    AgentId, AgentSettings, AgentView, AutoscaleView, ExitInfo, FailureClass, Limits, Origin,
    PackageRecord, ProcessView, RestartPolicy, RolloutView, State, WorkerId,
};
use crate::runtime::resources::Usage;

/// Who reads: without the admin token, failures are shown by their class
/// only (a message may quote the agent's own output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Admin,
}

/// The live counters of every worker with a port and every agent's pool,
/// published by the dispatcher next to the views; read when shown.
#[derive(Default, Clone)]
pub struct Counters {
    pub workers: HashMap<WorkerId, Arc<Upstream>>,
    pub pools: HashMap<AgentId, Arc<Pool>>,
}

impl Counters {
    /// Requests in flight on a worker and sessions bound to it, now.
    pub fn worker(&self, w: Option<WorkerId>) -> (usize, usize) {
        w.and_then(|w| self.workers.get(&w))
            .map_or((0, 0), |u| (u.in_flight.get(), u.sessions.get()))
    }

    /// Requests in flight and queued for an agent, and its live sessions, now.
    pub fn agent(&self, agent: &str) -> (usize, usize, usize) {
        AgentId::new(agent)
            .ok()
            .and_then(|id| self.pools.get(&id))
            .map_or((0, 0, 0), |p| {
                (
                    p.in_flight.load(Ordering::Acquire),
                    p.queued.load(Ordering::Acquire),
                    p.sessions.live(),
                )
            })
    }
}

/// The agents as wholes as of the last change, with the live counters.
#[derive(Default)]
pub struct Published {
    pub agents: Vec<AgentView>,
    pub counters: Counters,
}

/// One process as the API shows it.
#[derive(Debug, Serialize)]
pub struct ProcessStatus<'a> {
    pub process_id: &'a str,
    pub agent_id: &'a str,
    pub replica: u32,
    pub state: State,
    /// `state` again, for callers of the original API (answers to commands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<State>,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub url: &'a str,
    pub package_path: &'a str,
    pub package_id: Option<&'a str>,
    pub sha256: Option<&'a str>,
    pub restart_policy: RestartPolicy,
    pub max_restarts: Option<u32>,
    pub restarts: u32,
    /// 0 once the running worker's run counts as stable.
    pub consecutive_failures: u32,
    /// The message for the admin, else its class.
    pub last_error: Option<String>,
    pub last_error_class: Option<&'a FailureClass>,
    pub last_exit: Option<&'a ExitInfo>,
    #[serde(serialize_with = "ser_time")]
    pub state_since: SystemTime,
    #[serde(serialize_with = "ser_opt_time")]
    pub started_at: Option<SystemTime>,
    #[serde(serialize_with = "ser_opt_time")]
    pub ready_at: Option<SystemTime>,
    pub next_restart_in_seconds: Option<f64>,
    pub limits: &'a Limits,
    pub meta: Option<&'a Value>,
    pub sessions: usize,
    pub origin: Origin,
    pub package_file: Option<&'a str>,
    pub current_package: Option<&'a PackageRecord>,
    pub previous_package: Option<&'a PackageRecord>,
    pub rollout: Option<RolloutShown>,
    pub draining: Vec<DrainingStatus>,
    /// Its agent's settings in force, under the names PUT/PATCH take.
    pub settings: &'a AgentSettings,
    /// The status listings' usage of the process (not in answers to commands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// A rollout as the API shows it.
#[derive(Debug, Serialize)]
pub struct RolloutShown {
    #[serde(flatten)]
    pub view: RolloutView,
    /// Without the admin token, `reason` is always there: the class of the
    /// failure in place of its message, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Option<String>>,
}

/// An old worker draining after a rollout.
#[derive(Debug, Serialize)]
pub struct DrainingStatus {
    pub pid: u32,
    pub port: u16,
    pub in_flight: usize,
    pub sessions: usize,
    pub term_sent: bool,
}

/// A process's sampled usage and its requests in flight.
#[derive(Debug, Serialize)]
pub struct Resources {
    pub rss_mb: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub threads: Option<u64>,
    pub processes: Option<u32>,
    pub in_flight: usize,
}

/// How a process is rendered.
#[derive(Debug, Clone, Copy)]
pub enum Rendering<'u> {
    /// A status listing: with its usage (`None`: not sampled yet).
    Listing(Option<&'u Usage>),
    /// The answer to a command: with `status`, without usage.
    Answer,
}

/// The one place a process's API JSON is made.
pub fn process<'a>(
    p: &'a ProcessView,
    counters: &Counters,
    access: Access,
    rendering: Rendering<'_>,
    now: SystemTime,
) -> ProcessStatus<'a> {
    let (in_flight, sessions) = counters.worker(p.worker);
    let admin = access == Access::Admin;
    let last_error = if admin {
        p.last_error.clone()
    } else {
        p.last_error_class.as_ref().map(ToString::to_string)
    };
    let rollout = p.rollout.clone().map(|mut view| {
        let reason = match access {
            Access::Admin => None,
            Access::Public => {
                view.reason = None;
                Some(view.reason_class.as_ref().map(ToString::to_string))
            }
        };
        RolloutShown { view, reason }
    });
    let round = |x: f64| (x * 10.0).round() / 10.0;
    let resources = match rendering {
        Rendering::Listing(u) => Some(Resources {
            rss_mb: u.map(|u| round(u.rss_mb)),
            cpu_percent: u.map(|u| round(u.cpu_percent)),
            threads: u.map(|u| u.threads),
            processes: u.map(|u| u.processes),
            in_flight,
        }),
        Rendering::Answer => None,
    };
    ProcessStatus {
        process_id: &p.process_id,
        agent_id: &p.agent_id,
        replica: p.replica,
        state: p.state,
        status: matches!(rendering, Rendering::Answer).then_some(p.state),
        port: p.port,
        pid: p.pid,
        url: &p.url,
        package_path: &p.package_path,
        package_id: p.package_id.as_deref(),
        sha256: p.sha256.as_deref(),
        restart_policy: p.restart_policy,
        max_restarts: p.max_restarts,
        restarts: p.restarts,
        consecutive_failures: if p.stable_at.is_some_and(|t| t <= now) {
            0
        } else {
            p.consecutive_failures
        },
        last_error,
        last_error_class: p.last_error_class.as_ref(),
        last_exit: p.last_exit.as_ref(),
        state_since: p.state_since,
        started_at: p.started_at,
        ready_at: p.ready_at,
        next_restart_in_seconds: p.restart_at.map(|at| {
            at.duration_since(now)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64()
        }),
        limits: &p.limits,
        meta: p.meta.as_ref(),
        sessions,
        origin: p.origin,
        package_file: p.package_file.as_deref(),
        current_package: p.current_package.as_ref(),
        previous_package: p.previous_package.as_ref(),
        rollout,
        draining: p
            .draining
            .iter()
            .map(|d| {
                let (in_flight, sessions) = counters.worker(Some(d.worker));
                DrainingStatus {
                    pid: d.pid,
                    port: d.port,
                    in_flight,
                    sessions,
                    term_sent: d.term_sent,
                }
            })
            .collect(),
        settings: &p.settings,
        resources,
    }
}

/// One agent as a whole as the API (and the metrics) show it.
#[derive(Debug, Serialize)]
pub struct AgentStatus<'a> {
    pub agent_id: &'a str,
    pub state: State,
    pub desired_replicas: u32,
    pub ready_replicas: u32,
    /// Requests in flight on its replicas, and waiting in its queue.
    pub in_flight: usize,
    pub queued: usize,
    pub sessions_tracked: bool,
    /// Live sessions.
    pub sessions: usize,
    pub autoscale: Option<&'a AutoscaleView>,
    #[serde(serialize_with = "ser_opt_duration")]
    pub idle_timeout: Option<Duration>,
    pub max_concurrency: Option<u32>,
    pub processes: &'a [String],
    /// Its settings in force, under the names PUT/PATCH take.
    pub settings: &'a AgentSettings,
}

pub fn agent<'a>(a: &'a AgentView, counters: &Counters) -> AgentStatus<'a> {
    let (in_flight, queued, sessions) = counters.agent(&a.agent_id);
    AgentStatus {
        agent_id: &a.agent_id,
        state: a.state,
        desired_replicas: a.desired_replicas,
        ready_replicas: a.ready_replicas,
        in_flight,
        queued,
        sessions_tracked: a.sessions_tracked,
        sessions,
        autoscale: a.autoscale.as_ref(),
        idle_timeout: a.idle_timeout,
        max_concurrency: a.max_concurrency,
        processes: &a.processes,
        settings: &a.settings,
    }
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.collect_str(&humantime::format_duration(*d)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentSpec, Clock, Command, Effect, Input, WaiterId, WorkerEvent};
    use crate::state::{Budget, Config, Supervisor};

    /// A supervisor told to spawn `spec` (no effect carried out), and the
    /// worker it asked for.
    fn spawned(spec: AgentSpec) -> (Supervisor, Clock, crate::model::WorkerId) {
        let cfg = Config {
            stop_grace: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            startup_timeout: Duration::from_secs(60),
            probe_failures: 3,
            budget: Budget {
                cpus: 1.0,
                memory_mb: 1024,
            },
        };
        let mut s = Supervisor::new(cfg, 1);
        let clock = Clock::now();
        let command = Command::Spawn {
            agent: AgentId::new(&spec.id).unwrap(),
            spec,
            origin: Origin::Api,
            wait: false,
        };
        let fx = s.handle(
            Input::Command {
                command,
                waiter: WaiterId(1),
            },
            clock,
        );
        let worker = fx
            .iter()
            .find_map(|e| match e {
                Effect::Spawn(l) => Some(l.worker),
                _ => None,
            })
            .unwrap();
        (s, clock, worker)
    }

    /// An agent whose package failed, the failure quoting its output.
    fn failed() -> ProcessView {
        let (mut s, clock, worker) = spawned(AgentSpec::new("a", "/pkgs/a"));
        let exit = ExitInfo {
            code: Some(par_contract::exit::PACKAGE_FAILURE),
            signal: None,
            at: SystemTime::UNIX_EPOCH,
            ran_seconds: 0.1,
        };
        let errors = vec!["secret agent output".into()];
        s.handle(
            Input::Worker {
                worker,
                event: WorkerEvent::Exited { exit, errors },
            },
            clock,
        );
        s.views(clock).remove(0)
    }

    fn shown(p: &ProcessView, access: Access, rendering: Rendering<'_>) -> Value {
        let c = Counters::default();
        serde_json::to_value(process(p, &c, access, rendering, SystemTime::now())).unwrap()
    }

    #[test]
    fn without_the_admin_token_a_failure_is_shown_by_its_class() {
        let p = failed();
        assert_eq!(p.state, State::Failed);
        let public = shown(&p, Access::Public, Rendering::Listing(None));
        assert_eq!(public["last_error"], "package_failure");
        assert_eq!(public["last_error_class"], "package_failure");
        assert!(!public.to_string().contains("secret"), "{public}");
        let admin = shown(&p, Access::Admin, Rendering::Listing(None));
        assert!(admin["last_error"]
            .as_str()
            .unwrap()
            .contains("secret agent output"));
    }

    #[test]
    fn listings_carry_usage_and_answers_carry_status() {
        let p = failed();
        let listing = shown(&p, Access::Admin, Rendering::Listing(None));
        assert_eq!(listing["resources"]["in_flight"], 0);
        assert!(listing["resources"]["rss_mb"].is_null());
        assert!(listing.get("status").is_none());
        assert_eq!(listing["sessions"], 0);
        let answer = shown(&p, Access::Admin, Rendering::Answer);
        assert_eq!(answer["status"], "failed");
        assert!(answer.get("resources").is_none());
    }

    #[test]
    fn counts_are_as_of_the_moment_shown() {
        let mut p = failed();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        p.restart_at = Some(t0 + Duration::from_secs(6));
        p.consecutive_failures = 2;
        p.stable_at = Some(t0 + Duration::from_secs(1));
        let c = Counters::default();
        let at = |now| process(&p, &c, Access::Admin, Rendering::Listing(None), now);
        let (first, later) = (at(t0), at(t0 + Duration::from_millis(1500)));
        assert_eq!(first.next_restart_in_seconds, Some(6.0));
        assert_eq!(later.next_restart_in_seconds, Some(4.5));
        // Past the restart time it reads 0, never a negative count.
        let late = at(t0 + Duration::from_secs(60));
        assert_eq!(late.next_restart_in_seconds, Some(0.0));
        // The failure count reads 0 once the run counts as stable.
        assert_eq!(first.consecutive_failures, 2);
        assert_eq!(later.consecutive_failures, 0);
    }

    #[test]
    fn a_rollouts_failure_is_redacted_like_the_agents() {
        use crate::model::{RolloutStatus, RolloutStrategy};
        let mut p = failed();
        let rollout = |reason: Option<&str>, class| RolloutView {
            state: RolloutStatus::RolloutFailed,
            phase: None,
            reason: reason.map(str::to_string),
            reason_class: class,
            strategy: RolloutStrategy::BlueGreen,
            to_package: "/pkgs/a-v2".into(),
            to_sha256: None,
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: None,
            duration_ms: None,
            worker_pid: None,
            worker_port: None,
        };
        p.rollout = Some(rollout(
            Some("secret agent output"),
            Some(FailureClass::Exited(Some(3))),
        ));
        let public = shown(&p, Access::Public, Rendering::Listing(None));
        assert_eq!(public["rollout"]["reason"], "exited 3");
        assert_eq!(public["rollout"]["strategy"], "blue-green");
        assert!(!public.to_string().contains("secret"), "{public}");
        let admin = shown(&p, Access::Admin, Rendering::Listing(None));
        assert_eq!(admin["rollout"]["reason"], "secret agent output");
        // No failure: the public view still says `reason: null`, as it always has.
        p.rollout = Some(rollout(None, None));
        let public = shown(&p, Access::Public, Rendering::Listing(None));
        let keys = public["rollout"].as_object().unwrap();
        assert!(keys["reason"].is_null() && !keys.contains_key("reason_class"));
        let admin = shown(&p, Access::Admin, Rendering::Listing(None));
        assert!(!admin["rollout"].as_object().unwrap().contains_key("reason"));
    }

    #[test]
    fn the_agent_and_each_of_its_processes_show_its_settings() {
        let mut spec = AgentSpec::new("a", "/pkgs/a");
        spec.replicas = 2;
        spec.max_queue = 5;
        spec.session_idle_timeout = Duration::from_secs(20 * 60);
        spec.env_vars.insert("KEY".into(), "secret-value".into());
        let (s, clock, _) = spawned(spec.clone());
        let expected = serde_json::to_value(AgentSettings::of(&spec)).unwrap();
        let c = Counters::default();
        let views = s.views(clock);
        assert_eq!(views.len(), 2);
        for p in &views {
            for rendering in [Rendering::Listing(None), Rendering::Answer] {
                let v = shown(p, Access::Public, rendering);
                assert_eq!(v["settings"], expected, "{v}");
                assert_eq!(v["settings"]["max_queue"], 5);
                assert_eq!(v["settings"]["session_idle_timeout"], "20m");
                assert!(!v.to_string().contains("secret-value"), "{v}");
            }
        }
        let agents = s.agent_views();
        let v = serde_json::to_value(agent(&agents[0], &c)).unwrap();
        assert_eq!(v["settings"], expected, "{v}");
        assert_eq!(v["settings"]["replicas"], 2);
        assert!(!v.to_string().contains("secret-value"), "{v}");
        // The fields that were there before keep their names and shapes.
        assert_eq!(v["idle_timeout"], Value::Null);
        assert_eq!(v["desired_replicas"], 2);
        assert_eq!(v["sessions"], 0);
    }
}
