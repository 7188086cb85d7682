//! The download cache `$PAR_HOME/downloads/<sha256>.apkg`: lookups, and writing a
//! download to a temp file (hashing and counting as it goes) then renaming it in.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;

use crate::error::FetchError;
use crate::Fetched;

/// The cached file for a hash, if present; marked used (its mtime set to
/// now), which keeps a sweep of unused downloads away from it.
pub(crate) fn lookup(dir: &Path, sha256: &str) -> Option<PathBuf> {
    let path = cached_path(dir, sha256);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => {
            let _ = std::fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            Some(path)
        }
        _ => None,
    }
}

pub(crate) fn cached_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(format!("{sha256}.apkg"))
}

/// A download in progress. Dropped without [`Download::finish`], its temp file
/// is removed, so a failed or refused download leaves nothing in the cache.
pub(crate) struct Download {
    dir: PathBuf,
    tmp: NamedTempFile,
    file: tokio::fs::File,
    hasher: Sha256,
    bytes: u64,
    limit: u64,
}

/// Why a chunk could not be written.
#[derive(Debug)]
pub(crate) enum WriteError {
    TooLarge,
    Io(FetchError),
}

impl Download {
    pub(crate) fn start(dir: &Path, limit: u64) -> Result<Self, FetchError> {
        std::fs::create_dir_all(dir).map_err(|e| FetchError::io("create", dir, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .suffix(".apkg")
            .tempfile_in(dir)
            .map_err(|e| FetchError::io("create a temp file in", dir, e))?;
        let std_file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| FetchError::io("open", tmp.path(), e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tmp,
            file: tokio::fs::File::from_std(std_file),
            hasher: Sha256::new(),
            bytes: 0,
            limit,
        })
    }

    /// Appends a chunk, refusing to go past the size limit.
    pub(crate) async fn write(&mut self, chunk: &[u8]) -> Result<(), WriteError> {
        let seen = self.bytes + chunk.len() as u64;
        if seen > self.limit {
            return Err(WriteError::TooLarge);
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| WriteError::Io(FetchError::io("write", self.tmp.path(), e)))?;
        self.bytes = seen;
        Ok(())
    }

    /// Verifies the hash and moves the file to `<sha256>.apkg`.
    pub(crate) async fn finish(
        mut self,
        expected: Option<&str>,
        location: &str,
    ) -> Result<Fetched, FetchError> {
        let actual = hex::encode(self.hasher.finalize_reset());
        if let Some(expected) = expected {
            if expected != actual {
                return Err(FetchError::ShaMismatch {
                    location: location.to_string(),
                    expected: expected.to_string(),
                    actual,
                });
            }
        }
        let tmp_path = self.tmp.path().to_path_buf();
        self.file
            .flush()
            .await
            .map_err(|e| FetchError::io("write", &tmp_path, e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| FetchError::io("sync", &tmp_path, e))?;
        let path = cached_path(&self.dir, &actual);
        self.tmp
            .persist(&path)
            .map_err(|e| FetchError::io("move download into", &path, e.error))?;
        Ok(Fetched {
            path,
            sha256: actual,
            downloaded: true,
            bytes: self.bytes,
        })
    }
}

/// Hashes a local file, with its size.
pub(crate) async fn hash_file(path: &Path) -> Result<(String, u64), FetchError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(|e| FetchError::io("open", &path, e))?;
        let mut hasher = Sha256::new();
        let bytes =
            std::io::copy(&mut file, &mut hasher).map_err(|e| FetchError::io("read", &path, e))?;
        Ok((hex::encode(hasher.finalize()), bytes))
    })
    .await
    .map_err(|e| FetchError::io("hash", PathBuf::new(), std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finish_moves_into_place_and_mismatch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Download::start(dir.path(), 10).unwrap();
        d.write(b"hello").await.unwrap();
        let f = d.finish(None, "test").await.unwrap();
        let want = hex::encode(Sha256::digest(b"hello"));
        assert_eq!(f.sha256, want);
        assert_eq!(f.path, cached_path(dir.path(), &want));
        assert_eq!(std::fs::read(&f.path).unwrap(), b"hello");
        assert_eq!(lookup(dir.path(), &want), Some(f.path.clone()));

        let mut d = Download::start(dir.path(), 10).unwrap();
        d.write(b"other").await.unwrap();
        let err = d.finish(Some(&"0".repeat(64)), "src").await.unwrap_err();
        assert!(matches!(err, FetchError::ShaMismatch { .. }), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "only the first download remains: {names:?}");
    }

    #[tokio::test]
    async fn write_refuses_past_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Download::start(dir.path(), 8).unwrap();
        d.write(b"12345").await.unwrap();
        assert!(matches!(d.write(b"6789").await, Err(WriteError::TooLarge)));
    }
}
