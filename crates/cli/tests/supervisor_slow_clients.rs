//! Slow and half-gone clients, end to end: connections that hold partial
//! request heads (300 past a cap of 100; 20,000 kept open by reconnecting)
//! never silence `/runtime/health`; a client that shuts its sending side
//! after its request gets its whole answer on both proxy paths, queued or
//! not, while a client that closes still leaves the queue; and a chunked
//! upload slower than `upstream_timeout` reaches a real agent instead of
//! ending in 504.

mod supervisor_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use supervisor_support::*;

const AGENT: &str = "[[agents]]\nid = \"a\"\npackage = \"pkg\"\n";

/// A supervisor with the fake worker.
fn start(tag: &str, extra: &str, agents: &str) -> Supervisor {
    Supervisor::start(tag, extra, agents, &[])
}

/// A head that never ends (no blank line).
const PARTIAL: &str = "GET /agents/a/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

/// A process keeping `n` connections to `port`, each holding a partial
/// head: one the supervisor closes is opened again (at most `rate` per
/// second), until its stdin closes. It prints how many it opened, then, at
/// the end, how many the supervisor closed.
fn hold_partial_heads(port: u16, n: usize, rate: usize) -> Child {
    let script = r#"
import selectors, socket, sys, threading, time
port, n, rate, head = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
sel = selectors.DefaultSelector()
def open_one():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
held = 0
for _ in range(n):
    try:
        open_one()
        held += 1
    except OSError:
        break
print(held, flush=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
reopened, window, budget = 0, time.monotonic(), rate
while not done.is_set():
    for key, _ in sel.select(timeout=0.1):
        sel.unregister(key.fileobj)
        key.fileobj.close()
        if time.monotonic() - window >= 1:
            window, budget = time.monotonic(), rate
        if budget <= 0:
            continue
        budget -= 1
        try:
            open_one()
            reopened += 1
        except OSError:
            pass
closed = reopened + len(sel.select(timeout=1))
print(closed, flush=True)
"#;
    Command::new("python3")
        .args([
            "-c",
            script,
            &port.to_string(),
            &n.to_string(),
            &rate.to_string(),
            PARTIAL,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3")
}

/// The next number a holder printed.
fn read_count(child: &mut Child) -> usize {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().parse().unwrap_or(0)
}

/// Stops a holder; how many of its connections the supervisor closed.
fn stop(mut child: Child) -> usize {
    drop(child.stdin.take());
    let n = read_count(&mut child);
    let _ = child.wait();
    n
}

/// `GET /runtime/health` on a fresh connection, as the ALB sends it: its
/// status (0: no answer) and how long it took.
fn health(port: u16) -> (u16, Duration) {
    let t = Instant::now();
    let status = TcpStream::connect(("127.0.0.1", port))
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(
                b"GET /runtime/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            Ok(resp
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0))
        })
        .unwrap_or(0);
    (status, t.elapsed())
}

fn health_checks(port: u16, n: usize, what: &str) {
    let mut took = Vec::new();
    for _ in 0..n {
        let (status, t) = health(port);
        assert_eq!(status, 200, "/runtime/health with {what} (after {t:?})");
        took.push(t);
    }
    took.sort();
    eprintln!(
        "/runtime/health with {what}: {n}/{n} answered, slowest {:?}, median {:?}",
        took[n - 1],
        took[n / 2]
    );
}

#[test]
fn partial_heads_past_the_cap_leave_the_health_check_answering() {
    let sup = start("partial-cap", "max_connections = 100\n", AGENT);
    sup.wait_ready("a", Duration::from_secs(20));
    let mut holder = hold_partial_heads(sup.port, 300, 1000);
    assert_eq!(read_count(&mut holder), 300, "connections opened");
    health_checks(sup.port, 5, "300 partial heads and max_connections = 100");
    // Requests for agents are served too (a fresh connection makes room).
    let r = get(sup.port, "/agents/a/x").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let closed = stop(holder);
    eprintln!("the supervisor closed {closed} of the holder's partial heads");
    assert!(
        closed >= 100,
        "300 partial heads held past a cap of 100: {closed} closed"
    );
}

