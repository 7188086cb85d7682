//! The one error type of package fetching; every variant names the source.

use std::path::PathBuf;

/// Why a package could not be fetched. Sources are shown redacted (no query
/// strings, no user info), and no variant ever carries credentials.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid package source `{given}`: {reason}")]
    InvalidSource { given: String, reason: String },

    #[error("invalid sha256 `{value}`: expected 64 hexadecimal characters")]
    InvalidSha256 { value: String },

    #[error(
        "refusing plain http for {location}: use https://, or allow http explicitly (loopback hosts are always allowed)"
    )]
    InsecureHttp { location: String },

    #[error("invalid fetch option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },

    #[error("failed to read extra root certificate {path}")]
    RootCertificate {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },

    #[error("no certificate found in extra root certificate file {path}")]
    RootCertificateEmpty { path: PathBuf },

    #[error("failed to set up the HTTP client for {location}")]
    Client {
        location: String,
        #[source]
        cause: reqwest::Error,
    },

    #[error("package not found at {location} (HTTP {status})")]
    NotFound { location: String, status: u16 },

    #[error("GET {location} failed with HTTP {status}")]
    Status { location: String, status: u16 },

    #[error("failed to download {location}")]
    Transport {
        location: String,
        #[source]
        cause: reqwest::Error,
    },

    #[error("failed to read {location} from S3")]
    S3 {
        location: String,
        #[source]
        cause: object_store::Error,
    },

    #[error(
        "package at {location} is larger than the limit of {limit_mb} MB (MAX_PACKAGE_SIZE_MB){}",
        size.map(|s| format!(": {s} bytes")).unwrap_or_default()
    )]
    TooLarge {
        location: String,
        limit_mb: u64,
        size: Option<u64>,
    },

    #[error("sha256 mismatch for {location}: expected {expected}, got {actual}")]
    ShaMismatch {
        location: String,
        expected: String,
        actual: String,
    },

    #[error("{location} is a directory, not a package file (pack it first)")]
    IsDirectory { location: String },

    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },

    #[error("gave up on {location} after {attempts} attempts")]
    RetriesExhausted {
        location: String,
        attempts: u32,
        #[source]
        last: Box<FetchError>,
    },
}

impl FetchError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        cause: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            cause,
        }
    }
}
