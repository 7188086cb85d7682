//! Building an APKG from a source folder, in the layout pixell-kit writes: a zip
//! with entries without `./`, explicit folder entries, `agent.yaml` at the root and
//! `.pixell/package.json`. Output is deterministic (sorted entries, fixed
//! timestamps), so the same content always gives the same sha256.

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use zip::write::SimpleFileOptions;

use crate::error::PackageError;
use crate::manifest::Manifest;

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
    let (bytes, manifest, entries) = pack_to_vec(dir, created, limits, skip.as_deref())?;
    let sha256 = crate::sha256_hex(&bytes);
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = out
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package.apkg".into());
    let tmp = parent.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PackageError::Write { path, source }
    };
    fs::write(&tmp, &bytes).map_err(write_err(&tmp))?;
    fs::rename(&tmp, out).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        PackageError::Write {
            path: out.to_path_buf(),
            source: e,
        }
    })?;
    Ok(PackSummary {
        manifest,
        entries,
        bytes: bytes.len() as u64,
        sha256,
    })
}

/// Packs `dir` in memory. `skip` is a file (the output) never to include.
pub(crate) fn pack_to_vec(
    dir: &Path,
    created: SystemTime,
    limits: PackLimits,
    skip: Option<&Path>,
) -> Result<(Vec<u8>, Manifest, usize), PackageError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PackageError::Read { path, source }
    };
    let manifest_path = dir.join("agent.yaml");
    if !manifest_path.is_file() {
        return Err(PackageError::NoManifest);
    }
    let yaml = fs::read_to_string(&manifest_path).map_err(read_err(&manifest_path))?;
    let manifest = Manifest::parse(&yaml, &manifest_path.display().to_string())?;

    let mut files = Vec::new();
    walk(dir, Path::new(""), skip, &mut files)?;
    if files.len() + 1 > limits.max_entries {
        return Err(PackageError::TooManyEntries {
            count: files.len() + 1,
            limit: limits.max_entries,
        });
    }

    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::DEFAULT);
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let mut total: u64 = 0;
    for (rel, is_dir, exec) in &files {
        let name = zip_name(rel);
        if *is_dir {
            zw.add_directory(format!("{name}/"), opts.unix_permissions(0o755))
                .map_err(PackageError::Zip)?;
            continue;
        }
        let path = dir.join(rel);
        let data = fs::read(&path).map_err(read_err(&path))?;
        total += data.len() as u64;
        if total > limits.max_total_bytes {
            return Err(PackageError::TooLarge {
                limit: limits.max_total_bytes,
            });
        }
        let mode = if *exec { 0o755 } else { 0o644 };
        zw.start_file(name, opts.unix_permissions(mode))
            .map_err(PackageError::Zip)?;
        zw.write_all(&data).map_err(|source| PackageError::Write {
            path: path.clone(),
            source,
        })?;
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
    let entries = files.len() + 2;
    let bytes = zw.finish().map_err(PackageError::Zip)?.into_inner();
    Ok((bytes, manifest, entries))
}

fn zip_name(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Sorted depth-first walk: `(relative path, is_dir, executable)`. Symlinked
/// files are packed by content; symlinked folders are skipped (no loops, no escape).
fn walk(
    root: &Path,
    rel: &Path,
    skip: Option<&Path>,
    out: &mut Vec<(PathBuf, bool, bool)>,
) -> Result<(), PackageError> {
    let here = root.join(rel);
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
        let path = root.join(&child_rel);
        let link_meta = fs::symlink_metadata(&path).map_err(|source| PackageError::Read {
            path: path.clone(),
            source,
        })?;
        if link_meta.file_type().is_symlink() {
            match fs::metadata(&path) {
                Ok(m) if m.is_file() => {}
                _ => continue,
            }
        }
        let meta = fs::metadata(&path).map_err(|source| PackageError::Read {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            out.push((child_rel.clone(), true, false));
            walk(root, &child_rel, skip, out)?;
        } else if meta.is_file() {
            if let Some(skip) = skip {
                if fs::canonicalize(&path).ok().as_deref() == Some(skip) {
                    continue;
                }
            }
            out.push((child_rel, false, is_executable(&meta)));
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
