//! Identifiers: agent ids (validated once, the only way to make one), worker
//! instances, and the process ids the API shows.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// An agent id: `^[a-z0-9][a-z0-9._-]{0,62}$`, not beginning with `par-`
/// (the prefix of process ids: `par-a` is always the process of agent `a`,
/// never an agent of its own). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(Arc<str>);

impl Serialize for AgentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl AgentId {
    /// Checks `id` against the agent id rule; the error says why it is not one.
    pub fn new(id: &str) -> Result<AgentId, String> {
        validate(id)?;
        Ok(AgentId(Arc::from(id)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The process id of one of its replicas: `par-{id}` for the first,
    /// `par-{id}-{n}` for the others.
    pub fn process_id(&self, replica: u32) -> String {
        par_contract::process_id(&self.0, replica)
    }
}

/// What no agent id begins with: process ids are `par-{id}[-{n}]`.
pub const RESERVED_PREFIX: &str = "par-";

fn validate(id: &str) -> Result<(), String> {
    let b = id.as_bytes();
    if b.is_empty() {
        return Err("is required".into());
    }
    let ok_first = b[0].is_ascii_lowercase() || b[0].is_ascii_digit();
    let ok_rest = b[1..]
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'));
    if b.len() > 63 || !ok_first || !ok_rest {
        return Err(format!(
            "{id:?} is not a valid agent id (^[a-z0-9][a-z0-9._-]{{0,62}}$)"
        ));
    }
    if let Some(rest) = id.strip_prefix(RESERVED_PREFIX) {
        return Err(format!(
            "{id:?} is not a valid agent id: agent ids may not begin with \"{RESERVED_PREFIX}\" \
             (\"{RESERVED_PREFIX}{rest}\" is the process id of agent {rest:?})"
        ));
    }
    Ok(())
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for AgentId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for AgentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AgentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AgentId::new(&s).map_err(serde::de::Error::custom)
    }
}

/// One worker process instance: a new one per start, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u64);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}", self.0)
    }
}

/// A caller waiting for the answer to a command (the runtime keeps the channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WaiterId(pub u64);

impl WaiterId {
    /// No one waits: the answer goes nowhere.
    pub const NOBODY: WaiterId = WaiterId(0);
}

/// One package fetch; results of older fetches are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids() {
        for ok in ["a", "pk-full-0.1.0", "agent_a", "0", &"a".repeat(63)] {
            assert!(AgentId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "A",
            "-a",
            ".a",
            "a b",
            &"a".repeat(64),
            "ä",
            "par-a",
            "par-",
        ] {
            assert!(AgentId::new(bad).is_err(), "{bad}");
        }
        // Only the prefix is reserved: `par`, `parx-a`, `a-par-b` are agents.
        for ok in ["par", "par_a", "parx-a", "a-par-b", "par.a"] {
            assert!(AgentId::new(ok).is_ok(), "{ok}");
        }
        let e = AgentId::new("par-a").unwrap_err();
        assert!(
            e.contains("may not begin with \"par-\"") && e.contains("\"par-a\""),
            "{e}"
        );
        let e: Result<AgentId, _> = serde_json::from_str("\"A\"");
        assert!(e.unwrap_err().to_string().contains("not a valid agent id"));
    }

    #[test]
    fn process_ids() {
        let a = AgentId::new("echo").unwrap();
        assert_eq!(a.process_id(0), "par-echo");
        assert_eq!(a.process_id(2), "par-echo-2");
    }
}
