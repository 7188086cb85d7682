//! The proxy's `/agents/{id}{rest}` split on arbitrary text: never panics,
//! the id holds no `/`, and prefix + path + query give back the request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use par_supervisor::http::proxy::target::split;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `path?query` as a client sends it; a NUL separates "no query" from "empty query".
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text.trim_end_matches('\0'), None),
    };
    match split(path, query) {
        None => assert!(!path.starts_with("/agents/")),
        Some(t) => {
            assert!(path.starts_with("/agents/"));
            assert!(!t.agent_id.contains('/'));
            assert_eq!(t.prefix, format!("/agents/{}", t.agent_id));
            assert!(t.path_and_query.starts_with('/'));
            let worker_path = match query {
                Some(q) => {
                    let suffix = format!("?{q}");
                    assert!(t.path_and_query.ends_with(&suffix));
                    &t.path_and_query[..t.path_and_query.len() - suffix.len()]
                }
                None => t.path_and_query.as_str(),
            };
            let rest = &path[t.prefix.len()..];
            if rest.is_empty() {
                assert_eq!(worker_path, "/");
            } else {
                assert_eq!(worker_path, rest);
            }
        }
    }
});
