//! Where a package comes from: a local path, an `http(s)://` URL or an `s3://bucket/key`.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use url::Url;

use crate::error::FetchError;

/// A package source as written in the config (`package = "..."`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file or folder on this machine.
    Local(PathBuf),
    /// An `https://` URL, or an `http://` one (see [`Source::parse`]).
    Https(Url),
    /// An object in S3: `s3://bucket/key`.
    S3 { bucket: String, key: String },
}

impl Source {
    /// Parses a package source.
    ///
    /// - `s3://bucket/key` → [`Source::S3`] (bucket and key must be non-empty);
    /// - `https://…` and `http://…` → [`Source::Https`] (plain HTTP is refused later
    ///   by [`crate::fetch`] unless the host is loopback or
    ///   [`crate::FetchOptions::allow_http`] is set);
    /// - any other `scheme://` → an error naming the scheme;
    /// - anything else → [`Source::Local`].
    pub fn parse(text: &str) -> Result<Self, FetchError> {
        let text = text.trim();
        let invalid = |reason: &str| FetchError::InvalidSource {
            // The text may be a presigned URL: never echo its query.
            given: redact_text(text),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(invalid("empty package source"));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Self::Local(PathBuf::from(text)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "s3" => {
                let (bucket, key) = rest
                    .split_once('/')
                    .ok_or_else(|| invalid("expected s3://bucket/key"))?;
                if bucket.is_empty() {
                    return Err(invalid("missing bucket name in s3://bucket/key"));
                }
                if key.is_empty() || key.ends_with('/') {
                    return Err(invalid("missing object key in s3://bucket/key"));
                }
                Ok(Self::S3 {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                })
            }
            "https" | "http" => {
                let url = Url::parse(text).map_err(|e| invalid(&format!("invalid URL: {e}")))?;
                if url.host().is_none() {
                    return Err(invalid("URL has no host"));
                }
                Ok(Self::Https(url))
            }
            "file" => Ok(Self::Local(PathBuf::from(rest))),
            other => Err(invalid(&format!(
                "unsupported scheme `{other}` (expected s3://, https:// or a path)"
            ))),
        }
    }

    /// True for sources that are downloaded (HTTP(S) and S3).
    pub fn is_remote(&self) -> bool {
        !matches!(self, Self::Local(_))
    }

    /// True when the URL is plain `http://` to a loopback host (allowed without opt-in).
    pub(crate) fn is_loopback_http(url: &Url) -> bool {
        match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => false,
        }
    }
}

/// Shows the source without user info or query string, so presigned URLs and
/// basic-auth passwords never reach logs or error messages.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::Https(url) => f.write_str(&redact_url(url)),
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

/// `scheme://host[:port]/path`, without credentials, query or fragment.
pub(crate) fn redact_url(url: &Url) -> String {
    let mut shown = format!("{}://", url.scheme());
    if let Some(host) = url.host_str() {
        shown.push_str(host);
    }
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    if url.query().is_some() {
        shown.push_str("?<redacted>");
    }
    shown
}

fn redact_text(text: &str) -> String {
    match Url::parse(text) {
        Ok(url) if url.has_host() => redact_url(&url),
        _ => {
            let cut = text.find(['?', '#']).unwrap_or(text.len());
            let mut shown = text[..cut].to_string();
            if let Some(at) = shown.find('@') {
                if let Some(start) = shown.find("://") {
                    shown.replace_range(start + 3..=at, "<redacted>@");
                }
            }
            if cut < text.len() {
                shown.push_str("?<redacted>");
            }
            shown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        assert_eq!(
            Source::parse("s3://b/dir/a.apkg").unwrap(),
            Source::S3 {
                bucket: "b".into(),
                key: "dir/a.apkg".into()
            }
        );
        assert!(matches!(
            Source::parse("https://example.com/a.apkg").unwrap(),
            Source::Https(_)
        ));
        assert!(matches!(
            Source::parse("http://127.0.0.1:8080/a.apkg").unwrap(),
            Source::Https(_)
        ));
        assert_eq!(
            Source::parse("examples/agents/echo").unwrap(),
            Source::Local(PathBuf::from("examples/agents/echo"))
        );
        assert_eq!(
            Source::parse("file:///tmp/a.apkg").unwrap(),
            Source::Local(PathBuf::from("/tmp/a.apkg"))
        );
    }

    #[test]
    fn rejects_bad_sources_naming_the_problem() {
        for (text, needle) in [
            ("s3://bucket-only", "s3://bucket/key"),
            ("s3:///key", "missing bucket"),
            ("s3://b/", "missing object key"),
            ("ftp://h/a.apkg", "unsupported scheme `ftp`"),
            ("", "empty"),
        ] {
            let err = Source::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn display_hides_query_and_user_info() {
        let s = Source::parse("https://user:pw@h.example/p/a.apkg?X-Amz-Signature=secret").unwrap();
        let shown = s.to_string();
        assert_eq!(shown, "https://h.example/p/a.apkg?<redacted>");
        let err = Source::parse("gs://u:pw@h/a?sig=secret")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret") && !err.contains("pw"), "{err}");
    }

    #[test]
    fn loopback_detection() {
        for (u, want) in [
            ("http://127.0.0.1:1/a", true),
            ("http://localhost/a", true),
            ("http://[::1]:9/a", true),
            ("http://10.0.0.1/a", false),
            ("http://example.com/a", false),
        ] {
            assert_eq!(
                Source::is_loopback_http(&Url::parse(u).unwrap()),
                want,
                "{u}"
            );
        }
    }
}
