//! APKG packages: the typed manifest, safe extraction into a content-addressed
//! cache, packing a source folder, and the agent's merged environment.
//!
//! This crate knows no HTTP and no async runtime: it is used by the worker,
//! the CLI (`par pack`, `par inspect`) and the package fetcher alike.
//!
//! ```ignore
//! let pkg = par_package::load(Path::new("x.apkg"), &LoadOptions::default())?;
//! pkg.root        // extracted folder: $PAR_HOME/packages/<sha256>/
//! pkg.sha256      // hex sha256 of the archive bytes
//! pkg.manifest    // Manifest
//! pkg.package_id()// "name@metadata.version"
//! pkg.environment()// .env merged with manifest `environment` (manifest wins)
//! pkg.ui_dir()    // folder of the UI's static files, if any
//! ```

mod cache;
mod dotenv;
mod error;
mod extract;
pub mod limits;
pub mod manifest;
mod pack;

pub use cache::{keep_unused_from_env, mark_used, sweep_packages, SweepReport};
pub use dotenv::parse_dotenv;
pub use error::PackageError;
pub use manifest::{FieldError, Manifest, ManifestErrors, Surfaces};
pub use pack::{pack, PackSummary};

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Default cache root when `$PAR_HOME` is not set.
pub const DEFAULT_HOME: &str = "/tmp/pixell-runtime";

/// Limits and locations used when loading a package.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Cache root; packages go to `<home>/packages/<sha256>/`. Default: `$PAR_HOME` or `/tmp/pixell-runtime`.
    pub home: PathBuf,
    /// Expected SHA-256 (hex) of the archive; refused on mismatch.
    pub sha256: Option<String>,
    /// Most entries (files and folders) an archive may hold. Default 10,000
    /// (`PAR_PACKAGE_MAX_ENTRIES`).
    pub max_entries: usize,
    /// Most bytes an archive may expand to, declared and actually inflated.
    /// Default 1 GiB (`PAR_PACKAGE_MAX_BYTES`).
    pub max_total_bytes: u64,
    /// Highest uncompressed:compressed ratio, of each entry of 1 MiB or more
    /// and of the whole archive once it expands past 1 MiB. Default 200
    /// (`PAR_PACKAGE_MAX_RATIO`).
    pub max_ratio: u64,
}

/// `$PAR_HOME`, else [`DEFAULT_HOME`].
fn home_from_env() -> PathBuf {
    std::env::var_os("PAR_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_HOME))
}

impl Default for LoadOptions {
    /// [`LoadOptions::from_env`]; a limit variable with an invalid value is
    /// logged and its default used instead (call `from_env` to refuse it).
    fn default() -> Self {
        LoadOptions::from_env().unwrap_or_else(|e| {
            tracing::error!(error = %e, "package limits: using the defaults");
            LoadOptions::builtin()
        })
    }
}

impl LoadOptions {
    /// The built-in limits and `$PAR_HOME`, whatever the limit variables say.
    pub fn builtin() -> Self {
        LoadOptions {
            home: home_from_env(),
            sha256: None,
            max_entries: limits::DEFAULT_MAX_ENTRIES,
            max_total_bytes: limits::DEFAULT_MAX_TOTAL_BYTES,
            max_ratio: limits::DEFAULT_MAX_RATIO,
        }
    }

    /// `$PAR_HOME` and the operator's limits: `PAR_PACKAGE_MAX_ENTRIES` (a
    /// count), `PAR_PACKAGE_MAX_BYTES` (bytes, or with a K/M/G/T suffix, powers
    /// of 1024) and `PAR_PACKAGE_MAX_RATIO`; unset or empty means the default.
    /// An invalid value is an error naming the variable.
    pub fn from_env() -> Result<Self, PackageError> {
        let (max_entries, max_total_bytes, max_ratio) = limits::from_env()?;
        Ok(LoadOptions {
            max_entries,
            max_total_bytes,
            max_ratio,
            ..LoadOptions::builtin()
        })
    }
}

impl LoadOptions {
    pub fn with_home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = home.into();
        self
    }
    pub fn with_sha256(mut self, sha256: Option<impl Into<String>>) -> Self {
        self.sha256 = sha256.map(Into::into);
        self
    }
    pub fn with_max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }
    pub fn with_max_total_bytes(mut self, n: u64) -> Self {
        self.max_total_bytes = n;
        self
    }
    pub fn with_max_ratio(mut self, n: u64) -> Self {
        self.max_ratio = n;
        self
    }
    /// `<home>/packages`: the only place [`load`] writes to.
    pub fn packages_dir(&self) -> PathBuf {
        self.home.join("packages")
    }
}

/// A package extracted into the cache with its parsed manifest.
#[derive(Debug, Clone)]
pub struct LoadedPackage {
    pub root: PathBuf,
    pub sha256: String,
    pub manifest: Manifest,
}

