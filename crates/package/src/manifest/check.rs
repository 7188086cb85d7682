//! The checker that walks an `agent.yaml` mapping: its helpers, the name
//! rules, and the top-level fields. The sections (`metadata`, `a2a`, `rest`,
//! `ui`) are in `sections.rs`.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use super::limits::*;
use super::yaml::{key_text, kind, short, to_json};
use super::{EntryRef, FieldError, Manifest, DEFAULT_RUNTIME, RUNTIMES};

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

pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

pub(super) fn is_dotted(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_identifier)
}

pub(super) fn is_valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub(super) fn is_env_key(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[derive(Default)]
pub(super) struct Checker {
    pub(super) errors: Vec<FieldError>,
    pub(super) warnings: Vec<String>,
}

impl Checker {
    pub(super) fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// A present, non-null value (pixell writes `a2a: null` for "absent").
    pub(super) fn get<'a>(map: &'a Mapping, key: &str) -> Option<&'a Value> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub(super) fn string(&mut self, v: Option<&Value>, field: &str) -> Option<String> {
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
    pub(super) fn capped(
        &mut self,
        v: Option<&Value>,
        field: &str,
        limit: usize,
    ) -> Option<String> {
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
    pub(super) fn count_ok(&mut self, field: &str, n: usize, limit: usize, what: &str) -> bool {
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
    pub(super) fn string_list(
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

    pub(super) fn mapping<'a>(&mut self, v: Option<&'a Value>, field: &str) -> Option<&'a Mapping> {
        match v? {
            Value::Mapping(m) => Some(m),
            other => {
                self.err(field, format!("expected a mapping, got {}", kind(other)));
                None
            }
        }
    }

    pub(super) fn warn_unknown(&mut self, map: &Mapping, known: &[&str], prefix: &str) {
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
    pub(super) fn entry_ref(
        &mut self,
        v: Option<&Value>,
        field: &str,
        example: &str,
    ) -> Option<EntryRef> {
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

    pub(super) fn manifest(&mut self, map: &Mapping) -> Option<Manifest> {
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
}
