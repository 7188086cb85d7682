//! `GET /supervisor/logs` (filtered; `follow=true` streams SSE) and
//! `DELETE /supervisor/logs`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::St;
use crate::config::ValidationErrors;
use crate::http::error::ApiError;
use crate::logs::{Filter, Level};

/// `since`: RFC 3339, Unix seconds, or a duration ago (`5m`).
fn parse_since(s: &str) -> Option<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Some(t);
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s)
        .ok()
        .and_then(|d| SystemTime::now().checked_sub(d))
}

fn log_filter(q: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let mut errors = ValidationErrors::default();
    let mut f = Filter {
        process_id: q.get("process_id").filter(|s| !s.is_empty()).cloned(),
        ..Default::default()
    };
    if let Some(l) = q.get("level").filter(|s| !s.is_empty()) {
        match Level::parse(l) {
            Some(l) => f.level = Some(l),
            None => errors.push(
                "level",
                format!("{l:?} is not one of trace, debug, info, warn, error"),
            ),
        }
    }
    if let Some(s) = q.get("since").filter(|s| !s.is_empty()) {
        match parse_since(s) {
            Some(t) => f.since = Some(t),
            None => errors.push(
                "since",
                format!("{s:?} is not an RFC 3339 time, Unix seconds or a duration like 5m"),
            ),
        }
    }
    if let Some(l) = q.get("limit").filter(|s| !s.is_empty()) {
        match l.parse::<usize>() {
            Ok(n) => f.limit = Some(n),
            Err(_) => errors.push("limit", format!("{l:?} is not a number")),
        }
    }
    errors
        .into_result()
        .map(|_| f)
        .map_err(|e| ApiError::invalid(&e))
}

pub async fn logs(
    axum::extract::State(st): St,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut filter = match log_filter(&q) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let follow = matches!(q.get("follow").map(String::as_str), Some("true" | "1"));
    if !follow {
        if filter.limit.is_none() {
            filter.limit = Some(1000);
        }
        let entries = st.logs.query(&filter);
        let list: Vec<&crate::logs::LogEntry> = entries.iter().map(|e| &**e).collect();
        return Json(json!({ "count": list.len(), "logs": list })).into_response();
    }
    // SSE: the backlog, then live entries; a comment every 15 s keeps proxies from closing it.
    let rx = st.logs.subscribe();
    let backlog = st.logs.query(&Filter {
        limit: Some(filter.limit.unwrap_or(100)),
        ..filter.clone()
    });
    let last_seq = backlog.last().map_or(0, |e| e.seq);
    let first: Vec<Result<Bytes, std::convert::Infallible>> =
        backlog.iter().map(|e| Ok(sse_event(e))).collect();
    let live = futures_util::stream::unfold(
        (rx, filter, last_seq),
        |(mut rx, filter, last_seq)| async move {
            loop {
                let next = tokio::time::timeout(Duration::from_secs(15), rx.recv()).await;
                match next {
                    Err(_) => {
                        return Some((
                            Ok(Bytes::from_static(b": keep-alive\n\n")),
                            (rx, filter, last_seq),
                        ))
                    }
                    Ok(Ok(e)) if e.seq > last_seq && filter.matches(&e) => {
                        return Some((Ok(sse_event(&e)), (rx, filter, last_seq)));
                    }
                    Ok(Ok(_)) => continue,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                        let note = format!(": {n} entries skipped (slow reader)\n\n");
                        return Some((Ok(Bytes::from(note)), (rx, filter, last_seq)));
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
                }
            }
        },
    );
    use futures_util::StreamExt as _;
    let stream = futures_util::stream::iter(first).chain(live);
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn sse_event(e: &crate::logs::LogEntry) -> Bytes {
    let data = serde_json::to_string(e).unwrap_or_default();
    Bytes::from(format!("id: {}\nevent: log\ndata: {data}\n\n", e.seq))
}

pub async fn clear(
    axum::extract::State(st): St,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let pid = q.get("process_id").filter(|s| !s.is_empty()).map(|p| {
        if p.starts_with("par-") {
            p.clone()
        } else {
            format!("par-{p}")
        }
    });
    let n = st.logs.clear(pid.as_deref());
    Json(json!({ "cleared": n })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_forms() {
        assert!(parse_since("2024-01-01T00:00:00Z").is_some());
        assert!(parse_since("1700000000").is_some());
        assert!(parse_since("5m").is_some());
        assert!(parse_since("yesterday").is_none());
    }
}
