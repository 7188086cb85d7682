//! Building an APKG from a source folder, in the layout pixell-kit writes: a zip
//! with entries without `./`, explicit folder entries, `agent.yaml` at the root and
//! `.pixell/package.json`. Output is deterministic (sorted entries, fixed
//! timestamps), so the same content always gives the same sha256.

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use zip::write::SimpleFileOptions;

use crate::error::PackageError;
use crate::manifest::{limits::MAX_MANIFEST_BYTES, Manifest};

/// Folder and file names never packed (caches, VCS, local environments; the
/// source's own `.pixell/` may hold API keys and is replaced by ours).
const SKIPPED_NAMES: &[&str] = &[
    "__pycache__",
    ".git",
    ".venv",
    "venv",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".DS_Store",
    ".pixell",
    "node_modules",
];

/// What [`pack`] produced.
#[derive(Debug, Clone)]
pub struct PackSummary {
    pub manifest: Manifest,
    pub entries: usize,
    pub bytes: u64,
    pub sha256: String,
}

/// Limits applied while packing, so that the result is loadable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PackLimits {
    pub max_entries: usize,
    pub max_total_bytes: u64,
}

/// Packs `dir` into `out` (written to a temp file next to it, then renamed).
/// `created_at` in `.pixell/package.json` is `$SOURCE_DATE_EPOCH` when set, else now.
/// Files are streamed into the archive; none is held whole in memory. A
/// symbolic link that resolves outside `dir` is refused.
pub fn pack(dir: &Path, out: &Path) -> Result<PackSummary, PackageError> {
    let created = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|s| UNIX_EPOCH + std::time::Duration::from_secs(s))
        .unwrap_or_else(SystemTime::now);
    let defaults = crate::LoadOptions::default();
    let limits = PackLimits {
        max_entries: defaults.max_entries,
        max_total_bytes: defaults.max_total_bytes,
    };
    let skip = fs::canonicalize(out).ok();
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = out
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package.apkg".into());
    let tmp = parent.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let packed =
        pack_to_file(dir, &tmp, created, limits, skip.as_deref(), true).and_then(|packed| {
            let sha256 = crate::sha256_file(&tmp)?;
            let bytes = fs::metadata(&tmp)
                .map_err(|source| PackageError::Read {
                    path: tmp.clone(),
                    source,
                })?
                .len();
            fs::rename(&tmp, out).map_err(|source| PackageError::Write {
                path: out.to_path_buf(),
                source,
            })?;
            Ok((packed, sha256, bytes))
        });
    let (packed, sha256, bytes) = packed.inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(PackSummary {
        manifest: packed.0,
        entries: packed.1,
        bytes,
        sha256,
    })
}

