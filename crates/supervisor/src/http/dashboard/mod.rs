//! The live dashboard and its origin. The page (embedded in the binary,
//! `assets`) reads the public management routes and, with the admin token,
//! follows logs and acts on agents. It is served on the admin port only
//! (`listener`), an origin no agent is served from, behind the rules that
//! keep other origins out (`guard`); `/supervisor/ui` on the main port,
//! where agents' pages live, is a notice that says where it is (`notice`).

mod assets;
mod guard;
mod listener;
mod notice;

pub use assets::router;
pub use listener::{admin_router, main_router, AdminListener};

/// The headers every dashboard response carries: revalidated each time (a
/// new binary serves new files at the same names), never sniffed, no
/// referrer; a page (`page_csp`) also gets its content security policy and
/// may not be framed.
fn harden(h: &mut axum::http::HeaderMap, page_csp: Option<&'static str>) {
    use axum::http::{header, HeaderValue};
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(csp) = page_csp {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(csp),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
}
