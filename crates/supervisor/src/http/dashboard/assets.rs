//! The dashboard's files, embedded at build time, served with their content
//! type, a content-hash ETag (so a browser revalidates and gets 304) and the
//! headers that keep the page and its token to itself.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http::error::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: u64,
}

macro_rules! asset {
    ($name:literal, $ty:expr) => {
        Asset {
            name: $name,
            content_type: $ty,
            body: include_bytes!(concat!("static/", $name)),
            etag: fnv1a(include_bytes!(concat!("static/", $name))),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("main.js", JS),
    asset!("api.js", JS),
    asset!("format.js", JS),
    asset!("metrics.js", JS),
    asset!("table.js", JS),
    asset!("task.js", JS),
    asset!("detail.js", JS),
    asset!("logs.js", JS),
    asset!("actions.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

/// FNV-1a, computed at compile time: an ETag only has to change when the bytes do.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// The page only talks to its own origin; nothing inline, nothing remote.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/supervisor/ui` (redirected to `/supervisor/ui/`, so relative asset paths
/// work behind a path prefix too), the page, and its files.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/supervisor/ui", get(redirect))
        .route("/supervisor/ui/", get(index))
        .route("/supervisor/ui/{*path}", get(file))
}

async fn redirect() -> Response {
    // Relative, so that a proxy's path prefix is kept.
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static("ui/"))],
    )
        .into_response()
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::not_found(format!("no dashboard file '{name}'")).into_response();
    };
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        });
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let h = resp.headers_mut();
    if !fresh {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    super::harden(h, asset.name.ends_with(".html").then_some(CSP));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt as _;

    async fn get(path: &str, inm: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(v) = inm {
            req = req.header(header::IF_NONE_MATCH, v);
        }
        router::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn serves_every_file_with_its_type_and_etag() {
        for a in ASSETS {
            let r = get(&format!("/supervisor/ui/{}", a.name), None).await;
            assert_eq!(r.status(), StatusCode::OK, "{}", a.name);
            assert_eq!(r.headers()[header::CONTENT_TYPE], a.content_type);
            let etag = r.headers()[header::ETAG].to_str().unwrap().to_string();
            let again = get(&format!("/supervisor/ui/{}", a.name), Some(&etag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{}", a.name);
            let weak = format!("W/{etag}, \"other\"");
            let again = get(&format!("/supervisor/ui/{}", a.name), Some(&weak)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{}", a.name);
            let stale = get(&format!("/supervisor/ui/{}", a.name), Some("\"0\"")).await;
            assert_eq!(stale.status(), StatusCode::OK, "{}", a.name);
        }
    }

    #[tokio::test]
    async fn index_redirect_and_unknown_files() {
        let r = get("/supervisor/ui/", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let r = get("/supervisor/ui", None).await;
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "ui/");
        for bad in [
            "/supervisor/ui/nope.js",
            "/supervisor/ui/../api.rs",
            "/supervisor/ui/static/main.js",
        ] {
            assert_eq!(
                get(bad, None).await.status(),
                StatusCode::NOT_FOUND,
                "{bad}"
            );
        }
    }

    #[test]
    fn every_file_the_page_loads_is_embedded() {
        // index.html and the modules name their files; each must be in ASSETS.
        let mut names = Vec::new();
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).unwrap();
            for quote in ['"', '\''] {
                for part in text.split(quote) {
                    let p = part.trim_start_matches("./");
                    if (p.ends_with(".js") || p.ends_with(".css") || p.ends_with(".svg"))
                        && !p.contains(['/', ' ', '*'])
                    {
                        names.push(p.to_string());
                    }
                }
            }
        }
        assert!(names.iter().any(|n| n == "main.js"), "{names:?}");
        for n in names {
            assert!(
                ASSETS.iter().any(|a| a.name == n),
                "{n} is loaded but not embedded"
            );
        }
    }

    #[test]
    fn the_page_stays_small() {
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(total < 300 * 1024, "the dashboard weighs {total} bytes");
    }
}
