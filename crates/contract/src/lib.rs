//! What PAR's processes agree on — the supervisor, the worker it starts, and
//! the agent host the worker starts: exit codes, the environment a worker is
//! given, the process ids the management API shows, and the one retry
//! schedule (backoff) that restarts and downloads share. One definition each;
//! the Python side (`host.py`) is checked against it by the worker's tests.

pub mod backoff;

/// Exit codes of a worker (and of the agent host, which the worker passes on).
pub mod exit {
    /// The package itself cannot load (EX_CONFIG): a bad manifest, an import
    /// error, a missing file. The supervisor marks the agent failed and does
    /// not restart it.
    pub const PACKAGE_FAILURE: i32 = 78;
    /// The worker's port was taken by someone else between the supervisor
    /// choosing it and the worker binding it (EX_TEMPFAIL): start again on
    /// another port, at once, as no failure of the agent's.
    pub const PORT_IN_USE: i32 = 75;
    /// The agent's event loop stopped answering the worker's liveness pings
    /// (`PAR_LIVENESS_*`): the worker killed its agent host and exits, to be
    /// restarted as after a crash, the reason named.
    pub const UNRESPONSIVE: i32 = 70;
}

/// Environment variables the supervisor sets for a worker. An agent's
/// `env_vars` may not override them.
pub mod env {
    pub const MODE: &str = "PAR_MODE";
    pub const HOST: &str = "PAR_HOST";
    pub const PORT: &str = "PAR_PORT";
    pub const AGENT_ID: &str = "PAR_AGENT_ID";
    pub const PACKAGE_PATH: &str = "PAR_PACKAGE_PATH";
    pub const PACKAGE_SHA256: &str = "PAR_PACKAGE_SHA256";
    pub const PACKAGE_ID: &str = "PAR_PACKAGE_ID";
    pub const SUPERVISOR_URL: &str = "PAR_SUPERVISOR_URL";
    /// The supervisor's pid: a worker re-arms its parent-death signal against it.
    pub const PARENT_PID: &str = "PAR_PARENT_PID";
    pub const HOME: &str = "PAR_HOME";
    pub const LOG: &str = "PAR_LOG";
    pub const LOG_FORMAT: &str = "PAR_LOG_FORMAT";
    pub const ADMIN_TOKEN: &str = "PAR_ADMIN_TOKEN";
    /// The interpreter a worker runs its agent with, when the supervisor
    /// prepared the Python environment beforehand (agents under their own uids).
    pub const PYTHON: &str = "PAR_PYTHON";
    /// The isolation a worker runs under (`per-agent-uid` or `shared-uid`).
    pub const ISOLATION: &str = "PAR_ISOLATION";
    /// The descriptor of the listening socket the supervisor hands a worker
    /// (bound to `PAR_HOST:PAR_PORT`, inherited across exec): the worker
    /// serves on it instead of binding the port. Unset for a worker started
    /// by hand, which binds its port itself.
    pub const LISTEN_FD: &str = "PAR_LISTEN_FD";

    /// Set by the supervisor for every worker; not for agents to choose.
    pub const RESERVED: &[&str] = &[
        PORT,
        HOST,
        AGENT_ID,
        PACKAGE_PATH,
        PACKAGE_SHA256,
        SUPERVISOR_URL,
        MODE,
        ADMIN_TOKEN,
        PARENT_PID,
        PYTHON,
        ISOLATION,
        LISTEN_FD,
    ];
}

/// The process id of replica `replica` of an agent: `par-{agent}` for the
/// first (the original API's id), `par-{agent}-{n}` for the others.
pub fn process_id(agent_id: &str, replica: u32) -> String {
    if replica == 0 {
        format!("par-{agent_id}")
    } else {
        format!("par-{agent_id}-{replica}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ids() {
        assert_eq!(process_id("a", 0), "par-a");
        assert_eq!(process_id("a", 3), "par-a-3");
        assert_eq!(process_id("par-a", 0), "par-par-a");
    }

    #[test]
    fn reserved_names_are_distinct() {
        let mut v = env::RESERVED.to_vec();
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), env::RESERVED.len());
    }
}
