//! How PAR's processes report, the same way in every mode: logging set-up,
//! the Prometheus text format, and errors printed with their causes.

pub mod logging;
pub mod prometheus;
pub mod trace;

/// The error and its causes, joined by ": " (a cause whose text the error
/// already ends with is not repeated).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.ends_with(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn chains_causes_without_repeating_them() {
        let e = E(
            "failed to fetch",
            Some(Box::new(E("connection refused", None))),
        );
        assert_eq!(error_chain(&e), "failed to fetch: connection refused");
        let e = E("read x: timed out", Some(Box::new(E("timed out", None))));
        assert_eq!(error_chain(&e), "read x: timed out");
    }
}
