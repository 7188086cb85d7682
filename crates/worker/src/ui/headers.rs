//! The headers a UI file is served with: its content type, its cache policy
//! (immutable for content-hashed names), ETag / Last-Modified, and the
//! answer to conditional requests.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderValue};

pub(super) const CACHE_REVALIDATE: &str = "no-cache";
pub(super) const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";

pub(super) fn content_type(path: &Path) -> HeaderValue {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let essence = mime.essence_str();
    let textual = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/manifest+json"
                | "application/xml"
                | "image/svg+xml"
        );
    let value = if textual && mime.get_param("charset").is_none() {
        format!("{essence}; charset=utf-8")
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// `no-cache` (revalidate with the ETag) except for file names carrying a
/// content hash (`index-4f3a9c1b.js`, `app.8e1f2a3b.css`), which never change.
pub(super) fn cache_control(path: &Path) -> &'static str {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return CACHE_REVALIDATE;
    };
    if name.ends_with(".html") {
        return CACHE_REVALIDATE;
    }
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    let hashed = stem.split(['-', '.', '_']).skip(1).any(|part| {
        part.len() >= 8
            && part.chars().all(|c| c.is_ascii_alphanumeric())
            && part.chars().any(|c| c.is_ascii_digit())
    });
    if hashed {
        CACHE_IMMUTABLE
    } else {
        CACHE_REVALIDATE
    }
}

/// ETag and Last-Modified of one file version.
pub(super) struct Validators {
    pub(super) etag: String,
    pub(super) last_modified: Option<String>,
    mtime_secs: Option<u64>,
}

impl Validators {
    pub(super) fn new(len: u64, modified: Option<SystemTime>) -> Self {
        let since_epoch = modified.and_then(|m| m.duration_since(UNIX_EPOCH).ok());
        let nanos = since_epoch.map_or(0, |d| d.as_nanos());
        Validators {
            etag: format!("\"{len:x}-{nanos:x}\""),
            last_modified: modified.map(httpdate::fmt_http_date),
            mtime_secs: since_epoch.map(|d| d.as_secs()),
        }
    }

    /// RFC 9110 §13.2.2: If-None-Match (weak comparison) decides when present,
    /// otherwise If-Modified-Since.
    pub(super) fn not_modified(&self, headers: &HeaderMap) -> bool {
        let inm: Vec<&str> = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !inm.is_empty() {
            let ours = self.etag.trim_start_matches("W/");
            return inm
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == ours);
        }
        let Some(mtime) = self.mtime_secs else {
            return false;
        };
        headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .is_some_and(|since: Duration| mtime <= since.as_secs())
    }
}
