//! Preparing the agent: the package loaded into the cache and its Python environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use par_package::LoadedPackage;

/// A package ready to run: extracted, parsed, with its interpreter and environment.
pub struct Prepared {
    pub package: LoadedPackage,
    pub python: PathBuf,
    /// Variables for the agent host: the package's `.env` merged with the manifest's
    /// `environment` (manifest wins).
    pub env: BTreeMap<String, String>,
}

/// Why the agent could not be prepared. `package` failures are permanent (exit 78).
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{0}")]
    Package(String),
    #[error("{0}")]
    Environment(String),
}

impl PrepareError {
    /// True when the package itself is at fault (the supervisor should not restart it).
    pub fn is_package_fault(&self) -> bool {
        matches!(self, PrepareError::Package(_))
    }
}

/// Loads the package and ensures its Python environment. Blocking.
pub fn prepare(source: &Path, sha256: Option<&str>, home: &Path) -> Result<Prepared, PrepareError> {
    shim::prepare(source, sha256, home)
}

/// Stand-in until par_package::load and par_pyenv::ensure_env land.
mod shim {
    use super::*;
    use par_package::manifest::*;
    use std::process::Command;

    fn s(v: &serde_yaml_ng::Value, k: &str) -> Option<String> {
        v.get(k).and_then(|x| x.as_str()).map(str::to_string)
    }
    fn entry(v: Option<String>) -> Option<EntryRef> {
        v.map(|e| match e.split_once(':') {
            Some((m, a)) => EntryRef {
                module: m.into(),
                attr: Some(a.into()),
            },
            None => EntryRef {
                module: e,
                attr: None,
            },
        })
    }

    pub fn prepare(
        source: &Path,
        _sha: Option<&str>,
        home: &Path,
    ) -> Result<Prepared, PrepareError> {
        let root = if source.is_dir() {
            source.to_path_buf()
        } else {
            let bytes = std::fs::read(source).map_err(|e| {
                PrepareError::Package(format!("cannot read {}: {e}", source.display()))
            })?;
            let h = format!(
                "{:x}",
                bytes.len() as u64
                    ^ bytes
                        .iter()
                        .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(*b as u64))
            );
            let dir = home.join("shim-packages").join(h);
            if !dir.exists() {
                std::fs::create_dir_all(&dir).map_err(|e| PrepareError::Package(e.to_string()))?;
                let st = Command::new("unzip")
                    .arg("-q")
                    .arg("-o")
                    .arg(source)
                    .arg("-d")
                    .arg(&dir)
                    .status()
                    .map_err(|e| PrepareError::Package(e.to_string()))?;
                if !st.success() {
                    return Err(PrepareError::Package("unzip failed".into()));
                }
            }
            dir
        };
        let text = std::fs::read_to_string(root.join("agent.yaml"))
            .map_err(|e| PrepareError::Package(format!("agent.yaml: {e}")))?;
        let y: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
            .map_err(|e| PrepareError::Package(format!("agent.yaml: {e}")))?;
        let md = y.get("metadata").cloned().unwrap_or_default();
        let sub_agents = md
            .get("sub_agents")
            .and_then(|v| v.as_sequence())
            .map(|seq| {
                seq.iter()
                    .map(|a| SubAgent {
                        name: s(a, "name").unwrap_or_default(),
                        description: s(a, "description"),
                        public: a.get("public").and_then(|p| p.as_bool()).unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let env: BTreeMap<String, String> = y
            .get("environment")
            .and_then(|e| e.as_mapping())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let a2a = y.get("a2a").map(|a| A2a {
            entry: entry(s(a, "entry").or_else(|| s(a, "service"))),
            http_server: entry(s(a, "http_server")),
        });
        let manifest = Manifest {
            name: s(&y, "name").unwrap_or_default(),
            version: s(&y, "version"),
            display_name: s(&y, "display_name"),
            description: s(&y, "description"),
            author: s(&y, "author"),
            license: s(&y, "license"),
            entrypoint: entry(s(&y, "entrypoint")),
            runtime: s(&y, "runtime").unwrap_or_else(|| "python3.11".into()),
            environment: env.clone(),
            dependencies: vec![],
            capabilities: y
                .get("capabilities")
                .and_then(|c| c.as_sequence())
                .map(|c| {
                    c.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            metadata: Metadata {
                version: s(&md, "version"),
                sub_agents,
                ..Default::default()
            },
            a2a,
            rest: y
                .get("rest")
                .and_then(|r| entry(s(r, "entry")))
                .map(|entry| Rest { entry }),
            ui: y.get("ui").map(|u| Ui {
                path: s(u, "path").unwrap_or_default(),
                base_path: s(u, "basePath").unwrap_or_else(|| "/".into()),
            }),
            http_server: entry(s(&y, "http_server")),
            extra: Default::default(),
            warnings: vec![],
        };
        let mut full_env = BTreeMap::new();
        if let Ok(dotenv) = std::fs::read_to_string(root.join(".env")) {
            for line in dotenv.lines() {
                let line = line.trim();
                if line.starts_with('#') || line.is_empty() {
                    continue;
                }
                if let Some((k, v)) = line.split_once('=') {
                    full_env.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
                }
            }
        }
        full_env.extend(env);
        let python = if root.join("requirements.txt").exists() {
            let reqs = std::fs::read(root.join("requirements.txt")).unwrap_or_default();
            let h = format!(
                "{:x}",
                reqs.iter()
                    .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(*b as u64))
            );
            let venv = home.join("shim-envs").join(h);
            let py = venv.join("bin/python");
            if !py.exists() {
                let tmp = venv.with_extension("tmp");
                let _ = std::fs::remove_dir_all(&tmp);
                let ok = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&tmp)
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
                    && Command::new(tmp.join("bin/pip"))
                        .args(["install", "-q", "-r"])
                        .arg(root.join("requirements.txt"))
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false);
                if !ok {
                    return Err(PrepareError::Environment("pip install failed".into()));
                }
                std::fs::rename(&tmp, &venv)
                    .map_err(|e| PrepareError::Environment(e.to_string()))?;
            }
            py
        } else {
            PathBuf::from("python3")
        };
        let sha256 = String::new();
        Ok(Prepared {
            package: LoadedPackage {
                root,
                sha256,
                manifest,
            },
            python,
            env: full_env,
        })
    }
}
