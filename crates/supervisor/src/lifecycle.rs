//! The lifecycle states of an agent process and the transitions allowed between them.

use serde::Serialize;

/// `pending → fetching → starting → ready → (unhealthy) → stopping → stopped`,
/// plus `crashed`, `backoff` and `failed` (gave up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Fetching,
    Starting,
    Ready,
    Unhealthy,
    Stopping,
    Stopped,
    Crashed,
    Backoff,
    Failed,
}

use State::*;

/// Every allowed `(from, to)`; anything else is a bug in the supervisor.
pub const ALLOWED_TRANSITIONS: &[(State, State)] = &[
    (Pending, Fetching),
    (Pending, Starting),
    (Pending, Failed),
    (Pending, Stopped),
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
    (Ready, Failed),
    (Ready, Stopping),
    (Unhealthy, Ready),
    (Unhealthy, Crashed),
    (Unhealthy, Failed),
    (Unhealthy, Stopping),
    (Stopping, Stopped),
    (Stopping, Starting),
    (Stopping, Failed),
    (Stopping, Crashed),
    // A spec replaced in place whose new package must be fetched first.
    (Stopping, Fetching),
    (Crashed, Backoff),
    (Crashed, Failed),
    (Crashed, Stopped),
    // The old worker died during a rollout: the new worker, already starting, takes over.
    (Crashed, Starting),
    (Backoff, Starting),
    (Backoff, Stopped),
    (Backoff, Fetching),
    (Backoff, Failed),
    (Stopped, Starting),
    (Stopped, Fetching),
    (Stopped, Failed),
    (Failed, Starting),
    (Failed, Fetching),
    (Failed, Stopped),
];

impl State {
    pub fn can_become(self, to: State) -> bool {
        ALLOWED_TRANSITIONS.contains(&(self, to))
    }

    /// Whether a worker process may be running in this state.
    pub fn has_process(self) -> bool {
        matches!(self, Starting | Ready | Unhealthy | Stopping)
    }

    /// Whether the agent is at rest (no process, no timer): it can be removed.
    pub fn is_settled(self) -> bool {
        matches!(self, Stopped | Failed | Crashed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Pending => "pending",
            Fetching => "fetching",
            Starting => "starting",
            Ready => "ready",
            Unhealthy => "unhealthy",
            Stopping => "stopping",
            Stopped => "stopped",
            Crashed => "crashed",
            Backoff => "backoff",
            Failed => "failed",
        }
    }

    /// A number for the Prometheus state gauge (stable order).
    pub fn code(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [State; 10] = [
        Pending, Fetching, Starting, Ready, Unhealthy, Stopping, Stopped, Crashed, Backoff, Failed,
    ];

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
        for s in ALL {
            assert_eq!(
                s.can_become(Ready),
                matches!(s, Starting | Unhealthy),
                "{s:?}"
            );
        }
    }

    #[test]
    fn every_state_has_a_way_out_and_is_reachable() {
        for s in ALL {
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
        assert!(!Ready.can_become(Backoff));
        assert!(!Ready.can_become(Stopped));
        assert!(Crashed.can_become(Backoff));
        assert!(Starting.can_become(Failed));
    }

    #[test]
    fn names() {
        for s in ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