impl LoadedPackage {
    /// `name@version` (`metadata.version` when present, else top-level `version`).
    pub fn package_id(&self) -> String {
        self.manifest.package_id()
    }

    /// `.env` merged with the manifest's `environment` (the manifest wins).
    /// Values may be secrets: callers must not log them.
    pub fn environment(&self) -> Result<Environment, PackageError> {
        let path = self.root.join(".env");
        let mut env = match fs::read(&path) {
            Ok(bytes) => {
                let (vars, bad) = parse_dotenv(&String::from_utf8_lossy(&bytes));
                if !bad.is_empty() {
                    tracing::warn!(
                        package = %self.package_id(),
                        lines = ?bad,
                        ".env lines that are not KEY=VALUE were ignored"
                    );
                }
                vars
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(PackageError::Read { path, source }),
        };
        env.extend(
            self.manifest
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        Ok(env)
    }

    /// The UI's static files: `ui.path`, else pixell-kit 0.4's `dist/<ui.path>`.
    /// `None` when the manifest has no UI or neither folder exists.
    pub fn ui_dir(&self) -> Option<PathBuf> {
        let ui = self.manifest.ui.as_ref()?;
        let rel = ui.path.trim_matches('/');
        let direct = if rel.is_empty() || rel == "." {
            self.root.clone()
        } else {
            self.root.join(rel)
        };
        if direct.is_dir() {
            return Some(direct);
        }
        let dist = self.root.join("dist").join(rel);
        dist.is_dir().then_some(dist)
    }
}

/// Loads a local `.apkg` file or a source folder (packed on the fly,
/// deterministically): verifies the sha256 when one is expected, extracts into
/// `<home>/packages/<sha256>/` (reused when already there) and parses `agent.yaml`.
pub fn load(source: &Path, opts: &LoadOptions) -> Result<LoadedPackage, PackageError> {
    let expected = match &opts.sha256 {
        Some(s) => {
            let s = s.trim().to_ascii_lowercase();
            if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(PackageError::BadSha256(s));
            }
            Some(s)
        }
        None => None,
    };
    let meta = fs::metadata(source).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            PackageError::NotFound(source.to_path_buf())
        } else {
            PackageError::Read {
                path: source.to_path_buf(),
                source: e,
            }
        }
    })?;
    let source_name = source.display().to_string();
    if !meta.is_dir() && !meta.is_file() {
        return Err(PackageError::BadSource(source.to_path_buf()));
    }
    let packages = opts.packages_dir();
    fs::create_dir_all(&packages).map_err(|source| PackageError::Write {
        path: packages.clone(),
        source,
    })?;
    // Held until the package folder is marked used: no sweep meanwhile.
    let _lock = cache::CacheLock::shared(&packages);
    let loaded = if meta.is_dir() {
        // Packed to a temp file in the cache (streamed, never whole in memory).
        let tmp = TempFile::new(&packages, "pack");
        let limits = pack::PackLimits {
            max_entries: opts.max_entries,
            max_total_bytes: opts.max_total_bytes,
        };
        pack::pack_to_file(source, &tmp.0, std::time::UNIX_EPOCH, limits, None, false)?;
        load_file(&tmp.0, &source_name, expected, opts)?
    } else {
        load_file(source, &source_name, expected, opts)?
    };
    cache::mark_used(&loaded.root);
    Ok(loaded)
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    /// `<dir>/.tmp-<what>-<pid>-<n>.apkg` (not created).
    fn new(dir: &Path, what: &str) -> TempFile {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        TempFile(dir.join(format!(
            "{}{what}-{}-{}.apkg",
            extract::TMP_PREFIX,
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Hashes the archive at `path`, then checks, extracts and parses it.
fn load_file(
    path: &Path,
    source_name: &str,
    expected: Option<String>,
    opts: &LoadOptions,
) -> Result<LoadedPackage, PackageError> {
    let read_err = |e| PackageError::Read {
        path: path.to_path_buf(),
        source: e,
    };
    let mut file = fs::File::open(path).map_err(read_err)?;
    let sha256 = sha256_reader(&mut file).map_err(read_err)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    load_archive(file, source_name, sha256, expected, opts)
}

fn load_archive<R: Read + Seek>(
    mut archive: R,
    source_name: &str,
    sha256: String,
    expected: Option<String>,
    opts: &LoadOptions,
) -> Result<LoadedPackage, PackageError> {
    if let Some(expected) = expected {
        if expected != sha256 {
            return Err(PackageError::Sha256Mismatch {
                source_name: source_name.to_string(),
                expected,
                actual: sha256,
            });
        }
    }
    // Parse the manifest before extracting: a bad package never reaches the cache.
    let manifest = read_entry_manifest(&mut archive, source_name)?.0;
    archive
        .seek(SeekFrom::Start(0))
        .map_err(|source| PackageError::Read {
            path: PathBuf::from(source_name),
            source,
        })?;
    let (root, fresh) = extract::extract_cached(archive, source_name, &sha256, opts)?;
    tracing::info!(
        package = %manifest.package_id(),
        sha256 = %sha256,
        root = %root.display(),
        cached = !fresh,
        "package loaded"
    );
    Ok(LoadedPackage {
        root,
        sha256,
        manifest,
    })
}

/// What `par inspect` shows: a package read without extracting it anywhere.
#[derive(Debug, Clone)]
pub struct PackageInfo {
    /// sha256 of the archive (of the deterministic pack for a folder).
    pub sha256: String,
    pub manifest: Manifest,
    /// Entries in the archive (files and folders).
    pub entries: usize,
    pub archive_bytes: u64,
    /// Requirement lines of `requirements.txt`, when the package has one.
    pub requirements_txt: Option<Vec<String>>,
}

/// Reads a package's manifest and facts without writing anything.
pub fn inspect(source: &Path) -> Result<PackageInfo, PackageError> {
    let meta = fs::metadata(source).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            PackageError::NotFound(source.to_path_buf())
        } else {
            PackageError::Read {
                path: source.to_path_buf(),
                source: e,
            }
        }
    })?;
    let name = source.display().to_string();
    let tmp;
    let path = if meta.is_dir() {
        tmp = TempFile::new(&std::env::temp_dir(), "par-inspect");
        let d = LoadOptions::default();
        let limits = pack::PackLimits {
            max_entries: d.max_entries,
            max_total_bytes: d.max_total_bytes,
        };
        pack::pack_to_file(source, &tmp.0, std::time::UNIX_EPOCH, limits, None, false)?;
        tmp.0.as_path()
    } else {
        source
    };
    let read_err = |e| PackageError::Read {
        path: source.to_path_buf(),
        source: e,
    };
    let mut file = fs::File::open(path).map_err(read_err)?;
    let sha256 = sha256_reader(&mut file).map_err(read_err)?;
    let archive_bytes = file.seek(SeekFrom::End(0)).map_err(read_err)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let (manifest, entries, requirements_txt) = read_entry_manifest(&mut file, &name)?;
    Ok(PackageInfo {
        sha256,
        manifest,
        entries,
        archive_bytes,
        requirements_txt,
    })
}

/// Reads a small text entry, refusing one larger than `limit`.
fn read_small_entry<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    source_name: &str,
    limit: u64,
) -> Result<Option<String>, PackageError> {
    match zip.by_name(name) {
        Ok(mut entry) => {
            if entry.size() > limit {
                return Err(PackageError::EntryTooLarge {
                    name: name.into(),
                    size: entry.size(),
                    limit,
                });
            }
            let mut bytes = Vec::new();
            entry
                .by_ref()
                .take(limit + 1)
                .read_to_end(&mut bytes)
                .map_err(|source| PackageError::Entry {
                    name: name.into(),
                    source,
                })?;
            if bytes.len() as u64 > limit {
                return Err(PackageError::EntryTooLarge {
                    name: name.into(),
                    size: bytes.len() as u64,
                    limit,
                });
            }
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        Err(zip::result::ZipError::FileNotFound) => Ok(None),
        Err(source) => Err(PackageError::NotZip {
            source_name: source_name.to_string(),
            source,
        }),
    }
}

/// The parsed `agent.yaml`, the entry count and `requirements.txt` lines of an archive.
fn read_entry_manifest<R: Read + Seek>(
    archive: &mut R,
    source_name: &str,
) -> Result<(Manifest, usize, Option<Vec<String>>), PackageError> {
    let mut zip = zip::ZipArchive::new(archive).map_err(|source| PackageError::NotZip {
        source_name: source_name.to_string(),
        source,
    })?;
    let file_name = format!("agent.yaml in {source_name}");
    let limit = manifest::limits::MAX_MANIFEST_BYTES as u64;
    let yaml = match read_small_entry(&mut zip, "agent.yaml", source_name, limit) {
        Err(PackageError::EntryTooLarge { size, .. }) => {
            return Err(Manifest::too_large(size, &file_name).into())
        }
        other => other?.ok_or(PackageError::NoManifest)?,
    };
    let manifest = Manifest::parse(&yaml, &file_name)?;
    let reqs = read_small_entry(&mut zip, "requirements.txt", source_name, 1 << 20)?.map(|t| {
        t.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    });
    Ok((manifest, zip.len(), reqs))
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex SHA-256 of a file's content.
pub fn sha256_file(path: &Path) -> Result<String, PackageError> {
    let mut f = fs::File::open(path).map_err(|source| PackageError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    sha256_reader(&mut f).map_err(|source| PackageError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn sha256_reader(r: &mut impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    std::io::copy(r, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

pub type Environment = BTreeMap<String, String>;
