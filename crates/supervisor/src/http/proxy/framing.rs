//! The rules a request head must meet before it goes anywhere, stated once
//! and applied by both proxy paths: the direct path feeds it the raw header
//! lines (`direct::wire`), the general path hyper's parsed ones
//! (`http::server`). What a request's body is delimited by (RFC 9112 §6)
//! must never change on the way to a worker: `Content-Length`,
//! `Transfer-Encoding` and `Host` cannot be removed by `Connection`
//! (RFC 9110 §7.6.1 lets a sender name only hop-by-hop fields there), a
//! transfer coding other than a single `chunked` is not passed on, and
//! conflicting lengths are refused. Refused requests close their connection.

use http::StatusCode;

/// Why a request head is refused: the status and what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn bad(message: impl Into<String>) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    /// As the management API's errors are written.
    pub fn into_api_error(self) -> crate::http::error::ApiError {
        crate::http::error::ApiError {
            status: self.status,
            code: self.code,
            message: self.message,
            details: None,
            retry_after_secs: None,
        }
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no `Content-Length`, no `Transfer-Encoding`).
    None,
    Length(u64),
    Chunked,
}

/// Headers that delimit a message or name its target: never hop-by-hop.
const NEVER_BY_CONNECTION: [&str; 3] = ["Content-Length", "Transfer-Encoding", "Host"];

/// Reads a request head's header lines one by one, then judges them.
#[derive(Debug, Default)]
pub struct HeadRules {
    length: Option<u64>,
    lengths: u32,
    length_invalid: bool,
    length_conflict: bool,
    codings: u32,
    coding_not_chunked: bool,
    hosts: u32,
    expect_other: bool,
    connection_names: Option<&'static str>,
}

impl HeadRules {
    /// One header line, its name in any case.
    #[inline]
    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        // Only a few names matter here; most lines stop at the length check.
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => self.hosts += 1,
            6 if name.eq_ignore_ascii_case(b"expect")
                && !value.trim_ascii().eq_ignore_ascii_case(b"100-continue") =>
            {
                self.expect_other = true;
            }
            10 if name.eq_ignore_ascii_case(b"connection") && self.connection_names.is_none() => {
                self.connection_names = NEVER_BY_CONNECTION
                    .into_iter()
                    .find(|n| has_token(value, n));
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                self.lengths += 1;
                match parse_length(value) {
                    Some(n) if self.length.is_none_or(|l| l == n) => self.length = Some(n),
                    Some(_) => self.length_conflict = true,
                    None => self.length_invalid = true,
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                self.codings += 1;
                if !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    self.coding_not_chunked = true;
                }
            }
            _ => {}
        }
    }

    /// `Content-Length` was given more than once (with the same value):
    /// passed on once.
    pub fn repeated_length(&self) -> bool {
        self.lengths > 1
    }

    /// The verdict on the whole head: how its body is delimited, or why it
    /// is refused. `http11`: the request said HTTP/1.1 (not 1.0).
    pub fn finish(&self, method: &[u8], http11: bool) -> Result<BodyFraming, Refusal> {
        if method == b"CONNECT" {
            return Err(Refusal {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                message: "CONNECT is not served: the supervisor is not a forward proxy".into(),
            });
        }
        if let Some(name) = self.connection_names {
            return Err(Refusal::bad(format!(
                "the Connection header names {name}, which is not hop-by-hop and cannot be removed"
            )));
        }
        if http11 && self.hosts == 0 {
            return Err(Refusal::bad(
                "an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)",
            ));
        }
        if self.hosts > 1 {
            return Err(Refusal::bad("more than one Host header"));
        }
        if self.length_invalid {
            return Err(Refusal::bad(
                "the Content-Length header is not a decimal length",
            ));
        }
        if self.length_conflict {
            return Err(Refusal::bad("Content-Length headers with different values"));
        }
        if self.codings > 0 {
            if !http11 {
                return Err(Refusal::bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            if self.codings > 1 || self.coding_not_chunked {
                return Err(Refusal::bad(
                    "only Transfer-Encoding: chunked (once, alone) is accepted",
                ));
            }
        }
        if self.expect_other {
            return Err(Refusal {
                status: StatusCode::EXPECTATION_FAILED,
                code: "expectation_failed",
                message: "only Expect: 100-continue is supported".into(),
            });
        }
        // Both: the chunked framing alone counts (RFC 9112 §6.3), and the
        // length is not passed on.
        Ok(if self.codings > 0 {
            BodyFraming::Chunked
        } else {
            match self.length {
                Some(n) => BodyFraming::Length(n),
                None => BodyFraming::None,
            }
        })
    }

    /// Both rules at once over a parsed head (the general path).
    pub fn check(
        method: &http::Method,
        version: http::Version,
        headers: &http::HeaderMap,
    ) -> Result<BodyFraming, Refusal> {
        let mut rules = HeadRules::default();
        for (name, value) in headers {
            rules.header(name.as_str().as_bytes(), value.as_bytes());
        }
        let http11 = version == http::Version::HTTP_11;
        if version > http::Version::HTTP_11 {
            // HTTP/2 has no Host (`:authority`), no Connection, no chunked.
            if method == http::Method::CONNECT || rules.expect_other {
                return rules.finish(method.as_str().as_bytes(), false);
            }
            return Ok(BodyFraming::None);
        }
        rules.finish(method.as_str().as_bytes(), http11)
    }
}

/// Whether the comma-separated `list` holds `token` (any case).
pub fn has_token(list: &[u8], token: &str) -> bool {
    list.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A decimal length (no sign, no spaces inside, at most 19 digits).
pub fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests;
