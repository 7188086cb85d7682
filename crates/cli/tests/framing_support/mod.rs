//! A worker stand-in that records exactly what reaches it: the supervisor
//! starts a small relay as the agent's worker (it binds `PAR_PORT` and pipes
//! every connection, byte for byte both ways, to a socket of this test), and
//! the test's recorder reads each request there with a strict HTTP/1.1
//! parser of its own, keeps it, and answers `/health` as a ready worker and
//! anything else with `seen <n> <target> <length> <fnv>` of what it read
//! (`/big…` with 8 MiB of `x`).
#![allow(dead_code)]

pub mod random;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::supervisor_support::{Supervisor, TempDir};

/// The worker: a byte-for-byte relay from `PAR_PORT` to `RELAY_TO`.
const RELAY: &str = r#"
import os, socket, threading
PORT, TO = int(os.environ["PAR_PORT"]), int(os.environ["RELAY_TO"])
if os.environ.get("PAR_LISTEN_FD"):
    # The port the supervisor bound and handed over.
    srv = socket.socket(fileno=int(os.environ["PAR_LISTEN_FD"]))
    srv.setblocking(True)
else:
    srv = socket.socket()
    srv.bind(("127.0.0.1", PORT))
srv.listen(1024)

def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass

def serve(c):
    try:
        u = socket.create_connection(("127.0.0.1", TO))
    except OSError:
        c.close()
        return
    for s in (c, u):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = threading.Thread(target=pump, args=(u, c), daemon=True)
    t.start()
    pump(c, u)
    t.join()
    c.close()
    u.close()

while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// One request as the worker received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The worker-side connection (the relay's) it came on.
    pub conn: usize,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

