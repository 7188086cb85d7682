//! Remote packages as the supervisor sees them: fetching `https://` and
//! `s3://` sources with par-fetch into `$PAR_HOME/downloads`, and telling
//! failures that will not pass (404, sha mismatch, too large) from those that may.

use std::path::Path;

use par_fetch::{FetchError, FetchOptions, Source};
use par_telemetry::error_chain as chain;

use crate::model::{FetchFailure, Resolved};

/// Fetches a remote package (cache hit when `sha256` is known and cached).
pub async fn fetch(
    package: &str,
    sha256: Option<&str>,
    home: &Path,
) -> Result<Resolved, FetchFailure> {
    let permanent = |e: FetchError| FetchFailure {
        message: chain(&e),
        transient: false,
    };
    let source = Source::parse(package).map_err(permanent)?;
    let mut opts = FetchOptions::from_env(home).map_err(permanent)?;
    if let Some(sha) = sha256 {
        opts = opts.with_sha256(sha);
    }
    match par_fetch::fetch(&source, &opts).await {
        Ok(f) => Ok(Resolved {
            path: f.path.to_string_lossy().into_owned(),
            sha256: f.sha256,
            downloaded: f.downloaded,
            bytes: f.bytes,
        }),
        Err(e) => Err(FetchFailure {
            transient: is_transient(&e),
            message: chain(&e),
        }),
    }
}

/// Failures worth another try later: the network, the server's 5xx/408/429,
/// the local disk. A missing object, a wrong hash, a package over the limit or
/// a refused location stay as they are until the spec changes.
pub fn is_transient(e: &FetchError) -> bool {
    match e {
        FetchError::Transport { .. } | FetchError::RetriesExhausted { .. } => true,
        FetchError::Io { .. } => true,
        FetchError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
        FetchError::S3 { cause, .. } => !matches!(
            cause,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::NotFound { .. }
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lasting_and_passing_failures() {
        let loc = || "s3://b/k".to_string();
        assert!(!is_transient(&FetchError::NotFound {
            location: loc(),
            status: 404
        }));
        assert!(!is_transient(&FetchError::ShaMismatch {
            location: loc(),
            expected: "a".into(),
            actual: "b".into()
        }));
        assert!(!is_transient(&FetchError::TooLarge {
            location: loc(),
            limit_mb: 1,
            size: None
        }));
        assert!(!is_transient(&FetchError::Status {
            location: loc(),
            status: 403
        }));
        assert!(is_transient(&FetchError::Status {
            location: loc(),
            status: 503
        }));
        assert!(is_transient(&FetchError::RetriesExhausted {
            location: loc(),
            attempts: 4,
            last: Box::new(FetchError::Status {
                location: loc(),
                status: 500
            }),
        }));
    }

    #[tokio::test]
    async fn a_missing_local_server_is_transient_and_a_bad_source_is_not() {
        let home = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Nothing listens there any more: connection refused.
        let e = fetch(
            &format!("http://127.0.0.1:{port}/a.apkg"),
            None,
            home.path(),
        )
        .await
        .unwrap_err();
        assert!(e.transient, "{}", e.message);
        let e = fetch("ftp://h/a.apkg", None, home.path())
            .await
            .unwrap_err();
        assert!(!e.transient && e.message.contains("ftp"), "{}", e.message);
    }
}