/// Packs `dir` into a new file at `path` (created or truncated): the manifest
/// and the number of entries. `skip` is a file (the output) never to include;
/// `durable` flushes the file to disk (for an archive that outlives us).
pub(crate) fn pack_to_file(
    dir: &Path,
    path: &Path,
    created: SystemTime,
    limits: PackLimits,
    skip: Option<&Path>,
    durable: bool,
) -> Result<(Manifest, usize), PackageError> {
    let file = fs::File::create(path).map_err(|source| PackageError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    // The archive being written is never packed into itself.
    let own = fs::canonicalize(path).ok();
    let skip: Vec<&Path> = skip.into_iter().chain(own.as_deref()).collect();
    let (file, manifest, entries) =
        pack_to_writer(dir, io::BufWriter::new(file), created, limits, &skip)?;
    let file = file.into_inner().map_err(|e| PackageError::Write {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    if durable {
        file.sync_all().map_err(|source| PackageError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok((manifest, entries))
}

/// One file or folder to pack.
struct Item {
    /// Path inside the package.
    rel: PathBuf,
    is_dir: bool,
    executable: bool,
    /// What to open: the path itself, or where the symbolic link points.
    open: PathBuf,
    /// Device and inode seen by the walk: the file opened must be the same.
    id: Option<(u64, u64)>,
}

/// Packs `dir` into `w`, streaming each file.
fn pack_to_writer<W: Write + Seek>(
    dir: &Path,
    w: W,
    created: SystemTime,
    limits: PackLimits,
    skip: &[&Path],
) -> Result<(W, Manifest, usize), PackageError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PackageError::Read { path, source }
    };
    let manifest_path = dir.join("agent.yaml");
    if !manifest_path.is_file() {
        return Err(PackageError::NoManifest);
    }
    let root = fs::canonicalize(dir).map_err(read_err(dir))?;

    // The walk first: it refuses links out of the folder, agent.yaml included.
    let mut items = Vec::new();
    walk(dir, &root, Path::new(""), skip, &mut items)?;
    if items.len() + 1 > limits.max_entries {
        return Err(PackageError::TooManyEntries {
            count: items.len() + 1,
            limit: limits.max_entries,
        });
    }

    let manifest_file = dir.join("agent.yaml");
    let mut yaml = String::new();
    fs::File::open(&manifest_file)
        .and_then(|f| {
            f.take(MAX_MANIFEST_BYTES as u64 + 1)
                .read_to_string(&mut yaml)
        })
        .map_err(read_err(&manifest_file))?;
    let manifest = Manifest::parse(&yaml, &manifest_path.display().to_string())?;

    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::DEFAULT)
        .large_file(false);
    let mut zw = zip::ZipWriter::new(w);
    let mut total: u64 = 0;
    for item in &items {
        let name = zip_name(&item.rel);
        if item.is_dir {
            zw.add_directory(format!("{name}/"), opts.unix_permissions(0o755))
                .map_err(PackageError::Zip)?;
            continue;
        }
        let path = dir.join(&item.rel);
        let file = fs::File::open(&item.open).map_err(read_err(&path))?;
        let meta = file.metadata().map_err(read_err(&path))?;
        if item.id.is_some() && file_id(&meta) != item.id {
            return Err(PackageError::ChangedWhilePacking { path });
        }
        let mode = if item.executable { 0o755 } else { 0o644 };
        let large = meta.len() >= u64::from(u32::MAX) / 2;
        zw.start_file(name, opts.unix_permissions(mode).large_file(large))
            .map_err(PackageError::Zip)?;
        let left = limits.max_total_bytes - total;
        let n = io::copy(&mut file.take(left.saturating_add(1)), &mut zw).map_err(|source| {
            PackageError::Write {
                path: path.clone(),
                source,
            }
        })?;
        total += n;
        if total > limits.max_total_bytes {
            return Err(PackageError::TooLarge {
                size: total,
                limit: limits.max_total_bytes,
            });
        }
    }

    let meta = serde_json::json!({
        "format_version": "1.0",
        "created_by": "par",
        "created_at": rfc3339(created),
        "manifest": Manifest::yaml_to_json(&yaml).unwrap_or(serde_json::Value::Null),
    });
    let meta_text = serde_json::to_string_pretty(&meta).unwrap_or_default();
    zw.add_directory(".pixell/", opts.unix_permissions(0o755))
        .map_err(PackageError::Zip)?;
    zw.start_file(".pixell/package.json", opts.unix_permissions(0o644))
        .map_err(PackageError::Zip)?;
    zw.write_all(meta_text.as_bytes())
        .map_err(|source| PackageError::Write {
            path: PathBuf::from(".pixell/package.json"),
            source,
        })?;
    let entries = items.len() + 2;
    let w = zw.finish().map_err(PackageError::Zip)?;
    Ok((w, manifest, entries))
}

fn zip_name(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(unix)]
fn file_id(meta: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// Sorted depth-first walk of `root_dir` (canonically `root`). A symbolic link
/// that resolves outside the folder is an error; one to a file inside is
/// packed by its content; one to a folder is skipped (no loops); a dangling
/// one is skipped.
fn walk(
    root_dir: &Path,
    root: &Path,
    rel: &Path,
    skip: &[&Path],
    out: &mut Vec<Item>,
) -> Result<(), PackageError> {
    let here = root_dir.join(rel);
    let read_err = |source| PackageError::Read {
        path: here.clone(),
        source,
    };
    let mut names: Vec<_> = fs::read_dir(&here)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    names.sort();
    for name in names {
        let name_str = name.to_string_lossy();
        if SKIPPED_NAMES.contains(&name_str.as_ref()) || name_str.ends_with(".pyc") {
            continue;
        }
        let child_rel = rel.join(&name);
        let path = root_dir.join(&child_rel);
        let link_meta = fs::symlink_metadata(&path).map_err(|source| PackageError::Read {
            path: path.clone(),
            source,
        })?;
        let mut open = path.clone();
        if link_meta.file_type().is_symlink() {
            let Ok(resolved) = fs::canonicalize(&path) else {
                continue; // dangling or a loop: nothing to pack
            };
            if !resolved.starts_with(root) {
                return Err(PackageError::SymlinkEscape {
                    target: fs::read_link(&path).unwrap_or_else(|_| resolved.clone()),
                    link: path,
                    resolved,
                    root: root.to_path_buf(),
                });
            }
            match fs::metadata(&resolved) {
                Ok(m) if m.is_file() => open = resolved,
                _ => continue,
            }
        }
        let meta = fs::metadata(&open).map_err(|source| PackageError::Read {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            out.push(Item {
                rel: child_rel.clone(),
                is_dir: true,
                executable: false,
                open,
                id: None,
            });
            walk(root_dir, root, &child_rel, skip, out)?;
        } else if meta.is_file() {
            if !skip.is_empty() {
                let canonical = fs::canonicalize(&path).ok();
                if skip.iter().any(|s| canonical.as_deref() == Some(*s)) {
                    continue;
                }
            }
            out.push(Item {
                rel: child_rel,
                is_dir: false,
                executable: is_executable(&meta),
                open,
                id: file_id(&meta),
            });
        }
    }
    Ok(())
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &fs::Metadata) -> bool {
    false
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) without a date library.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_709_251_199);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59Z");
    }
}
