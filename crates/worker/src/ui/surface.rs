//! One mount of the UI folder: the files under a URL prefix, and the SPA
//! fallback to `index.html` for client-side routes under it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::files::{
    index_files, normalize_base_path, open_contained, relative_ui_path, safe_segments, stream_file,
    Content, INDEX,
};
use super::headers::{cache_control, content_type, Validators};

/// An opened UI folder and the URL prefix it is served under.
#[derive(Debug, Clone)]
pub struct UiSurface {
    /// Canonical (symlink-free) UI folder.
    pub(super) root: PathBuf,
    /// `"/"` or `"/prefix"` (no trailing slash).
    pub(super) base_path: String,
    /// Relative paths (`a/b.js`) of the files present at open. Package contents
    /// are immutable, so a request naming nothing here is answered `None` without
    /// touching the disk: the agent's own routes (`/api/...`) pay no file-system
    /// cost. `None` when the folder is too large to index.
    pub(super) files: Option<Arc<HashSet<String>>>,
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

    /// The same folder served under another prefix (the file index is shared).
    pub fn with_base_path(&self, raw: &str) -> Result<UiSurface, String> {
        Ok(UiSurface {
            base_path: normalize_base_path(raw)?,
            ..self.clone()
        })
    }

    /// Whether `path` is the base path or below it.
    pub fn contains(&self, path: &str) -> bool {
        self.relative_request_path(path).is_some()
    }

    /// The root `index.html` for a client-side route of a single-page app: a
    /// GET/HEAD under the base path that accepts `text/html` and whose last
    /// segment has no file extension (a missing `app.js` stays a 404).
    pub async fn spa_fallback(&self, parts: &http::request::Parts) -> Option<Response<Body>> {
        if !is_get_or_head(&parts.method) || !accepts_html(&parts.headers) {
            return None;
        }
        let rel = self.relative_request_path(parts.uri.path())?;
        if !looks_like_client_route(rel) {
            return None;
        }
        self.respond(self.root.join(INDEX), parts).await
    }

    /// `307` to the base path with a trailing slash, for a GET/HEAD of the base
    /// path without one, so that the page's relative links resolve inside the
    /// mount. The location is relative (`ui/`), so it stays right behind the
    /// supervisor's `/agents/{id}` prefix, which the worker does not see.
    pub fn redirect_to_slash(&self, parts: &http::request::Parts) -> Option<Response<Body>> {
        let path = parts.uri.path();
        if !is_get_or_head(&parts.method) || self.base_path == "/" || path != self.base_path {
            return None;
        }
        let last = self.base_path.rsplit('/').next().unwrap_or_default();
        let location = match parts.uri.query() {
            Some(q) => format!("{last}/?{q}"),
            None => format!("{last}/"),
        };
        Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, HeaderValue::from_str(&location).ok()?)
            .body(Body::empty())
            .ok()
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

/// A path below the mount whose last segment has no extension (`settings/profile`,
/// not `assets/app.js`): a route of the app's client-side router.
fn looks_like_client_route(rel: &str) -> bool {
    let last = rel
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    !last.contains('.')
}
