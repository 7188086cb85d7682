//! The lifecycle states of one agent process (a replica), as the API shows them.

use serde::{Deserialize, Serialize};

/// `pending → fetching → starting → ready → (unhealthy) → stopping → stopped`,
/// plus `crashed`, `backoff`, `failed` (gave up) and `idle` (scaled to zero:
/// no process, woken by the next request). Which moves are allowed is
/// `state::lifecycle`'s table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    Idle,
}

impl State {
    pub const ALL: [State; 11] = [
        State::Pending,
        State::Fetching,
        State::Starting,
        State::Ready,
        State::Unhealthy,
        State::Stopping,
        State::Stopped,
        State::Crashed,
        State::Backoff,
        State::Failed,
        State::Idle,
    ];

    /// Whether a worker process may be running in this state.
    pub fn has_process(self) -> bool {
        matches!(
            self,
            State::Starting | State::Ready | State::Unhealthy | State::Stopping
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Fetching => "fetching",
            State::Starting => "starting",
            State::Ready => "ready",
            State::Unhealthy => "unhealthy",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Crashed => "crashed",
            State::Backoff => "backoff",
            State::Failed => "failed",
            State::Idle => "idle",
        }
    }

    /// A number for the Prometheus state gauge (stable order).
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for s in State::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
