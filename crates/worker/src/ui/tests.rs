//! Tests of the UI surface against real folders: headers, conditional
//! requests, containment, mounts and the SPA fallback.

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use http::{header, Method, Response, StatusCode};

use super::files::{percent_decode, safe_segments, CHUNK};
use super::headers::{CACHE_IMMUTABLE, CACHE_REVALIDATE};
use super::surface::UiSurface;
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

#[test]
fn mounted_at_ui_and_at_the_base_path() {
    let pkg = package();
    let m = super::UiMounts::open(pkg.path(), &ui("ui", "/")).unwrap();
    assert_eq!(m.base_paths(), ["/ui", "/"]);
    assert_eq!(m.dedicated("/ui/x").unwrap().base_path(), "/ui");
    assert_eq!(m.dedicated("/ui").unwrap().base_path(), "/ui");
    assert!(m.dedicated("/uix").is_none());
    assert!(m.dedicated("/api/hello").is_none());
    assert_eq!(m.root().unwrap().base_path(), "/");

    let m = super::UiMounts::open(pkg.path(), &ui("ui", "/console/")).unwrap();
    assert_eq!(m.base_paths(), ["/ui", "/console"]);
    assert_eq!(m.dedicated("/console/a").unwrap().base_path(), "/console");
    assert!(m.root().is_none());

    let m = super::UiMounts::open(pkg.path(), &ui("ui", "/ui")).unwrap();
    assert_eq!(m.base_paths(), ["/ui"]);

    // Nested mounts: the longest prefix serves.
    let m = super::UiMounts::open(pkg.path(), &ui("ui", "/ui/app")).unwrap();
    assert_eq!(m.dedicated("/ui/app/x").unwrap().base_path(), "/ui/app");
    assert_eq!(m.dedicated("/ui/other").unwrap().base_path(), "/ui");
}

#[tokio::test]
async fn spa_fallback_is_for_client_routes_only() {
    let pkg = package();
    let s = UiSurface::open(pkg.path(), &ui("ui", "/ui")).unwrap();
    let html = [("accept", "text/html")];
    for route in ["/ui/", "/ui/settings", "/ui/settings/profile/", "/ui/a/b/c"] {
        let r = s.spa_fallback(&req(Method::GET, route, &html)).await;
        assert_eq!(
            body(r.expect(route)).await,
            b"<html>index</html>",
            "{route}"
        );
    }
    for asset in [
        "/ui/missing.js",
        "/ui/assets/app.3f2a.css",
        "/ui/favicon.ico",
    ] {
        assert!(
            s.spa_fallback(&req(Method::GET, asset, &html))
                .await
                .is_none(),
            "{asset}"
        );
    }
}

#[test]
fn the_bare_mount_redirects_to_its_folder() {
    let pkg = package();
    let s = UiSurface::open(pkg.path(), &ui("ui", "/ui")).unwrap();
    let r = s.redirect_to_slash(&get("/ui")).unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    // Relative: right at the worker (`/ui/`) and behind `/agents/{id}` alike.
    assert_eq!(hdr(&r, header::LOCATION), "ui/");
    let r = s.redirect_to_slash(&get("/ui?tab=2")).unwrap();
    assert_eq!(hdr(&r, header::LOCATION), "ui/?tab=2");
    assert!(s.redirect_to_slash(&get("/ui/")).is_none());
    assert!(s.redirect_to_slash(&get("/ui/x")).is_none());
    assert!(s
        .redirect_to_slash(&req(Method::POST, "/ui", &[]))
        .is_none());
    let nested = s.with_base_path("/a/console").unwrap();
    let r = nested.redirect_to_slash(&get("/a/console")).unwrap();
    assert_eq!(hdr(&r, header::LOCATION), "console/");
    let root = s.with_base_path("/").unwrap();
    assert!(root.redirect_to_slash(&get("/")).is_none());
}