#[test]
fn twenty_thousand_partial_heads_leave_the_health_check_answering() {
    let sup = start("partial-20k", "", AGENT);
    sup.wait_ready("a", Duration::from_secs(20));
    let t = Instant::now();
    // Two processes: each stays under the open-files limit of this machine.
    let mut holders: Vec<_> = (0..2)
        .map(|_| hold_partial_heads(sup.port, 10_000, 2000))
        .collect();
    let held: usize = holders.iter_mut().map(read_count).sum();
    eprintln!(
        "{held} connections with partial heads opened in {:?}",
        t.elapsed()
    );
    assert!(held >= 20_000, "only {held} opened");
    health_checks(sup.port, 10, "20,000 partial heads held");
    let status = std::fs::read_to_string(format!("/proc/{}/status", sup.child.id())).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("VmRSS: ?");
    eprintln!(
        "the supervisor meanwhile: {}",
        rss.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    );
    let r = get(sup.port, "/agents/a/x").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let closed: usize = holders.into_iter().map(stop).sum();
    eprintln!("partial heads the supervisor closed (each opened again): {closed}");
    let st = get(sup.port, "/supervisor/status").unwrap().json();
    assert_eq!(st["supervisor"]["state"], "running");
}

/// `GET path` on the keep-alive connection `s`: the status (its body read).
fn get_on(s: &mut TcpStream, path: &str) -> u16 {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap_or(0) == 0 {
            return 0;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// How long `s` stays open (reading until its end, within 20 s).
fn time_to_close(s: &mut TcpStream) -> Duration {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    t.elapsed()
}

#[test]
fn a_partial_head_is_closed_after_the_header_timeout_on_both_paths() {
    let sup = start(
        "head-timeout",
        "client_header_timeout = \"1s\"\nkeepalive_timeout = \"30s\"\n",
        AGENT,
    );
    sup.wait_ready("a", Duration::from_secs(20));
    // The first head of a connection.
    let mut s = TcpStream::connect(("127.0.0.1", sup.port)).unwrap();
    s.write_all(PARTIAL.as_bytes()).unwrap();
    let first = time_to_close(&mut s);
    // A later head, on the direct path (after a request for an agent) and on
    // hyper's (after one for the management API): due from its first byte,
    // not after the keep-alive time.
    let mut later = Vec::new();
    for path in ["/agents/a/x", "/runtime/health"] {
        let mut s = TcpStream::connect(("127.0.0.1", sup.port)).unwrap();
        assert_eq!(get_on(&mut s, path), 200, "{path}");
        // Idle longer than the header timeout: still open (the keep-alive
        // time applies until a head begins).
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(get_on(&mut s, path), 200, "{path} after an idle while");
        s.write_all(PARTIAL.as_bytes()).unwrap();
        later.push(time_to_close(&mut s));
    }
    eprintln!("partial heads closed after {first:?} (first), {later:?} (later: direct, hyper)");
    for t in [first].iter().chain(&later) {
        assert!(*t < Duration::from_secs(15), "closed after {t:?}");
    }
}

/// Sends `request`, shuts the sending side, and reads everything until the
/// supervisor closes: the final response (after any interim ones) as
/// status and body.
fn half_closed(port: u16, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    final_response(&all)
}

/// The final response in `raw` (interim 1xx responses skipped).
fn final_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let mut rest = text.as_str();
    loop {
        let status: u16 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let Some((_, after)) = rest.split_once("\r\n\r\n") else {
            return (status, String::new());
        };
        if (100..200).contains(&status) {
            rest = after;
            continue;
        }
        return (status, after.to_string());
    }
}

fn agent_queued(s: &Supervisor, id: &str) -> Option<u64> {
    s.agent_status(id)["queued"].as_u64()
}

#[test]
fn a_client_that_half_closes_after_its_request_gets_its_whole_answer() {
    let sup = start("half", "", AGENT);
    sup.wait_ready("a", Duration::from_secs(20));
    let token = sup.token();
    // The management API (hyper's path).
    let req = format!(
        "GET /supervisor/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let (status, body) = half_closed(sup.port, req.as_bytes());
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"supervisor\""), "{body}");
    // An agent on the direct path, answering at once and after a while (the
    // end of the input seen while the worker works).
    for path in ["/agents/a/x", "/agents/a/sleep?s=0.5"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (status, body) = half_closed(sup.port, req.as_bytes());
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.contains("\"agent_id\""), "{path}: {body}");
    }
    // A chunked upload (hyper's path to the agent).
    let (status, body) = half_closed(
        sup.port,
        b"POST /agents/a/sleep?s=0.5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"body\": \"hello\"") || body.contains("\"body\":\"hello\""),
        "{body}"
    );
}

