//! Clients that misbehave, end to end: thousands of connections that never
//! send a byte, request bodies no reply reads, broken bodies, forged `Host`
//! headers, package paths outside the package roots, and a reload of an
//! emptied configuration. The supervisor keeps serving everyone else.

mod supervisor_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use supervisor_support::*;

const AGENT: &str = "[[agents]]\nid = \"a\"\npackage = \"pkg\"\n";

/// A process holding `n` connections to `port` that never send a byte,
/// until its stdin closes.
fn hold(port: u16, n: usize) -> Child {
    let script = r#"
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(n):
    try:
        held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    except OSError:
        break
print(len(held), flush=True)
sys.stdin.read()
"#;
    Command::new("python3")
        .args(["-c", script, &port.to_string(), &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3")
}

/// How many connections a holder opened, once it has opened them.
fn held(child: &mut Child) -> usize {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().parse().unwrap_or(0)
}

#[test]
fn twenty_thousand_silent_connections_do_not_starve_the_health_check() {
    let sup = Supervisor::start("silent", "", AGENT, &[]);
    sup.wait_ready("a", Duration::from_secs(20));
    let t = Instant::now();
    let mut holders: Vec<_> = (0..2).map(|_| hold(sup.port, 10_000)).collect();
    let held: usize = holders.iter_mut().map(held).sum();
    eprintln!("{held} silent connections opened in {:?}", t.elapsed());
    assert!(held >= 20_000, "only {held} connections opened");
    let t = Instant::now();
    let r = http(
        sup.port,
        "GET",
        "/runtime/health",
        &[("Authorization", "")],
        b"",
    )
    .unwrap();
    let took = t.elapsed();
    eprintln!(
        "/runtime/health answered {} after {took:?} with {held} silent connections held",
        r.status
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Proxying goes on too.
    assert_eq!(get(sup.port, "/agents/a/x").unwrap().status, 200);
    for mut child in holders {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    let st = get(sup.port, "/supervisor/status").unwrap().json();
    assert_eq!(st["supervisor"]["state"], "running");
}

#[test]
fn a_connection_that_sends_nothing_is_closed() {
    let sup = Supervisor::start("nothing", "client_header_timeout = \"1s\"\n", "", &[]);
    let mut s = TcpStream::connect(("127.0.0.1", sup.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without a word");
    eprintln!("a silent connection was closed after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(15));
}

#[test]
fn bodies_no_reply_reads_keep_the_connection_usable() {
    let sup = Supervisor::start("bodies", "", "", &[]);
    let body = vec![b'x'; 20 * 1024];
    let mut conn = Conn::open(sup.port).unwrap();
    let mut failures = 0;
    for _ in 0..300 {
        match conn.request("POST", "/agents/nope/invoke", &[], &body) {
            Ok(r) if r.status == 404 => {}
            _ => {
                failures += 1;
                conn = Conn::open(sup.port).unwrap();
            }
        }
    }
    assert_eq!(
        failures, 0,
        "300 requests with 20 KB bodies on one connection"
    );
    // The same on the management API, refused before the handler reads.
    let mut conn = Conn::open(sup.port).unwrap();
    for _ in 0..50 {
        let r = conn
            .request("POST", "/supervisor/spawn", &[("Authorization", "")], &body)
            .unwrap();
        assert_eq!(r.status, 401);
    }
    // Too big to read for nothing: the reply says the connection closes.
    let big = vec![b'x'; 1024 * 1024];
    let r = Conn::open(sup.port)
        .unwrap()
        .request("POST", "/agents/nope/invoke", &[], &big)
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn a_broken_request_body_is_the_clients_error_not_the_agents() {
    let sup = Supervisor::start("chunks", "", AGENT, &[]);
    sup.wait_ready("a", Duration::from_secs(20));
    let mut s = TcpStream::connect(("127.0.0.1", sup.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        b"POST /agents/a/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz-not-a-size\r\n\r\n",
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp.split_whitespace().nth(1).unwrap_or("");
    assert!(status == "400" || resp.is_empty(), "{resp}");
    // Never counted as the agent's failure.
    let m = get(sup.port, "/metrics").unwrap().text();
    assert!(
        m.contains("par_agent_requests_total{agent_id=\"a\",class=\"5xx\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("par_agent_proxy_errors_total{agent_id=\"a\"} 0"),
        "{m}"
    );
}

#[test]
fn forged_host_headers_never_reach_the_agents_list() {
    let sup = Supervisor::start("host", "", AGENT, &[]);
    sup.wait_ready("a", Duration::from_secs(20));
    let r = http(
        sup.port,
        "GET",
        "/agents",
        &[
            ("Host", "javascript:alert(1)"),
            ("X-Forwarded-Proto", "javascript"),
        ],
        b"",
    )
    .unwrap();
    let url = r.json()["agents"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(url, "/agents/a");
    let r = http(
        sup.port,
        "GET",
        "/agents",
        &[
            ("Host", "par.example.com:8443"),
            ("X-Forwarded-Proto", "https"),
        ],
        b"",
    )
    .unwrap();
    // Not even a well-formed one: the URL is relative to wherever the list was read.
    assert_eq!(r.json()["agents"][0]["url"], "/agents/a");
}

#[test]
fn api_packages_come_from_the_package_roots_only() {
    let sup = Supervisor::start("roots", "", "", &[]);
    let mut messages = Vec::new();
    for path in ["/etc", "/no/such/place.apkg", "/tmp/../etc/passwd"] {
        let body = format!(r#"{{"agent_id":"x","package_path":"{path}"}}"#);
        let r = http(sup.port, "POST", "/supervisor/spawn", &[], body.as_bytes()).unwrap();
        assert_eq!(r.status, 422, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["field"], "package_path");
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(&format!(": {path} is not")), "{message}");
        messages.push(message.replace(path, "PATH"));
    }
    // The same answer whether the path exists or not: nothing to learn from it.
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");
    assert!(messages[0].contains("package root"), "{messages:?}");
    // Inside the root (the config file's folder) is fine.
    let body = format!(r#"{{"agent_id":"x","package_path":"{}"}}"#, sup.pkg());
    let r = http(sup.port, "POST", "/supervisor/spawn", &[], body.as_bytes()).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn an_emptied_configuration_is_not_reloaded_unless_meant() {
    let sup = Supervisor::start("empty", "", AGENT, &[]);
    sup.wait_ready("a", Duration::from_secs(20));
    let cfg = sup.dir.path().join("sup.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let emptied = text.split("[[agents]]").next().unwrap().to_string();
    std::fs::write(&cfg, &emptied).unwrap();
    let r = http(sup.port, "POST", "/supervisor/reload", &[], b"").unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("allow_empty"), "{}", r.text());
    assert_eq!(sup.process("a").unwrap()["state"], "ready");
    // SIGHUP refuses the same way, and says so in status.
    sup.signal(1);
    wait_until(Duration::from_secs(10), "the refusal in status", || {
        let st = get(sup.port, "/supervisor/status").unwrap().json();
        st["desired"]["last_reload_error"]
            .as_str()
            .filter(|e| e.contains("allow_empty"))
            .map(str::to_string)
    });
    assert_eq!(sup.process("a").unwrap()["state"], "ready");
    let r = http(
        sup.port,
        "POST",
        "/supervisor/reload?allow_empty=true",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["stopped"], serde_json::json!(["a"]));
}
