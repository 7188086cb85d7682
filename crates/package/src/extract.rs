//! Safe, atomic extraction of an APKG archive into the content-addressed cache.
//!
//! Every entry name is checked before anything is written (no absolute paths, no
//! `..`, no symlinks, entry count, declared sizes, the compression ratio of each
//! large entry and of the whole archive), then the bytes actually inflated are
//! counted again against the same limits, since declared sizes can lie. Files
//! go to a private temp folder inside the cache which is renamed into place; a
//! concurrent loader of the same package either wins the rename or finds the
//! finished folder and drops its own copy.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::PackageError;
use crate::limits::{expansion_budget, ARCHIVE_RATIO_FLOOR, ENTRY_RATIO_FLOOR};
use crate::LoadOptions;

/// Prefix of the private folders extractions are written to before the rename
/// (and of the archives folder sources are packed to).
pub(crate) const TMP_PREFIX: &str = ".tmp-";
/// A temp folder this old was left by a process that died mid-extraction.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Removes temp folders and files left behind by crashed loaders (best effort).
fn remove_stale_temp_dirs(packages: &Path) {
    let Ok(entries) = fs::read_dir(packages) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(TMP_PREFIX)
            && e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_AFTER);
        if stale {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::remove_dir_all(e.path());
            } else {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// A relative path made only of normal components, or why it is unsafe.
pub(crate) fn safe_relative_path(name: &str) -> Result<PathBuf, &'static str> {
    if name.contains('\0') {
        return Err("contains a NUL byte");
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Err("absolute path");
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err("absolute path (drive letter)");
    }
    let mut out = PathBuf::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err("path escapes the package (`..`)"),
            p => out.push(p),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("empty path");
    }
    Ok(out)
}

/// Extracts `archive` into `<home>/packages/<sha256>/` unless it is already there.
/// Returns the folder and whether it was freshly extracted.
pub(crate) fn extract_cached<R: Read + Seek>(
    archive: R,
    source_name: &str,
    sha256: &str,
    opts: &LoadOptions,
) -> Result<(PathBuf, bool), PackageError> {
    let packages = opts.home.join("packages");
    let target = packages.join(sha256);
    if target.is_dir() {
        return Ok((target, false));
    }
    fs::create_dir_all(&packages).map_err(|source| PackageError::Write {
        path: packages.clone(),
        source,
    })?;
    remove_stale_temp_dirs(&packages);
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = packages.join(format!(
        "{TMP_PREFIX}{}-{}-{}",
        &sha256[..16.min(sha256.len())],
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    if let Err(e) = extract_into(archive, source_name, &tmp, opts) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, &target) {
        Ok(()) => Ok((target, true)),
        // Another process finished the same package first: theirs is identical.
        Err(_) if target.is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok((target, false))
        }
        Err(source) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(PackageError::Write {
                path: target,
                source,
            })
        }
    }
}

/// The error for an archive of `archive_bytes` found to expand to `expands`
/// bytes, over `budget` (see [`expansion_budget`]): the total or the ratio.
fn over_budget(expands: u64, archive_bytes: u64, opts: &LoadOptions) -> PackageError {
    if expands > opts.max_total_bytes {
        PackageError::TooLarge {
            size: expands,
            limit: opts.max_total_bytes,
        }
    } else {
        PackageError::ArchiveRatioTooHigh {
            archive_bytes,
            expands,
            ratio: expands.div_ceil(archive_bytes.max(1)),
            limit: opts.max_ratio,
        }
    }
}

/// Checks every entry, then writes them under `dest` (which must not exist).
pub(crate) fn extract_into<R: Read + Seek>(
    mut archive: R,
    source_name: &str,
    dest: &Path,
    opts: &LoadOptions,
) -> Result<(), PackageError> {
    let not_zip = |source| PackageError::NotZip {
        source_name: source_name.to_string(),
        source,
    };
    let read_err = |source| PackageError::Read {
        path: PathBuf::from(source_name),
        source,
    };
    let archive_bytes = archive.seek(SeekFrom::End(0)).map_err(read_err)?;
    archive.seek(SeekFrom::Start(0)).map_err(read_err)?;
    // What the whole archive may expand to: the total limit, and the ratio
    // limit over the whole archive once past the floor (a bomb split into
    // many entries each under the per-entry floor is still a bomb).
    let budget = expansion_budget(archive_bytes, opts.max_ratio, opts.max_total_bytes);
    debug_assert!(budget >= ARCHIVE_RATIO_FLOOR.min(opts.max_total_bytes));

    let mut zip = zip::ZipArchive::new(archive).map_err(not_zip)?;
    if zip.len() > opts.max_entries {
        return Err(PackageError::TooManyEntries {
            count: zip.len(),
            limit: opts.max_entries,
        });
    }

    // First pass: metadata only, so a hostile archive is refused before any write.
    let mut plan = Vec::with_capacity(zip.len());
    let mut declared: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(not_zip)?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let rel = safe_relative_path(&name).map_err(|reason| PackageError::UnsafeEntry {
            name: name.clone(),
            reason,
        })?;
        if entry.is_symlink() {
            return Err(PackageError::UnsafeEntry {
                name,
                reason: "symbolic links are not allowed",
            });
        }
        let size = entry.size();
        // The entry's own ratio first: that error names the entry.
        if size >= ENTRY_RATIO_FLOOR {
            let ratio = size / entry.compressed_size().max(1);
            if ratio > opts.max_ratio {
                return Err(PackageError::RatioTooHigh {
                    name,
                    ratio,
                    limit: opts.max_ratio,
                });
            }
        }
        // Summed over every entry before refusing, so that the error gives
        // the whole figure.
        declared = declared.saturating_add(size);
        plan.push((rel, entry.is_dir(), name, entry.compressed_size()));
    }
    if declared > budget {
        return Err(over_budget(declared, archive_bytes, opts));
    }

    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PackageError::Write { path, source }
    };
    fs::create_dir(dest).map_err(write_err(dest))?;
    // Second pass: the bytes actually inflated, against the same budget.
    let mut written: u64 = 0;
    for (i, (rel, is_dir, name, compressed)) in plan.into_iter().enumerate() {
        let path = dest.join(&rel);
        if is_dir {
            fs::create_dir_all(&path).map_err(write_err(&path))?;
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    PackageError::UnsafeEntry {
                        name: name.clone(),
                        reason: "duplicate entry",
                    }
                } else {
                    PackageError::Write {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
        let mut entry = zip.by_index(i).map_err(not_zip)?;
        let remaining = budget - written;
        let n = copy_limited(&mut entry, &mut out, remaining + 1).map_err(|source| {
            PackageError::Entry {
                name: name.clone(),
                source,
            }
        })?;
        written += n;
        if written > budget {
            return Err(over_budget(written, archive_bytes, opts));
        }
        if n >= ENTRY_RATIO_FLOOR && n / compressed.max(1) > opts.max_ratio {
            return Err(PackageError::RatioTooHigh {
                name,
                ratio: n / compressed.max(1),
                limit: opts.max_ratio,
            });
        }
    }
    Ok(())
}

fn copy_limited(r: &mut impl Read, w: &mut impl Write, limit: u64) -> io::Result<u64> {
    io::copy(&mut r.take(limit), w)
}
