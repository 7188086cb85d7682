//! The transitions allowed between lifecycle states. The state machine moves a
//! replica only through this table: a move outside it is a bug, refused and
//! logged (and a panic in debug builds, so tests catch it). A replica's
//! lifecycle state is private to this module: [`set_life`] is the one way to
//! change it, and every change it makes is in the transition log.

use std::time::SystemTime;

use super::agent::{AfterStop, Failure, Life, Worker};
use super::Out;
use crate::model::State::{self, *};
use crate::model::{AgentId, Effect, ExitInfo, Level, LogRecord, WorkerId};

/// Every allowed `(from, to)`.
pub const ALLOWED_TRANSITIONS: &[(State, State)] = &[
    (Pending, Fetching),
    (Pending, Starting),
    (Fetching, Starting),
    (Fetching, Failed),
    (Fetching, Stopped),
    // A transient fetch failure waits, then fetches again.
    (Fetching, Backoff),
    (Starting, Ready),
    (Starting, Crashed),
    (Starting, Failed),
    (Starting, Stopping),
    (Ready, Unhealthy),
    (Ready, Crashed),
    (Ready, Stopping),
    (Unhealthy, Ready),
    (Unhealthy, Crashed),
    (Unhealthy, Stopping),
    (Stopping, Stopped),
    (Stopping, Starting),
    (Stopping, Crashed),
    // A spec replaced in place whose new package must be fetched first.
    (Stopping, Fetching),
    // Scaled to zero after an idle period.
    (Stopping, Idle),
    (Crashed, Backoff),
    (Crashed, Failed),
    (Crashed, Stopped),
    (Backoff, Starting),
    (Backoff, Stopped),
    (Backoff, Fetching),
    (Stopped, Starting),
    (Stopped, Fetching),
    // Scaled to zero without a process (from backoff, crashed or fetching,
    // through `stopped`).
    (Stopped, Idle),
    (Failed, Starting),
    (Failed, Fetching),
    (Failed, Stopped),
    // Woken by a request.
    (Idle, Starting),
    (Idle, Fetching),
    (Idle, Stopped),
];

pub fn allowed(from: State, to: State) -> bool {
    ALLOWED_TRANSITIONS.contains(&(from, to))
}

/// Whether a replica in this state stays there until something is done to
/// it: `?wait` answers once every replica of the agent is in one of these.
pub fn settled(state: State) -> bool {
    matches!(state, Ready | Failed | Stopped | Crashed | Idle)
}

/// One worker slot of an agent (`par-{id}` for index 0, `par-{id}-{n}` for others).
#[derive(Debug, Clone)]
pub struct Replica {
    pub index: u32,
    /// Moved only by [`set_life`].
    life: Life,
    /// When `life` last changed state.
    since: SystemTime,
    /// Restarts over the replica's life.
    pub restarts: u32,
    /// Transient failures in a row (reset after a stable run).
    pub failures: u32,
    /// Bumped to invalidate pending timers.
    pub epoch: u64,
    pub probe_failures: u32,
    pub last_error: Option<Failure>,
    pub last_exit: Option<ExitInfo>,
}

impl Replica {
    pub fn new(index: u32, wall: SystemTime) -> Self {
        Replica {
            index,
            life: Life::Pending,
            since: wall,
            restarts: 0,
            failures: 0,
            epoch: 0,
            probe_failures: 0,
            last_error: None,
            last_exit: None,
        }
    }

    pub fn life(&self) -> &Life {
        &self.life
    }

    pub fn since(&self) -> SystemTime {
        self.since
    }

    pub fn state(&self) -> State {
        self.life.state()
    }

    pub fn worker(&self) -> Option<&Worker> {
        self.life.worker()
    }

    pub fn worker_id(&self) -> Option<WorkerId> {
        self.life.worker().map(|w| w.id)
    }

