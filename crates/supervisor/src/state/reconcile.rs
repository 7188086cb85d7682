//! Reconcile: make what runs match the declared agents (config file,
//! `PAR_AGENTS`, registry). New ones start, changed ones roll, those no longer
//! declared are removed; agents spawned through the API are left alone, and a
//! declaration that takes an API agent's id adopts it.

use std::collections::HashSet;

use super::agent::{Goal, RolloutState};
use super::{Out, Supervisor};
use crate::model::spec::same_deployment;
use crate::model::{
    AgentId, AgentSpec, Origin, PutOutcome, ReconcileFailure, ReconcileReport, WaiterId,
};

impl Supervisor {
    pub(super) fn reconcile(
        &mut self,
        declared: Vec<(AgentId, AgentSpec)>,
        trigger: &str,
        out: &mut Out,
    ) -> ReconcileReport {
        let mut report = ReconcileReport::new(trigger, out.clock.wall);
        if self.shutdown {
            return report;
        }
        let ids: HashSet<AgentId> = declared.iter().map(|(id, _)| id.clone()).collect();
        for (id, spec) in declared {
            if !self.agents.contains_key(&id) {
                match self.create(id.clone(), spec, Origin::Declared, out) {
                    Ok(_) => report.started.push(id.to_string()),
                    Err(e) => report.failed.push(ReconcileFailure {
                        agent_id: id.to_string(),
                        error: e.message,
                    }),
                }
                continue;
            }
            let mut outcome = PutOutcome::Unchanged;
            self.with_agent(&id, out, |s, a, out| {
                a.origin = Origin::Declared;
                // A rollout of this very spec failed for a lasting reason: the
                // same spec would fail the same way; a new spec (or a PUT) tries again.
                let failed_before = a.rollout.as_ref().is_some_and(|r| {
                    matches!(
                        r.state,
                        RolloutState::Failed {
                            retryable: false,
                            ..
                        }
                    ) && same_deployment(&r.spec, &spec)
                });
                if !failed_before {
                    outcome = s.roll(a, spec, out);
                }
            });
            match outcome {
                PutOutcome::Unchanged => report.unchanged.push(id.to_string()),
                _ => report.rolled.push(id.to_string()),
            }
        }
        let gone: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(id, a)| {
                a.origin == Origin::Declared && !ids.contains(*id) && a.goal != Goal::Remove
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove(&id, WaiterId::NOBODY, out);
            report.stopped.push(id.to_string());
        }
        report
    }
}
