//! Request framing end to end (issue 25): a header named in `Connection`
//! can never remove `Content-Length`, `Transfer-Encoding` or `Host`, so one
//! client's body is never read by a worker as another request whose answer
//! a third client receives; heads PAR would re-frame are refused (400, the
//! connection closed) on the direct path and on hyper's alike; `Expect`,
//! `Host` and `CONNECT` get clear answers; the admin token never reaches an
//! agent in any spelling that opens the admin routes; `GET /agents`
//! never reflects the `Host` a client sent; and the same request gives the
//! worker the same head on both paths (one set of forwarding rules).

mod framing_support;
mod supervisor_support;

use std::time::Duration;

use framing_support::*;
use supervisor_support::*;

/// The attack of issue 25, byte for byte.
const SMUGGLE: &[u8] = b"POST /agents/a/invoke HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Content-Length\r\nContent-Length: 55\r\n\r\nPOST /invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 120\r\n\r\n";

/// A connection already on the general path (hyper's): its first request
/// was one the direct path does not serve.
fn general_conn(port: u16) -> Conn {
    let mut c = Conn::open(port).unwrap();
    let r = c.request("GET", "/runtime/health", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    c
}

/// Sends `raw`, reads one response, and whether the supervisor then closed.
fn send_raw(c: &mut Conn, raw: &[u8]) -> (Resp, bool) {
    c.write_raw(raw).unwrap();
    let method = std::str::from_utf8(raw)
        .unwrap_or("")
        .split(' ')
        .next()
        .unwrap_or("");
    let r = c.read_response(method).unwrap();
    let closed = r
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        && closed(c);
    (r, closed)
}

/// Whether the supervisor closed `c` (an end, not a read timeout).
fn closed(c: &mut Conn) -> bool {
    use std::io::ErrorKind::*;
    matches!(c.read_head(), Err(e) if matches!(e.kind(), UnexpectedEof | ConnectionReset))
}

#[test]
fn the_smuggling_bytes_of_issue_25_are_refused_and_every_client_gets_its_own_answer() {
    let (sup, rec, _d) = supervisor_with_recorder("smuggle", "a", "", &[]);
    for path in ["direct", "general"] {
        for round in 0..3 {
            let mut c = if path == "direct" {
                Conn::open(sup.port).unwrap()
            } else {
                general_conn(sup.port)
            };
            let (r, closed) = send_raw(&mut c, SMUGGLE);
            assert_eq!(r.status, 400, "{path} {round}: {}", r.text());
            assert!(r.text().contains("Content-Length"), "{}", r.text());
            assert!(closed, "{path} {round}: the connection stays open");
            // The innocent user, as `curl -XPOST .../agents/a/invoke -d '{"text":"hi"}'`.
            let body = format!(r#"{{"text":"hi {path} {round}"}}"#);
            let r = http(sup.port, "POST", "/agents/a/invoke", &[], body.as_bytes()).unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            let want = format!("/invoke {} {}", body.len(), fnv(body.as_bytes()));
            assert!(
                r.text().ends_with(&want),
                "{path} {round}: got {:?}, want {want:?}",
                r.text()
            );
        }
    }
    // Nothing of the attacker's reached the worker: only the six innocent requests.
    let seen = rec.seen("/invoke");
    assert_eq!(seen.len(), 6, "{seen:#?}");
    assert!(
        seen.iter().all(|s| s.body.starts_with(br#"{"text":"hi"#)),
        "{seen:#?}"
    );
    assert!(rec.problems().is_empty(), "{:?}", rec.problems());
}

#[test]
fn every_connection_header_naming_a_framing_header_is_refused_on_both_paths() {
    let (sup, rec, _d) = supervisor_with_recorder("named", "a", "", &[]);
    let heads = [
        "Connection: Content-Length\r\nContent-Length: 5\r\n",
        "Connection: content-length\r\nContent-Length: 5\r\n",
        "Connection: keep-alive\r\nConnection: CONTENT-LENGTH\r\nContent-Length: 5\r\n",
        "Connection: close, x-a ,content-length\r\nContent-Length: 5\r\n",
        "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n",
        "Connection: transfer-encoding\r\nContent-Length: 5\r\n",
        "Connection: Host\r\nContent-Length: 5\r\n",
        "Connection: keep-alive, host\r\nContent-Length: 5\r\n",
    ];
    for path in ["direct", "general"] {
        for h in heads {
            let body = if h.contains("chunked") {
                "5\r\nhello\r\n0\r\n\r\n"
            } else {
                "hello"
            };
            let raw = format!("POST /agents/a/named HTTP/1.1\r\nHost: x\r\n{h}\r\n{body}");
            let mut c = if path == "direct" {
                Conn::open(sup.port).unwrap()
            } else {
                general_conn(sup.port)
            };
            let (r, closed) = send_raw(&mut c, raw.as_bytes());
            assert_eq!(r.status, 400, "{path} {h:?}: {}", r.text());
            assert!(r.text().contains("Connection header names"), "{}", r.text());
            assert!(closed, "{path} {h:?}");
        }
    }
    // Hop-by-hop names that are not framing are still removed, and the request served.
    let raw = "POST /agents/a/named HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nContent-Length: 5\r\n\r\nhello";
    let (r, _) = send_raw(&mut Conn::open(sup.port).unwrap(), raw.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = rec.seen("/named");
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert!(seen[0].header("x-secret").is_empty());
    assert_eq!(
        (seen[0].framing, &seen[0].body[..]),
        (Framing::Length(5), &b"hello"[..])
    );
}

#[test]
fn framing_the_proxy_cannot_pass_on_unchanged_is_refused_on_both_paths() {
    let (sup, rec, _d) = supervisor_with_recorder("refused", "a", "", &[]);
    let cases: &[(&str, u16)] = &[
        ("POST /agents/a/r HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
        ("POST /agents/a/r HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400),
        ("POST /agents/a/r HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
        ("POST /agents/a/r HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("POST /agents/a/r HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", 400),
        ("POST /agents/a/r HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n", 400),
        ("GET /agents/a/r HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        // RFC 9112 §3.2: an HTTP/1.1 request without Host.
        ("GET /agents/a/r HTTP/1.1\r\n\r\n", 400),
        ("POST /agents/a/r HTTP/1.1\r\nHost: x\r\nExpect: 999-bogus\r\nContent-Length: 5\r\n\r\nhello", 417),
        ("CONNECT /agents/a/r HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        ("CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n", 405),
    ];
    for path in ["direct", "general"] {
        for (raw, status) in cases {
            let mut c = if path == "direct" {
                Conn::open(sup.port).unwrap()
            } else {
                general_conn(sup.port)
            };
            c.write_raw(raw.as_bytes()).unwrap();
            let r = c.read_response("POST").unwrap();
            assert_eq!(r.status, *status, "{path} {raw:?}: {}", r.text());
            // Nothing more on this connection: it is closed.
            assert!(closed(&mut c), "{path} {raw:?}: the connection stays open");
        }
    }
    assert!(rec.seen("/r").is_empty(), "{:#?}", rec.seen("/r"));
    // Expect: 100-continue is served.
    let raw = "POST /agents/a/r HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello";
    let mut c = Conn::open(sup.port).unwrap();
    c.write_raw(raw.as_bytes()).unwrap();
    assert_eq!(c.read_head().unwrap().0, 100);
    let r = c.read_response("POST").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Length and chunked together: the chunked framing alone counts, and only it is passed on.
    let raw = "POST /agents/a/both HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let r = Conn::open(sup.port).unwrap().request_raw(raw);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = rec.seen("/both");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].framing, &seen[0].body[..]),
        (Framing::Chunked, &b"hello"[..])
    );
    assert!(rec.problems().is_empty(), "{:?}", rec.problems());
}

trait RawRequest {
    fn request_raw(&mut self, raw: &str) -> Resp;
}

impl RawRequest for Conn {
    fn request_raw(&mut self, raw: &str) -> Resp {
        self.write_raw(raw.as_bytes()).unwrap();
        self.read_response(raw.split(' ').next().unwrap()).unwrap()
    }
}

/// Every spelling of the admin credential the admin routes accept.
fn spellings(token: &str) -> Vec<String> {
    vec![
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER {token}"),
        format!("Bearer  {token}"),
        format!("Bearer\t{token}"),
        format!("bEaReR {token}  "),
    ]
}

#[test]
fn the_admin_token_never_reaches_an_agent_in_any_spelling_that_is_accepted() {
    let (sup, rec, _d) = supervisor_with_recorder("token", "a", "", &[]);
    let token = sup.token();
    for (i, auth) in spellings(&token).iter().enumerate() {
        // Accepted as admin...
        let r = http(
            sup.port,
            "GET",
            "/supervisor/logs?process_id=par-a&limit=1",
            &[("Authorization", auth)],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 200, "{auth:?}: {}", r.text());
        // ...and so never passed on, on either path.
        let r = http(
            sup.port,
            "GET",
            &format!("/agents/a/tok/{i}/direct"),
            &[("Authorization", auth)],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        let mut c = general_conn(sup.port);
        let r = c
            .request(
                "GET",
                &format!("/agents/a/tok/{i}/general"),
                &[("Authorization", auth)],
                b"",
            )
            .unwrap();
        assert_eq!(r.status, 200);
    }
    // A user's own credentials still reach the agent.
    let r = http(
        sup.port,
        "GET",
        "/agents/a/tok/user",
        &[("Authorization", "Bearer user-token")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let seen = rec.seen("/tok/");
    assert_eq!(seen.len(), spellings(&token).len() * 2 + 1);
    for s in &seen {
        let auth = s.header("authorization");
        if s.target == "/tok/user" {
            assert_eq!(auth, ["Bearer user-token"]);
        } else {
            assert!(auth.is_empty(), "{}: {auth:?}", s.target);
        }
        assert!(!s.headers.iter().any(|(_, v)| v.contains(&token)), "{s:#?}");
    }
}

#[test]
fn the_agents_list_never_reflects_the_host_a_client_sent() {
    let (sup, _rec, _d) = supervisor_with_recorder("host", "a", "", &[]);
    for host in [
        "evil.example.com",
        "par.example.com:8443",
        "javascript:alert(1)",
    ] {
        let r = http(
            sup.port,
            "GET",
            "/agents",
            &[("Host", host), ("X-Forwarded-Proto", "https")],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        let url = r.json()["agents"][0]["url"].as_str().unwrap().to_string();
        assert_eq!(url, "/agents/a", "{host}");
    }
}

/// A worker connection is never used again after a request whose body was
/// not all sent, or whose reply was not all read: what is left on it would
/// be read as the next request, or the next reply.
#[test]
fn a_worker_connection_left_mid_message_is_never_used_again() {
    use std::io::{Read as _, Write as _};
    let (sup, rec, _d) = supervisor_with_recorder("midway", "a", "", &[]);
    let check = |tag: &str| {
        for i in 0..5 {
            let body = format!("after {tag} {i}");
            let r = http(
                sup.port,
                "POST",
                &format!("/agents/a/next/{tag}/{i}"),
                &[],
                body.as_bytes(),
            )
            .unwrap();
            let want = format!("/next/{tag}/{i} {} {}", body.len(), fnv(body.as_bytes()));
            assert_eq!(r.status, 200, "{tag} {i}: {}", r.text());
            assert!(
                r.text().ends_with(&want),
                "{tag} {i}: got {:?}, want {want:?}",
                r.text()
            );
        }
    };
    check("start");
    // Bodies cut short: one streamed (past 64 KiB: the general path), one
    // held whole (the direct path), one chunked.
    for (tag, head, part) in [
        (
            "streamed",
            "POST /agents/a/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n",
            vec![b'y'; 100_000],
        ),
        (
            "whole",
            "POST /agents/a/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
            vec![b'y'; 1000],
        ),
        (
            "chunked",
            "POST /agents/a/cut HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"100\r\nyyyy".to_vec(),
        ),
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", sup.port)).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&part).unwrap();
        drop(s);
        check(tag);
    }
    // A reply left unread: the client reads its head and a little, then goes.
    for round in 0..3 {
        for general in [false, true] {
            let mut c = if general {
                general_conn(sup.port)
            } else {
                Conn::open(sup.port).unwrap()
            };
            c.write_raw(b"GET /agents/a/big HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let (status, _) = c.read_head().unwrap();
            assert_eq!(status, 200);
            let mut some = [0u8; 1024];
            let mut s = c.socket();
            s.read_exact(&mut some).unwrap();
            drop(c);
            check(&format!("unread-{round}-{general}"));
        }
    }
    // Every request that reached the worker was whole and clean but the
    // ones cut short (each ends its own connection there).
    let problems = rec.problems();
    assert!(
        problems.iter().all(|p| p.contains("cut short")),
        "{problems:?}"
    );
    assert!(problems.len() <= 2, "{problems:?}");
    assert!(rec.seen("/cut").is_empty(), "{:?}", rec.seen("/cut"));
}

/// The attack sent from inside an agent (its code on loopback, as any
/// agent's can be), against another agent: refused, and the other agent's
/// clients keep getting their own answers.
const SMUGGLER: &str = r#"
import os, socket, urllib.parse

def handler(context):
    u = urllib.parse.urlparse(os.environ["PAR_SUPERVISOR_URL"])
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    s.sendall(b"POST /agents/b/invoke HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Content-Length\r\n"
              b"Content-Length: 55\r\n\r\nPOST /invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 120\r\n\r\n")
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    return {"reply": got.decode("latin-1")}
"#;

#[test]
fn the_smuggling_bytes_sent_from_inside_an_agent_are_refused_too() {
    let dir = TempDir::new("smuggler");
    let entry = |name: &str, main: &str| agent_toml(name, &agent(dir.path(), name, main, &[]));
    let agents = format!(
        "{}{}",
        entry("evil", SMUGGLER),
        entry("b", "def handler(c):\n    return {'echo': c}\n")
    );
    let sup = Supervisor::start_with("smuggler", "", &agents, &[]);
    sup.wait_ready("evil", Duration::from_secs(120));
    sup.wait_ready("b", Duration::from_secs(120));
    for round in 0..3 {
        let r = http(
            sup.port,
            "POST",
            "/agents/evil/invoke",
            &[("Content-Type", "application/json")],
            b"{}",
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let reply = r.json()["data"]["reply"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            reply.starts_with("HTTP/1.1 400"),
            "round {round}: the agent got {reply:?}"
        );
        assert!(reply.contains("Content-Length"), "{reply}");
        // b's own client gets b's answer to its own request.
        let body = format!(r#"{{"text":"hi {round}"}}"#);
        let r = http(
            sup.port,
            "POST",
            "/agents/b/invoke",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.text().contains(&format!("hi {round}")),
            "round {round}: {}",
            r.text()
        );
    }
}

/// Header lines as a worker received them: names lowercased, each name's
/// values in the order they came; a request id made by the supervisor
/// (32 hex digits, where the client sent none it could use) as `(made)`.
fn worker_lines(s: &Seen, client_id: Option<&str>) -> Vec<(String, Vec<String>)> {
    let mut lines: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (n, v) in &s.headers {
        lines
            .entry(n.to_ascii_lowercase())
            .or_default()
            .push(v.clone());
    }
    let ids = lines.get_mut("x-request-id").expect("a request id");
    if client_id.is_none_or(|c| !ids.iter().any(|v| v == c)) {
        assert_eq!(ids.len(), 1, "{s:#?}");
        assert!(
            ids[0].len() == 32 && ids[0].bytes().all(|b| b.is_ascii_hexdigit()),
            "{s:#?}"
        );
        ids[0] = "(made)".into();
    }
    lines.into_iter().collect()
}

#[test]
fn the_worker_receives_the_same_head_on_both_paths() {
    let (sup, rec, _d) = supervisor_with_recorder("same-head", "a", "", &[]);
    let token = sup.token();
    let admin = format!("Authorization: bearer  {token}\r\n");
    // (head lines, the client's request id when it sends one it may keep)
    let cases: Vec<(String, Option<&str>)> = vec![
        (
            "Accept: */*\r\nX-Custom: a\r\nx-custom: b\r\nX-CUSTOM: c\r\n".into(),
            None,
        ),
        (
            "Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic cA==\r\n\
             Trailer: x-sum\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
             Proxy-Connection: keep-alive\r\nAccept: */*\r\n"
                .into(),
            None,
        ),
        (
            "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Prefix: /evil\r\n"
                .into(),
            None,
        ),
        (
            "X-Request-Id: mine\r\nx-request-id: second\r\n".into(),
            Some("mine"),
        ),
        (
            "Connection: X-Request-Id, x-forwarded-for\r\nConnection: X-Forwarded-Proto\r\n\
             X-Request-Id: named\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n"
                .into(),
            None,
        ),
        (
            format!("{admin}Authorization: Bearer user\r\nAuthorization: Basic dTpw\r\n"),
            None,
        ),
        (
            "X-Par-Session-Id: s-1\r\nX-Par-Process: forged\r\nConnection: authorization\r\n\
             Authorization: Bearer user\r\n"
                .into(),
            None,
        ),
    ];
    for (i, (lines, _)) in cases.iter().enumerate() {
        for (path, mut c) in [
            ("direct", Conn::open(sup.port).unwrap()),
            ("general", general_conn(sup.port)),
        ] {
            for (method, body) in [("GET", ""), ("POST", "{}")] {
                let length = if body.is_empty() {
                    String::new()
                } else {
                    format!("Content-Length: {}\r\n", body.len())
                };
                let raw = format!(
                    "{method} /agents/a/same/{i}/{method}/{path}?q=1 HTTP/1.1\r\nHost: x\r\n{lines}{length}\r\n{body}"
                );
                let r = c.request_raw(&raw);
                assert_eq!(r.status, 200, "{raw}: {}", r.text());
            }
        }
    }
    for (i, (_, client_id)) in cases.iter().enumerate() {
        for method in ["GET", "POST"] {
            let one = |path: &str| {
                let seen = rec.seen(&format!("/same/{i}/{method}/{path}?"));
                assert_eq!(seen.len(), 1, "case {i} {method} {path}");
                seen.into_iter().next().unwrap()
            };
            let (direct, general) = (one("direct"), one("general"));
            assert_eq!(
                worker_lines(&direct, *client_id),
                worker_lines(&general, *client_id),
                "case {i} {method}: direct {direct:#?}\ngeneral {general:#?}"
            );
            for gone in [
                "connection",
                "keep-alive",
                "te",
                "trailer",
                "proxy-authorization",
            ] {
                assert!(direct.header(gone).is_empty(), "case {i}: {gone} passed");
            }
            assert!(
                !direct.headers.iter().any(|(_, v)| v.contains(&token)),
                "case {i}: the admin token passed"
            );
            assert_eq!(direct.header("x-forwarded-prefix"), ["/agents/a"]);
        }
    }
    assert!(rec.problems().is_empty(), "{:?}", rec.problems());
}

#[test]
fn a_request_head_over_64_kib_is_refused_with_431_on_both_paths() {
    let (sup, rec, _d) = supervisor_with_recorder("head-size", "a", "", &[]);
    let open = |path: &str| {
        if path == "direct" {
            Conn::open(sup.port).unwrap()
        } else {
            general_conn(sup.port)
        }
    };
    for path in ["direct", "general"] {
        // 40 KiB: more than the direct path holds itself (hyper's path
        // takes it over), less than the limit: passed on whole.
        let big = "v".repeat(40 * 1024);
        let r = open(path).request_raw(&format!(
            "GET /agents/a/ok-{path} HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"
        ));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let seen = rec.seen(&format!("/ok-{path}"));
        assert_eq!(seen.len(), 1, "{path}");
        assert_eq!(seen[0].header("x-big"), [big.as_str()], "{path}");
        // Past 64 KiB (what an ALB takes too), in one line or in many.
        let one = format!("X-Big: {}\r\n", "v".repeat(65 * 1024));
        let many = (0..90).fold(String::new(), |s, i| {
            s + &format!("X-Part-{i}: {}\r\n", "v".repeat(800))
        });
        for (what, lines) in [("one line", one), ("many lines", many)] {
            let mut c = open(path);
            c.write_raw(
                format!("GET /agents/a/no-{path} HTTP/1.1\r\nHost: x\r\n{lines}\r\n").as_bytes(),
            )
            .unwrap();
            let r = c.read_response("GET").unwrap();
            assert_eq!(r.status, 431, "{path}, {what}: {}", r.text());
            assert!(closed(&mut c), "{path}, {what}: the connection stays open");
        }
        assert!(rec.seen(&format!("/no-{path}")).is_empty(), "{path}");
    }
}

#[test]
fn only_a_get_is_a_websocket_handshake_another_method_keeps_its_method_and_body() {
    let (sup, rec, _d) = supervisor_with_recorder("upgrade-post", "a", "", &[]);
    let raw =
        "POST /agents/a/up HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
               Content-Length: 5\r\n\r\nhello";
    let r = Conn::open(sup.port).unwrap().request_raw(raw);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = rec.seen("/up");
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        (seen[0].framing, &seen[0].body[..]),
        (Framing::Length(5), &b"hello"[..])
    );
    assert!(seen[0].header("upgrade").is_empty(), "{seen:#?}");
}
