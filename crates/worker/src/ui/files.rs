//! The UI folder on disk: `ui.path` and `ui.basePath` checked, the folder's
//! file index, request paths decoded into safe segments, and files opened
//! strictly inside the folder (percent-decoded `..`, absolute segments,
//! dot-files and symlinks that lead outside are never served).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use axum::body::Body;
use bytes::Bytes;
use std::io::Read as _;
use tokio::io::AsyncReadExt;

/// Chunk size of streamed file bodies.
pub(super) const CHUNK: usize = 64 * 1024;
pub(super) const INDEX: &str = "index.html";
/// A file opened inside the root.
pub(super) struct Opened {
    pub(super) real: PathBuf,
    pub(super) len: u64,
    pub(super) modified: Option<SystemTime>,
    pub(super) content: Content,
}

pub(super) enum Content {
    /// HEAD: no body.
    None,
    /// Read whole (at most one chunk).
    Small(Bytes),
    /// Streamed as the client reads.
    Large(std::fs::File),
}

/// Blocking: canonicalizes `path` (a folder → its index.html), refuses anything
/// that resolves outside `root` (symlinks included), opens it and takes length
/// and mtime from the open handle, so they match what is sent.
pub(super) fn open_contained(root: &Path, path: &Path, want_body: bool) -> Option<Opened> {
    let contained = |p: &Path| {
        let real = p.canonicalize().ok()?;
        real.starts_with(root).then_some(real)
    };
    let mut real = contained(path)?;
    if real.is_dir() {
        real = contained(&real.join(INDEX))?;
    }
    let mut file = std::fs::File::open(&real).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let len = meta.len();
    let content = if !want_body {
        Content::None
    } else if len <= CHUNK as u64 {
        let mut buf = Vec::with_capacity(len as usize);
        std::io::Read::by_ref(&mut file)
            .take(len)
            .read_to_end(&mut buf)
            .ok()?;
        if buf.len() as u64 != len {
            return None; // truncated while reading: let the next request see it whole
        }
        Content::Small(Bytes::from(buf))
    } else {
        Content::Large(file)
    };
    Some(Opened {
        real,
        len,
        modified: meta.modified().ok(),
        content,
    })
}

/// Most files indexed by [`index_files`]; a larger folder is served unindexed.
const MAX_INDEXED: usize = 100_000;

/// The relative paths of the regular files under `root` (symlinks included when
/// they resolve inside it; symlinked folders are not descended, so no cycles).
pub(super) fn index_files(root: &Path) -> Option<HashSet<String>> {
    let mut files = HashSet::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push((entry.path(), rel));
            } else if kind.is_file()
                || (kind.is_symlink()
                    && entry
                        .path()
                        .canonicalize()
                        .is_ok_and(|r| r.starts_with(root) && r.is_file()))
            {
                files.insert(rel);
                if files.len() > MAX_INDEXED {
                    return None;
                }
            }
        }
    }
    Some(files)
}

/// Checks `ui.path` is a plain relative path inside the package.
pub(super) fn relative_ui_path(raw: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in Path::new(raw.trim()).components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "ui.path {raw:?} must be a relative path inside the package"
                ))
            }
        }
    }
    Ok(out)
}

pub(super) fn normalize_base_path(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Ok("/".into());
    }
    if trimmed
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
        || trimmed.contains(['?', '#', '%', '\\'])
    {
        return Err(format!(
            "ui.basePath {raw:?} must be a plain URL path such as /ui"
        ));
    }
    Ok(format!("/{trimmed}"))
}

/// Percent-decodes `rel` and splits it into path segments, refusing anything
/// that could leave the folder or reveal hidden files: `..`, `.`-prefixed names
/// (except `.well-known`), backslashes, NUL, invalid UTF-8.
pub(super) fn safe_segments(rel: &str) -> Option<Vec<String>> {
    let decoded = String::from_utf8(percent_decode(rel.as_bytes())?).ok()?;
    let mut out = Vec::new();
    for seg in decoded.split('/') {
        if seg.is_empty() {
            continue;
        }
        if seg.contains(['\\', '\0']) {
            return None;
        }
        if seg.starts_with('.') && seg != ".well-known" {
            return None;
        }
        out.push(seg.to_string());
    }
    Some(out)
}

/// `%XX` decoding; `None` for a malformed escape.
pub(super) fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = input.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The file as a body of `CHUNK`-sized frames, read as the client consumes them.
pub(super) fn stream_file(file: tokio::fs::File) -> Body {
    let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), file)))
    });
    Body::from_stream(chunks)
}
