//! The head rules, on parsed heads as the general path sees them.

use super::*;
use http::{HeaderMap, HeaderValue, Method, Version};

fn check(method: &str, version: Version, headers: &[(&str, &str)]) -> Result<BodyFraming, u16> {
    let mut h = HeaderMap::new();
    for (n, v) in headers {
        h.append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    HeadRules::check(&m, version, &h).map_err(|r| r.status.as_u16())
}

#[test]
fn framing_headers_cannot_be_removed_by_connection() {
    let v11 = Version::HTTP_11;
    for named in ["Content-Length", "transfer-encoding", "keep-alive, HOST"] {
        let h = [
            ("host", "x"),
            ("connection", named),
            ("content-length", "1"),
        ];
        assert_eq!(check("POST", v11, &h), Err(400), "{named}");
    }
    let h = [
        ("host", "x"),
        ("connection", "keep-alive, x-secret"),
        ("content-length", "1"),
    ];
    assert_eq!(check("POST", v11, &h), Ok(BodyFraming::Length(1)));
}

#[test]
fn each_head_gets_one_clear_answer() {
    use BodyFraming::*;
    let v11 = Version::HTTP_11;
    let v10 = Version::HTTP_10;
    let host = ("host", "x");
    type Case<'a> = (
        &'a str,
        Version,
        &'a [(&'a str, &'a str)],
        Result<BodyFraming, u16>,
    );
    let cases: &[Case] = &[
        ("GET", v11, &[host], Ok(None)),
        ("GET", v11, &[], Err(400)),
        ("GET", v10, &[], Ok(None)),
        ("GET", v11, &[host, ("host", "y")], Err(400)),
        (
            "POST",
            v11,
            &[host, ("content-length", "12")],
            Ok(Length(12)),
        ),
        (
            "POST",
            v11,
            &[host, ("content-length", "1"), ("content-length", "1")],
            Ok(Length(1)),
        ),
        (
            "POST",
            v11,
            &[host, ("content-length", "1"), ("content-length", "2")],
            Err(400),
        ),
        ("POST", v11, &[host, ("content-length", "1, 1")], Err(400)),
        ("POST", v11, &[host, ("content-length", "+1")], Err(400)),
        (
            "POST",
            v11,
            &[host, ("transfer-encoding", "chunked")],
            Ok(Chunked),
        ),
        (
            "POST",
            v11,
            &[host, ("transfer-encoding", "Chunked")],
            Ok(Chunked),
        ),
        (
            "POST",
            v11,
            &[host, ("transfer-encoding", "gzip, chunked")],
            Err(400),
        ),
        (
            "POST",
            v11,
            &[host, ("transfer-encoding", "chunked, identity")],
            Err(400),
        ),
        ("POST", v10, &[("transfer-encoding", "chunked")], Err(400)),
        ("POST", v11, &[host, ("expect", "100-continue")], Ok(None)),
        ("POST", v11, &[host, ("expect", "999-bogus")], Err(417)),
        ("CONNECT", v11, &[host], Err(405)),
        ("CONNECT", Version::HTTP_2, &[], Err(405)),
        ("GET", Version::HTTP_2, &[], Ok(None)),
        ("GET", Version::HTTP_2, &[("expect", "x")], Err(417)),
    ];
    for (method, version, headers, want) in cases {
        assert_eq!(
            &check(method, *version, headers),
            want,
            "{method} {version:?} {headers:?}"
        );
    }
}

#[test]
fn lengths_are_plain_decimals() {
    assert_eq!(parse_length(b" 42 "), Some(42));
    assert_eq!(parse_length(b"0"), Some(0));
    assert_eq!(
        parse_length(b"9999999999999999999"),
        Some(9_999_999_999_999_999_999)
    );
    for bad in [
        &b""[..],
        b"-1",
        b"1 2",
        b"0x10",
        b"99999999999999999999",
        b"1,1",
    ] {
        assert_eq!(parse_length(bad), None, "{bad:?}");
    }
}
