//! The typed `agent.yaml` manifest (union of pixell-kit 0.4, pixell-sdk 0.5 and older PAR)
//! and its validation: every problem is reported at once, each naming its field and file.

use std::collections::BTreeMap;
use std::fmt;

use serde_yaml_ng::{Mapping, Value};

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

/// Size limits of a manifest and of its fields (bytes of UTF-8, counts of
/// items): what is over one is refused with an error naming the field and
/// the limit. They keep every reply that shows a manifest small.
pub mod limits {
    /// The whole `agent.yaml`.
    pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
    /// `description`, `metadata.sub_agents[].description`.
    pub const MAX_DESCRIPTION_BYTES: usize = 4096;
    /// Names and short text: `name`, `version`, `display_name`, `author`,
    /// `license`, `runtime`, `metadata.version`, sub-agent names, each tag
    /// and capability, environment variable names.
    pub const MAX_NAME_BYTES: usize = 256;
    /// `metadata.homepage`, `metadata.repository`.
    pub const MAX_URL_BYTES: usize = 2048;
    /// `module:function` references (`entrypoint`, `a2a.*`, `rest.entry`, `http_server`).
    pub const MAX_REF_BYTES: usize = 512;
    /// `ui.path`, `ui.basePath`.
    pub const MAX_PATH_BYTES: usize = 1024;
    /// Each of `dependencies`.
    pub const MAX_DEPENDENCY_BYTES: usize = 1024;
    /// Items of `dependencies`.
    pub const MAX_DEPENDENCIES: usize = 500;
    /// Items of `metadata.tags` and of `capabilities`.
    pub const MAX_LIST_ITEMS: usize = 100;
    /// Items of `metadata.sub_agents` (the agent's exports).
    pub const MAX_SUB_AGENTS: usize = 100;
    /// Variables of `environment`.
    pub const MAX_ENV_VARS: usize = 1000;
    /// Each value of `environment`.
    pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
    /// Warnings kept (unknown keys and the like); the rest are counted.
    pub const MAX_WARNINGS: usize = 50;
}
use limits::*;

/// Top-level keys that are known and kept as JSON in [`Manifest::extra`].
const EXTRA_KEYS: &[&str] = &[
    "mcp",
    "permissions",
    "data_access",
    "plan_mode",
    "translation",
    "ui_spec_version",
    "required_ui_capabilities",
];

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

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into()
            } else if let Some(u) = n.as_u64() {
                u.into()
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null)
            }
        }
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Sequence(s) => serde_json::Value::Array(s.iter().map(to_json).collect()),
        Value::Mapping(m) => {
            serde_json::Value::Object(m.iter().map(|(k, v)| (key_text(k), to_json(v))).collect())
        }
        Value::Tagged(t) => to_json(&t.value),
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => format!("<{}>", kind(other)),
    }
}

/// Untrusted text shown in a field path or a warning, cut to 64 characters.
fn short(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn is_dotted(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_identifier)
}