#[test]
fn a_half_closed_client_keeps_its_place_in_the_queue_a_closed_one_leaves_it() {
    let agents = "[[agents]]\nid = \"one\"\npackage = \"pkg\"\nmax_concurrency = 1\n";
    let sup = start("half-queue", "", agents);
    sup.wait_ready("one", Duration::from_secs(20));
    // The direct path (a GET), then hyper's (a 70 KiB upload).
    for body in [Vec::new(), vec![b'x'; 70 * 1024]] {
        let method = if body.is_empty() { "GET" } else { "POST" };
        let mut busy = Conn::open(sup.port).unwrap();
        busy.send("GET", "/agents/one/sleep?s=3", &[], b"").unwrap();
        wait_until(
            Duration::from_secs(10),
            "the first request in flight",
            || (sup.agent_status("one")["in_flight"].as_u64() == Some(1)).then_some(()),
        );
        // A client that closes while queued leaves the queue.
        let mut closer = Conn::open(sup.port).unwrap();
        closer
            .send(method, "/agents/one/closed", &[], &body)
            .unwrap();
        wait_until(Duration::from_secs(10), "the closer queued", || {
            (agent_queued(&sup, "one") == Some(1)).then_some(())
        });
        drop(closer);
        wait_until(
            Duration::from_secs(10),
            "the closer gone from the queue",
            || (agent_queued(&sup, "one") == Some(0)).then_some(()),
        );
        // A client that half-closes while queued is answered in its turn.
        let mut s = TcpStream::connect(("127.0.0.1", sup.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = format!(
            "{method} /agents/one/half HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        wait_until(Duration::from_secs(10), "the half-closer queued", || {
            (agent_queued(&sup, "one") == Some(1)).then_some(())
        });
        s.shutdown(Shutdown::Write).unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        let (status, text) = final_response(&all);
        assert_eq!(status, 200, "{method}: {text}");
        assert!(
            text.contains("\"path\": \"/half\"") || text.contains("\"path\":\"/half\""),
            "{text}"
        );
        assert_eq!(busy.read_response("GET").unwrap().status, 200);
    }
}

#[test]
fn a_chunked_upload_slower_than_the_upstream_timeout_reaches_the_agent() {
    let agents = format!(
        "[[agents]]\nid = \"a\"\npackage = \"{}/examples/agents/echo\"\n",
        repo_root().display()
    );
    // The real worker and the example echo agent.
    let sup = Supervisor::start_with("slow-upload", "upstream_timeout = \"1s\"\n", &agents, &[]);
    sup.wait_ready("a", Duration::from_secs(120));
    let mut s = TcpStream::connect(("127.0.0.1", sup.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        b"POST /agents/a/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let t = Instant::now();
    for piece in ["{\"te", "xt\": ", "\"slow", "ly\"}"] {
        // Each piece after a pause: 2.4 s in all, over twice the timeout.
        std::thread::sleep(Duration::from_millis(600));
        s.write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes())
            .unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut conn_reader = BufReader::new(s);
    let mut line = String::new();
    conn_reader.read_line(&mut line).unwrap();
    eprintln!("upload of {:?} answered: {}", t.elapsed(), line.trim());
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut rest = Vec::new();
    let _ = conn_reader
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = conn_reader.read(&mut buf) {
        rest.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&rest).contains("slowly") {
            break;
        }
    }
    assert!(
        String::from_utf8_lossy(&rest).contains("slowly"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
}

/// Sends a chunked upload in `pieces`, one every `pause`, and returns the
/// status line of the answer.
fn slow_chunked_upload(port: u16, path: &str, pieces: &[&str], pause: Duration) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    for piece in pieces {
        std::thread::sleep(pause);
        s.write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes())
            .unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim().to_string()
}

#[test]
fn the_upstream_timeout_still_counts_the_workers_silence_after_a_slow_upload() {
    let sup = start("slow-upload-504", "upstream_timeout = \"1s\"\n", AGENT);
    sup.wait_ready("a", Duration::from_secs(20));
    let pieces = ["{\"a\"", ": 1}"];
    // The upload takes 1.6 s, the worker answers at once: 200.
    let line = slow_chunked_upload(
        sup.port,
        "/agents/a/echo",
        &pieces,
        Duration::from_millis(800),
    );
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    // The upload is as slow, then the worker is silent for 5 s: 504.
    let line = slow_chunked_upload(
        sup.port,
        "/agents/a/sleep?s=5",
        &pieces,
        Duration::from_millis(800),
    );
    assert!(line.starts_with("HTTP/1.1 504"), "{line}");
}
