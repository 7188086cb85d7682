//! The direct path's wire format, byte for byte.

use super::*;
use crate::http::api::auth::AdminCredential;

fn cx() -> Context<'static> {
    Context {
        peer_ip: b"10.0.0.7",
        rules: RequestRules {
            admin: None,
            grpc: false,
            trace: None,
        },
    }
}

fn direct(raw: &str, cx: &Context<'_>) -> (Request, String) {
    let mut out = Vec::new();
    match parse_request(raw.as_bytes(), cx, &mut (), &mut out) {
        Parsed::Direct(r) => (r, String::from_utf8(out).unwrap()),
        other => panic!("not direct: {other:?}"),
    }
}

#[test]
fn a_request_for_an_agent_is_rewritten_for_its_worker() {
    let raw = "POST /agents/echo/invoke?x=1 HTTP/1.1\r\nHost: par\r\nConnection: keep-alive, X-Secret\r\n\
               X-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\n\
               X-Forwarded-Prefix: /evil\r\nx-request-id: abc\r\nContent-Length: 2\r\n\r\nhi";
    let (r, head) = direct(raw, &cx());
    assert_eq!(&raw[r.agent_id.clone()], "echo");
    assert_eq!((r.head_len, r.body_len), (raw.len() - 2, 2));
    assert_eq!(r.method, Method::Other);
    assert!(!r.close);
    assert_eq!(r.request_id, "abc");
    assert_eq!(
        head,
        "POST /invoke?x=1 HTTP/1.1\r\nHost: par\r\nx-request-id: abc\r\nContent-Length: 2\r\n\
         x-forwarded-for: 1.2.3.4, 10.0.0.7\r\nx-forwarded-proto: http\r\n\
         x-forwarded-prefix: /agents/echo\r\n\r\n"
    );
}

#[test]
fn a_request_id_is_made_and_the_admin_token_dropped() {
    let admin = AdminCredential::new("root");
    let cx = Context {
        peer_ip: b"127.0.0.1",
        rules: RequestRules {
            admin: Some(&admin),
            grpc: false,
            trace: None,
        },
    };
    let raw = "GET /agents/a HTTP/1.1\r\nhost: x\r\nAuthorization: Bearer root\r\nConnection: close\r\n\r\n";
    let (r, head) = direct(raw, &cx);
    assert!(r.close);
    assert_eq!(r.method, Method::Idempotent { head: false });
    assert_eq!(r.request_id.len(), 32);
    assert!(head.starts_with("GET / HTTP/1.1\r\nhost: x\r\n"));
    assert!(!head.to_ascii_lowercase().contains("authorization"));
    assert!(head.contains(&format!(
        "x-request-id: {}\r\n",
        r.request_id.to_str().unwrap()
    )));
    let query = "GET /agents/a?x=1 HTTP/1.1\r\nhost: x\r\n\r\n";
    assert!(direct(query, &cx).1.starts_with("GET /?x=1 HTTP/1.1\r\n"));
    // Every spelling the admin check accepts is dropped.
    for spelling in [
        "bearer root",
        "Bearer  root",
        "BEARER\troot",
        "Bearer root  ",
    ] {
        let raw = format!("GET /agents/a HTTP/1.1\r\nhost: x\r\nAuthorization: {spelling}\r\n\r\n");
        let head = direct(&raw, &cx).1;
        assert!(!head.contains("root"), "{spelling:?}: {head}");
    }
    let other = "GET /agents/a/x HTTP/1.1\r\nhost: x\r\nAuthorization: Bearer user\r\n\r\n";
    assert!(direct(other, &cx)
        .1
        .contains("Authorization: Bearer user\r\n"));
}

#[test]
fn what_the_direct_path_does_not_serve_goes_to_the_general_one() {
    let mut out = Vec::new();
    for raw in [
        "GET /supervisor/status HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /agents/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /agents/a HTTP/1.0\r\nHost: x\r\n\r\n",
        "GET /agents/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        "POST /agents/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /agents/a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        "POST /agents/a HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET http://x/agents/a HTTP/1.1\r\nHost: x\r\n\r\n",
        "garbage\r\n\r\n",
    ] {
        assert!(
            matches!(
                parse_request(raw.as_bytes(), &cx(), &mut (), &mut out),
                Parsed::General
            ),
            "{raw:?}"
        );
    }
    assert!(matches!(
        parse_request(b"GET /agents/a HTTP/1.1\r\nHo", &cx(), &mut (), &mut out),
        Parsed::Partial
    ));
}

