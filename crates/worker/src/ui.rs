//! The UI surface: an agent's static files (`ui.path`) served at `ui.basePath`,
//! with conditional requests and the SPA fallback to `index.html`.
//!
//! Paths are resolved strictly inside the UI folder: percent-decoded `..`,
//! absolute segments, dot-files and symlinks that lead outside are never served.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use std::io::Read as _;

use tokio::io::AsyncReadExt;

/// Chunk size of streamed file bodies.
const CHUNK: usize = 64 * 1024;
const INDEX: &str = "index.html";
const CACHE_REVALIDATE: &str = "no-cache";
const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// An opened UI folder and the URL prefix it is served under.
#[derive(Debug, Clone)]
pub struct UiSurface {
    /// Canonical (symlink-free) UI folder.
    root: PathBuf,
    /// `"/"` or `"/prefix"` (no trailing slash).
    base_path: String,
    /// Relative paths (`a/b.js`) of the files present at open. Package contents
    /// are immutable, so a request naming nothing here is answered `None` without
    /// touching the disk: the agent's own routes (`/api/...`) pay no file-system
    /// cost. `None` when the folder is too large to index.
    files: Option<Arc<HashSet<String>>>,
}

impl UiSurface {
    /// Finds the UI folder: `<package_root>/<ui.path>`, else pixell-kit 0.4's
    /// `<package_root>/dist/<ui.path>`. The error names every folder tried.
    pub fn open(package_root: &Path, ui: &par_package::manifest::Ui) -> Result<UiSurface, String> {
        let rel = relative_ui_path(&ui.path)?;
        let base_path = normalize_base_path(&ui.base_path)?;
        let package_root = package_root
            .canonicalize()
            .map_err(|e| format!("package root {} unusable: {e}", package_root.display()))?;
        let candidates = [
            package_root.join(&rel),
            package_root.join("dist").join(&rel),
        ];
        for dir in &candidates {
            let Ok(real) = dir.canonicalize() else {
                continue;
            };
            if !real.is_dir() {
                continue;
            }
            if !real.starts_with(&package_root) {
                return Err(format!(
                    "ui.path {:?} resolves to {}, outside the package",
                    ui.path,
                    real.display()
                ));
            }
            let files = index_files(&real).map(Arc::new);
            return Ok(UiSurface {
                root: real,
                base_path,
                files,
            });
        }
        Err(format!(
            "ui folder for ui.path {:?} not found: tried {} and {}",
            ui.path,
            candidates[0].display(),
            candidates[1].display()
        ))
    }

    /// The URL prefix: `ui.basePath`, `"/"` by default, never with a trailing slash
    /// (except `"/"` itself).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The canonical UI folder being served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Serves the existing file a GET/HEAD names under the base path (`/` or a
    /// folder → its `index.html`). `None` when the request is not for a UI file,
    /// so the caller can try the agent's own routes.
    pub async fn serve_file(&self, parts: &http::request::Parts) -> Option<Response<Body>> {
        if !is_get_or_head(&parts.method) {
            return None;
        }
        let rel = self.relative_request_path(parts.uri.path())?;
        let segments = safe_segments(rel)?;
        if let Some(files) = &self.files {
            let key = segments.join("/");
            let index = if key.is_empty() {
                INDEX.to_string()
            } else {
                format!("{key}/{INDEX}")
            };
            if !files.contains(&key) && !files.contains(&index) {
                return None;
            }
        }
        let mut path = self.root.clone();
        path.extend(&segments);
        self.respond(path, parts).await
    }

    /// The root `index.html` for a GET/HEAD under the base path that accepts
    /// `text/html` (a single-page app's client-side route).
    pub async fn spa_fallback(&self, parts: &http::request::Parts) -> Option<Response<Body>> {
        if !is_get_or_head(&parts.method) || !accepts_html(&parts.headers) {
            return None;
        }
        self.relative_request_path(parts.uri.path())?;
        self.respond(self.root.join(INDEX), parts).await
    }

