//! What kind of failure an agent or a rollout had, in words that quote no
//! agent output: shown to anyone (status without the admin token, a 503 of a
//! failed agent), while the full message stays with the admin.

use std::fmt;
use std::str::FromStr;

use super::event::{signal_name, ExitInfo};

/// Serialized as the words it has always been shown as (`no_free_port`,
/// `exited 3`, `killed by signal SIGKILL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureClass {
    /// The package could not be fetched.
    FetchFailed,
    /// The worker exited with the package-failure code: a broken package.
    PackageFailure,
    /// Too many restarts: the restart policy gave up.
    GaveUp,
    /// The worker's health check reported an error.
    HealthError,
    /// Not ready within the startup timeout.
    StartupTimeout,
    /// No worker port was free.
    NoFreePort,
    /// The worker process could not be started.
    SpawnFailed,
    /// Failed liveness probes in a row.
    LivenessProbeFailed,
    /// Killed by the memory watchdog.
    MemoryLimit,
    /// Killed by the disk watchdog.
    DiskLimit,
    /// A rollout superseded or stopped.
    Cancelled,
    /// Failed, with no more said.
    Failed,
    /// The worker's liveness check through the agent host gave up.
    AgentUnresponsive,
    /// `exited 3`, or `exited` without a code.
    Exited(Option<i32>),
    /// `killed by signal SIGKILL` (the number when it has no name).
    Killed(String),
}

impl FailureClass {
    /// The class of an exit: `exited 3`, `killed by signal SIGKILL`.
    pub fn of_exit(exit: &ExitInfo) -> FailureClass {
        match (exit.code, exit.signal) {
            (Some(par_contract::exit::UNRESPONSIVE), _) => FailureClass::AgentUnresponsive,
            (Some(c), _) => FailureClass::Exited(Some(c)),
            (None, Some(s)) => FailureClass::Killed(signal_name(s)),
            _ => FailureClass::Exited(None),
        }
    }

    const NAMED: [(FailureClass, &'static str); 13] = [
        (FailureClass::FetchFailed, "fetch_failed"),
        (FailureClass::PackageFailure, "package_failure"),
        (FailureClass::GaveUp, "gave_up"),
        (FailureClass::HealthError, "health_error"),
        (FailureClass::StartupTimeout, "startup_timeout"),
        (FailureClass::NoFreePort, "no_free_port"),
        (FailureClass::SpawnFailed, "spawn_failed"),
        (FailureClass::LivenessProbeFailed, "liveness_probe_failed"),
        (FailureClass::MemoryLimit, "memory_limit"),
        (FailureClass::DiskLimit, "disk_limit"),
        (FailureClass::Cancelled, "cancelled"),
        (FailureClass::Failed, "failed"),
        (FailureClass::AgentUnresponsive, "agent_unresponsive"),
    ];
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureClass::Exited(Some(c)) => write!(f, "exited {c}"),
            FailureClass::Exited(None) => f.write_str("exited"),
            FailureClass::Killed(s) => write!(f, "killed by signal {s}"),
            named => {
                let (_, name) = Self::NAMED
                    .iter()
                    .find(|(c, _)| c == named)
                    .expect("every other class is named");
                f.write_str(name)
            }
        }
    }
}

impl FromStr for FailureClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((c, _)) = Self::NAMED.iter().find(|(_, name)| *name == s) {
            return Ok(c.clone());
        }
        if s == "exited" {
            return Ok(FailureClass::Exited(None));
        }
        if let Some(code) = s.strip_prefix("exited ") {
            return code
                .parse()
                .map(|c| FailureClass::Exited(Some(c)))
                .map_err(|_| format!("unknown failure class '{s}'"));
        }
        if let Some(sig) = s.strip_prefix("killed by signal ") {
            return Ok(FailureClass::Killed(sig.to_string()));
        }
        Err(format!("unknown failure class '{s}'"))
    }
}

impl serde::Serialize for FailureClass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for FailureClass {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn classes_read_as_they_are_written() {
        let mut all: Vec<FailureClass> =
            FailureClass::NAMED.iter().map(|(c, _)| c.clone()).collect();
        all.extend([
            FailureClass::Exited(Some(3)),
            FailureClass::Exited(None),
            FailureClass::Killed("SIGKILL".into()),
        ]);
        for c in all {
            let json = serde_json::to_value(&c).unwrap();
            assert_eq!(json, c.to_string());
            assert_eq!(serde_json::from_value::<FailureClass>(json).unwrap(), c);
        }
        assert_eq!(FailureClass::NoFreePort.to_string(), "no_free_port");
        assert!("bogus".parse::<FailureClass>().is_err());
    }

    #[test]
    fn exits_are_classed_by_code_or_signal() {
        let exit = |code, signal| ExitInfo {
            code,
            signal,
            at: SystemTime::UNIX_EPOCH,
            ran_seconds: 1.0,
        };
        let class = |code, signal| FailureClass::of_exit(&exit(code, signal)).to_string();
        assert_eq!(class(Some(3), None), "exited 3");
        assert_eq!(class(None, Some(9)), "killed by signal SIGKILL");
        assert_eq!(class(None, None), "exited");
        assert_eq!(
            class(Some(par_contract::exit::UNRESPONSIVE), None),
            "agent_unresponsive"
        );
    }
}
