//! `/supervisor/ui` on the main port: agents' pages are served from this
//! origin, so the dashboard (which holds the admin token) is not; a short
//! page says where it is.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const CSP: &str = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The notice for `/supervisor/ui` and everything under it; `admin` is the
/// admin listener's address (`None`: turned off).
pub fn router<S: Clone + Send + Sync + 'static>(admin: Option<SocketAddr>) -> Router<S> {
    let page: Arc<str> = page(admin).into();
    let serve = move || {
        let page = Arc::clone(&page);
        async move { notice(&page) }
    };
    Router::new()
        .route("/supervisor/ui", get(serve.clone()))
        .route("/supervisor/ui/", get(serve.clone()))
        .route("/supervisor/ui/{*path}", get(serve))
}

fn notice(page: &str) -> Response {
    let mut r = (StatusCode::OK, page.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    super::harden(h, Some(CSP));
    r
}

/// The page: where the dashboard is, and why not here.
fn page(admin: Option<SocketAddr>) -> String {
    let where_ = match admin {
        None => "The dashboard is turned off on this supervisor (<code>PAR_ADMIN_PORT=off</code>)."
            .to_string(),
        Some(a) if a.ip().is_loopback() => {
            let url = format!("http://{a}/supervisor/ui/");
            format!(
                "The dashboard is on the supervisor's admin port, <code>{port}</code>, bound to \
                 <code>{ip}</code> (<code>PAR_ADMIN_PORT</code>, <code>PAR_ADMIN_HOST</code>): \
                 on the supervisor's machine, <a href=\"{url}\">{url}</a>; from elsewhere, \
                 through a port forward to it (<code>ssh -L</code>, ECS Exec).",
                port = a.port(),
                ip = a.ip(),
            )
        }
        Some(a) => format!(
            "The dashboard is on the supervisor's admin port, <code>{port}</code> of this host \
             (<code>PAR_ADMIN_PORT</code>, bound to <code>{ip}</code>).",
            port = a.port(),
            ip = a.ip(),
        ),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>PAR supervisor: the dashboard is on the admin port</title></head><body>\n\
         <h1>PAR supervisor</h1>\n<p>{where_}</p>\n\
         <p>Agents' pages are served from this origin, so the dashboard and its admin token \
         are kept on another one. The management API on this port is for <code>par ctl</code> \
         and scripts (<code>Authorization: Bearer</code>).</p>\n</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn names_the_admin_port_and_holds_no_dashboard() {
        let app = router::<()>(Some("127.0.0.1:8900".parse().unwrap()));
        for path in [
            "/supervisor/ui",
            "/supervisor/ui/",
            "/supervisor/ui/main.js",
        ] {
            let r = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
            let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            let text = String::from_utf8(body.to_vec()).unwrap();
            assert!(
                text.contains("http://127.0.0.1:8900/supervisor/ui/"),
                "{text}"
            );
            assert!(
                !text.contains("<script") && !text.contains("token-input"),
                "{text}"
            );
        }
        assert!(page(None).contains("PAR_ADMIN_PORT=off"));
        let open = page(Some("0.0.0.0:8900".parse().unwrap()));
        assert!(open.contains("8900") && !open.contains("href"), "{open}");
    }
}
