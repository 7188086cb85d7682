//! The typed `agent.yaml` manifest (union of pixell-kit 0.4, pixell-sdk 0.5 and older PAR)
//! and its validation: every problem is reported at once, each naming its field and file.

use std::collections::BTreeMap;
use std::fmt;

use serde_yaml_ng::Value;

use check::Checker;
use yaml::{kind, to_json};

/// Runtimes a manifest may declare (pixell-kit's list plus newer Pythons).
pub const RUNTIMES: &[&str] = &[
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "node18",
    "node20",
    "go1.21",
];

/// Runtime used when the manifest names none.
pub const DEFAULT_RUNTIME: &str = "python3.11";

mod check;
pub mod limits;
mod sections;
mod yaml;

use limits::*;

/// `module:attr` reference (attr may be absent for REST entries naming a module
/// or, in pixell-sdk 0.5, a bare function name of the entrypoint's module).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EntryRef {
    pub module: String,
    pub attr: Option<String>,
}

impl fmt::Display for EntryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.attr {
            Some(a) => write!(f, "{}:{}", self.module, a),
            None => f.write_str(&self.module),
        }
    }
}

/// An export of the agent (older PAR `metadata.sub_agents`). Private ones are not routable.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubAgent {
    pub name: String,
    pub description: Option<String>,
    /// Defaults to `false`: an export is routable only when declared public.
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

/// One problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `metadata.sub_agents[1].name`; `(yaml)` for syntax errors.
    pub field: String,
    pub message: String,
}

/// Every problem found in one manifest file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestErrors {
    pub file: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "invalid manifest {}: {n} problem{}",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  - {}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

/// Which surfaces a manifest declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Surfaces {
    pub invoke: bool,
    pub rest: bool,
    pub a2a: bool,
    pub ui: bool,
    pub http_server: bool,
}

impl Manifest {
    /// `name@version`: `metadata.version` when present, else top-level `version`.
    pub fn package_id(&self) -> String {
        let v = self
            .metadata
            .version
            .clone()
            .or_else(|| self.version.clone())
            .unwrap_or_else(|| "0.0.0".into());
        format!("{}@{}", self.name, v)
    }

    /// The agent's own version (`metadata.version`, else top-level `version`).
    pub fn agent_version(&self) -> Option<&str> {
        self.metadata.version.as_deref().or(self.version.as_deref())
    }

    /// `Some("3.11")` for `python3.11`; `None` for a runtime that is not Python.
    pub fn python_version(&self) -> Option<&str> {
        self.runtime.strip_prefix("python")
    }

    pub fn surfaces(&self) -> Surfaces {
        Surfaces {
            invoke: self.entrypoint.is_some(),
            rest: self.rest.is_some(),
            a2a: self.a2a.is_some(),
            ui: self.ui.is_some(),
            http_server: self.http_server.is_some(),
        }
    }

    /// The error for an `agent.yaml` of `size` bytes, over [`limits::MAX_MANIFEST_BYTES`].
    pub fn too_large(size: u64, file_name: &str) -> ManifestErrors {
        ManifestErrors {
            file: file_name.to_string(),
            errors: vec![FieldError {
                field: "(file)".into(),
                message: format!(
                    "is {size} bytes or more, more than the limit of {MAX_MANIFEST_BYTES} bytes"
                ),
            }],
        }
    }

    /// Parses and validates `agent.yaml` text; `file_name` is used in messages.
    pub fn parse(yaml_text: &str, file_name: &str) -> Result<Manifest, ManifestErrors> {
        let fail = |field: &str, message: String| ManifestErrors {
            file: file_name.to_string(),
            errors: vec![FieldError {
                field: field.to_string(),
                message,
            }],
        };
        if yaml_text.len() > MAX_MANIFEST_BYTES {
            return Err(Manifest::too_large(yaml_text.len() as u64, file_name));
        }
        let doc: Value = serde_yaml_ng::from_str(yaml_text)
            .map_err(|e| fail("(yaml)", format!("not valid YAML: {e}")))?;
        let Value::Mapping(map) = doc else {
            return Err(fail(
                "(root)",
                format!("expected a mapping of fields, got {}", kind(&doc)),
            ));
        };
        let mut c = Checker::default();
        let m = c.manifest(&map).map(|mut m| {
            if m.warnings.len() > MAX_WARNINGS {
                let more = m.warnings.len() - MAX_WARNINGS;
                m.warnings.truncate(MAX_WARNINGS);
                m.warnings.push(format!("... and {more} more warnings"));
            }
            m
        });
        match m {
            Some(m) if c.errors.is_empty() => Ok(m),
            _ => Err(ManifestErrors {
                file: file_name.to_string(),
                errors: c.errors,
            }),
        }
    }

    /// The raw `agent.yaml` as JSON (what `.pixell/package.json` embeds).
    pub fn yaml_to_json(yaml_text: &str) -> Option<serde_json::Value> {
        let doc: Value = serde_yaml_ng::from_str(yaml_text).ok()?;
        Some(to_json(&doc))
    }
}
