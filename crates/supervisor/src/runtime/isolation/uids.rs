//! Which uid each agent runs under: stable per agent id (the owner of its
//! folder under `$PAR_HOME/agents/` if it has one, else a hash of the id
//! probed for a free uid), never shared between two agents.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use crate::config::UidRange;

#[derive(Debug)]
pub struct Uids {
    range: UidRange,
    by_agent: HashMap<String, u32>,
    owner: HashMap<u32, String>,
}

impl Uids {
    /// Agents' uids are the range less its first (the installer's).
    pub fn new(range: UidRange) -> Self {
        Uids {
            range,
            by_agent: HashMap::new(),
            owner: HashMap::new(),
        }
    }

    /// Learns the uids of agents that ran before from the owners of their
    /// folders in `agents_dir`.
    pub fn load(range: UidRange, agents_dir: &Path) -> Self {
        let mut uids = Uids::new(range);
        let Ok(entries) = std::fs::read_dir(agents_dir) else {
            return uids;
        };
        let mut found: Vec<(String, u32)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let meta = e.metadata().ok()?;
                (meta.is_dir() && !name.starts_with('.')).then_some((name, meta.uid()))
            })
            .collect();
        found.sort();
        for (agent, uid) in found {
            if uid > range.start && uid <= range.end && !uids.owner.contains_key(&uid) {
                uids.assign(agent, uid);
            }
        }
        uids
    }

    fn assign(&mut self, agent: String, uid: u32) {
        self.owner.insert(uid, agent.clone());
        self.by_agent.insert(agent, uid);
    }

    pub fn installer(&self) -> u32 {
        self.range.start
    }

    /// The agent's uid, assigned on first use.
    pub fn uid_for(&mut self, agent: &str) -> Result<u32, String> {
        if let Some(&uid) = self.by_agent.get(agent) {
            return Ok(uid);
        }
        let size = u64::from(self.range.end - self.range.start);
        let first = fnv1a(agent.as_bytes()) % size;
        for step in 0..size {
            let uid = self.range.start + 1 + ((first + step) % size) as u32;
            if !self.owner.contains_key(&uid) {
                self.assign(agent.to_string(), uid);
                return Ok(uid);
            }
        }
        Err(format!(
            "no free uid left in PAR_AGENT_UIDS {} ({} agents have one)",
            self.range,
            self.by_agent.len()
        ))
    }
}

/// FNV-1a: stable across builds and platforms (unlike the std hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_stable_distinct_and_never_the_installers() {
        let range = UidRange {
            start: 100,
            end: 103,
        };
        let mut a = Uids::new(range);
        let mut b = Uids::new(range);
        let x = a.uid_for("alpha").unwrap();
        assert_eq!(b.uid_for("alpha").unwrap(), x, "same id, same uid");
        assert_eq!(a.uid_for("alpha").unwrap(), x);
        let y = a.uid_for("beta").unwrap();
        let z = a.uid_for("gamma").unwrap();
        let mut all = vec![x, y, z];
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|u| (101..=103).contains(u)));
        assert!(a.uid_for("delta").unwrap_err().contains("no free uid"));
    }

    #[test]
    fn folders_of_earlier_runs_keep_their_uids() {
        let dir = tempfile::tempdir().unwrap();
        let range = UidRange {
            start: 20000,
            end: 29999,
        };
        std::fs::create_dir(dir.path().join("old")).unwrap();
        std::os::unix::fs::chown(dir.path().join("old"), Some(20123), None).unwrap_or(());
        let owner = std::fs::metadata(dir.path().join("old")).unwrap().uid();
        let mut uids = Uids::load(range, dir.path());
        if owner == 20123 {
            assert_eq!(uids.uid_for("old").unwrap(), 20123);
        }
        // A folder owned by someone outside the range is not trusted.
        std::fs::create_dir(dir.path().join("foreign")).unwrap();
        let mut uids2 = Uids::load(range, dir.path());
        assert!(range.contains(uids2.uid_for("foreign").unwrap()));
        assert_ne!(uids.uid_for("new").unwrap(), 20000);
    }
}