    /// The request path below the base path, still percent-encoded; `None` when
    /// the path is outside it.
    fn relative_request_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.base_path == "/" {
            return path.strip_prefix('/');
        }
        let rest = path.strip_prefix(self.base_path.as_str())?;
        if rest.is_empty() {
            Some("")
        } else {
            rest.strip_prefix('/')
        }
    }

    /// Resolves `path` (a folder → its index.html) inside the root and answers it.
    async fn respond(&self, path: PathBuf, parts: &http::request::Parts) -> Option<Response<Body>> {
        let root = self.root.clone();
        let want_body = parts.method != Method::HEAD;
        // One trip to the blocking pool for resolve + open + stat (+ read when small).
        let opened = tokio::task::spawn_blocking(move || open_contained(&root, &path, want_body))
            .await
            .ok()??;
        let validators = Validators::new(opened.len, opened.modified);
        let mut builder = Response::builder()
            .header(header::ETAG, &validators.etag)
            .header(header::CACHE_CONTROL, cache_control(&opened.real));
        if let Some(lm) = &validators.last_modified {
            builder = builder.header(header::LAST_MODIFIED, lm);
        }
        if validators.not_modified(&parts.headers) {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .ok();
        }
        let builder = builder
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type(&opened.real))
            .header(header::CONTENT_LENGTH, opened.len)
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        let body = match opened.content {
            Content::None => Body::empty(),
            Content::Small(bytes) => Body::from(bytes),
            Content::Large(file) => stream_file(tokio::fs::File::from_std(file)),
        };
        builder.body(body).ok()
    }
}

/// A file opened inside the root.
struct Opened {
    real: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    content: Content,
}