    /// The worker's data (pid, port, readiness details); never its state.
    pub fn worker_mut(&mut self) -> Option<&mut Worker> {
        self.life.worker_mut()
    }

    /// What follows the exit of a stopping worker (`None` unless stopping).
    pub fn after_stop_mut(&mut self) -> Option<&mut AfterStop> {
        match &mut self.life {
            Life::Stopping(_, then) => Some(then),
            _ => None,
        }
    }
}

/// Moves a replica to `life` if the table allows it. A refused move is a bug:
/// logged, a panic in debug builds, and never applied (a worker it would have
/// carried is killed, so no process is left unaccounted for).
pub(crate) fn set_life(
    agent: &AgentId,
    r: &mut Replica,
    life: Life,
    why: impl Into<String>,
    out: &mut Out,
) -> bool {
    let (from, to) = (r.state(), life.state());
    let why = why.into();
    if from != to && !allowed(from, to) {
        out.log(
            agent,
            Level::Error,
            format!("refused transition {from} -> {to} (not in the table): {why}"),
        );
        debug_assert!(
            false,
            "transition {from:?} -> {to:?} is not in the table ({why})"
        );
        if let Some(w) = life.worker() {
            if r.worker_id() != Some(w.id) {
                out.fx.push(Effect::Signal {
                    worker: w.id,
                    signal: crate::model::Signal::Kill,
                });
                out.fx.push(Effect::Release { worker: w.id });
            }
        }
        return false;
    }
    r.life = life;
    r.since = out.clock.wall;
    let level = match to {
        State::Failed | State::Crashed => Level::Error,
        State::Unhealthy | State::Backoff => Level::Warn,
        _ => Level::Info,
    };
    out.fx.push(Effect::Log(LogRecord {
        agent: agent.clone(),
        level,
        message: format!("{from} -> {to}: {why}"),
        transition: Some((from, to)),
    }));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_self_loops_or_duplicates() {
        for (i, (a, b)) in ALLOWED_TRANSITIONS.iter().enumerate() {
            assert_ne!(a, b);
            assert!(
                !ALLOWED_TRANSITIONS[i + 1..].contains(&(*a, *b)),
                "{a:?}->{b:?} twice"
            );
        }
    }

    #[test]
    fn only_starting_or_unhealthy_become_ready() {
        for s in State::ALL {
            assert_eq!(
                allowed(s, Ready),
                matches!(s, Starting | Unhealthy),
                "{s:?}"
            );
        }
    }

    #[test]
    fn every_state_has_a_way_out_and_is_reachable() {
        for s in State::ALL {
            assert!(
                ALLOWED_TRANSITIONS.iter().any(|(a, _)| *a == s),
                "{s:?} is a dead end"
            );
            if s != Pending {
                assert!(
                    ALLOWED_TRANSITIONS.iter().any(|(_, b)| *b == s),
                    "{s:?} unreachable"
                );
            }
        }
    }

    #[test]
    fn a_crash_never_skips_the_decision() {
        // Exits of a running worker go through `crashed` (restart decision) or
        // `failed` (package error); a stop goes through `stopping`.
        assert!(!allowed(Ready, Backoff));
        assert!(!allowed(Ready, Stopped));
        assert!(!allowed(Starting, Backoff));
        assert!(allowed(Crashed, Backoff));
        assert!(allowed(Starting, Failed));
    }

    #[test]
    fn nothing_leaves_a_process_behind() {
        // States without a process are never entered straight from one with
        // a process except through `stopping`, `crashed` or `failed`.
        for (a, b) in ALLOWED_TRANSITIONS {
            if a.has_process() && !b.has_process() {
                assert!(
                    matches!(b, Crashed | Failed | Stopped | Idle | Fetching),
                    "{a:?}->{b:?}"
                );
                if matches!(b, Stopped | Idle | Fetching) {
                    assert_eq!(*a, Stopping, "{a:?}->{b:?}");
                }
            }
        }
    }
}