#[test]
fn a_head_whose_framing_would_change_is_refused_not_passed_on() {
    let mut out = Vec::new();
    for (raw, status) in [
        // The smuggling request of issue 25: its length named by Connection.
        ("POST /agents/a/invoke HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Content-Length\r\nContent-Length: 55\r\n\r\n", 400),
        ("POST /agents/a HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding\r\nContent-Length: 1\r\n\r\nx", 400),
        ("GET /agents/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nConnection: HOST\r\n\r\n", 400),
        ("GET /agents/a HTTP/1.1\r\n\r\n", 400),
        ("GET /agents/a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        ("POST /agents/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        ("POST /agents/a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        ("POST /agents/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
        ("POST /agents/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST /agents/a HTTP/1.1\r\nHost: x\r\nExpect: 999-bogus\r\nContent-Length: 1\r\n\r\nx", 417),
        ("CONNECT /agents/a HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ] {
        match parse_request(raw.as_bytes(), &cx(), &mut (), &mut out) {
            Parsed::Refused(r) => assert_eq!(r.status.as_u16(), status, "{raw:?}: {}", r.message),
            other => panic!("{raw:?}: {other:?}"),
        }
    }
    let refused = |raw: &str| match parse_request(raw.as_bytes(), &cx(), &mut (), &mut Vec::new()) {
        Parsed::Refused(r) => r.message,
        other => panic!("{other:?}"),
    };
    assert!(
        refused("GET /agents/a HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\n\r\n")
            .contains("Content-Length")
    );
}

#[test]
fn a_length_given_twice_alike_is_passed_on_once() {
    let raw =
        "POST /agents/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nhi";
    let (r, head) = direct(raw, &cx());
    assert_eq!(r.body_len, 2);
    assert_eq!(
        head.to_ascii_lowercase()
            .matches("content-length: 2\r\n")
            .count(),
        1,
        "{head}"
    );
}

fn reply(raw: &str, head: bool, close: bool) -> (ParsedResponse, Option<Response>, String) {
    let (id, process) = (
        HeaderValue::from_static("rid"),
        HeaderValue::from_static("par-a"),
    );
    let r = Reply {
        rules: ResponseRules {
            grpc: false,
            request_id: &id,
            process: &process,
            session: None,
            rebound: false,
        },
        head_request: head,
        close,
    };
    let (mut out, mut resp) = (Vec::new(), None);
    let p = parse_response(raw.as_bytes(), &r, &mut out, &mut resp);
    (p, resp, String::from_utf8(out).unwrap())
}

#[test]
fn a_response_head_is_rewritten_for_the_client() {
    let (p, r, out) = reply(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nkeep-alive: 5\r\nx-par-process: fake\r\ncontent-length: 2\r\n\r\nok",
        false,
        false,
    );
    assert_eq!(p, ParsedResponse::Final);
    let r = r.unwrap();
    assert_eq!(
        (r.status, r.framing, r.reusable),
        (200, Framing::Length(2), true)
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nx-request-id: rid\r\n\
         x-par-process: par-a\r\n\r\n"
    );
    let (_, r, out) = reply(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-request-id: w\r\nconnection: close\r\n\r\n",
        false,
        true,
    );
    let r = r.unwrap();
    assert_eq!((r.framing, r.reusable), (Framing::Chunked, false));
    assert!(out.contains("transfer-encoding: chunked\r\n"));
    assert!(!out.contains("rid"));
    assert!(out.ends_with("connection: close\r\n\r\n"));
    // A response's length named by Connection stays: the client reads the body by it.
    let (_, r, out) = reply(
        "HTTP/1.1 200 OK\r\nconnection: content-length, x-a\r\nx-a: 1\r\ncontent-length: 2\r\n\r\nok",
        false,
        false,
    );
    assert_eq!(r.unwrap().framing, Framing::Length(2));
    assert!(
        out.contains("content-length: 2\r\n") && !out.contains("x-a"),
        "{out}"
    );
    // A length beside chunked framing is not the body's: the client never sees it.
    let (_, r, out) = reply(
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
        false,
        false,
    );
    assert_eq!(r.unwrap().framing, Framing::Chunked);
    assert!(!out.contains("content-length"), "{out}");
    let (_, r, _) = reply("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true, false);
    assert_eq!(r.unwrap().framing, Framing::Empty);
    let (_, r, out) = reply("HTTP/1.0 200 OK\r\n\r\n", false, false);
    assert_eq!(r.unwrap().framing, Framing::Close);
    assert!(out.contains("connection: close"));
    let hints = "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n";
    let (p, _, out) = reply(&format!("{hints}HTTP/1.1 200 OK\r\n"), false, false);
    assert_eq!(p, ParsedResponse::Interim(hints.len()));
    assert_eq!(out, hints);
    for bad in [
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
        "nonsense\r\n\r\n",
    ] {
        assert!(
            matches!(reply(bad, false, false).0, ParsedResponse::Invalid(_)),
            "{bad:?}"
        );
    }
}

#[test]
fn the_end_of_a_chunked_body_is_found_however_it_is_cut() {
    let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
    let end = body.len() - 4;
    for cut in 0..body.len() {
        let mut c = Chunks::default();
        let found = match c.feed(&body[..cut]).unwrap() {
            Some(n) => n,
            None => cut + c.feed(&body[cut..]).unwrap().expect("ends"),
        };
        assert_eq!(found, end, "cut at {cut}");
    }
    let mut c = Chunks::default();
    assert_eq!(c.feed(b"0\r\n\r\n").unwrap(), Some(5));
    for bad in [
        &b"x\r\n"[..],
        b"2\r\nabc\r\n",
        b"\r\n",
        b"1234567890abcdef0\r\n",
    ] {
        assert!(Chunks::default().feed(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_reply_made_here_has_its_length() {
    let resp = http::Response::builder()
        .status(503)
        .header("retry-after", "1")
        .body(())
        .unwrap();
    let (parts, ()) = resp.into_parts();
    let mut out = Vec::new();
    write_reply(&mut out, &parts, b"{}", false, true);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
    );
}

#[test]
fn a_line_is_passed_on_as_name_colon_space_value_however_it_came() {
    // Copied whole when written so; rewritten when its spacing differs,
    // its value is empty, or its value had spaces around it.
    let raw = "GET /agents/a HTTP/1.1\r\nHost: h\r\nA: 1\r\nB:2\r\nC:   3\r\nD: 4  \r\nE:\r\nF: \r\nG:\t5\t\r\n\
               H: six words and more\r\n\r\n";
    let (_, head) = direct(raw, &cx());
    assert!(
        head.starts_with(
            "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: \r\nF: \r\nG: 5\r\n\
             H: six words and more\r\n"
        ),
        "{head:?}"
    );
    // A worker's reply, the same way; its status line too.
    for (line, want) in [
        ("HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\n"),
        ("HTTP/1.0 200 OK\r\n", "HTTP/1.1 200 OK\r\n"),
        ("HTTP/1.1 404 \r\n", "HTTP/1.1 404 \r\n"),
        ("HTTP/1.1 201 Made  here\r\n", "HTTP/1.1 201 Made  here\r\n"),
    ] {
        let (_, _, out) = reply(&format!("{line}content-length: 0\r\n\r\n"), false, false);
        assert!(out.starts_with(want), "{line:?}");
    }
    let (p, _, out) = reply(
        "HTTP/1.1 200 OK\r\nA: 1\r\nB:2\r\nD: 4  \r\nE:\r\ncontent-length: 0\r\n\r\n",
        false,
        false,
    );
    assert_eq!(p, ParsedResponse::Final);
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nD: 4\r\nE: \r\ncontent-length: 0\r\n\
         x-request-id: rid\r\nx-par-process: par-a\r\n\r\n"
    );
}
