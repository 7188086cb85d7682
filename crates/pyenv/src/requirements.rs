//! Where a package's Python requirements come from (`requirements.txt`,
//! `pyproject.toml`, manifest `dependencies`) and the hash that names their environment.

use std::fs;
use std::path::{Path, PathBuf};

use par_package::LoadedPackage;
use sha2::{Digest, Sha256};

use crate::error::EnvError;

/// What to install, and where it was declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// `requirements.txt` to pass with `-r` (the installer handles its options).
    pub file: Option<PathBuf>,
    /// Requirement strings passed as arguments.
    pub args: Vec<String>,
    /// Normalised lines of everything above: what the hash covers.
    pub normalized: Vec<String>,
    /// Human description of the source, for logs.
    pub source: &'static str,
    /// Some requirement is built from the package's own files (a path, an
    /// option such as `-r`/`-e`/`--find-links`, a `file:` URL): the same
    /// lines in two packages are not the same environment.
    pub local: bool,
}

impl Requirements {
    pub fn is_empty(&self) -> bool {
        self.normalized.is_empty()
    }

    /// Hex sha256 over the sorted normalised requirements and the Python
    /// version, and the package's own sha256 when a requirement is local.
    pub fn hash(&self, python_version: &str, package_sha256: &str) -> String {
        let mut h = Sha256::new();
        h.update(format!("python={python_version}\n"));
        if self.local {
            h.update(format!("package={package_sha256}\n"));
        }
        for line in &self.normalized {
            h.update(line.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }
}

fn normalize(line: &str) -> Option<String> {
    let line = match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    };
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some(line.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Whether a normalised line names something inside the package rather
/// than a distribution on an index (conservatively: any option, any path).
fn is_local(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    line.starts_with(['.', '/', '~', '-'])
        || lower.contains("file:")
        || (line.contains('/') && !line.contains("://"))
}

fn mentions(normalized: &[String], package: &str) -> bool {
    normalized.iter().any(|l| {
        let name: String = l
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        name.to_ascii_lowercase().replace('_', "-") == package
    })
}

/// Collects the package's requirements: `requirements.txt`, else `pyproject.toml`
/// `[project].dependencies`, else manifest `dependencies`; plus `fastapi` when a
/// REST surface needs an app to mount on and nothing above brings it.
pub fn collect(pkg: &LoadedPackage) -> Result<Requirements, EnvError> {
    let root = &pkg.root;
    let req_txt = root.join("requirements.txt");
    let pyproject = root.join("pyproject.toml");
    let mut reqs = if req_txt.is_file() {
        let text = read(&req_txt)?;
        let normalized: Vec<String> = text.lines().filter_map(normalize).collect();
        Requirements {
            file: (!normalized.is_empty()).then_some(req_txt),
            args: Vec::new(),
            normalized,
            source: "requirements.txt",
            local: false,
        }
    } else if pyproject.is_file() {
        let args = pyproject_dependencies(&pyproject)?;
        Requirements {
            file: None,
            normalized: args.iter().filter_map(|a| normalize(a)).collect(),
            args,
            source: "pyproject.toml",
            local: false,
        }
    } else {
        let args = pkg.manifest.dependencies.clone();
        Requirements {
            file: None,
            normalized: args.iter().filter_map(|a| normalize(a)).collect(),
            args,
            source: "agent.yaml dependencies",
            local: false,
        }
    };
    if pkg.manifest.rest.is_some() && !mentions(&reqs.normalized, "fastapi") {
        reqs.args.push("fastapi".into());
        reqs.normalized.push("fastapi".into());
    }
    reqs.normalized.sort();
    reqs.normalized.dedup();
    reqs.local = reqs.normalized.iter().any(|l| is_local(l));
    Ok(reqs)
}

fn read(path: &Path) -> Result<String, EnvError> {
    fs::read_to_string(path).map_err(|source| EnvError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pyproject_dependencies(path: &Path) -> Result<Vec<String>, EnvError> {
    let bad = |message: String| EnvError::BadPyproject {
        path: path.to_path_buf(),
        message,
    };
    let doc: toml::Table = read(path)?
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    let Some(project) = doc.get("project") else {
        return Ok(Vec::new());
    };
    let Some(deps) = project.get("dependencies") else {
        return Ok(Vec::new());
    };
    let list = deps
        .as_array()
        .ok_or_else(|| bad("project.dependencies: expected a list of strings".into()))?;
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("project.dependencies[{i}]: expected a string")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_ignores_comments_blank_lines_and_spacing() {
        assert_eq!(
            normalize("  six  ==  1.16 # pinned"),
            Some("six == 1.16".into())
        );
        assert_eq!(normalize("# comment"), None);
        assert_eq!(normalize("   "), None);
        assert!(mentions(&["FastAPI>=0.1".into()], "fastapi"));
        assert!(!mentions(&["fastapi-utils".into()], "fastapi"));
    }

    #[test]
    fn hash_depends_on_content_and_python_not_order() {
        let a = Requirements {
            file: None,
            args: vec![],
            normalized: vec!["a".into(), "b".into()],
            source: "x",
            local: false,
        };
        assert_eq!(a.hash("3.11", "p"), a.clone().hash("3.11", "p"));
        assert_ne!(a.hash("3.11", "p"), a.hash("3.12", "p"));
        assert_eq!(a.hash("3.11", "p"), a.hash("3.11", "q"), "index only");
        let mut b = a.clone();
        b.normalized.push("c".into());
        assert_ne!(a.hash("3.11", "p"), b.hash("3.11", "p"));
        b.local = true;
        assert_ne!(
            b.hash("3.11", "p"),
            b.hash("3.11", "q"),
            "local: per package"
        );
    }

    #[test]
    fn paths_options_and_file_urls_are_local() {
        for l in [
            "./evil",
            "lib/x",
            "/abs/w.whl",
            "-e .",
            "-r more.txt",
            "--find-links wheels",
            "x @ file:///w",
        ] {
            assert!(is_local(l), "{l}");
        }
        for l in [
            "six == 1.16",
            "fastapi>=0.1",
            "x @ https://example.com/x.whl",
            "y[extra]; python_version > '3'",
        ] {
            assert!(!is_local(l), "{l}");
        }
    }
}
