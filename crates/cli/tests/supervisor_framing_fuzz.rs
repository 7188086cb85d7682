//! Random requests through the real supervisor to a worker stand-in that
//! records exactly what it receives (framing_support): methods, targets,
//! header sets with hop-by-hop and `Connection`-named headers, every
//! `Content-Length` / `Transfer-Encoding` combination, bodies that hold
//! whole requests, pipelining, HTTP/1.0, writes cut at random bytes, on the
//! direct path and on hyper's. Each request in gives at most one request
//! out, with the same framing and body, answered to the client that sent
//! it; or a 4xx to that client and nothing out.
//!
//! `PAR_FUZZ_REQUESTS` (default 3000) requests; `PAR_FUZZ_SEED` replays a
//! run (the seed is printed).

mod framing_support;
mod supervisor_support;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use framing_support::*;
use supervisor_support::*;

/// splitmix64: small, seeded, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// What must come of one request.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    /// Passed on once, this body with this framing, answered to its sender
    /// (or, when `either`, refused with a 4xx).
    Forward {
        body: Vec<u8>,
        chunked: bool,
        either: bool,
    },
    /// Refused with this 4xx, nothing passed on.
    Refuse(u16),
    /// A management request (moves the connection to the general path).
    Health,
}

struct Case {
    id: String,
    method: String,
    bytes: Vec<u8>,
    want: Want,
    /// The connection ends after it (HTTP/1.0, `Connection: close`).
    last: bool,
}

const SMUGGLED: &[u8] =
    b"GET /agents/a/fz/SMUGGLED HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";

fn body(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0 => Vec::new(),
        1 => SMUGGLED.to_vec(),
        2 => {
            let mut b = SMUGGLED.to_vec();
            b.extend_from_slice(b"POST /fz/SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n");
            b
        }
        // Past the direct path's 64 KiB: streamed by the general path.
        3 if rng.chance(10) => (0..70_000).map(|_| rng.next() as u8).collect(),
        _ => {
            let n = rng.below(300);
            (0..n)
                .map(|_| *rng.pick(b"ab\r\n0123 :;{}\"xyz\t"))
                .collect()
        }
    }
}

