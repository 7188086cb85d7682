//! The typed `agent.yaml` manifest (union of pixell-kit 0.4, pixell-sdk 0.5 and older PAR).

use std::collections::BTreeMap;

/// `module:attr` reference (attr may be absent for REST entries naming a module).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EntryRef {
    pub module: String,
    pub attr: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SubAgent {
    pub name: String,
    pub description: Option<String>,
    pub public: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Metadata {
    pub version: Option<String>,
    pub homepage: Option<String>,
    pub repository: Option<String>,
    pub tags: Vec<String>,
    pub sub_agents: Vec<SubAgent>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct A2a {
    /// `a2a.service` (0.4) or `a2a.entry` (0.5): same meaning.
    pub entry: Option<EntryRef>,
    pub http_server: Option<EntryRef>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Rest {
    pub entry: EntryRef,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Ui {
    pub path: String,
    /// Defaults to "/".
    pub base_path: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Manifest {
    pub name: String,
    pub version: Option<String>,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub author: Option<String>,
    pub license: Option<String>,
    pub entrypoint: Option<EntryRef>,
    /// e.g. "python3.11"
    pub runtime: String,
    pub environment: BTreeMap<String, String>,
    pub dependencies: Vec<String>,
    pub capabilities: Vec<String>,
    pub metadata: Metadata,
    pub a2a: Option<A2a>,
    pub rest: Option<Rest>,
    pub ui: Option<Ui>,
    pub http_server: Option<EntryRef>,
    /// Optional known keys (mcp, permissions, ...) kept as JSON for reporting.
    pub extra: BTreeMap<String, serde_json::Value>,
    /// Unknown top-level keys and other non-fatal findings.
    pub warnings: Vec<String>,
}

impl Manifest {
    pub fn package_id(&self) -> String {
        let v = self
            .metadata
            .version
            .clone()
            .or_else(|| self.version.clone())
            .unwrap_or_else(|| "0.0.0".into());
        format!("{}@{}", self.name, v)
    }
}
