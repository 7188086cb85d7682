//! Where a request under `/agents/` goes: the agent id and the path (with
//! its query) the worker sees, and the prefix it was mounted under
//! (`X-Forwarded-Prefix`).

/// A request's destination inside an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub agent_id: String,
    /// The worker's path and query: what followed the id (`/` when nothing did).
    pub path_and_query: String,
    /// `/agents/{id}`, as the client sent it.
    pub prefix: String,
}

pub const PREFIX: &str = "/agents/";

/// Whether a request is for an agent (else it is the management API's):
/// its path (`target`, with or without its query) is `/agents/` and more.
/// The one place that decides it: the server, the direct path and the
/// connection handed from one to the other all ask here.
#[inline]
pub fn for_an_agent(target: &[u8]) -> bool {
    target
        .strip_prefix(PREFIX.as_bytes())
        .is_some_and(|rest| !matches!(rest.first(), None | Some(b'?')))
}

/// Splits `/agents/{id}{rest}` (a path `for_an_agent`); `None` for a path outside `/agents/`.
pub fn split(path: &str, query: Option<&str>) -> Option<Target> {
    let after = path.strip_prefix(PREFIX)?;
    let id_len = after.find('/').unwrap_or(after.len());
    let (agent_id, rest) = after.split_at(id_len);
    let rest = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match query {
        Some(q) => {
            let mut pq = String::with_capacity(rest.len() + 1 + q.len());
            pq.push_str(rest);
            pq.push('?');
            pq.push_str(q);
            pq
        }
        None => rest.to_owned(),
    };
    Some(Target {
        agent_id: agent_id.to_owned(),
        path_and_query,
        prefix: path[..PREFIX.len() + id_len].to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        let t = split("/agents/a/invoke", Some("x=1")).unwrap();
        assert_eq!(
            (
                t.agent_id.as_str(),
                t.path_and_query.as_str(),
                t.prefix.as_str()
            ),
            ("a", "/invoke?x=1", "/agents/a")
        );
        let t = split("/agents/a", None).unwrap();
        assert_eq!((t.agent_id.as_str(), t.path_and_query.as_str()), ("a", "/"));
        let t = split("/agents//x", None).unwrap();
        assert_eq!((t.agent_id.as_str(), t.path_and_query.as_str()), ("", "/x"));
        assert_eq!(split("/agentsx/a", None), None);
        assert_eq!(split("/supervisor/status", None), None);
    }

    #[test]
    fn what_is_for_an_agent() {
        for (target, yes) in [
            ("/agents/a", true),
            ("/agents/a/x?y", true),
            ("/agents//x", true),
            ("/agents/", false),
            ("/agents/?x=1", false),
            ("/agents", false),
            ("/agentsx/a", false),
            ("/supervisor/status", false),
            ("http://h/agents/a", false),
        ] {
            assert_eq!(for_an_agent(target.as_bytes()), yes, "{target}");
        }
    }

    proptest! {
        /// For any path a client can send: the id holds no `/`, the worker's
        /// path starts with `/`, and prefix + path give back the original
        /// (nothing is lost or invented on the way to the worker).
        #[test]
        fn the_split_loses_nothing(
            id in "[^/?#]{0,70}",
            rest in "(/[^?#]{0,40}){0,4}",
            query in proptest::option::of("[^#]{0,40}"),
        ) {
            let path = format!("/agents/{id}{rest}");
            let t = split(&path, query.as_deref()).unwrap();
            prop_assert!(!t.agent_id.contains('/'));
            prop_assert_eq!(&t.agent_id, &id);
            prop_assert!(t.path_and_query.starts_with('/'));
            let (worker_path, worker_query) = match t.path_and_query.split_once('?') {
                Some((p, q)) if query.is_some() => (p.to_string(), Some(q.to_string())),
                _ => (t.path_and_query.clone(), None),
            };
            let expected = if rest.is_empty() { "/".to_string() } else { rest.clone() };
            prop_assert_eq!(worker_path, expected);
            prop_assert_eq!(worker_query, query);
            prop_assert_eq!(format!("{}{}", t.prefix, rest), path);
        }
    }
}