fn chunked(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let n = (1 + rng.below(200)).min(rest.len());
        let size = if rng.chance(20) {
            format!("{n:X}")
        } else {
            format!("{n:x}")
        };
        out.extend_from_slice(size.as_bytes());
        if rng.chance(10) {
            out.extend_from_slice(b";ext=1");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if rng.chance(10) {
        out.extend_from_slice(b"x-trailer: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// One random request; `general` when the connection is already hyper's.
fn case(rng: &mut Rng, id: String) -> Case {
    if rng.chance(5) {
        return Case {
            id,
            method: "GET".into(),
            bytes: b"GET /runtime/health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            want: Want::Health,
            last: false,
        };
    }
    let method = rng
        .pick(&[
            "GET", "POST", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "CONNECT", "post",
        ])
        .to_string();
    let http10 = rng.chance(5);
    let mut target = format!("/agents/a/fz/{id}");
    if rng.chance(30) {
        target.push_str(*rng.pick(&["?q=1", "?a=%20&b=/agents/b", "?", "/x/y?z"]));
    }
    let mut refuse: Option<u16> = None;
    let set = |r: u16, refuse: &mut Option<u16>| {
        // The first rule broken decides the status only when it is the
        // only one; any 4xx is right when several are.
        *refuse = Some(if refuse.is_some_and(|p| p != r) { 0 } else { r });
    };
    let mut headers: Vec<String> = Vec::new();
    match rng.below(40) {
        0 => {
            if !http10 {
                set(400, &mut refuse)
            }
        }
        1 => {
            headers.push("Host: x".into());
            headers.push("Host: y".into());
            set(400, &mut refuse);
        }
        _ => headers.push(format!("{}: par", rng.pick(&["Host", "host", "HOST"]))),
    }
    for _ in 0..rng.below(4) {
        headers.push(
            rng.pick(&[
                "Accept: */*",
                "User-Agent: fuzz",
                "Keep-Alive: timeout=5",
                "Proxy-Connection: keep-alive",
                "TE: trailers",
                "Trailer: x-trailer",
                "X-Secret: 1",
                "X-Forwarded-For: 1.2.3.4",
                "Proxy-Authorization: Basic eDp5",
                "X-Empty:",
            ])
            .to_string(),
        );
    }
    let mut last = http10;
    if rng.chance(25) {
        let n = 1 + rng.below(3);
        let mut tokens = Vec::new();
        for _ in 0..n {
            let t = *rng.pick(&[
                "keep-alive",
                "close",
                "X-Secret",
                "te",
                "upgrade-not",
                "Keep-Alive",
                "keep-alive",
                "X-Secret",
                "Content-Length",
                "content-length",
                "Transfer-Encoding",
                "host",
            ]);
            match t.to_ascii_lowercase().as_str() {
                "content-length" | "transfer-encoding" | "host" => set(400, &mut refuse),
                "close" => last = true,
                _ => {}
            }
            tokens.push(t);
        }
        let sep = *rng.pick(&[", ", ",", " , "]);
        headers.push(format!("Connection: {}", tokens.join(sep)));
    }
    if rng.chance(5) {
        if rng.chance(50) {
            headers.push("Expect: 100-continue".into());
        } else {
            headers.push("Expect: 999-bogus".into());
            set(417, &mut refuse);
        }
    }
    let b = body(rng);
    let mut chunked_body = false;
    let mut payload = Vec::new();
    match rng.below(20) {
        // No framing: no body.
        0..=2 if b.is_empty() => {}
        // Past the refusals below: the framing the proxy passes on.
        12..=19 | 0..=4 => {
            let zeros = if rng.chance(5) { "00" } else { "" };
            headers.push(format!("Content-Length: {zeros}{}", b.len()));
            payload = b.clone();
        }
        5 => {
            headers.push(format!("Content-Length: {}", b.len()));
            headers.push(format!("content-length: {}", b.len()));
            payload = b.clone();
        }
        6 => {
            headers.push(format!("Content-Length: {}", b.len()));
            headers.push(format!("Content-Length: {}", b.len() + 1));
            set(400, &mut refuse);
            payload = b.clone();
        }
        7 => {
            headers.push(format!(
                "Content-Length: {}",
                rng.pick(&["+1", "0x1", "1 1", "-0", "1,1", ""])
            ));
            set(400, &mut refuse);
        }
        8..=10 => {
            headers.push(format!(
                "Transfer-Encoding: {}",
                rng.pick(&["chunked", "Chunked", "chunked "])
            ));
            if http10 {
                set(400, &mut refuse);
            }
            if rng.chance(20) {
                // A length beside it: the chunked framing alone counts, and
                // the connection closes after the reply (RFC 9112 §6.3).
                headers.push("Content-Length: 3".into());
                last = true;
            }
            chunked_body = true;
            payload = chunked(rng, &b);
        }
        11 if rng.chance(50) => {
            headers.push(format!(
                "Transfer-Encoding: {}",
                rng.pick(&["gzip, chunked", "chunked, chunked", "identity", "gzip"])
            ));
            set(400, &mut refuse);
            payload = chunked(rng, &b);
        }
        _ => {
            headers.push("Transfer-Encoding: chunked".into());
            headers.push("Transfer-Encoding: chunked".into());
            set(400, &mut refuse);
            payload = chunked(rng, &b);
        }
    }
    if method == "CONNECT" {
        refuse = Some(if refuse.is_some_and(|p| p != 405) {
            0
        } else {
            405
        });
    }
    // Shuffle the header lines.
    for i in (1..headers.len()).rev() {
        let j = rng.below(i + 1);
        headers.swap(i, j);
    }
    // Now and then a line no strict parser takes: folded, ended by a bare
    // LF, a space before the colon, a control byte in a value.
    let mut ends = vec!["\r\n"; headers.len()];
    let mut either = false;
    if rng.chance(6) && !headers.is_empty() {
        let i = rng.below(headers.len());
        match rng.below(4) {
            0 => {
                headers.insert(i + 1, " folded".into());
                ends.insert(i + 1, "\r\n");
                set(400, &mut refuse);
            }
            // Read as a line end by some parsers: passed on exactly, or refused.
            1 => {
                ends[i] = "\n";
                either = true;
            }
            2 => {
                headers.insert(i, "X-Space : 1".into());
                ends.insert(i, "\r\n");
                set(400, &mut refuse);
            }
            _ => {
                headers.insert(i, "X-Ctl: a\u{1}b".into());
                ends.insert(i, "\r\n");
                set(400, &mut refuse);
            }
        }
    }
    if either && refuse.is_some() {
        refuse = Some(0);
    }
    let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    let mut bytes = format!("{method} {target} {version}\r\n").into_bytes();
    for (h, end) in headers.iter().zip(&ends) {
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(end.as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(&payload);
    let want = match refuse {
        Some(s) => Want::Refuse(s),
        None => Want::Forward {
            body: if chunked_body || !payload.is_empty() {
                b
            } else {
                Vec::new()
            },
            chunked: chunked_body,
            either,
        },
    };
    Case {
        id,
        method,
        bytes,
        want,
        last: last || refuse.is_some(),
    }
}

/// The outcome of one connection's requests: the ids answered 200 by the
/// worker, and what went wrong.
fn run_connection(port: u16, rng: &mut Rng, cases: &[Case]) -> (Vec<String>, Vec<String>) {
    let mut answered = Vec::new();
    let mut wrong = Vec::new();
    let mut stream = Vec::new();
    for c in cases {
        stream.extend_from_slice(&c.bytes);
        if c.last {
            break;
        }
    }
    let socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    socket.set_nodelay(true).unwrap();
    // Written in pieces cut at random bytes, on a thread (a pipelined
    // stream can be larger than what the socket buffers).
    let mut w = socket.try_clone().unwrap();
    let mut conn = BufReader::new(socket);
    let sent = stream.clone();
    let cuts: Vec<usize> = (0..rng.below(6))
        .map(|_| rng.below(stream.len() + 1))
        .collect();
    let writer = std::thread::spawn(move || {
        let mut cuts = cuts;
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        for pair in cuts.windows(2) {
            if w.write_all(&stream[pair[0]..pair[1]]).is_err() {
                return;
            }
            let _ = w.flush();
            std::thread::yield_now();
        }
    });
    for c in cases {
        let r = match read_response(&mut conn, &c.method) {
            Ok(r) => r,
            Err(e) => {
                wrong.push(format!(
                    "{}: no response ({e}); want {:?}",
                    c.id,
                    short(&c.want)
                ));
                break;
            }
        };
        let text = r.text();
        match &c.want {
            Want::Health => {
                if r.status != 200 {
                    wrong.push(format!("{}: health answered {}", c.id, r.status));
                }
            }
            Want::Refuse(s) => {
                let fits = if *s == 0 {
                    (400..500).contains(&r.status)
                } else {
                    r.status == *s
                };
                if !fits {
                    wrong.push(format!(
                        "{}: answered {} {text:?}, want {s}; sent {:?}",
                        c.id,
                        r.status,
                        String::from_utf8_lossy(&c.bytes)
                    ));
                }
            }
            Want::Forward { either: true, .. } if (400..500).contains(&r.status) => {}
            Want::Forward { body, .. } => {
                let target = text.split(' ').nth(2).unwrap_or_default();
                if r.status != 200 || (c.method != "HEAD" && id_of(target) != c.id) {
                    wrong.push(format!(
                        "{}: answered {} {text:?}; sent {:?}",
                        c.id,
                        r.status,
                        String::from_utf8_lossy(&c.bytes[..c.bytes.len().min(600)])
                    ));
                } else if c.method != "HEAD" {
                    let tail = format!("{} {}", body.len(), fnv(body));
                    if !text.ends_with(&tail) {
                        wrong.push(format!(
                            "{}: the worker read another body: {text:?}, want {tail}",
                            c.id
                        ));
                    }
                }
                if r.status == 200 {
                    answered.push(c.id.clone());
                }
            }
        }
        if c.last || r.status >= 400 {
            break;
        }
    }
    drop(conn);
    let _ = writer.join();
    if !wrong.is_empty() {
        let shown = &sent[..sent.len().min(3000)];
        wrong.push(format!(
            "  (that connection sent {:?})",
            String::from_utf8_lossy(shown)
        ));
    }
    (answered, wrong)
}

/// The id in a worker's target `/fz/{id}[/...][?...]`.
fn id_of(target: &str) -> &str {
    let rest = target.strip_prefix("/fz/").unwrap_or_default();
    rest.split(['/', '?']).next().unwrap_or_default()
}

fn short(w: &Want) -> String {
    match w {
        Want::Forward {
            body,
            chunked,
            either,
        } => {
            format!(
                "forward {} bytes chunked={chunked} or-4xx={either}",
                body.len()
            )
        }
        other => format!("{other:?}"),
    }
}

/// One final response (interim ones skipped): status, head, body.
fn read_response(r: &mut BufReader<TcpStream>, method: &str) -> std::io::Result<Resp> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| bad(format!("header {h:?}")))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if method == "HEAD" || status == 204 || status == 304 {
        } else if get("transfer-encoding").is_some() {
            return Err(bad("a chunked reply (the recorder sends none)".into()));
        } else if let Some(n) = get("content-length") {
            body.resize(n.parse().map_err(|_| bad(format!("length {n}")))?, 0);
            r.read_exact(&mut body)?;
        } else {
            r.read_to_end(&mut body)?;
        }
        return Ok(Resp {
            status,
            headers,
            body,
        });
    }
}

#[test]
fn random_requests_reach_the_worker_once_with_their_own_framing_or_are_refused() {
    let total: usize = std::env::var("PAR_FUZZ_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("PAR_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("fuzz: {total} requests, PAR_FUZZ_SEED={seed}");
    let (sup, rec, _d) = supervisor_with_recorder("fuzz", "a", "", &[]);
    const THREADS: u64 = 4;
    let wants: Arc<Mutex<HashMap<String, Want>>> = Arc::default();
    let results: Vec<(Vec<String>, Vec<String>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let wants = Arc::clone(&wants);
                let port = sup.port;
                s.spawn(move || {
                    let mut rng = Rng(seed ^ (t.wrapping_mul(0x2545f4914f6cdd1d)));
                    let (mut answered, mut wrong, mut sent) = (Vec::new(), Vec::new(), 0);
                    let mut n = 0usize;
                    while sent < total / THREADS as usize {
                        let most = if rng.chance(30) { 5 } else { 1 };
                        let k = 1 + rng.below(most);
                        let cases: Vec<Case> = (0..k)
                            .map(|_| {
                                n += 1;
                                case(&mut rng, format!("{t}-{n}"))
                            })
                            .collect();
                        {
                            let mut w = wants.lock().unwrap();
                            for c in &cases {
                                w.insert(c.id.clone(), c.want.clone());
                            }
                        }
                        sent += cases.len();
                        let (a, w) = run_connection(port, &mut rng, &cases);
                        answered.extend(a);
                        wrong.extend(w);
                    }
                    (answered, wrong, sent)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut wrong: Vec<String> = results.iter().flat_map(|r| r.1.clone()).collect();
    let answered: std::collections::HashSet<String> =
        results.iter().flat_map(|r| r.0.clone()).collect();
    let sent: usize = results.iter().map(|r| r.2).sum();
    // What the worker received: each id at most once, only ids answered
    // 200, with the framing and body sent.
    let wants = wants.lock().unwrap();
    let mut count: HashMap<String, usize> = HashMap::new();
    for s in rec.seen("/fz/") {
        let id = id_of(&s.target).to_string();
        *count.entry(id.clone()).or_default() += 1;
        match wants.get(&id) {
            Some(Want::Forward { body, chunked, .. }) => {
                if s.body != *body {
                    wrong.push(format!(
                        "{id}: the worker read {} bytes, {} were sent",
                        s.body.len(),
                        body.len()
                    ));
                }
                let framing_ok = match s.framing {
                    Framing::Chunked => *chunked,
                    Framing::Length(n) => !*chunked && n as usize == body.len(),
                    Framing::None => !*chunked && body.is_empty(),
                };
                if !framing_ok {
                    wrong.push(format!(
                        "{id}: framing {:?} at the worker, chunked={chunked} sent",
                        s.framing
                    ));
                }
                if !answered.contains(&id) {
                    wrong.push(format!(
                        "{id}: reached the worker but its sender got no 200"
                    ));
                }
            }
            other => wrong.push(format!("{id} reached the worker: {s:?}; want {other:?}")),
        }
    }
    for (id, n) in &count {
        if *n > 1 {
            wrong.push(format!("{id} reached the worker {n} times"));
        }
    }
    for p in rec.problems() {
        wrong.push(format!("the worker read a malformed request: {p}"));
    }
    let forwarded = count.len();
    eprintln!(
        "fuzz: {sent} requests sent, {forwarded} reached the worker, {} differences (seed {seed})",
        wrong.len()
    );
    for w in wrong.iter().take(12) {
        eprintln!("  {w}");
    }
    assert!(
        wrong.is_empty(),
        "{} framing differences; replay with PAR_FUZZ_SEED={seed}",
        wrong.len()
    );
    assert!(
        forwarded > sent / 3,
        "too few requests were served to mean anything: {forwarded} of {sent}"
    );
    drop(sup);
}