fn is_valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_env_key(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[derive(Default)]
struct Checker {
    errors: Vec<FieldError>,
    warnings: Vec<String>,
}

impl Checker {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// A present, non-null value (pixell writes `a2a: null` for "absent").
    fn get<'a>(map: &'a Mapping, key: &str) -> Option<&'a Value> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn string(&mut self, v: Option<&Value>, field: &str) -> Option<String> {
        match v? {
            Value::String(s) => Some(s.clone()),
            other @ (Value::Number(_) | Value::Bool(_)) => {
                let text = serde_yaml_ng::to_string(other).unwrap_or_default();
                self.err(
                    field,
                    format!(
                        "expected a string, got {} (quote it: '{}')",
                        kind(other),
                        text.trim()
                    ),
                );
                None
            }
            other => {
                self.err(field, format!("expected a string, got {}", kind(other)));
                None
            }
        }
    }

    /// A string of at most `limit` bytes; a longer one is an error (and `None`,
    /// so that no later message repeats it).
    fn capped(&mut self, v: Option<&Value>, field: &str, limit: usize) -> Option<String> {
        let s = self.string(v, field)?;
        if s.len() > limit {
            self.err(
                field,
                format!("is {} bytes, more than the limit of {limit} bytes", s.len()),
            );
            return None;
        }
        Some(s)
    }

    /// `false` (and an error) when a list has more than `limit` items.
    fn count_ok(&mut self, field: &str, n: usize, limit: usize, what: &str) -> bool {
        if n > limit {
            self.err(
                field,
                format!("has {n} {what}, more than the limit of {limit}"),
            );
            return false;
        }
        true
    }

    /// A list of at most `max_items` strings of at most `item_limit` bytes each.
    fn string_list(
        &mut self,
        v: Option<&Value>,
        field: &str,
        max_items: usize,
        item_limit: usize,
    ) -> Vec<String> {
        let Some(v) = v else { return Vec::new() };
        let Value::Sequence(items) = v else {
            self.err(
                field,
                format!("expected a list of strings, got {}", kind(v)),
            );
            return Vec::new();
        };
        if !self.count_ok(field, items.len(), max_items, "items") {
            return Vec::new();
        }
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.capped(Some(item), &format!("{field}[{i}]"), item_limit))
            .collect()
    }

    fn mapping<'a>(&mut self, v: Option<&'a Value>, field: &str) -> Option<&'a Mapping> {
        match v? {
            Value::Mapping(m) => Some(m),
            other => {
                self.err(field, format!("expected a mapping, got {}", kind(other)));
                None
            }
        }
    }

    fn warn_unknown(&mut self, map: &Mapping, known: &[&str], prefix: &str) {
        for k in map.keys() {
            let name = short(&key_text(k));
            if !known.contains(&name.as_str()) {
                let field = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}.{name}")
                };
                self.warnings.push(format!("{field}: unknown key, ignored"));
            }
        }
    }

    /// `module:attr`, both parts Python names (attr may be dotted).
    fn entry_ref(&mut self, v: Option<&Value>, field: &str, example: &str) -> Option<EntryRef> {
        let s = self.capped(v, field, MAX_REF_BYTES)?;
        match s.split_once(':') {
            Some((m, a)) if is_dotted(m.trim()) && is_dotted(a.trim()) => Some(EntryRef {
                module: m.trim().to_string(),
                attr: Some(a.trim().to_string()),
            }),
            _ => {
                self.err(
                    field,
                    format!("expected `module:function` (e.g. `{example}`), got {s:?}"),
                );
                None
            }
        }
    }

    fn manifest(&mut self, map: &Mapping) -> Option<Manifest> {
        for k in map.keys() {
            if !matches!(k, Value::String(_)) {
                self.err(
                    format!("(key {})", short(&key_text(k))),
                    format!("field names must be strings, got {}", kind(k)),
                );
            }
        }
        let get = |k| Self::get(map, k);

        let name = match get("name") {
            None => {
                self.err("name", "required field is missing");
                None
            }
            Some(v) => {
                let n = self.capped(Some(v), "name", MAX_NAME_BYTES);
                if let Some(n) = &n {
                    if !is_valid_name(n) {
                        self.err(
                            "name",
                            format!(
                                "must be lowercase letters, digits and hyphens, starting with a letter (^[a-z][a-z0-9-]*$), got {n:?}"
                            ),
                        );
                    }
                }
                n
            }
        };
        let version = self.capped(get("version"), "version", MAX_NAME_BYTES);
        let display_name = self.capped(get("display_name"), "display_name", MAX_NAME_BYTES);
        let description = self.capped(get("description"), "description", MAX_DESCRIPTION_BYTES);
        let author = self.capped(get("author"), "author", MAX_NAME_BYTES);
        let license = self.capped(get("license"), "license", MAX_NAME_BYTES);
        let entrypoint = self.entry_ref(get("entrypoint"), "entrypoint", "src.main:handler");

        let runtime = match self.capped(get("runtime"), "runtime", MAX_NAME_BYTES) {
            None => DEFAULT_RUNTIME.to_string(),
            Some(r) => {
                if !RUNTIMES.contains(&r.as_str()) {
                    self.err(
                        "runtime",
                        format!(
                            "unknown runtime {r:?}; expected one of {}",
                            RUNTIMES.join(", ")
                        ),
                    );
                }
                r
            }
        };

        let mut environment = BTreeMap::new();
        let env = self
            .mapping(get("environment"), "environment")
            .filter(|env| self.count_ok("environment", env.len(), MAX_ENV_VARS, "variables"));
        if let Some(env) = env {
            for (k, v) in env {
                let key = key_text(k);
                let field = format!("environment.{}", short(&key));
                if key.len() > MAX_NAME_BYTES {
                    self.err(
                        &field,
                        format!(
                            "variable name is {} bytes, more than the limit of {MAX_NAME_BYTES} bytes",
                            key.len()
                        ),
                    );
                    continue;
                }
                if !matches!(k, Value::String(_)) || !is_env_key(&key) {
                    self.err(
                        &field,
                        "variable names must be letters, digits and underscores, not starting with a digit",
                    );
                    continue;
                }
                if v.is_null() {
                    self.err(&field, "expected a string, got null");
                    continue;
                }
                if let Some(val) = self.capped(Some(v), &field, MAX_ENV_VALUE_BYTES) {
                    environment.insert(key, val);
                }
            }
        }

        let dependencies = self.string_list(
            get("dependencies"),
            "dependencies",
            MAX_DEPENDENCIES,
            MAX_DEPENDENCY_BYTES,
        );
        for (i, d) in dependencies.iter().enumerate() {
            let t = d.trim();
            if t.is_empty()
                || t.contains(['\n', '\r'])
                || !t.starts_with(|c: char| c.is_ascii_alphanumeric())
            {
                self.err(
                    format!("dependencies[{i}]"),
                    format!("expected a pip requirement such as `requests>=2.0`, got {d:?}"),
                );
            }
        }
        let capabilities = self.string_list(
            get("capabilities"),
            "capabilities",
            MAX_LIST_ITEMS,
            MAX_NAME_BYTES,
        );

        let metadata = self.metadata(get("metadata"));
        let a2a = self.a2a(get("a2a"));
        let rest = self.rest(get("rest"));
        let ui = self.ui(get("ui"));
        let http_server = self.entry_ref(get("http_server"), "http_server", "main:app");

        let mut extra = BTreeMap::new();
        for key in EXTRA_KEYS {
            if let Some(v) = get(key) {
                extra.insert((*key).to_string(), to_json(v));
            }
        }

        let known: Vec<&str> = [
            "name",
            "version",
            "display_name",
            "description",
            "author",
            "license",
            "entrypoint",
            "runtime",
            "environment",
            "dependencies",
            "capabilities",
            "metadata",
            "a2a",
            "rest",
            "ui",
            "http_server",
        ]
        .into_iter()
        .chain(EXTRA_KEYS.iter().copied())
        .collect();
        self.warn_unknown(map, &known, "");

        // A missing entrypoint is fine only when another surface serves the agent;
        // if the surface itself was invalid its own error already explains.
        let declares_surface = ["a2a", "rest", "ui", "http_server"]
            .iter()
            .any(|k| get(k).is_some());
        if get("entrypoint").is_none() && !declares_surface {
            self.err(
                "entrypoint",
                "required when the package declares no a2a, rest, ui or http_server surface",
            );
        }

        Some(Manifest {
            name: name?,
            version,
            display_name,
            description,
            author,
            license,
            entrypoint,
            runtime,
            environment,
            dependencies,
            capabilities,
            metadata,
            a2a,
            rest,
            ui,
            http_server,
            extra,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    fn metadata(&mut self, v: Option<&Value>) -> Metadata {
        let Some(map) = self.mapping(v, "metadata") else {
            return Metadata::default();
        };
        let get = |k| Self::get(map, k);
        self.warn_unknown(
            map,
            &[
                "version",
                "homepage",
                "repository",
                "tags",
                "sub_agents",
                "author_email",
            ],
            "metadata",
        );
        let version = self.capped(get("version"), "metadata.version", MAX_NAME_BYTES);
        let homepage = self.capped(get("homepage"), "metadata.homepage", MAX_URL_BYTES);
        let repository = self.capped(get("repository"), "metadata.repository", MAX_URL_BYTES);
        let tags = self.string_list(get("tags"), "metadata.tags", MAX_LIST_ITEMS, MAX_NAME_BYTES);
        let mut sub_agents = Vec::new();
        match get("sub_agents") {
            None => {}
            Some(Value::Sequence(items))
                if !self.count_ok(
                    "metadata.sub_agents",
                    items.len(),
                    MAX_SUB_AGENTS,
                    "sub-agents",
                ) => {}
            Some(Value::Sequence(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let field = format!("metadata.sub_agents[{i}]");
                    if let Some(sa) = self.sub_agent(item, &field) {
                        if sub_agents.iter().any(|s: &SubAgent| s.name == sa.name) {
                            self.err(
                                format!("{field}.name"),
                                format!("duplicate sub-agent name {:?}", sa.name),
                            );
                        } else {
                            sub_agents.push(sa);
                        }
                    }
                }
            }
            Some(other) => self.err(
                "metadata.sub_agents",
                format!(
                    "expected a list of {{name, description, public}}, got {}",
                    kind(other)
                ),
            ),
        }
        Metadata {
            version,
            homepage,
            repository,
            tags,
            sub_agents,
        }
    }

    fn sub_agent(&mut self, v: &Value, field: &str) -> Option<SubAgent> {
        let map = self.mapping(Some(v), field)?;
        let get = |k| Self::get(map, k);
        self.warn_unknown(
            map,
            &["name", "description", "public", "endpoint", "capabilities"],
            field,
        );
        let name_field = format!("{field}.name");
        let name = match get("name") {
            None => {
                self.err(&name_field, "required field is missing");
                None
            }
            Some(v) => self.capped(Some(v), &name_field, MAX_NAME_BYTES),
        };
        if let Some(n) = &name {
            let ok = !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                self.err(
                    &name_field,
                    format!(
                        "must be letters, digits, '-', '_' or '.' (it is a URL segment), got {n:?}"
                    ),
                );
            }
        }
        let description = self.capped(
            get("description"),
            &format!("{field}.description"),
            MAX_DESCRIPTION_BYTES,
        );
        let public = match get("public") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.err(
                    format!("{field}.public"),
                    format!("expected true or false, got {}", kind(other)),
                );
                false
            }
        };
        Some(SubAgent {
            name: name?,
            description,
            public,
        })
    }

    fn a2a(&mut self, v: Option<&Value>) -> Option<A2a> {
        let map = self.mapping(v, "a2a")?;
        let get = |k| Self::get(map, k);
        self.warn_unknown(map, &["entry", "service", "http_server"], "a2a");
        let entry = self.entry_ref(get("entry"), "a2a.entry", "src.a2a.server:serve");
        let service = self.entry_ref(get("service"), "a2a.service", "src.a2a.server:serve");
        let http_server = self.entry_ref(
            get("http_server"),
            "a2a.http_server",
            "src.a2a.http:handlers",
        );
        if let (Some(e), Some(s)) = (&entry, &service) {
            if e != s {
                self.warnings.push(format!(
                    "a2a: `entry` ({e}) and `service` ({s}) differ; using `entry`"
                ));
            }
        }
        let entry = entry.or(service);
        if entry.is_none()
            && http_server.is_none()
            && !map
                .keys()
                .any(|k| matches!(key_text(k).as_str(), "entry" | "service" | "http_server"))
        {
            self.warnings.push(
                "a2a: declares no `entry` or `service`; the A2A surface has no handlers".into(),
            );
        }
        Some(A2a { entry, http_server })
    }

    fn rest(&mut self, v: Option<&Value>) -> Option<Rest> {
        let map = self.mapping(v, "rest")?;
        self.warn_unknown(map, &["entry"], "rest");
        let Some(raw) = Self::get(map, "entry") else {
            self.err("rest.entry", "required field is missing");
            return None;
        };
        let s = self.capped(Some(raw), "rest.entry", MAX_REF_BYTES)?;
        let entry = match s.split_once(':') {
            Some((m, a)) if is_dotted(m.trim()) && is_dotted(a.trim()) => EntryRef {
                module: m.trim().to_string(),
                attr: Some(a.trim().to_string()),
            },
            None if is_dotted(s.trim()) => EntryRef {
                module: s.trim().to_string(),
                attr: None,
            },
            _ => {
                self.err(
                    "rest.entry",
                    format!(
                        "expected `module:function`, a module, or a function name (e.g. `src.rest.index:mount`), got {s:?}"
                    ),
                );
                return None;
            }
        };
        Some(Rest { entry })
    }

    fn ui(&mut self, v: Option<&Value>) -> Option<Ui> {
        let map = self.mapping(v, "ui")?;
        self.warn_unknown(map, &["path", "basePath", "base_path"], "ui");
        let path = match Self::get(map, "path") {
            None => {
                self.err("ui.path", "required field is missing");
                None
            }
            Some(v) => self.capped(Some(v), "ui.path", MAX_PATH_BYTES),
        };
        if let Some(p) = &path {
            let bad = p.trim().is_empty()
                || p.starts_with('/')
                || p.starts_with('\\')
                || p.split(['/', '\\']).any(|c| c == "..");
            if bad {
                self.err(
                    "ui.path",
                    format!("must be a relative folder inside the package, got {p:?}"),
                );
            }
        }
        let base = Self::get(map, "basePath").or_else(|| Self::get(map, "base_path"));
        let base_field = if Self::get(map, "basePath").is_some() {
            "ui.basePath"
        } else {
            "ui.base_path"
        };
        let base_path = match self.capped(base, base_field, MAX_PATH_BYTES) {
            None => "/".to_string(),
            Some(b) if b.starts_with('/') => b,
            Some(b) => {
                self.err(base_field, format!("must start with '/', got {b:?}"));
                b
            }
        };
        Some(Ui {
            path: path?,
            base_path,
        })
    }
}