enum Content {
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
fn open_contained(root: &Path, path: &Path, want_body: bool) -> Option<Opened> {
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
fn index_files(root: &Path) -> Option<HashSet<String>> {
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
fn relative_ui_path(raw: &str) -> Result<PathBuf, String> {
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

fn normalize_base_path(raw: &str) -> Result<String, String> {
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
fn safe_segments(rel: &str) -> Option<Vec<String>> {
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
fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
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

fn is_get_or_head(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

fn content_type(path: &Path) -> HeaderValue {
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
fn cache_control(path: &Path) -> &'static str {
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
struct Validators {
    etag: String,
    last_modified: Option<String>,
    mtime_secs: Option<u64>,
}

impl Validators {
    fn new(len: u64, modified: Option<SystemTime>) -> Self {
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
    fn not_modified(&self, headers: &HeaderMap) -> bool {
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

/// The file as a body of `CHUNK`-sized frames, read as the client consumes them.
fn stream_file(file: tokio::fs::File) -> Body {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use par_package::manifest::Ui;

    fn ui(path: &str, base: &str) -> Ui {
        Ui {
            path: path.into(),
            base_path: base.into(),
        }
    }

    /// package/{ui/index.html, ui/app.css, ui/assets/..., secret.txt}
    fn package() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ui = dir.path().join("ui");
        std::fs::create_dir_all(ui.join("assets")).unwrap();
        std::fs::create_dir_all(ui.join("docs")).unwrap();
        std::fs::create_dir_all(ui.join("empty")).unwrap();
        std::fs::write(ui.join("index.html"), "<html>index</html>").unwrap();
        std::fs::write(ui.join("app.css"), "body{}").unwrap();
        std::fs::write(ui.join("assets/index-4f3a9c1b.js"), "console.log(1)").unwrap();
        std::fs::write(ui.join("assets/logo.png"), [0x89, b'P', b'N', b'G']).unwrap();
        std::fs::write(ui.join("assets/data.qqzz9"), "?").unwrap();
        std::fs::write(ui.join("assets/icon.svg"), "<svg/>").unwrap();
        std::fs::write(ui.join("docs/index.html"), "<html>docs</html>").unwrap();
        std::fs::write(ui.join("a b.txt"), "spaced").unwrap();
        std::fs::write(ui.join(".env"), "SECRET=1").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "top secret").unwrap();
        std::fs::write(dir.path().join(".env"), "SECRET=1").unwrap();
        dir
    }

    fn req(method: Method, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn get(uri: &str) -> http::request::Parts {
        req(Method::GET, uri, &[])
    }

    async fn body(resp: Response<Body>) -> Vec<u8> {
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    fn hdr(resp: &Response<Body>, name: header::HeaderName) -> &str {
        resp.headers()
            .get(&name)
            .unwrap_or_else(|| panic!("missing {name}"))
            .to_str()
            .unwrap()
    }

    #[test]
    fn open_prefers_ui_path_then_dist() {
        let pkg = package();
        let s = UiSurface::open(pkg.path(), &ui("ui", "/")).unwrap();
        assert_eq!(s.root(), pkg.path().join("ui").canonicalize().unwrap());
        assert_eq!(s.base_path(), "/");

        let kit = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(kit.path().join("dist/ui")).unwrap();
        let s = UiSurface::open(kit.path(), &ui("./ui/", "")).unwrap();
        assert_eq!(s.root(), kit.path().join("dist/ui").canonicalize().unwrap());
        assert_eq!(s.base_path(), "/");
    }

    #[test]
    fn open_errors_name_the_folders_tried() {
        let pkg = tempfile::tempdir().unwrap();
        let err = UiSurface::open(pkg.path(), &ui("web", "/")).unwrap_err();
        assert!(err.contains("web"), "{err}");
        assert!(
            err.contains(&pkg.path().join("web").display().to_string()),
            "{err}"
        );
        assert!(
            err.contains(&pkg.path().join("dist/web").display().to_string()),
            "{err}"
        );

        std::fs::write(pkg.path().join("web"), "a file, not a folder").unwrap();
        assert!(UiSurface::open(pkg.path(), &ui("web", "/")).is_err());

        for bad in ["../ui", "/etc", "ui/../../x"] {
            let err = UiSurface::open(pkg.path(), &ui(bad, "/")).unwrap_err();
            assert!(
                err.contains("relative path inside the package"),
                "{bad}: {err}"
            );
        }
        for bad in ["/a/../b", "/a?x", "/a%2f"] {
            let pkg = package();
            let err = UiSurface::open(pkg.path(), &ui("ui", bad)).unwrap_err();
            assert!(err.contains("ui.basePath"), "{bad}: {err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn open_refuses_a_ui_folder_symlinked_outside() {
        let outside = tempfile::tempdir().unwrap();
        let pkg = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), pkg.path().join("ui")).unwrap();
        let err = UiSurface::open(pkg.path(), &ui("ui", "/")).unwrap_err();
        assert!(err.contains("outside the package"), "{err}");
    }

    #[test]
    fn base_path_is_normalized() {
        let pkg = package();
        for (raw, want) in [
            ("", "/"),
            ("/", "/"),
            ("app", "/app"),
            ("/app/", "/app"),
            ("/a/b", "/a/b"),
        ] {
            let s = UiSurface::open(pkg.path(), &ui("ui", raw)).unwrap();
            assert_eq!(s.base_path(), want, "{raw}");
        }
    }

    #[tokio::test]
    async fn serves_index_with_headers() {
        let pkg = package();
        let s = UiSurface::open(pkg.path(), &ui("ui", "/")).unwrap();
        let resp = s.serve_file(&get("/")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(hdr(&resp, header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(hdr(&resp, header::CACHE_CONTROL), "no-cache");
        assert_eq!(hdr(&resp, header::CONTENT_LENGTH), "18");
        assert!(hdr(&resp, header::ETAG).starts_with("\"12-"));
        httpdate::parse_http_date(hdr(&resp, header::LAST_MODIFIED)).unwrap();
        assert_eq!(body(resp).await, b"<html>index</html>");

        let resp = s.serve_file(&get("/index.html?v=1")).await.unwrap();
        assert_eq!(body(resp).await, b"<html>index</html>");
        let resp = s.serve_file(&get("/docs")).await.unwrap();
        assert_eq!(body(resp).await, b"<html>docs</html>");
        let resp = s.serve_file(&get("/docs/")).await.unwrap();
        assert_eq!(body(resp).await, b"<html>docs</html>");
        assert!(s.serve_file(&get("/empty/")).await.is_none());
        let resp = s.serve_file(&get("/a%20b.txt")).await.unwrap();
        assert_eq!(body(resp).await, b"spaced");
    }

    #[tokio::test]
    async fn content_types_and_cache_control() {
        let pkg = package();
        let s = UiSurface::open(pkg.path(), &ui("ui", "/")).unwrap();
        let cases = [
            ("/app.css", "text/css; charset=utf-8", CACHE_REVALIDATE),
            ("/assets/index-4f3a9c1b.js", "", CACHE_IMMUTABLE),
            ("/assets/logo.png", "image/png", CACHE_REVALIDATE),
            (
                "/assets/icon.svg",
                "image/svg+xml; charset=utf-8",
                CACHE_REVALIDATE,
            ),
            (
                "/assets/data.qqzz9",
                "application/octet-stream",
                CACHE_REVALIDATE,
            ),
        ];
        for (path, ctype, cache) in cases {
            let resp = s.serve_file(&get(path)).await.unwrap();
            let got = hdr(&resp, header::CONTENT_TYPE);
            if ctype.is_empty() {
                assert!(
                    got.contains("javascript") && got.ends_with("charset=utf-8"),
                    "{got}"
                );
            } else {
                assert_eq!(got, ctype, "{path}");
            }
            assert_eq!(hdr(&resp, header::CACHE_CONTROL), cache, "{path}");
        }
    }

    #[tokio::test]
    async fn head_has_headers_and_no_body() {
        let pkg = package();
        let s = UiSurface::open(pkg.path(), &ui("ui", "/")).unwrap();
        let resp = s
            .serve_file(&req(Method::HEAD, "/app.css", &[]))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(hdr(&resp, header::CONTENT_LENGTH), "6");
        assert!(body(resp).await.is_empty());
        assert!(s
            .serve_file(&req(Method::POST, "/app.css", &[]))
            .await
            .is_none());
        assert!(s.serve_file(&req(Method::PUT, "/", &[])).await.is_none());
    }

    #[tokio::test]
    async fn conditional_requests_answer_304() {
        let pkg = package();
        let s = UiSurface::open(pkg.path(), &ui("ui", "/")).unwrap();
        let first = s.serve_file(&get("/app.css")).await.unwrap();
        let etag = hdr(&first, header::ETAG).to_string();
        let lm = hdr(&first, header::LAST_MODIFIED).to_string();

        let r = s
            .serve_file(&req(Method::GET, "/app.css", &[("if-none-match", &etag)]))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(hdr(&r, header::ETAG), etag);
        assert!(body(r).await.is_empty());

        let list = format!("\"other\", W/{etag}");
        let r = s
            .serve_file(&req(Method::GET, "/app.css", &[("if-none-match", &list)]))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

        let r = s
            .serve_file(&req(
                Method::GET,
                "/app.css",
                &[("if-none-match", "\"stale\"")],
            ))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r).await, b"body{}");

        let r = s
            .serve_file(&req(Method::GET, "/app.css", &[("if-modified-since", &lm)]))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

        let old = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(1_000_000));
        let r = s
            .serve_file(&req(
                Method::GET,
                "/app.css",
                &[("if-modified-since", &old)],
            ))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);

        // If-None-Match wins over If-Modified-Since.
        let r = s
            .serve_file(&req(
                Method::GET,
                "/app.css",
                &[("if-none-match", "\"stale\""), ("if-modified-since", &lm)],
            ))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);

        // A changed file gets a new ETag.
        std::fs::write(pkg.path().join("ui/app.css"), "body{color:red}").unwrap();
        let r = s
            .serve_file(&req(Method::GET, "/app.css", &[("if-none-match", &etag)]))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_ne!(hdr(&r, header::ETAG), etag);
    }

    /// The surface as opened, and the same without its file index (as for a
    /// folder too large to index), so both paths face the same checks.
    fn both(s: UiSurface) -> [UiSurface; 2] {
        assert!(s.files.is_some());
        let unindexed = UiSurface {
            files: None,
            ..s.clone()
        };
        [s, unindexed]
    }

    #[tokio::test]
    async fn never_serves_outside_the_root() {
        let pkg = package();
        for s in both(UiSurface::open(pkg.path(), &ui("ui", "/")).unwrap()) {
            for path in [
                "/../secret.txt",
                "/%2e%2e/secret.txt",
                "/%2E%2E%2Fsecret.txt",
                "/assets/..%2f..%2fsecret.txt",
                "/assets/%2e%2e/%2e%2e/secret.txt",
                "//etc/passwd",
                "/%2Fetc%2Fpasswd",
                "/..%5csecret.txt",
                "/app.css%00.png",
                "/%ff",
                "/%zz",
                "/.env",
                "/%2eenv",
                "/assets/../.env",
            ] {
                let got = s.serve_file(&get(path)).await;
                assert!(got.is_none(), "{path} was served");
            }
            // Still serves a legitimate file in the same folder.
            assert!(s.serve_file(&get("/app.css")).await.is_some());
        }
    }

    #[tokio::test]
    async fn files_are_indexed_at_open() {
        let pkg = package();
        let [indexed, unindexed] = both(UiSurface::open(pkg.path(), &ui("ui", "/")).unwrap());
        std::fs::write(pkg.path().join("ui/late.js"), "late").unwrap();
        assert!(indexed.serve_file(&get("/late.js")).await.is_none());
        assert!(unindexed.serve_file(&get("/late.js")).await.is_some());
        // A file removed after open is a miss, not an error.
        std::fs::remove_file(pkg.path().join("ui/app.css")).unwrap();
        assert!(indexed.serve_file(&get("/app.css")).await.is_none());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn symlinks_may_not_escape() {
        let pkg = package();
        let ui_dir = pkg.path().join("ui");
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x.txt"), "outside").unwrap();
        std::os::unix::fs::symlink(pkg.path().join("secret.txt"), ui_dir.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink(outside.path(), ui_dir.join("out")).unwrap();
        std::os::unix::fs::symlink(ui_dir.join("app.css"), ui_dir.join("alias.css")).unwrap();
        for s in both(UiSurface::open(pkg.path(), &ui("ui", "/")).unwrap()) {
            assert!(s.serve_file(&get("/leak.txt")).await.is_none());
            assert!(s.serve_file(&get("/out/x.txt")).await.is_none());
            let r = s.serve_file(&get("/alias.css")).await.unwrap();
            assert_eq!(body(r).await, b"body{}");
        }
    }

    #[tokio::test]
    async fn base_path_scopes_files() {
        let pkg = package();
        let s = UiSurface::open(pkg.path(), &ui("ui", "/app/")).unwrap();
        let r = s.serve_file(&get("/app")).await.unwrap();
        assert_eq!(body(r).await, b"<html>index</html>");
        let r = s.serve_file(&get("/app/")).await.unwrap();
        assert_eq!(body(r).await, b"<html>index</html>");
        let r = s.serve_file(&get("/app/app.css")).await.unwrap();
        assert_eq!(body(r).await, b"body{}");
        assert!(s.serve_file(&get("/app.css")).await.is_none());
        assert!(s.serve_file(&get("/application")).await.is_none());
        assert!(s.serve_file(&get("/")).await.is_none());
        assert!(s.serve_file(&get("/app/missing.js")).await.is_none());
    }

    #[tokio::test]
    async fn spa_fallback_wants_html() {
        let pkg = package();
        let s = UiSurface::open(pkg.path(), &ui("ui", "/app")).unwrap();
        let html = [("accept", "text/html,application/xhtml+xml,*/*;q=0.8")];
        let r = s
            .spa_fallback(&req(Method::GET, "/app/settings/profile", &html))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(hdr(&r, header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(hdr(&r, header::CACHE_CONTROL), "no-cache");
        assert_eq!(body(r).await, b"<html>index</html>");

        let r = s
            .spa_fallback(&req(Method::HEAD, "/app/x", &html))
            .await
            .unwrap();
        assert!(body(r).await.is_empty());

        let etag_req = req(Method::GET, "/app/x", &html);
        let etag = hdr(&s.spa_fallback(&etag_req).await.unwrap(), header::ETAG).to_string();
        let r = s
            .spa_fallback(&req(
                Method::GET,
                "/app/y",
                &[html[0], ("if-none-match", etag.as_str())],
            ))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

        assert!(s.spa_fallback(&get("/app/x")).await.is_none());
        assert!(s
            .spa_fallback(&req(
                Method::GET,
                "/app/x",
                &[("accept", "application/json")]
            ))
            .await
            .is_none());
        assert!(s
            .spa_fallback(&req(Method::GET, "/other", &html))
            .await
            .is_none());
        assert!(s
            .spa_fallback(&req(Method::POST, "/app/x", &html))
            .await
            .is_none());

        // No index.html: no fallback.
        let bare = tempfile::tempdir().unwrap();
        std::fs::create_dir(bare.path().join("ui")).unwrap();
        let s = UiSurface::open(bare.path(), &ui("ui", "/")).unwrap();
        assert!(s
            .spa_fallback(&req(Method::GET, "/x", &html))
            .await
            .is_none());
    }

    #[tokio::test]
    async fn large_files_stream_in_chunks() {
        let pkg = package();
        let data: Vec<u8> = (0..5 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
        std::fs::write(pkg.path().join("ui/big.bin"), &data).unwrap();
        let s = UiSurface::open(pkg.path(), &ui("ui", "/")).unwrap();
        let resp = s.serve_file(&get("/big.bin")).await.unwrap();
        assert_eq!(hdr(&resp, header::CONTENT_LENGTH), data.len().to_string());
        let mut body = resp.into_body();
        let mut frames = 0;
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            assert!(chunk.len() <= CHUNK);
            got.extend_from_slice(&chunk);
            frames += 1;
        }
        assert!(frames > 1, "one frame for 5 MiB: the file was not streamed");
        assert_eq!(got, data);
    }

    /// The real APKGs: pixell-kit 0.4 keeps the UI under `dist/ui/`, pixell-sdk 0.5 at `ui/`.
    #[tokio::test]
    async fn real_fixture_uis_are_served() {
        for (apkg, dir) in [
            ("pk-full-0.1.0.apkg", "dist/ui"),
            ("sdk-full-0.1.0.apkg", "ui"),
        ] {
            let path = par_fixtures::apkg(apkg);
            let home = tempfile::tempdir().unwrap();
            let opts = par_package::LoadOptions {
                home: home.path().to_path_buf(),
                ..Default::default()
            };
            let pkg = par_package::load(&path, &opts).unwrap();
            let manifest_ui = pkg.manifest.ui.as_ref().expect("fixture declares a ui");
            let s = UiSurface::open(&pkg.root, manifest_ui).unwrap();
            assert_eq!(
                s.root(),
                pkg.root.join(dir).canonicalize().unwrap(),
                "{apkg}"
            );
            let resp = s.serve_file(&get(s.base_path())).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{apkg}");
            assert_eq!(hdr(&resp, header::CONTENT_TYPE), "text/html; charset=utf-8");
            let html = String::from_utf8(body(resp).await).unwrap();
            assert!(
                html.contains("<html") || html.contains("<!DOCTYPE"),
                "{apkg}: {html}"
            );
            assert!(s.serve_file(&get("/.env")).await.is_none());
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%20b%2F").unwrap(), b"a b/");
        assert!(percent_decode(b"%2").is_none());
        assert!(percent_decode(b"%g0").is_none());
        assert_eq!(safe_segments("a//b/").unwrap(), ["a", "b"]);
        assert_eq!(
            safe_segments(".well-known/agent.json").unwrap(),
            [".well-known", "agent.json"]
        );
    }
}