impl Seen {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the recorder saw: requests, and anything that was not a clean
/// HTTP/1.1 request (a bare LF, two lengths, a length beside chunked...).
#[derive(Default)]
pub struct Log {
    pub seen: Vec<Seen>,
    pub problems: Vec<String>,
}

pub struct Recorder {
    pub port: u16,
    pub log: Arc<Mutex<Log>>,
}

impl Recorder {
    pub fn start(agent: &str) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Log::default()));
        let (l, agent) = (Arc::clone(&log), agent.to_string());
        std::thread::spawn(move || {
            for (n, s) in listener.incoming().enumerate() {
                let Ok(s) = s else { continue };
                let (l, agent) = (Arc::clone(&l), agent.clone());
                std::thread::spawn(move || serve(n, s, &l, &agent));
            }
        });
        Recorder { port, log }
    }

    /// The requests seen whose target starts with `prefix`.
    pub fn seen(&self, prefix: &str) -> Vec<Seen> {
        let log = self.log.lock().unwrap();
        log.seen
            .iter()
            .filter(|s| s.target.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn problems(&self) -> Vec<String> {
        self.log.lock().unwrap().problems.clone()
    }
}

/// A supervisor whose agent `agent` is the relay to a new recorder.
pub fn supervisor_with_recorder(
    tag: &str,
    agent: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> (Supervisor, Recorder, TempDir) {
    let rec = Recorder::start(agent);
    let dir = TempDir::new(&format!("{tag}-relay"));
    let relay = dir.path().join("relay.py");
    std::fs::write(&relay, RELAY).unwrap();
    let sup = Supervisor::start_with(
        tag,
        &format!(
            "worker_command = [\"python3\", \"{}\"]\n{extra}",
            relay.display()
        ),
        &format!(
            "[[agents]]\nid = \"{agent}\"\npackage = \"pkg\"\nenv_vars = {{ RELAY_TO = \"{}\" }}\n",
            rec.port
        ),
        env,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sup.process(agent).is_none_or(|p| p["state"] != "ready") {
        if std::time::Instant::now() > deadline {
            panic!(
                "agent {agent} not ready; problems {:?}; log:\n{}",
                rec.problems(),
                sup.log_text()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (sup, rec, dir)
}

/// FNV-1a of a body: what the recorder answers, to compare without sending it back.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn serve(conn: usize, s: TcpStream, log: &Mutex<Log>, agent: &str) {
    let _ = s.set_nodelay(true);
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let req = match read_request(&mut r, conn) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(problem) => {
                log.lock()
                    .unwrap()
                    .problems
                    .push(format!("conn {conn}: {problem}"));
                return;
            }
        };
        let (status, body) = if req.target == "/health" {
            let b =
                format!(r#"{{"status":"ready","agent_id":"{agent}","package_id":"relay@1.0.0"}}"#);
            (200, b)
        } else if req.target == "/meta" {
            (404, "{}".to_string())
        } else {
            let mut l = log.lock().unwrap();
            let n = l.seen.len();
            let b = format!(
                "seen {n} {} {} {}",
                req.target,
                req.body.len(),
                fnv(&req.body)
            );
            l.seen.push(req.clone());
            (200, b)
        };
        if req.target.starts_with("/big") {
            // A reply larger than any socket buffer: a client that leaves
            // in the middle leaves most of it unread on this connection.
            let body = vec![b'x'; 8 << 20];
            let head = format!("HTTP/1.1 200 X\r\ncontent-length: {}\r\n\r\n", body.len());
            if w.write_all(head.as_bytes()).is_err() || w.write_all(&body).is_err() {
                return;
            }
            continue;
        }
        let head = req.method == "HEAD";
        let out = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{}",
            body.len(),
            if head { "" } else { body.as_str() }
        );
        if w.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// One request, read strictly: CRLF lines only, no folding, one way of
/// framing; `Ok(None)` at a clean end of the connection.
fn read_request(r: &mut BufReader<TcpStream>, conn: usize) -> Result<Option<Seen>, String> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
        if n == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err("the connection ended inside a head".into())
            };
        }
        if !line.ends_with(b"\r\n") {
            return Err(format!(
                "a line without CRLF: {:?}",
                String::from_utf8_lossy(&line)
            ));
        }
        line.truncate(line.len() - 2);
        if line.contains(&b'\r') || line.contains(&b'\n') {
            return Err(format!(
                "a bare CR or LF inside {:?}",
                String::from_utf8_lossy(&line)
            ));
        }
        if line.is_empty() {
            break;
        }
        lines.push(String::from_utf8(line).map_err(|_| "a head that is not UTF-8".to_string())?);
    }
    let request_line = lines.remove(0);
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, "HTTP/1.1"] = parts[..] else {
        return Err(format!("a request line {request_line:?}"));
    };
    let mut headers = Vec::new();
    for l in &lines {
        if l.starts_with([' ', '\t']) {
            return Err(format!("a folded line {l:?}"));
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(format!("a header line without a colon {l:?}"));
        };
        if k.is_empty()
            || k.bytes()
                .any(|b| !(b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)))
        {
            return Err(format!("a header name {k:?}"));
        }
        headers.push((k.to_string(), v.trim_matches([' ', '\t']).to_string()));
    }
    let get = |n: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let lengths = get("content-length");
    let codings = get("transfer-encoding");
    if !get("connection").is_empty() {
        return Err(format!(
            "a Connection header reached the worker: {:?}",
            get("connection")
        ));
    }
    if lengths.len() > 1 {
        return Err(format!("{} Content-Length headers", lengths.len()));
    }
    if !lengths.is_empty() && !codings.is_empty() {
        return Err("Content-Length beside Transfer-Encoding".into());
    }
    if get("host").len() != 1 {
        return Err(format!("{} Host headers", get("host").len()));
    }
    let (framing, body) = if let Some(c) = codings.first() {
        if codings.len() > 1 || !c.eq_ignore_ascii_case("chunked") {
            return Err(format!("Transfer-Encoding {codings:?}"));
        }
        (Framing::Chunked, read_chunked(r)?)
    } else if let Some(l) = lengths.first() {
        let n: u64 = l.parse().map_err(|_| format!("Content-Length {l:?}"))?;
        let mut body = vec![0; n as usize];
        r.read_exact(&mut body)
            .map_err(|e| format!("a body cut short: {e}"))?;
        (Framing::Length(n), body)
    } else {
        (Framing::None, Vec::new())
    };
    Ok(Some(Seen {
        conn,
        method: method.to_string(),
        target: target.to_string(),
        headers,
        framing,
        body,
    }))
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
        if line.is_empty() {
            return Err("a chunked body cut short".into());
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let Some(size) = line.strip_suffix("\r\n") else {
            return Err(format!("a chunk size line {line:?}"));
        };
        let size = size.split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("a chunk size {size:?}"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut t = Vec::new();
                r.read_until(b'\n', &mut t).map_err(|e| e.to_string())?;
                if t == b"\r\n" {
                    return Ok(body);
                }
                if t.is_empty() {
                    return Err("the connection ended in the trailers".into());
                }
            }
        }
        let at = body.len();
        body.resize(at + size + 2, 0);
        r.read_exact(&mut body[at..])
            .map_err(|e| format!("a chunk cut short: {e}"))?;
        if &body[at + size..] != b"\r\n" {
            return Err("a chunk longer than its size".into());
        }
        body.truncate(at + size);
    }
}
