//! The package crate's error type: one enum for loading, extracting and packing.

use std::path::PathBuf;

use crate::manifest::ManifestErrors;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("package source {0} does not exist")]
    NotFound(PathBuf),
    #[error("package source {0} is neither an .apkg file nor a folder")]
    BadSource(PathBuf),
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid expected sha256 {0:?}: need 64 hex digits")]
    BadSha256(String),
    #[error("sha256 mismatch for {source_name}: expected {expected}, got {actual}")]
    Sha256Mismatch {
        source_name: String,
        expected: String,
        actual: String,
    },
    #[error("{source_name} is not a valid zip archive")]
    NotZip {
        source_name: String,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("failed to read entry {name:?} of the archive")]
    Entry {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unsafe entry {name:?} in package: {reason}")]
    UnsafeEntry { name: String, reason: &'static str },
    #[error(
        "package has {count} entries, more than the limit of {limit} (PAR_PACKAGE_MAX_ENTRIES)"
    )]
    TooManyEntries { count: usize, limit: usize },
    #[error(
        "package expands to at least {}, more than the limit of {} (PAR_PACKAGE_MAX_BYTES; zip bomb?)",
        human_bytes(*size),
        human_bytes(*limit)
    )]
    TooLarge { size: u64, limit: u64 },
    #[error(
        "entry {name:?} has compression ratio {ratio}:1, more than the limit of {limit}:1 (PAR_PACKAGE_MAX_RATIO; zip bomb?)"
    )]
    RatioTooHigh {
        name: String,
        ratio: u64,
        limit: u64,
    },
    #[error(
        "package of {} expands to at least {}, a ratio of {ratio}:1, more than the limit of {limit}:1 (PAR_PACKAGE_MAX_RATIO; zip bomb?)",
        human_bytes(*archive_bytes),
        human_bytes(*expands)
    )]
    ArchiveRatioTooHigh {
        archive_bytes: u64,
        expands: u64,
        ratio: u64,
        limit: u64,
    },
    #[error("entry {name:?} is {}, more than the limit of {}", human_bytes(*size), human_bytes(*limit))]
    EntryTooLarge { name: String, size: u64, limit: u64 },
    #[error("invalid {var}={value:?}: {reason}")]
    BadLimit {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "symbolic link {} -> {} resolves to {}, outside the package folder {}",
        link.display(),
        target.display(),
        resolved.display(),
        root.display()
    )]
    SymlinkEscape {
        link: PathBuf,
        target: PathBuf,
        resolved: PathBuf,
        root: PathBuf,
    },
    #[error("{} changed while it was being packed", path.display())]
    ChangedWhilePacking { path: PathBuf },
    #[error("package has no agent.yaml at its root")]
    NoManifest,
    #[error(transparent)]
    Manifest(#[from] ManifestErrors),
    #[error("failed to write the archive")]
    Zip(#[source] zip::result::ZipError),
}

/// `12345 bytes (12.1 KiB)`: exact for tests and logs, readable for people.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: &[(&str, u64)] = &[("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= *size {
            return format!("{n} bytes ({:.1} {unit})", n as f64 / *size as f64);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_is_exact_and_readable() {
        assert_eq!(human_bytes(10), "10 bytes");
        assert_eq!(human_bytes(1536), "1536 bytes (1.5 KiB)");
        assert_eq!(human_bytes(3 << 30), "3221225472 bytes (3.0 GiB)");
    }
}
