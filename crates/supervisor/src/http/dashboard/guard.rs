//! What keeps the admin credential from agents' pages, as two layers.
//!
//! On the admin port (the dashboard's origin, where no agent is served):
//! a browser request from any other origin is refused unless it is a plain
//! top-level navigation (the Fetch Metadata resource isolation policy; the
//! `Origin` header where a browser sends no `Sec-Fetch-Site`), and every
//! response forbids framing, sniffing, referrers, openers and cross-origin
//! reads. So a page on the main port (same site, another origin) can
//! neither frame the dashboard nor call the API through the browser.
//!
//! On the main port, where agents' pages are same-origin: the management
//! API's mutating routes refuse any request a browser sent (`Origin` or
//! `Sec-Fetch-Site`), so the API there is for `par ctl` and scripts only.
//! Nothing on either port hands out a credential by itself: no cookies, no
//! HTTP authentication a browser would remember; the token is only ever
//! sent by hand in `Authorization: Bearer`.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

use crate::http::error::ApiError;

/// The policy for responses of the admin port that set none of their own
/// (JSON, errors): nothing in them may run, load or be framed.
const API_CSP: &str =
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The admin port's layer: refuse other origins, then harden the response.
pub async fn admin_origin(req: Request, next: Next) -> Response {
    if let Err(why) = same_origin_or_navigation(req.method(), req.headers()) {
        let mut r = ApiError::forbidden(why).into_response_body();
        harden(r.headers_mut());
        return r;
    }
    let mut resp = next.run(req).await;
    harden(resp.headers_mut());
    resp
}

/// The main port's layer on the management API: a browser's request to a
/// mutating route is refused, whichever page sent it.
pub async fn main_port_api(req: Request, next: Next) -> Response {
    if !is_safe(req.method()) && sent_by_a_browser(req.headers()) {
        let mut r = ApiError::forbidden(
            "the management API on this port takes requests from par ctl and scripts, not from \
             browsers (agents' pages are served from this origin); the dashboard is on the \
             supervisor's admin port (PAR_ADMIN_PORT)",
        )
        .into_response_body();
        r.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        return r;
    }
    next.run(req).await
}

fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD)
}

/// Browsers send `Origin` on every request but same-origin GET/HEAD, and
/// `Sec-Fetch-Site` on every request (Chromium 76+, Firefox 90+, Safari 16.4+);
/// `par ctl`, curl and the agents' own HTTP clients send neither.
fn sent_by_a_browser(h: &HeaderMap) -> bool {
    h.contains_key(header::ORIGIN) || h.contains_key("sec-fetch-site")
}

/// Whether a request came from the admin origin itself (or from no page at
/// all: typed in, bookmarked, a tool), or is a top-level navigation to it.
fn same_origin_or_navigation(method: &Method, h: &HeaderMap) -> Result<(), String> {
    let site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let navigation = is_safe(method)
        && h.get("sec-fetch-mode").and_then(|v| v.to_str().ok()) == Some("navigate")
        && h.get("sec-fetch-dest").and_then(|v| v.to_str().ok()) == Some("document");
    match site {
        Some("same-origin" | "none") => {}
        Some(_) if navigation => {}
        Some(other) => {
            return Err(format!(
                "a request from another origin ({other}) is refused on the admin port"
            ))
        }
        None => {}
    }
    // Older browsers: the Origin header, when sent, must be this host.
    if let Some(origin) = h.get(header::ORIGIN) {
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin = origin.to_str().unwrap_or("null");
        let same = host.is_some_and(|host| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|o| o.eq_ignore_ascii_case(host))
        });
        if !same {
            return Err(format!(
                "a request from another origin ({origin}) is refused on the admin port"
            ));
        }
    }
    Ok(())
}

/// Headers every admin-port response carries (the dashboard's own page sets
/// a CSP of its own, which is kept).
pub(super) fn harden(h: &mut HeaderMap) {
    let mut set = |name: header::HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(header::CONTENT_SECURITY_POLICY, API_CSP);
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    set(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    // Never a CORS grant: whatever a handler said, no other origin may read.
    for name in [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header::ACCESS_CONTROL_ALLOW_METHODS,
    ] {
        h.remove(name);
    }
    h.remove(header::SET_COOKIE);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_admin_origin_takes_its_own_requests_and_navigations_only() {
        let host = ("host", "127.0.0.1:8900");
        let ok = |m: Method, h: &[(&str, &str)]| same_origin_or_navigation(&m, &headers(h)).is_ok();
        // Tools, typed-in addresses, the dashboard itself.
        assert!(ok(Method::POST, &[host]));
        assert!(ok(Method::GET, &[host, ("sec-fetch-site", "none")]));
        assert!(ok(
            Method::POST,
            &[
                host,
                ("sec-fetch-site", "same-origin"),
                ("origin", "http://127.0.0.1:8900")
            ]
        ));
        // A link from an agent's page opens the dashboard...
        assert!(ok(
            Method::GET,
            &[
                host,
                ("sec-fetch-site", "same-site"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document")
            ]
        ));
        // ...but cannot frame it, fetch from it or post to it.
        assert!(!ok(
            Method::GET,
            &[
                host,
                ("sec-fetch-site", "same-site"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "iframe")
            ]
        ));
        assert!(!ok(
            Method::GET,
            &[
                host,
                ("sec-fetch-site", "same-site"),
                ("sec-fetch-mode", "cors")
            ]
        ));
        assert!(!ok(
            Method::POST,
            &[
                host,
                ("sec-fetch-site", "same-site"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document")
            ]
        ));
        assert!(!ok(
            Method::OPTIONS,
            &[host, ("sec-fetch-site", "cross-site")]
        ));
        // Without Fetch Metadata, Origin decides.
        assert!(!ok(
            Method::POST,
            &[host, ("origin", "http://127.0.0.1:8000")]
        ));
        assert!(!ok(Method::POST, &[host, ("origin", "null")]));
        assert!(!ok(Method::POST, &[("origin", "http://127.0.0.1:8900")]));
        assert!(ok(
            Method::POST,
            &[host, ("origin", "http://127.0.0.1:8900")]
        ));
    }

    #[test]
    fn the_main_port_knows_a_browser() {
        assert!(sent_by_a_browser(&headers(&[("origin", "http://x")])));
        assert!(sent_by_a_browser(&headers(&[(
            "sec-fetch-site",
            "same-origin"
        )])));
        assert!(!sent_by_a_browser(&headers(&[(
            "authorization",
            "Bearer x"
        )])));
    }

    #[test]
    fn hardened_responses_grant_nothing() {
        let mut h = headers(&[
            ("access-control-allow-origin", "*"),
            ("set-cookie", "a=b"),
            ("content-security-policy", "default-src 'self'"),
        ]);
        harden(&mut h);
        assert!(!h.contains_key("access-control-allow-origin"));
        assert!(!h.contains_key("set-cookie"));
        assert_eq!(h["content-security-policy"], "default-src 'self'");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["cross-origin-opener-policy"], "same-origin");
        assert_eq!(h["cross-origin-resource-policy"], "same-origin");
        assert_eq!(h["referrer-policy"], "no-referrer");
    }
}
