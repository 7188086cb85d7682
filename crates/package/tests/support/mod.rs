//! What the package tests share: a scratch world with a cache and a sources
//! folder, and the smallest valid manifest.
#![allow(dead_code)] // each test file uses its own part

use std::fs;
use std::path::{Path, PathBuf};

use par_package::{load, LoadOptions, PackageError};
use zip::write::SimpleFileOptions;

/// The smallest valid `agent.yaml`.
pub const MANIFEST: &str = "name: hostile\nentrypoint: main:handler\n";

/// Deflated zip entries.
pub fn deflated() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated)
}

/// A scratch folder: the cache lives at `home/`, sources at `src/`.
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        let w = World {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(w.src()).unwrap();
        w
    }
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    pub fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }
    /// Built-in limits (never the environment's) and this world's cache.
    pub fn opts(&self) -> LoadOptions {
        LoadOptions::builtin().with_home(self.home())
    }
    /// What the cache holds besides its lock file, sorted.
    pub fn cached(&self) -> Vec<String> {
        package_entries(&self.home())
    }
    /// Writes `bytes` as an .apkg and loads it.
    pub fn load_bytes(&self, bytes: &[u8], opts: &LoadOptions) -> Result<PathBuf, PackageError> {
        let src = self.src().join("package.apkg");
        fs::write(&src, bytes).unwrap();
        load(&src, opts).map(|p| p.root)
    }
    /// Every path in the world outside `src/`, relative, sorted.
    pub fn written(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out.retain(|p| !p.starts_with("src"));
        out.sort();
        out
    }
}

/// The entries of a cache's packages folder but its lock file, sorted
/// (none when there is no such folder).
pub fn package_entries(home: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(home.join("packages"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".lock")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.strip_prefix(root).unwrap().display().to_string());
        if p.is_dir() && !p.is_symlink() {
            walk(root, &p, out);
        }
    }
}
