//! The transitions allowed between lifecycle states. The state machine moves a
//! replica only through this table: a move outside it is a bug, refused and
//! logged (and a panic in debug builds, so tests catch it).

use crate::model::State::{self, *};

/// Every allowed `(from, to)`.
pub const ALLOWED_TRANSITIONS: &[(State, State)] = &[
    (Pending, Fetching),
    (Pending, Starting),
    (Pending, Idle),
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
