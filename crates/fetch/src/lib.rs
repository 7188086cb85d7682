//! Package sources: local files, `https://` URLs and `s3://bucket/key`, fetched
//! into the content-addressed download cache `$PAR_HOME/downloads/<sha256>.apkg`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), par_fetch::FetchError> {
//! use par_fetch::{fetch, FetchOptions, Source};
//! let source = Source::parse("s3://my-bucket/agents/echo-1.0.0.apkg")?;
//! let opts = FetchOptions::from_env("/var/lib/par")?.with_sha256("…64 hex…");
//! let fetched = fetch(&source, &opts).await?;
//! println!("{} ({} bytes, downloaded: {})", fetched.path.display(), fetched.bytes, fetched.downloaded);
//! # Ok(()) }
//! ```
//!
//! Guarantees: the SHA-256 is verified when given (a mismatch is refused and
//! leaves nothing in the cache); with a known hash already cached nothing is
//! downloaded; downloads are written to a temp file and renamed into place;
//! the size limit is checked against `Content-Length` and while streaming;
//! transient failures (connection errors, timeouts, 5xx) are retried with
//! exponential, jittered backoff, 4xx answers are not; error messages name
//! the source but never credentials or query strings.

mod cache;
mod error;
mod https;
mod options;
mod retry;
mod s3;
mod source;
mod tls;

use std::path::PathBuf;
use std::time::Instant;

pub use error::FetchError;
pub use options::{
    normalise_sha256, parse_size_mb, FetchOptions, S3Credentials, DEFAULT_MAX_PACKAGE_SIZE_MB,
};
pub use source::Source;

/// A package file on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The `.apkg` file: `$PAR_HOME/downloads/<sha256>.apkg` for remote
    /// sources, the given path for local ones.
    pub path: PathBuf,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
    /// True when bytes were transferred; false for a cache hit or a local file.
    pub downloaded: bool,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Fetches `source` into the download cache (remote) or hashes it in place (local).
///
/// A local directory is refused with [`FetchError::IsDirectory`]: folders
/// are packed by the caller, not fetched.
pub async fn fetch(source: &Source, opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let expected = opts.expected_sha256()?;
    let started = Instant::now();
    let location = source.to_string();
    let fetched = match source {
        Source::Local(path) => fetch_local(path, opts, expected.as_deref()).await?,
        remote => {
            let dir = opts.downloads_dir();
            if let Some(sha) = &expected {
                if let Some(path) = cache::lookup(&dir, sha) {
                    let bytes = std::fs::metadata(&path)
                        .map_err(|e| FetchError::io("read", &path, e))?
                        .len();
                    tracing::debug!(source = %location, sha256 = %sha, "package cache hit");
                    return Ok(Fetched {
                        path,
                        sha256: sha.clone(),
                        downloaded: false,
                        bytes,
                    });
                }
            }
            match remote {
                Source::Https(url) => https::fetch(url, opts, expected.as_deref()).await?,
                Source::S3 { bucket, key } => {
                    s3::fetch(bucket, key, opts, expected.as_deref()).await?
                }
                Source::Local(_) => unreachable!("handled above"),
            }
        }
    };
    tracing::info!(
        source = %location,
        sha256 = %fetched.sha256,
        bytes = fetched.bytes,
        downloaded = fetched.downloaded,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "package fetched"
    );
    Ok(fetched)
}

/// Reads a small S3 object (a registry index, not a package) into memory,
/// within `opts.max_size_bytes`, with the same credentials, endpoint and
/// retries as [`fetch`]; nothing is written under `$PAR_HOME`.
pub async fn read_s3(bucket: &str, key: &str, opts: &FetchOptions) -> Result<Vec<u8>, FetchError> {
    s3::read(bucket, key, opts).await
}

async fn fetch_local(
    path: &std::path::Path,
    opts: &FetchOptions,
    expected: Option<&str>,
) -> Result<Fetched, FetchError> {
    let meta = std::fs::metadata(path).map_err(|e| FetchError::io("read", path, e))?;
    if meta.is_dir() {
        return Err(FetchError::IsDirectory {
            location: path.display().to_string(),
        });
    }
    if meta.len() > opts.max_size_bytes {
        return Err(FetchError::TooLarge {
            location: path.display().to_string(),
            limit_mb: opts.limit_mb(),
            size: Some(meta.len()),
        });
    }
    let (sha256, bytes) = cache::hash_file(path).await?;
    if let Some(expected) = expected {
        if expected != sha256 {
            return Err(FetchError::ShaMismatch {
                location: path.display().to_string(),
                expected: expected.to_string(),
                actual: sha256,
            });
        }
    }
    Ok(Fetched {
        path: path.to_path_buf(),
        sha256,
        downloaded: false,
        bytes,
    })
}
