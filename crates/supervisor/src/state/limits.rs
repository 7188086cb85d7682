//! The task's CPU and memory shared among the running workers: an explicit
//! per-agent limit, else a fair share of what the explicit ones leave; and how
//! each limit is enforced.

use crate::model::{AgentSpec, Enforcement, LimitSource, Limits, State};

/// What the task may use (detected by the runtime at start).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub cpus: f64,
    pub memory_mb: u64,
}

/// Memory kept for the supervisor itself.
const RESERVE_MB: u64 = 64;

/// Totals over the workers that count (every replica not stopped, failed or idle).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Shares {
    mem_explicit_mb: u64,
    mem_shared: u32,
    cpu_explicit: f64,
    cpu_shared: u32,
}

impl Shares {
    /// Adds `replicas` workers of an agent with `spec`.
    pub fn add(&mut self, spec: &AgentSpec, replicas: u32) {
        match spec.memory_limit_mb {
            Some(m) => self.mem_explicit_mb += m * u64::from(replicas),
            None => self.mem_shared += replicas,
        }
        match spec.cpu_limit {
            Some(c) => self.cpu_explicit += c * f64::from(replicas),
            None => self.cpu_shared += replicas,
        }
    }
}

/// Whether a replica in `state` takes its share.
pub fn counts(state: State) -> bool {
    !matches!(state, State::Stopped | State::Failed | State::Idle)
}

/// One worker's limits for `spec`, given the totals of all workers.
pub fn limits(spec: &AgentSpec, shares: &Shares, budget: &Budget) -> Limits {
    let (memory_limit_mb, memory_limit_source) = match spec.memory_limit_mb {
        Some(m) => (m, LimitSource::Explicit),
        None => {
            let left = budget
                .memory_mb
                .saturating_sub(RESERVE_MB)
                .saturating_sub(shares.mem_explicit_mb);
            (
                (left / u64::from(shares.mem_shared.max(1))).max(16),
                LimitSource::FairShare,
            )
        }
    };
    let (cpu_limit, cpu_limit_source) = match spec.cpu_limit {
        Some(c) => (c, LimitSource::Explicit),
        None => {
            let left = (budget.cpus - shares.cpu_explicit).max(0.05);
            (
                (left / f64::from(shares.cpu_shared.max(1))).max(0.05),
                LimitSource::FairShare,
            )
        }
    };
    Limits {
        memory_limit_mb: Some(memory_limit_mb),
        memory_limit_source,
        // An explicit memory limit is held by the RSS watchdog; a fair share
        // and every CPU figure guide sharing and are shown, not enforced.
        memory_enforcement: if spec.memory_limit_mb.is_some() {
            Enforcement::Watchdog
        } else {
            Enforcement::Advisory
        },
        disk_limit_mb: Some(
            spec.disk_limit_mb
                .unwrap_or(crate::model::spec::DEFAULT_DISK_LIMIT_MB),
        ),
        cpu_limit: Some(cpu_limit),
        cpu_limit_source,
        cpu_enforcement: Enforcement::Advisory,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mem: Option<u64>, cpu: Option<f64>) -> AgentSpec {
        let mut s = AgentSpec::new("a", "/p");
        s.memory_limit_mb = mem;
        s.cpu_limit = cpu;
        s
    }

    const BUDGET: Budget = Budget {
        cpus: 2.0,
        memory_mb: 1088,
    };

    #[test]
    fn fair_share_divides_what_explicit_limits_leave() {
        let (a, b, c) = (
            spec(Some(512), Some(1.0)),
            spec(None, None),
            spec(None, None),
        );
        let mut s = Shares::default();
        for x in [&a, &b, &c] {
            s.add(x, 1);
        }
        let la = limits(&a, &s, &BUDGET);
        assert_eq!(
            (la.memory_limit_mb, la.memory_limit_source),
            (Some(512), LimitSource::Explicit)
        );
        assert_eq!(la.memory_enforcement, Enforcement::Watchdog);
        let lb = limits(&b, &s, &BUDGET);
        // (1088 - 64 - 512) / 2
        assert_eq!(
            (lb.memory_limit_mb, lb.memory_limit_source),
            (Some(256), LimitSource::FairShare)
        );
        assert_eq!(lb.cpu_limit, Some(0.5));
        assert_eq!(lb.memory_enforcement, Enforcement::Advisory);
    }

    #[test]
    fn replicas_take_a_share_each_and_floors_hold() {
        let b = spec(None, None);
        let mut s = Shares::default();
        s.add(&b, 4);
        assert_eq!(limits(&b, &s, &BUDGET).memory_limit_mb, Some(256));
        let tiny = Budget {
            cpus: 0.01,
            memory_mb: 10,
        };
        let l = limits(&b, &s, &tiny);
        assert_eq!(l.memory_limit_mb, Some(16));
        assert!((l.cpu_limit.unwrap() - 0.05).abs() < 1e-9);
    }

    #[test]
    fn what_counts() {
        assert!(counts(State::Ready) && counts(State::Backoff) && counts(State::Starting));
        assert!(!counts(State::Stopped) && !counts(State::Failed) && !counts(State::Idle));
    }
}
