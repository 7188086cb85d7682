//! What one reconcile of the declared agents changed.

use std::time::SystemTime;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    /// `start`, `api`, `SIGHUP` or `poll`.
    pub trigger: String,
    #[serde(serialize_with = "super::view::ser_time")]
    pub at: SystemTime,
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub rolled: Vec<String>,
    pub unchanged: Vec<String>,
    pub failed: Vec<ReconcileFailure>,
    /// Set when the registry could not be read: its agents were left as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_error: Option<String>,
}

impl ReconcileReport {
    pub fn new(trigger: &str, at: SystemTime) -> Self {
        ReconcileReport {
            trigger: trigger.to_string(),
            at,
            started: Vec::new(),
            stopped: Vec::new(),
            rolled: Vec::new(),
            unchanged: Vec::new(),
            failed: Vec::new(),
            registry_error: None,
        }
    }

    pub fn changed(&self) -> bool {
        !(self.started.is_empty()
            && self.stopped.is_empty()
            && self.rolled.is_empty()
            && self.failed.is_empty())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconcileFailure {
    pub agent_id: String,
    pub error: String,
}
