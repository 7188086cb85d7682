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
    #[error("package has {count} entries, more than the limit of {limit}")]
    TooManyEntries { count: usize, limit: usize },
    #[error("package expands to more than the limit of {limit} bytes (zip bomb?)")]
    TooLarge { limit: u64 },
    #[error(
        "entry {name:?} has compression ratio {ratio}:1, more than the limit of {limit}:1 (zip bomb?)"
    )]
    RatioTooHigh {
        name: String,
        ratio: u64,
        limit: u64,
    },
    #[error("package has no agent.yaml at its root")]
    NoManifest,
    #[error(transparent)]
    Manifest(#[from] ManifestErrors),
    #[error("failed to write the archive")]
    Zip(#[source] zip::result::ZipError),
}
