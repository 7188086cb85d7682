//! How to fetch: cache location, size limit, retries, expected hash, S3 and TLS settings.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::FetchError;

/// Default for `MAX_PACKAGE_SIZE_MB`.
pub const DEFAULT_MAX_PACKAGE_SIZE_MB: u64 = 100;

/// Explicit S3 credentials. Normally left unset so the standard AWS chain
/// applies (environment variables, ECS task role, web identity, instance
/// metadata); useful for a local S3 server.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Options of one [`crate::fetch`] call.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// `$PAR_HOME`; downloads land in `$PAR_HOME/downloads/<sha256>.apkg`.
    pub home: PathBuf,
    /// Largest accepted package, in bytes (`MAX_PACKAGE_SIZE_MB` × 1 MiB).
    pub max_size_bytes: u64,
    /// Retries after the first attempt on transient failures (connection
    /// errors, timeouts, HTTP 5xx/408/429). 4xx answers are never retried.
    pub retries: u32,
    /// First backoff delay; doubles each retry, jittered, capped at `backoff_max`.
    pub backoff_initial: Duration,
    /// Largest backoff delay.
    pub backoff_max: Duration,
    /// Time limit for one download attempt, body included.
    pub timeout: Duration,
    /// Time limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Expected SHA-256 (64 hex characters). When set, a mismatch is refused
    /// and a cached `<sha256>.apkg` is used without any download.
    pub sha256: Option<String>,
    /// S3 region; else `AWS_REGION` / `AWS_DEFAULT_REGION`; else `us-east-1`.
    pub s3_region: Option<String>,
    /// S3 endpoint for S3-compatible servers; else `AWS_ENDPOINT_URL_S3` /
    /// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT`. Path-style requests are used.
    pub s3_endpoint: Option<String>,
    /// Explicit credentials instead of the standard AWS chain.
    pub s3_credentials: Option<S3Credentials>,
    /// PEM files whose certificates are trusted in addition to the system
    /// roots (which already honour `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    pub extra_root_certs: Vec<PathBuf>,
    /// Allow plain `http://` to non-loopback hosts (loopback is always allowed).
    pub allow_http: bool,
}

impl FetchOptions {
    /// Defaults: 100 MB limit, 3 retries, 200 ms → 5 s backoff, 5 min per
    /// attempt, 10 s connect timeout, no expected hash.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self {
            home: home.into(),
            max_size_bytes: DEFAULT_MAX_PACKAGE_SIZE_MB * 1024 * 1024,
            retries: 3,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            sha256: None,
            s3_region: None,
            s3_endpoint: None,
            s3_credentials: None,
            extra_root_certs: Vec::new(),
            allow_http: false,
        }
    }

    /// [`FetchOptions::new`] with `MAX_PACKAGE_SIZE_MB` read from the environment.
    pub fn from_env(home: impl Into<PathBuf>) -> Result<Self, FetchError> {
        let mut opts = Self::new(home);
        if let Ok(v) = std::env::var("MAX_PACKAGE_SIZE_MB") {
            opts.max_size_bytes = parse_size_mb(&v)? * 1024 * 1024;
        }
        Ok(opts)
    }

    /// Sets the expected SHA-256.
    pub fn with_sha256(mut self, sha256: impl Into<String>) -> Self {
        self.sha256 = Some(sha256.into());
        self
    }

    /// The limit in whole MB, as the user wrote it in `MAX_PACKAGE_SIZE_MB`.
    pub(crate) fn limit_mb(&self) -> u64 {
        self.max_size_bytes.div_ceil(1024 * 1024)
    }

    /// The downloads folder, `$PAR_HOME/downloads`.
    pub fn downloads_dir(&self) -> PathBuf {
        self.home.join("downloads")
    }

    /// The normalised expected hash (lowercase), validated.
    pub(crate) fn expected_sha256(&self) -> Result<Option<String>, FetchError> {
        self.sha256.as_deref().map(normalise_sha256).transpose()
    }
}

/// Parses `MAX_PACKAGE_SIZE_MB` (a positive whole number).
pub fn parse_size_mb(value: &str) -> Result<u64, FetchError> {
    match value.trim().parse::<u64>() {
        Ok(mb) if mb > 0 && mb <= u64::MAX / (1024 * 1024) => Ok(mb),
        _ => Err(FetchError::InvalidOption {
            name: "MAX_PACKAGE_SIZE_MB",
            reason: format!("`{value}` is not a positive whole number of megabytes"),
        }),
    }
}

/// Lowercases and checks a SHA-256 hex digest (an optional `sha256:` prefix is accepted).
pub fn normalise_sha256(value: &str) -> Result<String, FetchError> {
    let trimmed = value.trim();
    let hex = trimmed.strip_prefix("sha256:").unwrap_or(trimmed);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(FetchError::InvalidSha256 {
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_normalised_and_checked() {
        let upper = "AB".repeat(32);
        assert_eq!(normalise_sha256(&upper).unwrap(), "ab".repeat(32));
        assert_eq!(
            normalise_sha256(&format!("sha256:{}", "0".repeat(64))).unwrap(),
            "0".repeat(64)
        );
        assert!(normalise_sha256("abc").is_err());
        assert!(normalise_sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn size_limit_parsing() {
        assert_eq!(parse_size_mb("100").unwrap(), 100);
        for bad in ["0", "-1", "1.5", "ten", ""] {
            let err = parse_size_mb(bad).unwrap_err().to_string();
            assert!(err.contains("MAX_PACKAGE_SIZE_MB"), "{err}");
        }
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = S3Credentials {
            access_key_id: "AKIA".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("tok-secret".into()),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("tok-secret"),
            "{shown}"
        );
    }
}
