//! The manifest's sections: `metadata` (with its sub-agents), `a2a`, `rest`, `ui`.

use serde_yaml_ng::Value;

use super::check::{is_dotted, Checker};
use super::limits::*;
use super::yaml::{key_text, kind};
use super::{A2a, EntryRef, Metadata, Rest, SubAgent, Ui};

impl Checker {
    pub(super) fn metadata(&mut self, v: Option<&Value>) -> Metadata {
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

    pub(super) fn a2a(&mut self, v: Option<&Value>) -> Option<A2a> {
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

    pub(super) fn rest(&mut self, v: Option<&Value>) -> Option<Rest> {
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

    pub(super) fn ui(&mut self, v: Option<&Value>) -> Option<Ui> {
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
